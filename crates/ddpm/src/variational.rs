//! The variational transform (notes 002 §2.3.1): a concave function is the lower
//! envelope of its tangents, so `ln x = min_lambda { lambda x + b(lambda) }`, and every
//! tangent is an upper bound on `ln`. Taking expectations of the tangent at
//! `lambda = 1 / E[w]` gives Jensen's inequality `E[ln w] <= ln E[w]`, which with
//! `w = p_theta(x_{0:T}) / q(x_{1:T} | x_0)` is the variational bound (notes 002 §2.3.2).
//!
//! Shapes: scalars (f64).

use crate::error::{Error, Result};

fn check_positive(op: &'static str, name: &str, value: f64) -> Result<()> {
    if value.is_nan() || value <= 0.0 {
        return Err(Error::InvalidArgument { op, msg: format!("{name} must be positive, got {value}") });
    }
    Ok(())
}

/// The intercept b(lambda) of the tangent of `ln` with slope lambda (notes 002 §2.3.1):
/// `d/dx (lambda x + b - ln x) = 0` at the touching point `x = 1 / lambda`, where the tangent
/// meets `ln`, so `b(lambda) = ln(1 / lambda) - lambda / lambda = -ln lambda - 1`
/// (the concave conjugate of `ln`). The note's `ln` is the natural logarithm.
///
/// # Errors
/// [`Error::InvalidArgument`] for lambda <= 0 (`ln` has only positive slopes).
pub fn log_tangent_intercept(lambda: f64) -> Result<f64> {
    check_positive("log_tangent_intercept", "the slope lambda", lambda)?;
    Ok(-lambda.ln() - 1.0)
}

/// The tangent of `ln` with slope lambda at `x`: `g_lambda(x) = lambda x - ln lambda - 1`
/// (notes 002 §2.3.1). Since `ln` is concave, `g_lambda(x) >= ln x` for every lambda > 0,
/// with equality at `lambda = 1 / x`: `ln x = min_lambda g_lambda(x)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for lambda <= 0 or x <= 0.
pub fn log_tangent(lambda: f64, x: f64) -> Result<f64> {
    check_positive("log_tangent", "x", x)?;
    Ok(lambda * x + log_tangent_intercept(lambda)?)
}

/// The slope of the tangent that touches `ln` at `x`, the minimiser of
/// `lambda -> g_lambda(x)`: `lambda*(x) = 1 / x` (notes 002 §2.3.1, "x = 1 / lambda").
///
/// # Errors
/// [`Error::InvalidArgument`] for x <= 0.
pub fn log_tangent_slope(x: f64) -> Result<f64> {
    check_positive("log_tangent_slope", "x", x)?;
    Ok(1.0 / x)
}
