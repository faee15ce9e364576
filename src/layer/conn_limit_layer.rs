//! [`ConnLimitLayer`] and the service it builds, [`ConnLimit`].

use tower_layer::Layer;

use super::key_source::KeySource;
use super::request::RequestOptions;
use super::{MAKE_SERVICE, REQUEST_LAYER};
use crate::config::Config;
use crate::error::ConfigError;
use crate::limiter::{Checkpoint, Limiter};

/// Applies per-client limits to a make-service (connections) or a request service (in-flight
/// requests); see the [module docs](crate::layer).
///
/// The layer holds a [`Limiter`]. Cloning the layer — or applying it many times, as
/// `Router::layer` does once per route — does not create a new map: every service it builds
/// shares the one limiter, and with it the counts and the live config.
#[derive(Clone, Debug)]
pub struct ConnLimitLayer {
    make_service: Checkpoint,
    request: Checkpoint,
    options: RequestOptions,
}

impl ConnLimitLayer {
    /// A layer with a new [`Limiter`] enforcing `config`.
    ///
    /// # Panics
    ///
    /// If `config` is invalid; see [`ConnLimitLayer::try_new`].
    pub fn new(config: Config) -> Self {
        Self::with_limiter(Limiter::new(config))
    }

    /// A layer with a new [`Limiter`] enforcing `config`, or why `config` is invalid.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field.
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        Limiter::try_new(config).map(Self::with_limiter)
    }

    /// A layer admitting through an existing `limiter`, shared with other admission points.
    pub fn with_limiter(limiter: Limiter) -> Self {
        ConnLimitLayer {
            make_service: limiter.checkpoint(&MAKE_SERVICE),
            request: limiter.checkpoint(&REQUEST_LAYER),
            options: RequestOptions::default(),
        }
    }

    /// The same layer keying requests by what `source` finds in them (an API key, a bearer
    /// token, the user an auth layer found), falling back to the client's address: see
    /// [`KeySource`] and [`keys`](crate::keys). Connections are always keyed by address.
    pub fn keyed_by(mut self, source: KeySource) -> Self {
        self.options.keys = Some(source);
        self
    }

    /// The same layer sending the IETF's `RateLimit-Policy` and `RateLimit` header fields
    /// (draft-ietf-httpapi-ratelimit-headers) on every response at the request level, admitted
    /// or refused: the request rate and the in-flight limit the request is held to (its key's
    /// tier's, for a keyed request), and what is left of them, so that clients can pace
    /// themselves. Off by default, since they tell every client its limits; see
    /// [`Limiter::check_request`] for what they are made of.
    pub fn ratelimit_headers(mut self) -> Self {
        self.options.ratelimit_headers = true;
        self
    }

    /// The limiter this layer admits through: read its stats, change its config, or share it.
    pub fn limiter(&self) -> &Limiter {
        self.request.limiter()
    }
}

impl<S> Layer<S> for ConnLimitLayer {
    type Service = ConnLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnLimit {
            inner,
            make_service: self.make_service.clone(),
            request: self.request.clone(),
            options: self.options.clone(),
        }
    }
}

/// Limits connections or requests per client; built by [`ConnLimitLayer`].
///
/// What it counts depends on what it wraps (see the [layer docs](crate::layer)): around a
/// make-service, each call admits a *connection* and yields a
/// [`LimitedConnection`](crate::layer::LimitedConnection); around a request service, each call admits
/// a *request*, and the answer's [`ResponseBody`](crate::layer::ResponseBody) keeps it counted.
/// Decisions happen in `call`, where the client is known; `poll_ready` only forwards.
#[derive(Clone, Debug)]
pub struct ConnLimit<S> {
    pub(super) inner: S,
    pub(super) make_service: Checkpoint,
    pub(super) request: Checkpoint,
    pub(super) options: RequestOptions,
}

impl<S> ConnLimit<S> {
    /// Wraps `inner`, admitting through `limiter`.
    pub fn new(inner: S, limiter: Limiter) -> Self {
        ConnLimitLayer::with_limiter(limiter).layer(inner)
    }

    /// The limiter this service admits through.
    pub fn limiter(&self) -> &Limiter {
        self.request.limiter()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}
