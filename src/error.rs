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
}

impl Error {
    /// A [`Error::Format`] error at `offset` of `file`.
    pub(crate) fn format(file: &str, offset: u64, reason: impl Into<String>) -> Self {
        Error::Format {
            file: file.to_owned(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format {
                file,
                offset,
                reason,
            } => {
                write!(f, "{file}: at byte offset {offset}: {reason}")
            }
            Error::IndexOutOfRange { what, index, len } => {
                write!(f, "index {index} out of range for {what} of length {len}")
            }
            Error::InvalidArgument { what, reason } => write!(f, "invalid {what}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
