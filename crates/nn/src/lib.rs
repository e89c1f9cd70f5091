//! placeholder

pub mod error;
pub mod safetensors;

pub use error::{Error, Result};
