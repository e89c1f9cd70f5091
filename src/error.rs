//! The one error type of the `course` crate.
//!
//! Every message says where the problem is: a file error names the file and the byte
//! offset, an index error names the index and the length it had to stay below. No input
//! file, index or argument makes the crate panic; it returns one of these instead.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the `course` crate.
#[derive(Debug)]
pub enum Error {
    /// The operating system refused to open or read a file.
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A file's bytes do not follow its format (IDX, MNIST).
    Format {
        /// The file, as shown to the user; a gzip file says that its offsets count
        /// decompressed bytes.
        file: String,
        /// The byte offset where the problem is.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An index into a dataset is past its end.
    IndexOutOfRange {
        /// What was indexed, e.g. `"MNIST train split"`.
        what: String,
        /// The index asked for.
        index: usize,
        /// The number of items; valid indices are `0..len`.
        len: usize,
    },
    /// An argument outside its domain, e.g. a batch size of 0 or an unknown dataset name.
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A tensor op failed.
    Tensor(tensor::Error),
    /// A model, optimizer or checkpoint error.
    Nn(nn::Error),
    /// A diffusion-math error.
    Ddpm(ddpm::Error),
    /// Training produced a non-finite loss or gradient; nothing was written after it.
    Diverged {
        /// The step at which it happened (1-based).
        step: usize,
        /// What was not finite.
        what: String,
        /// The last checkpoint with finite weights, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// A model predicted NaN or infinity, so no sample or bound was written: the
    /// weights are broken or the model diverged.
    NonFinite {
        /// What was not finite.
        what: String,
    },
    /// A signal (Ctrl-C, SIGTERM) stopped the command.
    Interrupted {
        /// What was saved, and how to continue.
        what: String,
    },
}

/// The exit code of an interrupted command: 128 + SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

impl Error {
    /// The process exit code: 1 for a run that diverged (or a model that predicts
    /// NaN), 130 for an interrupted one, 2 for bad input (flags, files).
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Diverged { .. } | Error::NonFinite { .. } => 1,
            Error::Interrupted { .. } => i32::from(EXIT_INTERRUPTED),
            _ => 2,
        }
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

impl From<nn::Error> for Error {
    fn from(e: nn::Error) -> Self {
        Error::Nn(e)
    }
}

impl From<ddpm::Error> for Error {
    fn from(e: ddpm::Error) -> Self {
        Error::Ddpm(e)
    }
}

impl Error {
    /// A [`Error::Format`] error at `offset` of `file`.
    pub(crate) fn format(file: &str, offset: u64, reason: impl Into<String>) -> Self {
        Error::Format { file: file.to_owned(), offset, reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => {
                // Some writers already put the path in the message; say it once.
                let (path, message) = (path.display().to_string(), source.to_string());
                if message.starts_with(&path) {
                    write!(f, "{message}")
                } else {
                    write!(f, "{path}: {message}")
                }
            }
            Error::Format { file, offset, reason } => {
                write!(f, "{file}: at byte offset {offset}: {reason}")
            }
            Error::IndexOutOfRange { what, index, len } => {
                write!(f, "index {index} out of range for {what} of length {len}")
            }
            Error::InvalidArgument { what, reason } => write!(f, "invalid {what}: {reason}"),
            Error::Tensor(e) => write!(f, "{e}"),
            Error::Nn(e) => write!(f, "{e}"),
            Error::Ddpm(e) => write!(f, "{e}"),
            Error::Diverged { step, what, last_checkpoint } => {
                write!(f, "training diverged at step {step}: {what} is not finite; ")?;
                match last_checkpoint {
                    Some(p) => write!(f, "the last good checkpoint is {}", p.display()),
                    None => write!(f, "no checkpoint had been written yet"),
                }
            }
            Error::NonFinite { what } => {
                write!(f, "{what} is not finite (NaN or infinity): the weights are broken or the model diverged; nothing was written")
            }
            Error::Interrupted { what } => write!(f, "interrupted: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tensor(e) => Some(e),
            Error::Nn(e) => Some(e),
            Error::Ddpm(e) => Some(e),
            _ => None,
        }
    }
}
