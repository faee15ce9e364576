//! [`PathRule`]: an extra rate for the requests to some paths.

use crate::error::ConfigError;
use crate::rate::RateLimit;

/// An extra rate for requests to some paths: `/login`, `/api/`.
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{rate::PathRule, RateLimit};
///
/// // 5 login attempts a minute per client, POST only.
/// let rule = PathRule::exact("/login", RateLimit::new(5, Duration::from_secs(60))).method("POST");
/// assert!(rule.matches("POST", "/login"));
/// assert!(!rule.matches("GET", "/login"));
/// ```
///
/// In a config file (feature `serde`): `path`, `match` (`"exact"`, the default, or `"prefix"`),
/// an optional `method`, `rate`, and an optional `name`.
///
/// In a fleet (feature `redis`), nodes share a rule's counts under its name when it has one,
/// and otherwise under a hash of the whole rule (path, match, method and rate): nodes on
/// different configs, as in a rolling deploy, never mix the counts of different rules, and
/// a named rule keeps sharing its counts while its rate is changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct PathRule {
    /// The path, or path prefix, the rule applies to.
    pub path: String,
    /// Whether `path` is matched exactly or as a prefix.
    #[cfg_attr(feature = "serde", serde(rename = "match", default))]
    pub matching: PathMatch,
    /// Only requests with this method (`"POST"`; methods are case-sensitive), or any method
    /// when `None`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub method: Option<String>,
    /// The rate each client may send matching requests at.
    pub rate: RateLimit,
    /// A name for the rule, unique among the path rules: what a fleet shares its counts
    /// under. Letters, digits, `-`, `_` and `.`, at most 64 of them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub name: Option<String>,
}

/// How a [`PathRule`] matches a request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum PathMatch {
    /// The request path equals the rule's path.
    #[default]
    Exact,
    /// The request path is the rule's path or lies below it, segment-wise: `/api` matches `/api`,
    /// `/api/` and `/api/users`, but not `/apix`.
    Prefix,
}

impl PathRule {
    /// A rule for exactly `path`.
    pub fn exact(path: impl Into<String>, rate: RateLimit) -> Self {
        PathRule {
            path: path.into(),
            matching: PathMatch::Exact,
            method: None,
            rate,
            name: None,
        }
    }

    /// A rule for `path` and every path below it.
    pub fn prefix(path: impl Into<String>, rate: RateLimit) -> Self {
        PathRule {
            matching: PathMatch::Prefix,
            ..Self::exact(path, rate)
        }
    }

    /// The same rule, for `method` only: a name such as `"POST"`, or an `http::Method`.
    pub fn method(mut self, method: impl AsRef<str>) -> Self {
        self.method = Some(method.as_ref().to_owned());
        self
    }

    /// The same rule, named `name`: see [`PathRule::name`](PathRule#structfield.name).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether a request with `method` to `path` falls under this rule.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        match self.matching {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => match path.strip_prefix(self.path.as_str()) {
                Some(rest) => rest.is_empty() || self.path.ends_with('/') || rest.starts_with('/'),
                None => false,
            },
        }
    }

    pub(crate) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(
                format!("path_rules[{i}].path"),
                format!("{:?} must start with '/'", self.path),
            ));
        }
        if let Some(method) = &self.method {
            if !is_token(method) {
                return Err(ConfigError::new(
                    format!("path_rules[{i}].method"),
                    format!("{method:?} is not an HTTP method"),
                ));
            }
        }
        if let Some(name) = &self.name {
            let fits = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
            if name.is_empty() || name.len() > 64 || !name.bytes().all(fits) {
                return Err(ConfigError::new(
                    format!("path_rules[{i}].name"),
                    format!("{name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        self.rate.validate(&format!("path_rules[{i}].rate"))
    }
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s), as a method name must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_http_tokens() {
        assert!(is_token("PURGE") && is_token("M-SEARCH") && !is_token("") && !is_token("GE T"));
    }

    #[test]
    fn prefix_rules_match_whole_segments() {
        let rule = PathRule::prefix("/api", RateLimit::new(1, std::time::Duration::from_secs(1)));
        for path in ["/api", "/api/", "/api/users"] {
            assert!(rule.matches("GET", path), "{path}");
        }
        assert!(!rule.matches("GET", "/apix"));
    }
}
