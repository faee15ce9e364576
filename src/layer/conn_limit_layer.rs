//! [`ConnLimitLayer`].

use tower_layer::Layer;

use super::ConnLimit;
use crate::{Config, ConfigError, Limiter};

/// Applies per-client limits to a make-service or a request service; see the
/// [module docs](crate::layer).
///
/// The layer holds a [`Limiter`]. Cloning the layer — or applying it many times, as
/// `Router::layer` does once per route — does not create a new map: every service it builds
/// shares the one limiter, and with it the counts and the live config.
#[derive(Clone, Debug)]
pub struct ConnLimitLayer {
    limiter: Limiter,
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
        ConnLimitLayer { limiter }
    }

    /// The limiter this layer admits through: read its stats, change its config, or share it.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S> Layer<S> for ConnLimitLayer {
    type Service = ConnLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnLimit::new(inner, self.limiter.clone())
    }
}
