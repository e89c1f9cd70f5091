//! Elementwise unary ops and their gradients.
//!
//! Each backward takes `g = dL/dy` (the shape of `y`) and returns `dL/dx = g * dy/dx`.
//! Some rules are cheaper from the output `y` than from the input `x`
//! (`d/dx exp(x) = exp(x)`), so the backward gets whichever it needs.

use super::{map, zip_map};
use crate::element::Float;
use crate::error::Result;
use crate::op::Op;
use crate::tensor::Tensor;

fn unary<T: Float>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync, op: Op<T>) -> Tensor<T> {
    let data = map(&x.contiguous_data(), f);
    Tensor::from_op(data, x.dims(), op)
}

/// `g * h(v, g)` elementwise over a same-shaped pair (`v` is `x` or `y`).
fn chain<T: Float>(v: &Tensor<T>, g: &Tensor<T>, h: impl Fn(T, T) -> T + Sync) -> Result<Tensor<T>> {
    Tensor::from_vec(zip_map(&v.contiguous_data(), &g.contiguous_data(), h), v.dims())
}

pub(crate) fn sigmoid_scalar<T: Float>(x: T) -> T {
    // e = exp(-|x|) never overflows; s(x) = 1 / (1 + e) for x >= 0 and
    // e / (1 + e) for x < 0. Both sides are computed and one is selected, so the
    // loop has no branch and vectorises.
    let e = x.abs().neg().exp();
    let inv = T::ONE / (T::ONE + e);
    if x >= T::ZERO {
        inv
    } else {
        e * inv
    }
}

/// sqrt(2 / pi), the constant of the tanh approximation of GELU.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044_715;

impl<T: Float> Tensor<T> {
    /// `-x`.
    #[must_use]
    pub fn neg(&self) -> Tensor<T> {
        unary(self, |v| -v, Op::Neg(self.clone()))
    }

    /// `e^x`.
    #[must_use]
    pub fn exp(&self) -> Tensor<T> {
        unary(self, T::exp, Op::Exp(self.clone()))
    }

    /// Natural logarithm (NaN below 0, -inf at 0, as IEEE says).
    #[must_use]
    pub fn log(&self) -> Tensor<T> {
        unary(self, T::ln, Op::Log(self.clone()))
    }

    /// Square root.
    #[must_use]
    pub fn sqrt(&self) -> Tensor<T> {
        unary(self, T::sqrt, Op::Sqrt(self.clone()))
    }

    /// Hyperbolic tangent.
    #[must_use]
    pub fn tanh(&self) -> Tensor<T> {
        unary(self, T::tanh, Op::Tanh(self.clone()))
    }

    /// `s(x) = 1 / (1 + e^-x)`.
    #[must_use]
    pub fn sigmoid(&self) -> Tensor<T> {
        unary(self, sigmoid_scalar, Op::Sigmoid(self.clone()))
    }

    /// `max(x, 0)`.
    #[must_use]
    pub fn relu(&self) -> Tensor<T> {
        unary(self, |v| if v > T::ZERO { v } else { T::ZERO }, Op::Relu(self.clone()))
    }

    /// `x s(x)`, the activation of the DDPM UNet (also called swish).
    #[must_use]
    pub fn silu(&self) -> Tensor<T> {
        unary(self, silu_scalar, Op::Silu(self.clone()))
    }

    /// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    #[must_use]
    pub fn gelu(&self) -> Tensor<T> {
        let (c, a, half) = (T::from_f64(GELU_C), T::from_f64(GELU_A), T::from_f64(0.5));
        unary(self, move |v| half * v * (T::ONE + (c * (v + a * v * v * v)).tanh()), Op::Gelu(self.clone()))
    }

    /// `|x|`.
    #[must_use]
    pub fn abs(&self) -> Tensor<T> {
        unary(self, T::abs, Op::Abs(self.clone()))
    }

    /// `x^e` for a scalar exponent.
    #[must_use]
    pub fn powf(&self, e: T) -> Tensor<T> {
        if e == T::from_f64(2.0) {
            // The square of every loss: a product (correctly rounded), not a
            // call into libm's pow per element. glibc's powf(x, 2) gave the same
            // bits on every f32 tried (benches/SPEED.md, session 43).
            return unary(self, |v| v * v, Op::Powf(self.clone(), e));
        }
        unary(self, move |v| v.powf(e), Op::Powf(self.clone(), e))
    }

    /// `min(max(x, lo), hi)`.
    #[must_use]
    pub fn clamp(&self, lo: T, hi: T) -> Tensor<T> {
        let f = move |v: T| {
            if v < lo {
                lo
            } else if v > hi {
                hi
            } else {
                v
            }
        };
        unary(self, f, Op::Clamp(self.clone(), lo, hi))
    }

    /// `x * mul + add` with scalars: the primitive behind every scalar form.
    #[must_use]
    pub fn affine(&self, mul: T, add: T) -> Tensor<T> {
        unary(self, move |v| v * mul + add, Op::Affine(self.clone(), mul, add))
    }

