//! The one error type of the `nn` crate: every public function of the crate returns it.
//!
//! Messages say where the problem is: a layer error names the layer or function and
//! the shapes, a parameter error names the parameter, a file error names the file,
//! and the tensor and the byte offset where they are known. A failed tensor op inside
//! a layer is wrapped unchanged, so its message still names the op and the shapes.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the `nn` crate.
#[derive(Debug)]
pub enum Error {
    /// A tensor op inside a layer failed; the inner error names the op and the shapes.
    Tensor(tensor::Error),
    /// An input a layer or model cannot take, e.g. `x_t` not `[B, C, H, W]` for the
    /// UNet or a timestep count that is not the batch size.
    ShapeMismatch {
        /// The layer's function, e.g. `"UNet::forward"`.
        op: &'static str,
        /// The shapes given and the ones expected.
        msg: String,
    },
    /// An argument outside what a layer, model or configuration accepts (a dropout
    /// rate of 1, groups that do not divide the channels, an odd embedding size...).
    InvalidArgument {
        /// The function or configuration, e.g. `"GroupNorm::new"`, `"UNetConfig"`.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Named tensors that do not fit a model's parameters: a weight missing, unknown,
    /// given twice or of another shape, a gradient or optimizer state of another shape
    /// than its parameter, an optimizer state entry of an unknown kind.
    Parameter {
        /// The function, e.g. `"load_named_params"`, `"optimizer step"`, `"Ema"`.
        op: &'static str,
        /// The parameter's (or the state entry's) full name, e.g. `out.conv.weight`.
        name: String,
        /// What is wrong with it.
        msg: String,
    },
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
            Error::Tensor(e) => write!(f, "{e}"),
            Error::ShapeMismatch { op, msg } => write!(f, "{op}: shape mismatch: {msg}"),
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::Parameter { op, name, msg } => write!(f, "{op}: {name}: {msg}"),
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

impl Error {
    /// This error as the tensor crate's, for a caller whose contract is
    /// `tensor::Result`: the `ddpm` crate's `NoisePredictor`, which sits on `tensor`
    /// beside this crate and does not know it. What a forward pass can return comes
    /// back with its message unchanged: a tensor error as it was, an input shape error
    /// as the tensor crate's `ShapeMismatch`, an argument or parameter error as its
    /// `InvalidArgument`, all with the same op; a file error keeps its message.
    #[must_use]
    pub fn into_tensor_error(self) -> tensor::Error {
        match self {
            Error::Tensor(e) => e,
            Error::ShapeMismatch { op, msg } => tensor::Error::ShapeMismatch { op, msg },
            Error::InvalidArgument { op, msg } => tensor::Error::InvalidArgument { op, msg },
            Error::Parameter { op, name, msg } => tensor::Error::InvalidArgument { op, msg: format!("{name}: {msg}") },
            file_error => tensor::Error::InvalidArgument { op: "nn", msg: file_error.to_string() },
        }
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_pass_error_keeps_its_message_as_a_tensor_error() {
        let errors = [
            Error::Tensor(tensor::Error::Broadcast { op: "add", lhs: vec![2, 3], rhs: vec![4] }),
            Error::ShapeMismatch { op: "UNet::forward", msg: "x_t [2, 3] with 2 timesteps".into() },
            Error::InvalidArgument { op: "timestep_embedding", msg: "dim must be even and at least 4, got 3".into() },
            Error::Parameter { op: "Ema", name: "out.conv.weight".into(), msg: "not in the average".into() },
        ];
        for error in errors {
            let message = error.to_string();
            assert_eq!(error.into_tensor_error().to_string(), message);
        }
    }

    #[test]
    fn wrapped_errors_are_handed_back_as_the_source() {
        // A caller walking the error chain (anyhow, `ddpm`'s own report) reaches the
        // operating system's or the tensor crate's error; the others are the root.
        use std::error::Error as _;
        let io = Error::Io { path: "runs/quick".into(), source: io::Error::new(io::ErrorKind::NotFound, "no such file") };
        assert_eq!(io.source().map(ToString::to_string).as_deref(), Some("no such file"));
        let inner = tensor::Error::Broadcast { op: "add", lhs: vec![2, 3], rhs: vec![4] };
        let message = inner.to_string();
        assert_eq!(Error::Tensor(inner).source().map(ToString::to_string), Some(message));
        assert!(Error::InvalidArgument { op: "GroupNorm::new", msg: "5 groups".into() }.source().is_none());
    }
}
