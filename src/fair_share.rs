//! [`FairShare`]: a client may use what is idle, and gives it back under contention.
//!
//! A fixed per-client cap is a guess that is wrong both ways: too low for a NAT gateway or a
//! busy peer service, too high to stop one client taking a whole server. With fair share on, the
//! global budgets (`max_conns_total` for connections, `max_requests_total` for in-flight
//! requests) are shared out as they are used:
//!
//! - **the static cap is the guaranteed share**: a client may always hold up to
//!   `max_conns_per_client` (or its override's limit) connections and `max_requests_per_client`
//!   requests, unless the budget itself is full;
//! - **while there is room** (the budget held below `watermark` of it), a client may hold up to
//!   the `ceiling`, whatever its static cap;
//! - **under contention** (at the watermark or above), a client may open a new connection or
//!   start a request only while it holds less than the *fair level* `L`, or less than its
//!   guaranteed share. `L` is the max-min fair share of the budget: the level at which
//!   `Σ min(demand_i, L)` fills the budget, where a client's demand is what it holds, or the
//!   ceiling if it was refused for want of room since the level was last worked out (a client
//!   that holds 3 and asks for no more wants 3; one that was refused wants more than it holds).
//!   So the heaviest clients are refused first, and a client under its share is refused only
//!   when the budget is full;
//! - **reclaim**: when the connection budget is full and a client under its share is refused,
//!   the heaviest client over its share is asked to give back one *idle* connection, one for
//!   each such refusal: [`Serve`](crate::serve::Serve) closes an HTTP/1 keep-alive connection
//!   with no request in flight, and sends an HTTP/2 connection with no stream open a graceful
//!   `GOAWAY`. A connection with a request in flight is never cut, and in-flight requests are
//!   never reclaimed: the request budget is shared out only by refusing new requests.
//!
//! The fair level is worked out about every 100 ms by the thread that sweeps expired clients,
//! from the counts it walks, and read by admission as one atomic: working it out never holds up
//! an admission. With a very large table, the walk runs less often, so that it takes at most a
//! twentieth of that thread's time.
//!
//! Keys weigh as they are counted: a client is a key of the table (an address, an IPv6 /64, a
//! network past `max_keys_per_network`, a request key), and has one share. Exempt clients are
//! counted, and count towards the budget, but are never refused; a trusted proxy's connections
//! carry other clients' requests and are held to the budget only.
//!
//! Reclaim needs a server that can close a connection gracefully: [`Serve`](crate::serve::Serve)
//! does. Under `axum::serve` with a [`ConnLimitListener`](crate::ConnLimitListener), or with the
//! make-service layer, fair share refuses the heaviest clients' new connections, and nothing is
//! reclaimed.
//!
//! ```
//! use tower_connlimit::{config::FairShare, Config, Limiter};
//!
//! let config = Config {
//!     max_conns_per_client: 10, // the guaranteed share
//!     max_conns_total: 100,     // the budget
//!     fair_share: FairShare {
//!         enabled: true,
//!         ceiling: 80,
//!         ..FairShare::default()
//!     },
//!     ..Config::default()
//! };
//! let limiter = Limiter::new(config);
//! let heavy = "192.0.2.1".parse().unwrap();
//! // Alone, a client gets past its static cap of 10, up to the ceiling.
//! let held: Vec<_> = (0..80).map_while(|_| limiter.try_acquire(heavy).ok()).collect();
//! assert_eq!(held.len(), 80);
//! assert!(limiter.try_acquire(heavy).is_err());
//! ```

use crate::error::ConfigError;

/// Fair sharing of the global budgets. Off by default.
///
/// With it on, the static per-client caps are each client's guaranteed share of
/// `max_conns_total` and `max_requests_total`; while a budget is used below `watermark` of it, a
/// client may hold up to the ceiling; under contention, a client may take more only while it
/// holds less than the budget's fair level (its max-min fair share), so the heaviest clients are
/// refused first ([`RejectReason::FairShare`](crate::RejectReason::FairShare)); with `reclaim`,
/// the heaviest clients give back idle connections through [`Serve`](crate::serve::Serve). The
/// guide's [fair share chapter](crate::guide::fair_share) tells the whole rule, with a picture.
///
/// In a config file:
///
/// ```toml
/// max_conns_per_client = 10     # the guaranteed share
/// max_conns_total = 100         # the budget
/// max_requests_total = 200      # in-flight requests across all clients
///
/// [fair_share]
/// enabled = true
/// watermark = 0.8               # a fraction of each budget
/// ceiling = 80                  # the most connections one client may hold while there is room
/// request_ceiling = 100         # the same for in-flight requests
/// reclaim = true
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct FairShare {
    /// Whether the budgets are shared fairly. Default `false`: the static caps are hard caps.
    pub enabled: bool,
    /// The fraction of a budget above which it is contended, greater than 0 and at most 1.
    /// Default 0.8.
    pub watermark: f64,
    /// The most connections one client may hold while there is room. Default 0: half of
    /// `max_conns_total`. At least `max_conns_per_client`, at most `max_conns_total`.
    pub ceiling: usize,
    /// The most requests one client may have in flight while there is room. Default 0: half of
    /// `max_requests_total`. At least `max_requests_per_client`, at most `max_requests_total`.
    pub request_ceiling: usize,
    /// Whether clients over their share are asked to give back idle connections when a client
    /// under its share finds the connection budget full. Default `true`.
    pub reclaim: bool,
}

// A config's watermark is checked to be a number (not NaN) before it is used, so comparing
// configs is an equivalence.
impl Eq for FairShare {}

