//! [`ConfigError`]: a refused config, naming the field and the reason.

use std::fmt;

/// A refused config: which field, why, and, for a config file, where.
///
/// ```
/// use tower_connlimit::{Config, Limiter};
///
/// let err = Limiter::try_new(Config { ipv4_prefix: 33, ..Config::default() }).unwrap_err();
/// assert_eq!(err.field(), "ipv4_prefix");
/// assert_eq!(err.to_string(), "invalid config: ipv4_prefix: must be at most 32, got 33");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: String,
    location: Option<Location>,
}

/// Where in a config file an error was found: a 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The line, from 1.
    pub line: usize,
    /// The column, in characters from 1.
    pub column: usize,
}

impl ConfigError {
    /// An error about `field` (a path such as `overrides[2].network`).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
            location: None,
        }
    }

    /// A count that must not be 0 where 0 cannot mean "unlimited" (a rate's events, a ban's
    /// violations, a minimum receive rate): every such field says the same, and names the
    /// setting to leave out instead.
    pub(crate) fn zero_count(field: impl Into<String>, leave_out: &str) -> Self {
        ConfigError::new(
            field,
            format!(
                "must be at least 1: 0 cannot mean unlimited here (leave `{leave_out}` out for no \
                 limit)"
            ),
        )
    }

    /// The offending field, as a path into the config (`ipv6_prefix`, `overrides[1].network`,
    /// `listener.idle_timeout`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// For an error found while reading a config file, where in the file.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// The same error, found at `location` of a config file.
    #[cfg(feature = "serde")]
    pub(crate) fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// The same error about a field of the section `section` (`listener`, `client_ip`).
    pub(crate) fn in_section(mut self, section: &str) -> Self {
        self.field = format!("{section}.{}", self.field);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {}: {}", self.field, self.reason)?;
        if let Some(Location { line, column }) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "serde")]
    #[test]
    fn the_location_follows_the_reason() {
        let err = ConfigError::new("x", "bad").at(Some(Location { line: 3, column: 7 }));
        assert_eq!(err.to_string(), "invalid config: x: bad (line 3, column 7)");
    }

    #[test]
    fn section_fields_are_named_by_their_path() {
        assert_eq!(
            ConfigError::new("idle_timeout", "bad")
                .in_section("listener")
                .field(),
            "listener.idle_timeout"
        );
    }
}
