//! The `RateLimit-Policy` and `RateLimit` response header fields of the IETF's
//! draft-ietf-httpapi-ratelimit-headers (revision 10), made from a [`Quota`].
//!
//! Two policies, each sent only when it applies to the request:
//!
//! - `"requests"`: the request rate, `q` events per `w` seconds (a period that is not a whole
//!   number of seconds is told as the next whole second, with the same `q`: a client that
//!   paces by it never goes faster than the rule);
//! - `"concurrency"`: the in-flight limit, with `qu="concurrent-requests"`.
//!
//! `RateLimit` tells what is left (`r`) and, for the rate, `t`: with none left, the seconds
//! until one more request is admitted, which a refusal's `Retry-After` never precedes (it is
//! rounded up from the same wait); with some left, the seconds until the rule has forgotten
//! every request so far.
//!
//! ```text
//! RateLimit-Policy: "requests";q=100;w=60, "concurrency";q=10;qu="concurrent-requests"
//! RateLimit: "requests";r=42;t=17, "concurrency";r=9
//! ```

use std::fmt::Write;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::rate::Quota;

/// `RateLimit-Policy`.
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
static LIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds the two fields for `quota` to `headers`, when any policy applies.
pub(crate) fn insert(headers: &mut HeaderMap, quota: &Quota) {
    let (mut policy, mut limit) = (String::new(), String::new());
    let mut separator = "";
    if let Some(rate) = &quota.rate {
        let w = whole_secs(rate.rule.period);
        let t = whole_secs(rate.reset);
        let _ = write!(policy, "\"requests\";q={};w={w}", rate.rule.events);
        let _ = write!(limit, "\"requests\";r={};t={t}", rate.remaining);
        separator = ", ";
    }
    if let Some(in_flight) = &quota.in_flight {
        let _ = write!(
            policy,
            "{separator}\"concurrency\";q={};qu=\"concurrent-requests\"",
            in_flight.limit
        );
        let _ = write!(
            limit,
            "{separator}\"concurrency\";r={}",
            in_flight.remaining
        );
    }
    if policy.is_empty() {
        return;
    }
    // Only ASCII digits, letters, quotes and punctuation: always a valid header value.
    if let (Ok(policy), Ok(limit)) = (HeaderValue::try_from(policy), HeaderValue::try_from(limit)) {
        headers.insert(POLICY.clone(), policy);
        headers.insert(LIMIT.clone(), limit);
    }
}

