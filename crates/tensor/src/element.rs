//! The element types a tensor can hold: `f32` for training, `f64` for verification
//! and finite-difference gradient checks.

use crate::kernels::gemm::GemmScalar;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type. Implemented for `f32` and `f64` only.
pub trait Float:
    GemmScalar
    + Debug
    + Display
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + Send
    + Sync
    + 'static
{
    /// The name used in messages and checkpoints (`"F32"`, `"F64"`).
    const DTYPE: &'static str;
    /// `x` rounded to this type ([`GemmScalar::cast`], the kernels' name for it).
    #[inline]
    fn from_f64(x: f64) -> Self {
        Self::cast(x)
    }
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn is_nan(self) -> bool;
    fn is_finite(self) -> bool;
    fn max_value() -> Self;
    fn neg_infinity() -> Self;
}

/// `e^x` in f32 without a libm call, so that a loop over it vectorises.
///
/// Range reduction: `x = n ln2 + r` with `n = round(x / ln2)` and `|r| <= ln2 / 2`,
/// so `e^x = 2^n e^r`. `2^n` is built from its exponent bits; `e^r` is a degree-6
/// polynomial (the Cephes `expf` coefficients), accurate to about 1 ulp on the
/// reduced range. `ln2` is split in a high and a low part so that `n ln2` is exact
/// in the subtraction. Overflow gives +inf, underflow 0, NaN stays NaN.
///
/// The reduction and the polynomial are fused multiply-adds (`mul_add`), rounded
/// once each: 11 of the vector operations instead of 22, the same bits on every
/// CPU. Inside the loops compiled for AVX2 or AVX-512 ([`vectorized`]) each is one
/// FMA instruction; elsewhere `mul_add` is a call to the C library's `fmaf`, exact
/// too but not vectorised. Session 30 (Intel Xeon model 167, three alternations
/// with the unfused expressions, the middle of each run's three fastest): the
/// course UNet's forward 165.6 / 164.2 / 149.6 -> 160.4 / 154.2 / 148.9 ms and its
/// training step 0.539 / 0.535 / 0.530 -> 0.529 / 0.515 / 0.499 s, the group
/// norm's SiLU and its backward making most of the calls.
///
/// [`vectorized`]: crate::kernels::elementwise
#[inline]
#[must_use]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAX: f32 = 88.722_83; // ln(f32::MAX)
    const MIN: f32 = -87.336_55; // ln(smallest normal f32)
    let clamped = x.clamp(MIN, MAX);
    // Round to nearest by adding and subtracting 1.5 * 2^23: f32::round is a libm
    // call on baseline x86-64 and would stop the loop from vectorising.
    const ROUNDER: f32 = 12_582_912.0;
    let shifted = clamped.mul_add(LOG2E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, clamped));
    let r2 = r * r;
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_5e-1)
        .mul_add(r, 0.5);
    let e_r = p.mul_add(r2, r) + 1.0;
    // The integer n sits in the low mantissa bits of `shifted` (an `as i32` cast
    // would saturate lane by lane and stop vectorisation). 2^n is built as
    // 2^(n/2) 2^(n - n/2): each half's exponent bits stay in range even where 2^n
    // itself is not a normal float (n = 128 near the top).
    let n = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = e_r * pow2(n / 2) * pow2(n - n / 2);
    if x > MAX {
        f32::INFINITY
    } else if x < MIN {
        0.0
    } else {
        y
    }
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $exp:expr) => {
        impl Float for $t {
            const DTYPE: &'static str = $name;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn max_value() -> Self {
                <$t>::MAX
            }
            #[inline]
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
        }
    };
}

impl_float!(f32, "F32", exp_f32);
impl_float!(f64, "F64", f64::exp);

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm() {
        // 400,001 points evenly over [-87, 88.7], compared with f64's exp.
        let mut worst = (0.0f64, 0.0f32);
        for i in 0..=400_000 {
            let x = -87.0 + 175.7 * (i as f32) / 400_000.0;
            let exact = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * exact;
            let err = (f64::from(exp_f32(x)) - exact).abs() / ulp;
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 2.0, "worst error {} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn exp_f32_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
