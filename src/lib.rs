//! Per-client connection and request limits for tokio, tower, axum, hyper and tonic servers.
//!
//! `tower-connlimit` stops one client from exhausting a server's connections, file descriptors
//! and tasks: it counts the live connections (and, if you ask, the in-flight requests) of each
//! client IP, as [hashicorp/go-connlimit] does for Nomad and Consul, and refuses the ones over
//! the limit as early and as cheaply as the server allows. On top of the counts sit connect and
//! request rates, per-path rules, temporary bans and slow-client deadlines.
//!
//! [hashicorp/go-connlimit]: https://github.com/hashicorp/go-connlimit
//!
//! ```
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::new(Config { max_conns_per_client: 1, ..Config::default() });
//! let ip = "192.0.2.1".parse().unwrap();
//! let permit = limiter.try_acquire(ip).expect("first connection is admitted");
//! assert!(limiter.try_acquire(ip).is_err());
//! drop(permit); // free
//! assert!(limiter.try_acquire(ip).is_ok());
//! ```
//!
//! A server admits through the same [`Limiter`] at accept ([`ConnLimitListener`]), around its
//! make-service or on its router ([`ConnLimitLayer`]). **Start with [the guide](guide)**: it
//! explains the crate chapter by chapter, from [which admission point](guide::admission_points)
//! to use to [a fleet](guide::a_fleet) in production. These API docs are the reference.
//!
//! # Layers
//!
//! A core that every admission point shares, and integrations that admit through it, with
//! arrows pointing one way:
//!
//! - **The core**: the [`Limiter`] (its docs, [How it works](Limiter#how-it-works), start at the
//!   two functions that admit and release), [`ClientKey`]s, [`Cidr`]s, [rate] rules, [bans](ban),
//!   the [clock], the refusal reasons ([`RejectReason`], [`Rejected`]) and [stats]. It names no
//!   integration and no HTTP or network crate.
//! - **The one [`Config`]**: the limits, and a settings section for each integration that needs
//!   one ([`ListenerConfig`](listener::ListenerConfig),
//!   [`ClientIpConfig`](client_ip::ClientIpConfig)).
//! - **The admission points**, each counted apart in [`Stats`]:
//!   - [`listener`]: [`ConnLimitListener`] at accept, yielding [`TrackedIo`], with deadlines and
//!     the PROXY protocol;
//!   - [`layer`] (feature `http`): [`ConnLimitLayer`] around a make-service (connections) or on
//!     a router (in-flight requests), with the client read behind trusted proxies
//!     ([`client_ip`]);
//!   - `tonic` (feature `tonic`): the listener and the request level in a gRPC server.
//! - **Around them**: `serve` (an app served with every request bounded), config files and
//!   `reload`, `metrics`, `admin` (an operator's API and live page) and `fleet` (bans and rates
//!   shared through Redis), each behind the feature of its name (the fleet's is `redis`) and
//!   each with [its chapter](guide) in the guide.
//!
//! `tests/layers.rs` checks on every test run that no module depends on one above it; `cargo
//! test --test layers -- --nocapture` prints the module graph.
//!
//! # Features
//!
//! The default is `http` (the layers); `axum`, `proxy-protocol`, `serve`, `serde`, `reload`,
//! `metrics`, `tonic` (and `tonic-tls` or `tonic-tls-ring`), `redis` (and `redis-tls`) and
//! `admin` are named by you, and `full` has them all but the TLS variants. With
//! `default-features = false` the crate is go-connlimit's core: the [`Limiter`], the listener
//! with its deadlines, and [`TrackedIo`], on tokio. The README's table says what each feature
//! brings and what it costs in crates.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
pub mod ban;
mod cidr;
mod cidr_table;
pub mod client_ip;
pub mod clock;
pub mod config;
#[cfg(feature = "serde")]
mod config_file;
mod error;
mod fair_share;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
pub mod guide;
mod key;
pub mod keys;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod layer;
mod limiter;
mod limits;
pub mod listener;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod peer;
pub mod rate;
mod reason;
#[cfg(feature = "reload")]
#[cfg_attr(docsrs, doc(cfg(feature = "reload")))]
pub mod reload;
#[cfg(any(feature = "metrics", feature = "admin"))]
mod series;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;
pub mod stats;
#[cfg(test)]
mod testing;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use cidr::Cidr;
pub use config::{Config, ConfigError};
pub use key::ClientKey;
#[cfg(feature = "http")]
pub use layer::ConnLimitLayer;
pub use limiter::{ConnPermit, Limiter, RequestPermit};
pub use listener::{ConnLimitListener, TrackedIo};
pub use rate::RateLimit;
pub use reason::{RejectReason, Rejected};
pub use stats::Stats;

/// Entry points for the fuzz targets in `fuzz/`, built only by `cargo fuzz` (`--cfg fuzzing`).
/// Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    #[cfg(feature = "proxy-protocol")]
    use std::net::SocketAddr;

    #[cfg(feature = "proxy-protocol")]
    use crate::listener::proxy_protocol;

    /// Parses one complete PROXY header (v1 or v2): the source address it names, if any, or
    /// `Err(())` for a header the listener refuses.
    #[cfg(feature = "proxy-protocol")]
    #[allow(clippy::result_unit_err)]
    pub fn parse_proxy_header(bytes: &[u8]) -> Result<Option<SocketAddr>, ()> {
        proxy_protocol::parse_header(bytes).map_err(|_| ())
    }

    /// Reads one PROXY header from the start of `io`, as the listener does: never a byte past
    /// the header's end.
    #[cfg(feature = "proxy-protocol")]
    #[allow(clippy::result_unit_err)]
    pub async fn read_proxy_header<IO>(io: &mut IO) -> Result<Option<SocketAddr>, ()>
    where
        IO: tokio::io::AsyncRead + Unpin,
    {
        proxy_protocol::read_header(io).await.map_err(|_| ())
    }

    /// The client address the request layer reads from `headers` with `header`, `hops` trusted
    /// proxies in front of the server.
    #[cfg(feature = "http")]
    pub fn client_from_headers(
        headers: &http::HeaderMap,
        header: crate::client_ip::ClientIpHeader,
        hops: usize,
    ) -> Option<std::net::IpAddr> {
        crate::client_ip::client_from_headers(headers, header, hops)
    }
}

/// The README's examples, compiled (and the runnable ones run) as doctests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
