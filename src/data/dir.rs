//! Where the data lives: the folder holding `mnist/` (the four IDX files) and
//! `classifier.safetensors`, i.e. the checkout's `data/`.
//!
//! In order: `--data-dir`, then the `DDPM_DATA_DIR` environment variable, then the
//! `data/` folder of the checkout the executable was built in (found by walking up
//! from the executable, so a moved checkout still finds its data), then the
//! checkout's path at build time. Every error names the folder and where it came
//! from.

use crate::data::mnist::{Mnist, MnistSplit, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming the data folder.
pub const ENV_VAR: &str = "DDPM_DATA_DIR";

static FLAG: OnceLock<PathBuf> = OnceLock::new();

/// Records `--data-dir` for the rest of the process (called once, by `main`).
pub fn set_flag(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = FLAG.set(dir);
    }
}

/// The data folder and where it came from, for error messages.
#[must_use]
pub fn resolve() -> (PathBuf, String) {
    if let Some(dir) = FLAG.get() {
        return (dir.clone(), "--data-dir".into());
    }
    if let Some(dir) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return (PathBuf::from(dir), ENV_VAR.into());
    }
    let beside_executable =
        std::env::current_exe().ok().and_then(|exe| exe.ancestors().skip(1).map(|a| a.join("data")).find(|d| d.join("mnist").is_dir()));
    match beside_executable {
        Some(dir) => (dir, "the checkout of the executable".into()),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
            format!("the default; set --data-dir or {ENV_VAR} to the folder holding mnist/ and classifier.safetensors"),
        ),
    }
}

/// One MNIST split from `<data>/mnist`.
///
/// # Errors
/// The folder or a file is missing (named, with where the folder came from), or a
/// file is corrupt.
pub fn load_mnist(split: Split) -> Result<MnistSplit> {
    let (dir, source) = resolve();
    let mnist = dir.join("mnist");
    if !mnist.is_dir() {
        return Err(Error::InvalidArgument { what: "data folder", reason: format!("{} (from {source}) does not exist", mnist.display()) });
    }
    Mnist::load(&mnist, split)
}

/// `<data>/classifier.safetensors`, the default of `--classifier`.
#[must_use]
pub fn classifier_path() -> PathBuf {
    resolve().0.join("classifier.safetensors")
}
