//! Where the request layer finds the client behind a trusted HTTP proxy: the settings
//! ([`ClientIpConfig`], [`ClientIpHeader`]) and, with the `http` feature, the reading of
//! `Forwarded`, `X-Forwarded-For` and `X-Real-IP` (`parse.rs`).

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

#[cfg(feature = "http")]
mod parse;

#[cfg(feature = "http")]
pub(crate) use self::parse::client_from_headers;

/// The most proxies `trusted_hops` may name: the request header reader looks at no more entries
/// than this, so a hostile client cannot make it walk a huge list.
pub(crate) const MAX_TRUSTED_HOPS: usize = 64;

/// Where the request layer finds the client behind a trusted HTTP proxy; the `client_ip` section
/// of [`Config`](crate::Config).
///
/// ```
/// use tower_connlimit::{client_ip::ClientIpConfig, client_ip::ClientIpHeader, Config};
///
/// // Behind one nginx at 10.0.0.5 that sets `X-Forwarded-For`.
/// let config = Config {
///     trusted_proxies: vec!["10.0.0.5".parse().unwrap()],
///     client_ip: ClientIpConfig {
///         header: ClientIpHeader::XForwardedFor,
///         ..ClientIpConfig::default()
///     },
///     ..Config::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct ClientIpConfig {
    /// The request header the request-level layer reads the client address from when the
    /// socket peer is one of [`Config::trusted_proxies`](crate::Config::trusted_proxies).
    /// Default [`ClientIpHeader::None`]: the client is the socket peer. See [`ClientIpHeader`]
    /// for how the header is read.
    pub header: ClientIpHeader,
    /// How many trusted proxies stand in front of the server, each appending one entry to
    /// `header`: the client is that many entries from the right. Default 1; between 1 and 64.
    pub trusted_hops: usize,
    /// What becomes of a trusted proxy's request that names no usable client: the header is
    /// missing, has fewer entries than `trusted_hops`, or its chosen entry is no address
    /// (`unknown`, an obfuscated `_hidden`, garbage, an address with a zone). Such a request is
    /// never exempt: by default ([`Unidentified::CountAsProxy`]) it is counted under the
    /// proxy's own address and held to the ordinary per-client request limits, as nginx's
    /// `realip` module does; [`Unidentified::Refuse`] answers it `400`. Either way it is counted
    /// in [`Stats::unidentified_requests`](crate::Stats::unidentified_requests) and logged.
    pub unidentified: Unidentified,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            header: ClientIpHeader::None,
            trusted_hops: 1,
            unidentified: Unidentified::CountAsProxy,
        }
    }
}

/// What the request layer does with a trusted proxy's request that names no usable client:
/// [`ClientIpConfig::unidentified`].
///
/// A proxy route that forgets `proxy_set_header`, a health checker or a script on the proxy's
/// host, and a proxy that writes `for=unknown` all send such requests. They are never waved
/// through: the proxy's *connections* are not capped as a client's (they carry every client's
/// requests), but a request it speaks for nobody in is the proxy's own.
///
/// In a config file: `unidentified = "count_as_proxy"` (the default) or `"refuse"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Unidentified {
    /// Counted under the proxy's own address, with the ordinary per-client limits: the request
    /// rate, the path rules, `max_requests_per_client` and bans. The default.
    #[default]
    CountAsProxy,
    /// Refused with `400 Bad Request` (gRPC `INVALID_ARGUMENT`), counted as
    /// `client_unidentified`: for a deployment where every legitimate request passes a proxy
    /// that names its client.
    Refuse,
}

impl Unidentified {
    /// The name a config file uses: `count_as_proxy` or `refuse`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unidentified::CountAsProxy => "count_as_proxy",
            Unidentified::Refuse => "refuse",
        }
    }
}

impl ClientIpConfig {
    /// Checks the section, naming its fields in errors.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.header == ClientIpHeader::None {
            return Ok(());
        }
        if cfg!(not(feature = "http")) {
            return Err(ConfigError::new(
                "header",
                "needs the `http` feature: only the request layer reads it",
            ));
        }
        if !(1..=MAX_TRUSTED_HOPS).contains(&self.trusted_hops) {
            return Err(ConfigError::new(
                "trusted_hops",
                format!(
                    "must be between 1 and {MAX_TRUSTED_HOPS}, got {}",
                    self.trusted_hops
                ),
            ));
        }
        Ok(())
    }
}

