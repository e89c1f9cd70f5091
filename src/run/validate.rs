//! Checks that run before any work: every flag against its real range, and every
//! output path against the file system, so that a mistake costs a second, not the
//! whole computation, and nothing is silently changed from what was asked.

use crate::error::{Error, Result};
use crate::run::sampling::{SamplerChoice, SamplerKind};
use std::path::{Path, PathBuf};

fn invalid(what: &'static str, reason: String) -> Error {
    Error::InvalidArgument { what, reason }
}

/// The most samples one command draws: ten times the 10,000 of an FID. They are
/// held in memory together (and `ddpm sample` draws them all in one grid).
pub const MAX_SAMPLES: usize = 100_000;

/// A number of samples for `flag`: from `least` to [`MAX_SAMPLES`].
///
/// # Errors
/// [`Error::InvalidArgument`] naming the flag, its value and its range.
pub fn sample_count(flag: &'static str, count: usize, least: usize) -> Result<()> {
    if (least..=MAX_SAMPLES).contains(&count) {
        Ok(())
    } else {
        Err(invalid(flag, format!("must be from {least} to {MAX_SAMPLES}, got {count}")))
    }
}

/// The sampler flags for a model of `timesteps` steps: DDIM and ancestral sampling
/// keep between 2 and T of its timesteps and Langevin visits as many noise levels;
/// eta is in [0, 1].
///
/// # Errors
/// [`Error::InvalidArgument`] naming the flag, its value and its range.
pub fn sampler(args: &SamplerChoice, timesteps: usize) -> Result<()> {
    if !(0.0..=1.0).contains(&args.eta) {
        return Err(invalid("--eta", format!("DDIM's eta must be in [0, 1] (0 deterministic, 1 ancestral-like), got {}", args.eta)));
    }
    let what = match args.kind {
        SamplerKind::Ddpm => "ancestral sampling keeps",
        SamplerKind::Ddim => "DDIM keeps",
        SamplerKind::Langevin => "Langevin visits",
    };
    match args.steps {
        Some(steps) if steps < 2 || steps > timesteps => {
            Err(invalid("--steps", format!("{what} at least 2 and at most T = {timesteps} of the model's timesteps, got {steps}")))
        }
        _ => Ok(()),
    }
}

/// A number that must be finite and at least zero.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag`.
pub fn finite_non_negative(flag: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(flag, format!("must be a finite number >= 0, got {value}")))
    }
}

/// An output picture: the name must end in `.png` (the only format written), and
/// the file must be writable (see [`writable_file`]).
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag` and the path.
pub fn png_output(flag: &'static str, path: &Path) -> Result<()> {
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return Err(invalid(flag, format!("{} must end in .png, the only format written", path.display())));
    }
    writable_file(flag, path)
}

/// A file that will be written: not a folder, and its folder (created if missing,
/// as the writers do) accepts a new file. Nothing is left behind by the check.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag` and the path.
pub fn writable_file(flag: &'static str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(invalid(flag, format!("{} is a folder; give a file name", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    writable_dir(flag, parent).map_err(|e| match e {
        Error::InvalidArgument { what, reason } => invalid(what, format!("cannot write {}: {reason}", path.display())),
        other => other,
    })
}

/// A folder that files will be written into: it exists or can be created, and
/// accepts a new file. The check writes (and removes) a probe in the nearest
/// existing folder, so it creates no folder.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag` and the folder.
pub fn writable_dir(flag: &'static str, dir: &Path) -> Result<()> {
    // The nearest existing ancestor decides: a file there, or a read-only folder,
    // refuses everything below it.
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => existing = p.to_path_buf(),
            None => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(invalid(flag, format!("{} is a file, not a folder", existing.display())));
    }
    let probe = existing.join(format!(".ddpm-write-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(invalid(flag, format!("{} is not writable: {e}", existing.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: SamplerKind, steps: usize, eta: f64) -> SamplerChoice {
        SamplerChoice { kind, steps: Some(steps), eta }
    }

    #[test]
    fn sampler_ranges_are_inclusive_and_nan_is_refused() {
        assert!(sampler(&args(SamplerKind::Ddim, 2, 0.0), 25).is_ok());
        assert!(sampler(&args(SamplerKind::Ddim, 25, 1.0), 25).is_ok());
        assert!(sampler(&args(SamplerKind::Ddim, 26, 0.0), 25).unwrap_err().to_string().contains("T = 25"));
        assert!(sampler(&args(SamplerKind::Langevin, 1, 0.0), 25).is_err());
        assert!(sampler(&args(SamplerKind::Ddpm, 25, 0.0), 25).is_ok());
        assert!(sampler(&args(SamplerKind::Ddpm, 26, 0.0), 25).unwrap_err().to_string().contains("ancestral sampling keeps"));
        assert!(sampler(&args(SamplerKind::Ddpm, 1, 0.0), 25).unwrap_err().to_string().contains("--steps"));
        assert!(sampler(&SamplerChoice::ANCESTRAL, 25).is_ok());
        for eta in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            assert!(sampler(&args(SamplerKind::Ddim, 10, eta), 25).unwrap_err().to_string().contains("--eta"), "{eta}");
        }
    }

    #[test]
    fn outputs_under_a_file_or_with_another_extension_are_refused() {
        let dir = std::env::temp_dir().join(format!("ddpm-validate-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.txt");
        std::fs::write(&file, b"").unwrap();
        assert!(png_output("--out", &dir.join("a.png")).is_ok());
        assert!(png_output("--out", &dir.join("new").join("deeper").join("a.png")).is_ok());
        assert!(!dir.join("new").exists(), "the check left a folder");
        assert!(png_output("--out", &dir.join("a.jpg")).unwrap_err().to_string().contains(".png"));
        assert!(png_output("--out", &file.join("a.png")).unwrap_err().to_string().contains("f.txt"));
        assert!(writable_file("--out", &dir).unwrap_err().to_string().contains("folder"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
