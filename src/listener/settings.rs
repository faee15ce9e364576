//! [`ListenerConfig`]: the listener's section of the config, and what the listener prepares
//! from it.

use std::time::Duration;

use super::deadlines::{DeadlineSettings, MinReceiveRate};
use crate::error::ConfigError;

/// The listener's settings: the deadlines it puts on every connection it admits, and whether
/// connections start with a PROXY protocol header. The `listener` section of
/// [`Config`](crate::Config); see the [listener docs](crate::listener).
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{Config, listener::ListenerConfig, listener::MinReceiveRate};
///
/// let config = Config {
///     listener: ListenerConfig {
///         handshake_timeout: Duration::from_secs(10),
///         idle_timeout: Duration::from_secs(300),
///         // mod_reqtimeout's `header=10,MinRate=500`, roughly.
///         min_receive_rate: Some(MinReceiveRate::new(500, Duration::from_secs(10))),
///         ..ListenerConfig::default()
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
pub struct ListenerConfig {
    /// How long a connection may wait before its client sends a first byte (a TLS ClientHello,
    /// an HTTP request line), like Nomad's `rpc_handshake_timeout`. Default zero: off. Leave it
    /// off for protocols where the server speaks first (SMTP, MySQL).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub handshake_timeout: Duration,
    /// How long a connection may go without a byte moving either way before it is closed.
    /// Default zero: off. Set it longer than your slowest handler and longest long-poll, or have
    /// the application send keep-alives (HTTP/2 pings, WebSocket pings).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
    /// The slowest a client may send while the server waits on it, in the style of Apache
    /// `mod_reqtimeout`'s `MinRate`. Default `None`: off. See [`MinReceiveRate`].
    pub min_receive_rate: Option<MinReceiveRate>,
    /// Whether every connection starts with a PROXY protocol header (v1 or v2, as HAProxy, AWS
    /// NLB and Envoy send) from one of [`Config::trusted_proxies`](crate::Config::trusted_proxies).
    /// A v2 header is checked for structure before it is believed (its declared length, the
    /// address block of its family, its TLVs, a CRC32c TLV if it has one); a malformed one closes
    /// the connection, counted as `proxy_header_invalid`. Default [`ProxyProtocol::Off`]. Needs
    /// the `proxy-protocol` feature.
    pub proxy_protocol: ProxyProtocol,
    /// How long a trusted proxy may take to send its PROXY header before the connection is
    /// closed. Default 5 seconds; must be more than zero when `proxy_protocol` is on.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub proxy_header_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            handshake_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            min_receive_rate: None,
            proxy_protocol: ProxyProtocol::Off,
            proxy_header_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a listener expects a PROXY protocol header; set in
/// [`ListenerConfig::proxy_protocol`]. In config files: `off`, `required`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// No header is expected: the client is the socket peer. The default.
    #[default]
    Off,
    /// Every connection must come from one of `trusted_proxies` and begin with a PROXY header,
    /// v1 or v2, within `proxy_header_timeout`. The client is the header's source address (the
    /// proxy itself for a v2 `LOCAL` or a v1 `UNKNOWN` header, which proxies send for their own
    /// health checks).
    ///
    /// A connection from any other peer is closed at once, before a byte is read, since anyone
    /// able to send a header would otherwise choose their own client address; a malformed,
    /// missing or late header closes the connection too; malformed includes a v2 header, `LOCAL`
    /// or not, whose declared length is not exactly what follows its fixed part, whose family's
    /// address block does not fit in it, whose TLVs run past its end or leave a fragment, or
    /// whose CRC32c does not match. Each is counted in
    /// [`Stats::rejected`](crate::Stats::rejected). Health checks that cannot send a header
    /// belong on a listener of their own.
    Required,
}

impl ProxyProtocol {
    /// The name used in config files: `off` or `required`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::Required => "required",
        }
    }
}

/// What the listener reads of its settings at each accept: only what is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListenerSettings {
    /// The deadlines on each admitted connection, or `None` when all are off.
    pub(crate) deadlines: Option<DeadlineSettings>,
    /// With [`ProxyProtocol::Required`], how long the header may take.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) proxy_header_timeout: Option<Duration>,
}

impl ListenerConfig {
    /// Checks the section; fields are named within it (`min_receive_rate.bytes_per_sec`).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("proxy_header_timeout", self.proxy_header_timeout),
        ] {
            crate::clock::at_most_longest(field, d)?;
        }
        if let Some(rate) = &self.min_receive_rate {
            rate.validate()?;
        }
        if self.proxy_protocol != ProxyProtocol::Off {
            if cfg!(not(feature = "proxy-protocol")) {
                return Err(ConfigError::new(
                    "proxy_protocol",
                    "needs the `proxy-protocol` feature",
                ));
            }
            if self.proxy_header_timeout.is_zero() {
                return Err(ConfigError::new(
                    "proxy_header_timeout",
                    "must be longer than zero when proxy_protocol is on",
                ));
            }
        }
        Ok(())
    }

    /// What the listener reads at each accept.
    pub(crate) fn prepare(&self) -> ListenerSettings {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        let deadlines = DeadlineSettings {
            handshake: on(self.handshake_timeout),
            idle: on(self.idle_timeout),
            min_rate: self.min_receive_rate,
        };
        let any_on = deadlines.handshake.is_some()
            || deadlines.idle.is_some()
            || deadlines.min_rate.is_some();
        ListenerSettings {
            deadlines: any_on.then_some(deadlines),
            #[cfg(feature = "proxy-protocol")]
            proxy_header_timeout: (self.proxy_protocol == ProxyProtocol::Required)
                .then_some(self.proxy_header_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absent_when_every_one_is_off() {
        assert_eq!(ListenerConfig::default().prepare().deadlines, None);
        let settings = ListenerConfig {
            idle_timeout: Duration::from_secs(1),
            ..ListenerConfig::default()
        }
        .prepare();
        let deadlines = settings.deadlines.unwrap();
        assert_eq!(deadlines.idle, Some(Duration::from_secs(1)));
        assert_eq!(deadlines.handshake, None);
        #[cfg(feature = "proxy-protocol")]
        assert_eq!(settings.proxy_header_timeout, None);
    }

    #[test]
    fn a_zero_rate_is_refused_by_name() {
        let err = ListenerConfig {
            min_receive_rate: Some(MinReceiveRate::new(0, Duration::from_secs(1))),
            ..ListenerConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "min_receive_rate.bytes_per_sec");
    }
}
