//! The one spelling of each choice the math offers (schedule, variance,
//! parameterisation, objective): the names the command line accepts and the run's
//! `config.json` stores. Each enum lists its names once, in a `NAMES` table that
//! both `FromStr` and `Display` read.

use crate::error::{Error, Result};

/// The value named `name` in `names`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `what` and listing the names it accepts.
pub(crate) fn parse<T: Copy>(what: &'static str, names: &[(&str, T)], name: &str) -> Result<T> {
    match names.iter().find(|(n, _)| *n == name) {
        Some(&(_, value)) => Ok(value),
        None => {
            let expected: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
            Err(Error::InvalidArgument { op: what, msg: format!("unknown name {name:?} (expected one of {})", expected.join(", ")) })
        }
    }
}

/// The name of `value` in `names` (each table lists every variant).
pub(crate) fn name_of<T: PartialEq>(names: &[(&'static str, T)], value: &T) -> &'static str {
    names.iter().find(|(_, v)| v == value).map_or("?", |(n, _)| n)
}

/// `FromStr` and `Display` for an enum with a `NAMES` table.
macro_rules! by_name {
    ($kind:ty, $what:literal) => {
        impl std::str::FromStr for $kind {
            type Err = crate::error::Error;
            fn from_str(name: &str) -> crate::error::Result<Self> {
                crate::names::parse($what, &Self::NAMES, name)
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(crate::names::name_of(&Self::NAMES, self))
            }
        }
    };
}
pub(crate) use by_name;
