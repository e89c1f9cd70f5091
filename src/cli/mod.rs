//! The top layer: the command line. Nothing below imports it.
//!
//! - [`args`]: the clap types, one per subcommand.

pub mod args;
