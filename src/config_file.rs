//! Loading a [`Config`] from TOML or JSON, as text or from a file (feature `serde`).
//!
//! The file names the fields of [`Config`] as they are in Rust, with each integration's
//! settings in a table of its own (`[listener]`, `[client_ip]`); any field left out keeps its
//! default, and an unknown field is an error (a typo must not silently mean "default").
//! Durations are human-readable: `"100ms"`, `"30s"`, `"10m"`, `"24h"`. `examples/config.toml`
//! sets every field. Each type derives its own `Deserialize` and `Serialize`, so there is no
//! second copy of the config to keep in step: what a config writes is what this module reads
//! back (the admin API's `GET /api/config` answers with it, and `PUT` takes it back).
//!
//! Rate rules default their strategy as a typical connection gate does: `connect_rate` counts
//! with `cooldown`, `request_rate` and path rules with `sliding_window`.
//!
//! Every error names the field and the reason — `path_rules[0].rate.period: invalid duration`,
//! `ipv4_prefix: must be at most 32, got 40` — and, for a syntax error or a value of the wrong
//! type, the line and column; a refused file never leaves a half-applied config.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{ConfigError, Location};

impl Config {
    /// Parses and validates a config in TOML.
    ///
    /// ```
    /// use tower_connlimit::Config;
    ///
    /// let config = Config::from_toml_str(r#"
    ///     max_conns_per_client = 10
    ///     exempt = ["10.0.0.0/8"]
    ///
    ///     [connect_rate]
    ///     events = 5
    ///     period = "1s"
    ///
    ///     [listener]
    ///     idle_timeout = "5m"
    /// "#).unwrap();
    /// assert_eq!(config.max_conns_per_client, 10);
    ///
    /// let err = Config::from_toml_str("ipv4_prefix = 40").unwrap_err();
    /// assert_eq!(err.to_string(), "invalid config: ipv4_prefix: must be at most 32, got 40");
    ///
    /// let err = Config::from_toml_str("max_conns_total = \"many\"").unwrap_err();
    /// assert_eq!(err.field(), "max_conns_total");
    /// assert_eq!((err.location().unwrap().line, err.location().unwrap().column), (1, 19));
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a syntax error, an unknown field, a value of the wrong
    /// type, or a value [`Config::validate`] refuses.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let at = |err: &toml::de::Error| err.span().map(|span| location_of(text, span.start));
        let deserializer = toml::Deserializer::parse(text).map_err(|err| {
            // A syntax error names no field, except a key given twice, which is named.
            let field = match err.span() {
                Some(span) if err.message().starts_with("duplicate key") => key_path_at(text, span),
                _ => "(toml)".to_owned(),
            };
            ConfigError::new(field, err.message()).at(at(&err))
        })?;
        let config: Config = read_fields(deserializer, |err: toml::de::Error| {
            (err.message().to_owned(), at(&err))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a config in JSON; see [`Config::from_toml_str`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as for TOML.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let describe = |err: serde_json::Error| {
            // serde_json appends " at line L column C"; the location says it apart.
            let text = err.to_string();
            let reason = match text.rfind(" at line ") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            let location = (err.line() > 0).then(|| Location {
                line: err.line(),
                column: err.column(),
            });
            (reason, location)
        };
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: Config = read_fields(&mut deserializer, describe)?;
        deserializer.end().map_err(|err| {
            let (reason, location) = describe(err);
            ConfigError::new("(json)", reason).at(location)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a config from a file: JSON when its name ends in `.json`, TOML
    /// otherwise. It reads the file once; `reload::watch` (feature `reload`) reads it again
    /// whenever it changes.
    ///
    /// ```no_run
    /// use tower_connlimit::{Config, Limiter};
    ///
    /// let limiter = Limiter::try_new(Config::from_file("limits.toml")?)?;
    /// # Ok::<(), tower_connlimit::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the field `(file)` when the file cannot be read, or as
    /// [`Config::from_toml_str`] and [`Config::from_json_str`] say.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new("(file)", format!("cannot read {}: {err}", path.display()))
        })?;
        if path.extension().is_some_and(|ext| ext == "json") {
            Config::from_json_str(&text)
        } else {
            Config::from_toml_str(&text)
        }
    }
}

/// Deserializes a `T`, naming the path to the offending field in an error, with the reason and
/// location `describe` finds in the format's own error.
fn read_fields<'de, T, D, E>(
    deserializer: D,
    describe: impl Fn(E) -> (String, Option<Location>),
) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de, Error = E>,
    E: serde::de::Error,
{
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let (reason, location) = describe(err.into_inner());
        ConfigError::new(field, reason).at(location)
    })
}

/// The dotted path of the TOML key at `span` (`ban.within`), or of the table header there
/// (`listener`): the text of the key, under the last table header above it.
fn key_path_at(text: &str, span: std::ops::Range<usize>) -> String {
    let unquote = |s: &str| {
        s.trim()
            .trim_matches(['[', ']'])
            .trim()
            .replace(['"', '\''], "")
    };
    let Some(key) = text.get(span.clone()) else {
        return "(toml)".to_owned();
    };
    let key = unquote(key);
    let before = &text[..span.start];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    if text[line_start..].trim_start().starts_with('[') {
        return key;
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| unquote(header.split('#').next().unwrap_or(header)));
    match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    }
}

/// Where byte `offset` of `text` is (clamped to its end; inside a character, at its start).
fn location_of(text: &str, offset: usize) -> Location {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_named_with_its_table() {
        for (text, field, line) in [
            ("max_conns_per_client = 1\nmax_conns_per_client = 2\n", "max_conns_per_client", 2),
            ("[listener]\nidle_timeout = \"1s\"\n[listener]\n", "listener", 3),
            (
                "[ban] # bans\nmax_violations = 1\nwithin = \"1s\"\nban_for = \"1s\"\nwithin = \"2s\"\n",
                "ban.within",
                5,
            ),
        ] {
            let err = Config::from_toml_str(text).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert_eq!(err.location().map(|l| l.line), Some(line), "{err}");
            assert!(err.to_string().contains("duplicate key"), "{err}");
        }
    }

    #[test]
    fn locations_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(location_of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(
            location_of(text, text.find('x').unwrap()),
            Location { line: 2, column: 6 }
        );
        assert_eq!(location_of(text, 1000).line, 3);
        assert_eq!(
            location_of(text, text.find('é').unwrap() + 1),
            Location { line: 2, column: 2 }
        );
    }
}