impl Default for FairShare {
    fn default() -> Self {
        FairShare {
            enabled: false,
            watermark: 0.8,
            ceiling: 0,
            request_ceiling: 0,
            reclaim: true,
        }
    }
}

/// One budget as decisions read it: the budget, where contention starts, the ceiling, and the
/// guaranteed share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The budget (0: none).
    pub(crate) total: usize,
    /// Whether it is shared fairly.
    pub(crate) fair: bool,
    /// Held at or above this, the budget is contended.
    pub(crate) watermark: usize,
    /// The most one client may hold while there is room.
    pub(crate) ceiling: usize,
}

impl Budget {
    /// The most a client whose static cap is `guaranteed` (0: none) may hold with `held` of the
    /// budget in use and the fair level at `level`: the static cap without fair share, else the
    /// ceiling while there is room, else the fair level (never past the ceiling), and never less
    /// than the guaranteed share. 0: no limit.
    #[inline]
    pub(crate) fn limit(&self, guaranteed: usize, held: usize, level: usize) -> usize {
        if !self.fair {
            return guaranteed;
        }
        let share = if held < self.watermark {
            self.ceiling
        } else {
            level.min(self.ceiling)
        };
        share.max(guaranteed)
    }
}

impl FairShare {
    /// The budget of `total`, with the ceiling `ceiling` (0: half the budget).
    pub(crate) fn budget(&self, total: usize, ceiling: usize) -> Budget {
        let fair = self.enabled && total != 0;
        let ceiling = if ceiling == 0 {
            total.div_ceil(2)
        } else {
            ceiling
        };
        // At least one, so that a contended budget is one with something held.
        let watermark = ((total as f64) * self.watermark).ceil() as usize;
        Budget {
            total,
            fair,
            watermark: watermark.clamp(1, total.max(1)),
            ceiling,
        }
    }

    /// Checks the settings against the budgets and the static caps they share out.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, under `fair_share`.
    pub(crate) fn validate(
        &self,
        connections: (usize, usize),
        requests: (usize, usize),
    ) -> Result<(), ConfigError> {
        let field = |name: &str| format!("fair_share.{name}");
        if !(self.watermark > 0.0 && self.watermark <= 1.0) {
            return Err(ConfigError::new(
                field("watermark"),
                format!(
                    "must be a fraction of the budget, above 0 and at most 1, got {}",
                    self.watermark
                ),
            ));
        }
        if !self.enabled {
            return Ok(());
        }
        if connections.1 == 0 && requests.1 == 0 {
            return Err(ConfigError::new(
                field("enabled"),
                "shares out a budget, and there is none: set max_conns_total or \
                 max_requests_total",
            ));
        }
        for (name, ceiling, (per_client, total), cap_name, total_name) in [
            (
                "ceiling",
                self.ceiling,
                connections,
                "max_conns_per_client",
                "max_conns_total",
            ),
            (
                "request_ceiling",
                self.request_ceiling,
                requests,
                "max_requests_per_client",
                "max_requests_total",
            ),
        ] {
            if ceiling == 0 || total == 0 {
                continue;
            }
            if ceiling > total {
                return Err(ConfigError::new(
                    field(name),
                    format!("must be at most {total_name} ({total}), got {ceiling}"),
                ));
            }
            if per_client > ceiling {
                return Err(ConfigError::new(
                    field(name),
                    format!(
                        "must be at least {cap_name} ({per_client}), the share every client is \
                         guaranteed, got {ceiling}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> FairShare {
        FairShare {
            enabled: true,
            ceiling: 80,
            ..FairShare::default()
        }
    }

    #[test]
    fn the_limit_is_the_ceiling_while_there_is_room_then_the_level() {
        let budget = on().budget(100, 80);
        assert_eq!(budget.watermark, 80);
        assert_eq!(budget.limit(10, 0, usize::MAX), 80);
        assert_eq!(budget.limit(10, 79, 40), 80, "below the watermark");
        assert_eq!(budget.limit(10, 80, 40), 40, "contended: the level");
        assert_eq!(budget.limit(10, 95, 4), 10, "never below the guarantee");
        assert_eq!(
            budget.limit(10, 95, usize::MAX),
            80,
            "never past the ceiling"
        );
        let off = FairShare::default().budget(100, 0);
        assert_eq!(off.limit(10, 95, 4), 10, "off: the static cap");
        assert_eq!(
            on().budget(101, 0).ceiling,
            51,
            "half the budget by default"
        );
    }

    #[test]
    fn settings_are_checked_by_field() {
        let field = |share: FairShare, conns, requests| {
            share
                .validate(conns, requests)
                .map_err(|err| err.field().to_owned())
        };
        assert_eq!(field(on(), (10, 100), (0, 0)), Ok(()));
        assert_eq!(
            field(on(), (10, 0), (0, 0)),
            Err("fair_share.enabled".into())
        );
        assert_eq!(
            field(on(), (10, 50), (0, 0)),
            Err("fair_share.ceiling".into())
        );
        assert_eq!(
            field(on(), (90, 100), (0, 0)),
            Err("fair_share.ceiling".into())
        );
        let requests = FairShare {
            request_ceiling: 30,
            ..on()
        };
        assert_eq!(
            field(requests, (0, 0), (40, 100)),
            Err("fair_share.request_ceiling".into())
        );
        for watermark in [0.0, 1.5, f64::NAN, -1.0] {
            let bad = FairShare { watermark, ..on() };
            assert_eq!(
                field(bad, (10, 100), (0, 0)),
                Err("fair_share.watermark".into())
            );
        }
    }
}
