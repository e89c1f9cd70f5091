//! The tensor crate's one error type. Every message names the op and the shapes
//! involved, so a student who feeds a wrong shape sees what was wrong and where.

use std::fmt;

/// Everything that can go wrong in a tensor op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Two shapes cannot be broadcast together (NumPy rules).
    Broadcast { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },
    /// Shapes that must agree do not (matmul inner dims, conv channels, cat...).
    ShapeMismatch { op: &'static str, msg: String },
    /// An axis index is not smaller than the rank.
    AxisOutOfRange { op: &'static str, axis: usize, rank: usize },
    /// A reshape (or a constructor) asked for a different number of elements.
    ElementCount { op: &'static str, from: Vec<usize>, to: Vec<usize> },
    /// An argument is outside what the op accepts (a zero stride, an index past the end...).
    InvalidArgument { op: &'static str, msg: String },
    /// `backward()` was called on something it cannot start from.
    Backward { msg: String },
}

/// The tensor crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Broadcast { op, lhs, rhs } => {
                write!(f, "{op}: cannot broadcast shape {lhs:?} with shape {rhs:?}")
            }
            Error::ShapeMismatch { op, msg } => write!(f, "{op}: shape mismatch: {msg}"),
            Error::AxisOutOfRange { op, axis, rank } => {
                write!(f, "{op}: axis {axis} is out of range for a tensor of rank {rank}")
            }
            Error::ElementCount { op, from, to } => write!(
                f,
                "{op}: shape {from:?} has {} elements but {to:?} needs {}",
                from.iter().product::<usize>(),
                to.iter().product::<usize>()
            ),
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::Backward { msg } => write!(f, "backward: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
