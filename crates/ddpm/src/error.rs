//! The ddpm crate's one error type. Messages name the function and what was wrong
//! with its input (a timestep past the schedule, a batch of the wrong size, a bad
//! schedule), and wrap the tensor crate's errors unchanged.

use std::fmt;

/// Everything that can go wrong in the diffusion math.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A tensor op failed (shapes, broadcasting...); the inner error names the op.
    Tensor(tensor::Error),
    /// A timestep index is not smaller than the number of diffusion steps `T`.
    TimestepOutOfRange { op: &'static str, t: usize, num_timesteps: usize },
    /// One timestep per batch item is needed: `timesteps` values were given for a
    /// tensor of shape `dims`.
    BatchMismatch { op: &'static str, timesteps: usize, dims: Vec<usize> },
    /// A noise schedule that the math cannot use (a beta outside (0, 1], T < 2...).
    InvalidSchedule { msg: String },
    /// Any other argument outside what the function accepts.
    InvalidArgument { op: &'static str, msg: String },
}

/// The ddpm crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Tensor(e) => write!(f, "{e}"),
            Error::TimestepOutOfRange { op, t, num_timesteps } => write!(
                f,
                "{op}: timestep {t} is out of range: the schedule has T = {num_timesteps} steps, \
                 so code indices run from 0 to {}",
                num_timesteps.saturating_sub(1)
            ),
            Error::BatchMismatch { op, timesteps, dims } => {
                write!(f, "{op}: {timesteps} timesteps given for a batch of shape {dims:?} (one timestep per batch item is needed)")
            }
            Error::InvalidSchedule { msg } => write!(f, "invalid noise schedule: {msg}"),
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Tensor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}
