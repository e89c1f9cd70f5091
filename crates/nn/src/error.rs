//! The one error type of the `nn` crate.
//!
//! Messages say where the problem is: a file error names the file, and the tensor and
//! the byte offset where they are known.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the `nn` crate.
#[derive(Debug)]
pub enum Error {
    /// The operating system refused to open, read, write or rename a file.
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A file's bytes do not follow its format (e.g. safetensors).
    Format {
        /// The file, as shown to the user.
        file: String,
        /// The tensor concerned, if the problem is in one tensor's entry or data.
        tensor: Option<String>,
        /// The byte offset in the file, if the problem is at a known place.
        offset: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A tensor op failed (a shape or argument error from the tensor crate), e.g.
    /// loading a checkpoint whose parameters do not fit the model.
    Tensor(tensor::Error),
    /// A tensor cannot be written as it is, e.g. its data does not fill its shape.
    InvalidTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { file, tensor, offset, reason } => {
                write!(f, "{file}: ")?;
                if let Some(tensor) = tensor {
                    write!(f, "tensor {tensor:?}: ")?;
                }
                if let Some(offset) = offset {
                    write!(f, "at byte offset {offset}: ")?;
                }
                f.write_str(reason)
            }
            Error::Tensor(e) => write!(f, "{e}"),
            Error::InvalidTensor { name, reason } => write!(f, "tensor {name:?}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
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