    /// `x + s`.
    #[must_use]
    pub fn add_scalar(&self, s: T) -> Tensor<T> {
        self.affine(T::ONE, s)
    }

    /// `x - s`.
    #[must_use]
    pub fn sub_scalar(&self, s: T) -> Tensor<T> {
        self.affine(T::ONE, -s)
    }

    /// `x * s`.
    #[must_use]
    pub fn mul_scalar(&self, s: T) -> Tensor<T> {
        self.affine(s, T::ZERO)
    }

    /// `x / s`.
    #[must_use]
    pub fn div_scalar(&self, s: T) -> Tensor<T> {
        self.affine(T::ONE / s, T::ZERO)
    }

    /// `x^2`.
    #[must_use]
    pub fn sqr(&self) -> Tensor<T> {
        self.powf(T::from_f64(2.0))
    }
}

// d/dx (-x) = -1
pub(crate) fn neg_backward<T: Float>(g: &Tensor<T>) -> Result<Tensor<T>> {
    Tensor::from_vec(map(&g.contiguous_data(), |v| -v), g.dims())
}

// d/dx e^x = e^x = y
pub(crate) fn exp_backward<T: Float>(y: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(y, g, |y, g| g * y)
}

// d/dx ln x = 1 / x
pub(crate) fn log_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(x, g, |x, g| g / x)
}

// d/dx sqrt(x) = 1 / (2 sqrt(x)) = 1 / (2 y)
pub(crate) fn sqrt_backward<T: Float>(y: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(y, g, |y, g| g / (y + y))
}

// d/dx tanh(x) = 1 - tanh(x)^2 = 1 - y^2
pub(crate) fn tanh_backward<T: Float>(y: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(y, g, |y, g| g * (T::ONE - y * y))
}

// d/dx s(x) = s(x) (1 - s(x)) = y (1 - y)
pub(crate) fn sigmoid_backward<T: Float>(y: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(y, g, |y, g| g * y * (T::ONE - y))
}

// d/dx max(x, 0) = 1 for x > 0, else 0. Trap: at exactly x = 0 the derivative does
// not exist; we take 0, as PyTorch does.
pub(crate) fn relu_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(x, g, |x, g| if x > T::ZERO { g } else { T::ZERO })
}

// d/dx x s(x) = s(x) + x s(x) (1 - s(x)) = s(x) (1 + x (1 - s(x)))
pub(crate) fn silu_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(x, g, silu_chain)
}

/// `silu(x) = x sigmoid(x)`.
pub(crate) fn silu_scalar<T: Float>(x: T) -> T {
    x * sigmoid_scalar(x)
}

/// `g silu'(x)`, with `silu'(x) = s (1 + x (1 - s))`, `s = sigmoid(x)`.
pub(crate) fn silu_chain<T: Float>(x: T, g: T) -> T {
    let s = sigmoid_scalar(x);
    g * s * (T::ONE + x * (T::ONE - s))
}

// y = 0.5 x (1 + tanh(u)), u = c (x + a x^3):
// dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3 a x^2)
pub(crate) fn gelu_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    let (c, a, half, three) = (T::from_f64(GELU_C), T::from_f64(GELU_A), T::from_f64(0.5), T::from_f64(3.0));
    chain(x, g, move |x, g| {
        let th = (c * (x + a * x * x * x)).tanh();
        g * (half * (T::ONE + th) + half * x * (T::ONE - th * th) * c * (T::ONE + three * a * x * x))
    })
}

// d/dx |x| = sign(x); trap: 0 at x = 0 (the subgradient PyTorch picks).
pub(crate) fn abs_backward<T: Float>(x: &Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(x, g, |x, g| {
        if x > T::ZERO {
            g
        } else if x < T::ZERO {
            -g
        } else {
            T::ZERO
        }
    })
}

// d/dx x^e = e x^(e - 1)
pub(crate) fn powf_backward<T: Float>(x: &Tensor<T>, e: T, g: &Tensor<T>) -> Result<Tensor<T>> {
    if e == T::from_f64(2.0) {
        // x^1 = x: no pow per element for a square (see `Tensor::powf`).
        return chain(x, g, move |x, g| g * e * x);
    }
    chain(x, g, move |x, g| g * e * x.powf(e - T::ONE))
}

// 1 inside [lo, hi] (bounds included, as PyTorch), 0 where the clamp is active.
pub(crate) fn clamp_backward<T: Float>(x: &Tensor<T>, lo: T, hi: T, g: &Tensor<T>) -> Result<Tensor<T>> {
    chain(x, g, move |x, g| if x >= lo && x <= hi { g } else { T::ZERO })
}

// d/dx (x mul + add) = mul
pub(crate) fn affine_backward<T: Float>(mul: T, g: &Tensor<T>) -> Result<Tensor<T>> {
    Tensor::from_vec(map(&g.contiguous_data(), move |v| v * mul), g.dims())
}
