//! The guide: how to put the crate to work, from a first server to a fleet in production.
//!
//! This module holds no code. Its chapters explain the crate by the job at hand and show each
//! step as an example that compiles; the module docs they link to ([`listener`](crate::listener),
//! [`layer`](crate::layer), [`rate`](crate::rate), the integrations) are the reference for every
//! detail. The examples the chapters name (`examples/server.rs` and the others) are in the
//! [repository](https://github.com/tower-connlimit/tower-connlimit).
//!
//! # What the crate does
//!
//! A network server must not let one client exhaust its connections, file descriptors and
//! tasks. `tower-connlimit` counts the live connections, and if you ask the in-flight requests,
//! of every client, and refuses the ones over a limit as early and as cheaply as the server
//! allows: at accept, before a byte is read; around the make-service; or per request on the
//! router. On top of the counts sit connect and request rates, per-path rules, temporary bans
//! and slow-client deadlines. Every admission point of a server admits through one
//! [`Limiter`](crate::Limiter): one map of client counts, one live config, one set of stats.
//!
//! Three words recur:
//!
//! - **A client** is an IP address masked to a prefix, its [`ClientKey`](crate::ClientKey):
//!   the whole address for IPv4, its /64 for IPv6 (one subscriber routinely owns a whole /64),
//!   both set in the [`Config`](crate::Config) (`ipv4_prefix`, `ipv6_prefix`). An
//!   IPv4-mapped IPv6 address is the IPv4 address; the port and an IPv6 zone never count.
//! - **An admission point** is where a connection or a request is admitted or refused: the
//!   listener, the make-service level, the request level, or your own calls to the limiter.
//!   Each one's figures are kept apart in the [`Stats`](crate::Stats).
//! - **A permit** ([`ConnPermit`](crate::ConnPermit), [`RequestPermit`](crate::RequestPermit))
//!   counts one connection or request for as long as it lives; dropping it releases the count,
//!   exactly once, on every path (an error, a panic, a cancelled future).
//!
//! Every limit takes `0` for unlimited, and lowering one never closes what is already open.
//!
//! # The chapters, in reading order
//!
//! 1. [**Which admission point**](admission_points): the listener, the make-service level and
//!    the request level, what each can see and refuse, and each one set up: `axum::serve`, a
//!    plain tokio accept loop, hyper, tonic, several points on one limiter, the core without
//!    tower, and graceful shutdown. Start here.
//! 2. [**The gate**](the_gate): what the limiter checks besides the counts. Connect and request
//!    rates and their strategies, path rules, bans, dry-run, the deadlines that cut slow
//!    clients, how long a client is remembered, and what a refused client sees: the status
//!    codes, `Retry-After` and the gRPC codes.
//! 3. [**Behind proxies**](behind_proxies): finding the real client behind a load balancer (the
//!    PROXY protocol) or a reverse proxy (client address headers); who is counted under which
//!    key when a proxy is trusted; Unix sockets behind a local proxy; TLS on top of the
//!    listener.
//! 4. [**Keys and tiers**](keys_and_tiers): limiting requests by API key, user or tenant,
//!    with tiers of limits and a fallback to the address; what one address may do whatever
//!    its keys; the IETF's `RateLimit` headers, and checking a quota without spending it.
//! 5. [**Fair share**](fair_share): letting a client use what is idle, up to a ceiling, and
//!    holding the heaviest to their max-min fair share of the budgets under contention, with
//!    idle connections given back; the picture of a heavy client and twenty light ones.
//! 6. [**Config and reload**](config_and_reload): the one [`Config`](crate::Config), installing
//!    and replacing it live, config files in TOML or JSON, and reloading a file while the
//!    server runs. [**Every config field**](config_fields) is the table of fields, their
//!    defaults and meanings.
//! 7. [**Observing**](observing): the stats, the clients holding the most, the logs (what is
//!    logged at which level, so that a flood costs a handful of lines) and the metrics.
//! 8. [**A fleet**](a_fleet): several nodes behind a balancer sharing bans and rates through
//!    Redis, without ever waiting on it.
//! 9. [**The admin**](the_admin): the operator's API and live page, to see who is limited and
//!    why, ban and unban, and change the config without a deploy; its security model.
//! 10. [**Coming from go-connlimit**](coming_from_go_connlimit): the names that map one to one,
//!     and the differences.
//! 11. [**Performance and reliability**](performance_and_reliability): what an admission costs,
//!     what is guaranteed, and where the measurements and the tests that back them are.
//!
//! # Features
//!
//! The default feature is `http`: the core, the listener and the tower layer. Every
//! integration is a feature of its own (`axum`, `proxy-protocol`, `serve`, `serde`, `reload`,
//! `metrics`, `tonic`, `redis`, `admin`; `full` has them all), and each chapter says which one
//! it needs. The [README](https://crates.io/crates/tower-connlimit) has the table of what each
//! one brings and what it costs in crates. These docs, as docs.rs builds them, have every
//! feature on.

// The chapters link to items that exist only with their feature (`serve::Serve`, `fleet::Fleet`,
// ...). Every link is checked in the build docs.rs makes, with every feature on; a build with
// fewer features renders the guide with those links unresolved rather than warning about items
// it does not have.
#![cfg_attr(not(feature = "full"), allow(rustdoc::broken_intra_doc_links))]

#[doc = include_str!("admission_points.md")]
pub mod admission_points {}

#[doc = include_str!("the_gate.md")]
pub mod the_gate {}

#[doc = include_str!("behind_proxies.md")]
pub mod behind_proxies {}

#[doc = include_str!("keys_and_tiers.md")]
pub mod keys_and_tiers {}

#[doc = include_str!("fair_share.md")]
#[doc = include_str!("fair_share.svg")]
pub mod fair_share {}

#[doc = include_str!("config_and_reload.md")]
pub mod config_and_reload {}

#[doc = include_str!("config_fields.md")]
pub mod config_fields {}

#[doc = include_str!("observing.md")]
pub mod observing {}

#[doc = include_str!("a_fleet.md")]
pub mod a_fleet {}

#[doc = include_str!("the_admin.md")]
pub mod the_admin {}

#[doc = include_str!("coming_from_go_connlimit.md")]
pub mod coming_from_go_connlimit {}

#[doc = include_str!("performance_and_reliability.md")]
pub mod performance_and_reliability {}