/// Which request header names the client, when the socket peer is a trusted proxy.
///
/// Behind a reverse proxy or load balancer every connection comes from the proxy, so limiting
/// by socket peer would lump all clients together. When the peer is one of the configured trusted
/// proxies, the client address is read from this header instead; from any other peer the header
/// is ignored, since anybody can send it.
///
/// The list headers ([`Forwarded`](Self::Forwarded) and [`XForwardedFor`](Self::XForwardedFor))
/// are read from the right: with `trusted_hops` proxies in front of the server, each appending
/// one entry, the client is the entry `trusted_hops` from the right (1 is the rightmost, the one
/// appended by the proxy that connected to us). Entries further left were written by the client
/// or by proxies we do not trust, so they are never believed, and a list with fewer entries than
/// `trusted_hops` names no client at all.
///
/// Entries further left are not even read: reading stops at the chosen entry, so nothing a
/// client puts in front of the proxies' entries (any number of entries, bytes that are not
/// visible ASCII, unterminated quoted strings) changes the answer or makes it fail. Only the
/// chosen entry and the ones right of it, written by the trusted proxies, have to be well formed.
/// When they name no usable address (the header is missing, has too few entries, or the chosen
/// entry is malformed, not visible ASCII, `unknown` or an obfuscated identifier), the request has
/// no header address.
///
/// Addresses are accepted as `1.2.3.4`, `1.2.3.4:port`, `2001:db8::1`, `[2001:db8::1]` and
/// `[2001:db8::1]:port`. An IPv6 address with a port must be bracketed: `2001:db8::1:80` is read
/// as the address `2001:db8::1:80`.
///
/// The names used by [`as_str`](Self::as_str), [`Display`](fmt::Display) and
/// [`FromStr`] (case-insensitively) are `none`, `forwarded`, `x-forwarded-for` and `x-real-ip`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(try_from = "String")
)]
#[non_exhaustive]
pub enum ClientIpHeader {
    /// Headers are ignored: the client is the socket peer. The default, and the only safe
    /// choice when no proxy stands in front of the server.
    #[default]
    None,
    /// RFC 7239 `Forwarded: for=...;proto=...;by=...`. All header lines are read as one list of
    /// comma-separated elements (commas and semicolons inside quoted strings do not split); the
    /// client is the `for=` parameter of the element `trusted_hops` from the right. The
    /// parameter name is case-insensitive and its value may be a token (`for=1.2.3.4`) or a
    /// quoted string (`for="[2001:db8::1]:4711"`).
    ///
    /// Every element counts as one hop, even one without `for=` (a proxy that only sends
    /// `proto=`, say): hop positions stay aligned with the proxies that wrote them, and if the
    /// chosen element has no `for=`, there is no client address. An element with a duplicated
    /// `for=`, a pair without `=`, or a `for=` value with backslash escapes names no address,
    /// and neither does any position when the chosen element, or one right of it, has an
    /// unterminated quoted string. Quoted strings in the client's elements further left do not
    /// matter: they are never read.
    Forwarded,
    /// `X-Forwarded-For: client, proxy1, proxy2`, the de facto standard most proxies send. All
    /// header lines are read as one comma-separated list, entries trimmed; the client is the
    /// entry `trusted_hops` from the right. Empty entries count as entries with no address.
    XForwardedFor,
    /// `X-Real-IP: client`, a single address set (not appended) by the proxy, as nginx's
    /// `proxy_set_header X-Real-IP $remote_addr` does. `trusted_hops` is ignored: only the
    /// proxy that connected to us can have set it. If the header appears on several lines, the
    /// last one is used and the others are not read.
    XRealIp,
}

impl ClientIpHeader {
    /// Every choice.
    pub const ALL: [ClientIpHeader; 4] = [
        ClientIpHeader::None,
        ClientIpHeader::Forwarded,
        ClientIpHeader::XForwardedFor,
        ClientIpHeader::XRealIp,
    ];

    /// The lowercase name of this choice: `none`, `forwarded`, `x-forwarded-for` or
    /// `x-real-ip`, as [`FromStr`] accepts it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientIpHeader::None => "none",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::XRealIp => "x-real-ip",
        }
    }
}

impl fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientIpHeader {
    type Err = UnknownClientIpHeader;

    /// Parses one of the names [`as_str`](Self::as_str) returns, ignoring ASCII case. Nothing
    /// else is accepted (no surrounding whitespace, no `_` for `-`), so a typo in a config file
    /// is an error rather than a silently different header.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientIpHeader::ALL
            .into_iter()
            .find(|header| header.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownClientIpHeader)
    }
}

/// The error from parsing a [`ClientIpHeader`] out of a name it does not have.
///
/// It displays as the list of accepted names; the offending string is left to the caller, who
/// knows where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownClientIpHeader;

impl fmt::Display for UnknownClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected one of: none, forwarded, x-forwarded-for, x-real-ip")
    }
}

impl std::error::Error for UnknownClientIpHeader {}

impl TryFrom<String> for ClientIpHeader {
    type Error = UnknownClientIpHeader;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ClientIpHeader; 4] = ClientIpHeader::ALL;

    // ---- names ----

    #[test]
    fn names_round_trip() {
        for header in ALL {
            assert_eq!(header.as_str().parse::<ClientIpHeader>(), Ok(header));
            assert_eq!(header.to_string(), header.as_str());
            assert_eq!(
                header
                    .as_str()
                    .to_ascii_uppercase()
                    .parse::<ClientIpHeader>(),
                Ok(header)
            );
        }
        assert_eq!(ClientIpHeader::XForwardedFor.as_str(), "x-forwarded-for");
        assert_eq!(ClientIpHeader::XRealIp.as_str(), "x-real-ip");
        assert_eq!(ClientIpHeader::Forwarded.as_str(), "forwarded");
        assert_eq!(ClientIpHeader::None.as_str(), "none");
        assert_eq!(ClientIpHeader::default(), ClientIpHeader::None);
    }

    #[test]
    fn names_case_insensitive() {
        assert_eq!("X-Forwarded-For".parse(), Ok(ClientIpHeader::XForwardedFor));
        assert_eq!("X-Real-IP".parse(), Ok(ClientIpHeader::XRealIp));
        assert_eq!("Forwarded".parse(), Ok(ClientIpHeader::Forwarded));
        assert_eq!("NoNe".parse(), Ok(ClientIpHeader::None));
    }

    #[test]
    fn unknown_names_rejected() {
        for bad in [
            "",
            "xff",
            " forwarded",
            "forwarded ",
            "x_forwarded_for",
            "x-forwarded",
            "real-ip",
            "nonee",
            "forwarded-for",
        ] {
            assert_eq!(
                bad.parse::<ClientIpHeader>(),
                Err(UnknownClientIpHeader),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_name_error() {
        let err = "xff".parse::<ClientIpHeader>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected one of: none, forwarded, x-forwarded-for, x-real-ip"
        );
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err.clone());
        assert_eq!(boxed.to_string(), err.to_string());
    }
}