/// `d` in whole seconds, rounded up; at least 1 (the draft's `w` is a non-zero integer).
fn whole_secs(d: Duration) -> u64 {
    d.as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{InFlightQuota, RateQuota};
    use crate::RateLimit;

    /// A bare item of RFC 9651 as the draft's fields use them.
    #[derive(Debug, PartialEq)]
    enum Bare {
        Integer(i64),
        String(String),
        Token(String),
        Bytes(String),
    }

    /// A list member: its bare item and its parameters, in order.
    type Item = (Bare, Vec<(String, Bare)>);

    /// Parses an RFC 9651 List of Items with parameters, as far as the draft's fields use the
    /// syntax (integers, strings, tokens, byte sequences); `None` when it does not parse.
    fn parse_list(text: &str) -> Option<Vec<Item>> {
        let mut rest = text.trim_start_matches(' ');
        let mut items = Vec::new();
        // Bounded: each turn consumes at least one character.
        while !rest.is_empty() {
            let (item, after) = bare(rest)?;
            rest = after;
            let mut params = Vec::new();
            while let Some(after) = rest.strip_prefix(';') {
                let after = after.trim_start_matches(' ');
                let end = after
                    .find(|c: char| {
                        !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c))
                    })
                    .unwrap_or(after.len());
                if end == 0 || !after.starts_with(|c: char| c.is_ascii_lowercase() || c == '*') {
                    return None;
                }
                let (name, after) = after.split_at(end);
                let (value, after) = match after.strip_prefix('=') {
                    Some(value) => bare(value)?,
                    None => (Bare::Integer(1), after),
                };
                params.push((name.to_owned(), value));
                rest = after;
            }
            items.push((item, params));
            rest = rest.trim_start_matches([' ', '\t']);
            match rest.strip_prefix(',') {
                Some(after) => {
                    rest = after.trim_start_matches([' ', '\t']);
                    if rest.is_empty() {
                        return None;
                    }
                }
                None if rest.is_empty() => {}
                None => return None,
            }
        }
        Some(items)
    }

    fn bare(text: &str) -> Option<(Bare, &str)> {
        if let Some(after) = text.strip_prefix('"') {
            let end = after.find('"')?;
            let value = &after[..end];
            if value.contains('\\') || !value.chars().all(|c| (' '..='~').contains(&c)) {
                return None;
            }
            return Some((Bare::String(value.to_owned()), &after[end + 1..]));
        }
        if let Some(after) = text.strip_prefix(':') {
            let end = after.find(':')?;
            return Some((Bare::Bytes(after[..end].to_owned()), &after[end + 1..]));
        }
        let end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-:/!#$%&'*+.^_`|~".contains(c)))
            .unwrap_or(text.len());
        let (word, rest) = text.split_at(end);
        if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            let digits = word.strip_prefix('-').unwrap_or(word);
            if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            return Some((Bare::Integer(word.parse().ok()?), rest));
        }
        if word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '*') {
            return Some((Bare::Token(word.to_owned()), rest));
        }
        None
    }

    /// Checks a field against the draft's rules for `RateLimit-Policy` (`policy`) or
    /// `RateLimit`: a non-empty list of string items whose known parameters have their types,
    /// with `q` (policy) or `r` required.
    fn conforms(text: &str, policy: bool) -> bool {
        let Some(items) = parse_list(text) else {
            return false;
        };
        let required = if policy { "q" } else { "r" };
        !items.is_empty()
            && items.iter().all(|(item, params)| {
                let non_negative = |name: &str| {
                    params.iter().all(|(n, v)| n != name || matches!(v, Bare::Integer(i) if *i >= 0))
                };
                matches!(item, Bare::String(_))
                    && params.iter().any(|(name, _)| name == required)
                    && ["q", "r", "t"].into_iter().all(non_negative)
                    && params.iter().all(|(n, v)| match n.as_str() {
                        "w" => matches!(v, Bare::Integer(i) if *i > 0),
                        "qu" => matches!(v, Bare::String(u) if ["requests", "content-bytes", "concurrent-requests"].contains(&u.as_str())),
                        "pk" => matches!(v, Bare::Bytes(_)),
                        _ => true,
                    })
            })
    }

    #[test]
    fn the_checker_takes_the_drafts_examples_and_refuses_malformed_ones() {
        for policy in [
            r#""burst";q=100;w=60,"daily";q=1000;w=86400"#,
            r#""default";q=100;w=10"#,
            r#""permin";q=50;w=60,"perhr";q=1000;w=3600"#,
            r#""peruser";q=100;w=60;pk=:cHsdsRa894==:"#,
            r#""peruser";q=65535;qu="content-bytes";w=10;pk=:sdfjLJUOUH==:"#,
            r#""hour";q=1000;w=3600, "day";q=5000;w=86400"#,
        ] {
            assert!(conforms(policy, true), "{policy}");
        }
        for limit in [
            r#""default";r=50;t=30"#,
            r#""default";r=999;pk=:dHJpYWwxMjEzMjM=:"#,
            r#""default";r=300000000;t=60;pk=:QXBwLTk5OQ==:"#,
            r#""problemPolicy";r=0;t=10"#,
            r#""day";r=100;t=36000"#,
        ] {
            assert!(conforms(limit, false), "{limit}");
        }
        for bad in [
            "",
            r#"default;q=100;w=10"#,
            r#""default";w=10"#,
            r#""default";q=100;w=0"#,
            r#""default";q=-1"#,
            r#""default";q=100,"#,
            r#""default";q=100;qu="bytes""#,
            r#""default";q=1.5"#,
        ] {
            assert!(!conforms(bad, true), "{bad}");
        }
    }

    fn fields(quota: &Quota) -> (String, String) {
        let mut headers = HeaderMap::new();
        insert(&mut headers, quota);
        let text = |name: &HeaderName| headers[name].to_str().unwrap().to_owned();
        (text(&POLICY), text(&LIMIT))
    }

    #[test]
    fn the_fields_follow_the_draft() {
        let quota = Quota {
            verdict: Ok(()),
            rate: Some(RateQuota {
                rule: RateLimit::new(100, Duration::from_secs(60)),
                remaining: 42,
                reset: Duration::from_millis(16_200),
            }),
            in_flight: Some(InFlightQuota {
                limit: 10,
                remaining: 9,
            }),
        };
        let (policy, limit) = fields(&quota);
        assert_eq!(
            policy,
            r#""requests";q=100;w=60, "concurrency";q=10;qu="concurrent-requests""#
        );
        assert_eq!(limit, r#""requests";r=42;t=17, "concurrency";r=9"#);
        assert!(conforms(&policy, true) && conforms(&limit, false));
        // A sub-second period is told as one second; each policy alone.
        let rate_only = Quota {
            in_flight: None,
            rate: Some(RateQuota {
                rule: RateLimit::new(5, Duration::from_millis(500)),
                remaining: 0,
                reset: Duration::from_millis(80),
            }),
            ..quota.clone()
        };
        assert_eq!(
            fields(&rate_only),
            (
                r#""requests";q=5;w=1"#.into(),
                r#""requests";r=0;t=1"#.into()
            )
        );
        let in_flight_only = Quota {
            rate: None,
            ..quota
        };
        let (policy, limit) = fields(&in_flight_only);
        assert!(
            conforms(&policy, true) && conforms(&limit, false),
            "{policy} {limit}"
        );
        let mut none = HeaderMap::new();
        insert(
            &mut none,
            &Quota {
                verdict: Ok(()),
                rate: None,
                in_flight: None,
            },
        );
        assert!(none.is_empty());
    }
}
