//! One process per run folder.
//!
//! `run.lock` in the folder holds the pid of the process training there. It is
//! created with `create_new` (atomic on every file system we write to), so of two
//! processes starting at once exactly one gets it; the other is told which pid holds
//! the folder. The lock is removed when the run ends; a lock left by a process that
//! was killed (SIGKILL, a power cut) names a pid that no longer runs and is taken over.
//!
//! Holding the lock also means that any temporary file in the folder belongs to a
//! write that was killed half-way, so [`remove_stale_temp_files`] may delete them.

use crate::error::{Error, Result};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// The lock on a run folder, released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on the existing folder `dir`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the pid when a live process holds it;
    /// [`Error::Io`] when the lock file cannot be written.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let io = |source| Error::Io { path: path.clone(), source };
        // Two attempts: the second after removing a stale lock.
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(std::process::id().to_string().as_bytes()).map_err(io)?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match holder(&path) {
                    Some(pid) if process_is_alive(pid) => {
                        return Err(Error::InvalidArgument {
                            what: "--run",
                            reason: format!(
                                "{} is in use by process {pid}, which is training there (its lock is {}; delete it only if no such process runs)",
                                dir.display(),
                                path.display()
                            ),
                        });
                    }
                    _ => match fs::remove_file(&path) {
                        Ok(()) => {}
                        // Another process took the stale lock over first; the next
                        // attempt reports it.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    },
                },
                Err(e) => return Err(io(e)),
            }
        }
        Err(Error::InvalidArgument { what: "--run", reason: format!("{} is being taken by another process", dir.display()) })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The pid written in a lock file. A process that has just created the file may not
/// have written its pid yet, so an empty file is read again after a moment.
fn holder(path: &Path) -> Option<u32> {
    for _ in 0..20 {
        match fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return text.trim().parse().ok(),
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

/// Whether `pid` is a running process. Linux lists them under `/proc`; elsewhere
/// we cannot tell, and assume it runs (the error then says how to clear the lock).
fn process_is_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    match fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // A zombie ('Z') has exited and only waits for its parent to read its status.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Deletes the temporary files that killed writes left in `dir` and its `samples/`
/// (`*.tmp`: the checkpoint's `.checkpoint.safetensors.<pid>-<n>.tmp`, `config.tmp`,
/// `metrics.tmp`, `*.png.tmp`). Call it only while holding the folder's [`RunLock`].
/// Returns the files removed.
///
/// # Errors
/// A folder that cannot be listed or a file that cannot be removed.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for folder in [dir.to_path_buf(), dir.join("samples")] {
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for entry in entries {
            let path = entry.map_err(|source| Error::Io { path: folder.clone(), source })?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_is_named_and_a_dead_one_is_replaced() {
        let dir = std::env::temp_dir().join(format!("ddpm-lock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        let e = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        // pid 0 is never a user process.
        fs::write(dir.join(LOCK_FILE), "0").unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap(), std::process::id().to_string());
        drop(lock);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A lock that cannot be created or cleared is an I/O error naming the lock
    /// file, not a report of another process.
    #[test]
    fn a_lock_that_cannot_be_written_or_removed_is_an_io_error() {
        let dir = std::env::temp_dir().join(format!("ddpm-lock-io-test-{}", std::process::id()));
        let e = RunLock::acquire(&dir.join("missing")).unwrap_err();
        assert!(matches!(&e, Error::Io { path, .. } if path.ends_with("missing/run.lock")), "{e}");
        // A folder named run.lock: it exists, names no pid, and cannot be removed as a file.
        fs::create_dir_all(dir.join(LOCK_FILE)).unwrap();
        let e = RunLock::acquire(&dir).unwrap_err();
        assert!(matches!(&e, Error::Io { path, .. } if path.ends_with(LOCK_FILE)), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// Acquires the lock on a fresh folder `name` whose lock file exists but is
    /// empty (its holder has not written its pid yet), while another thread
    /// runs `meanwhile` on that file 50 ms in: `holder` reads it again for up to
    /// 20 x 10 ms. Returns the folder (to be removed) and the outcome.
    fn acquire_while_the_pid_is_awaited(name: &str, meanwhile: fn(&Path)) -> (PathBuf, Result<RunLock>) {
        let dir = std::env::temp_dir().join(format!("ddpm-lock-{name}-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(LOCK_FILE);
        fs::write(&path, "").unwrap();
        let other = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            meanwhile(&path);
        });
        let lock = RunLock::acquire(&dir);
        other.join().unwrap();
        (dir, lock)
    }

    /// A live pid written while the lock is read again keeps the folder for its
    /// process.
    #[test]
    fn a_pid_written_while_it_is_awaited_holds_the_lock() {
        let (dir, lock) = acquire_while_the_pid_is_awaited("late", |path| fs::write(path, std::process::id().to_string()).unwrap());
        let e = lock.unwrap_err().to_string();
        assert!(e.contains(&format!("in use by process {}", std::process::id())), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A lock that disappears while it is read again (its holder ended, or
    /// another process cleared it) is taken.
    #[test]
    fn a_lock_cleared_while_its_pid_is_awaited_is_taken() {
        let (dir, lock) = acquire_while_the_pid_is_awaited("race", |path| fs::remove_file(path).unwrap());
        assert!(lock.is_ok(), "{:?}", lock.unwrap_err());
        assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap(), std::process::id().to_string());
        drop(lock);
        fs::remove_dir_all(dir).unwrap();
    }
}
