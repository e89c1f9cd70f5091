//! Ctrl-C (SIGINT), SIGTERM and SIGHUP: what `kill`, `timeout`, containers and
//! schedulers send, handled alike.
//!
//! A command that trains asks for a graceful stop: the first signal sets a flag that
//! the training loop reads after each step, so it saves a checkpoint and exits with
//! [`EXIT_INTERRUPTED`]; a second signal quits at once. Any other command has nothing
//! to save (its pictures are written through a temporary file and a rename, so a
//! half-written output is never left), and quits at the first signal.

pub use crate::error::EXIT_INTERRUPTED;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Installs the handler for the whole process. With `graceful`, returns the flag
/// the first signal sets; without, every signal ends the process with code 130.
///
/// # Errors
/// The handler cannot be installed (a second call, or the OS refuses).
pub fn install(graceful: bool) -> Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || {
        if graceful && !flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping after this step and saving a checkpoint (signal again to quit at once)");
        } else {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    })
    .map_err(|e| Error::InvalidArgument { what: "signal handler", reason: e.to_string() })?;
    Ok(interrupt)
}
