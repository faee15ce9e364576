//! [`Limiter::check_request`]: what a request would meet now, spending nothing.

use std::net::IpAddr;
use std::time::Duration;

use super::gate::{RequestPeek, Route};
use super::Limiter;
use crate::key::ClientKey;
use crate::keys::RequestKey;
use crate::limits::Limits;
use crate::rate::{AtomicRate, InFlightQuota, Quota, RateQuota};
use crate::reason::{RejectReason, Rejected};

impl Limiter {
    /// What a request from `ip` (keyed by `key`, if any) for `method` and `path` would meet if
    /// it came now, without spending anything or tracking a new client: whether it would be
    /// admitted, and what is left of its request rate and in-flight limit (its key's, for a
    /// keyed request). Use it to tell a client its quota, or to skip work that would be
    /// refused; [`try_acquire_request_to`](Limiter::try_acquire_request_to) and
    /// [`try_acquire_request_as`](Limiter::try_acquire_request_as) still decide, since other
    /// requests may come in between.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_connlimit::{Config, Limiter, RateLimit};
    ///
    /// let limiter = Limiter::new(Config {
    ///     request_rate: Some(RateLimit::new(3, Duration::from_secs(60))),
    ///     ..Config::default()
    /// });
    /// let ip = "192.0.2.1".parse().unwrap();
    /// let _first = limiter.try_acquire_request_to(ip, "GET", "/").unwrap();
    /// let quota = limiter.check_request(ip, None, "GET", "/");
    /// assert!(quota.verdict.is_ok());
    /// assert_eq!(quota.rate.unwrap().remaining, 2);
    /// let again = limiter.check_request(ip, None, "GET", "/");
    /// assert_eq!(again.rate.unwrap().remaining, 2, "nothing spent");
    /// ```
    pub fn check_request(
        &self,
        ip: IpAddr,
        key: Option<&RequestKey>,
        method: &str,
        path: &str,
    ) -> Quota {
        let installed = self.installed();
        let base = &installed.limits;
        let route = Some(Route { method, path });
        let now = self.now();
        let address_key = if base.is_exempt(ip) {
            ClientKey::exact(ip)
        } else {
            base.key(ip)
        };
        let Some(key) = key else {
            if base.is_exempt(ip) {
                return Quota {
                    verdict: Ok(()),
                    rate: None,
                    in_flight: None,
                };
            }
            return self.quota_of(&address_key, base, route, now);
        };
        let keyed = base.keyed();
        let (address_limits, limited) = keyed.address();
        let address = self.quota_of(&address_key, address_limits, None, now);
        let (tier, _) = keyed.of(key, base);
        let mut own = self.quota_of(&key.client_key(), tier, route, now);
        // The address's refusal stands first, as in the decision; only a ban of it when no
        // limit per address is set.
        if let Err(refused) = address.verdict {
            if limited || refused.reason == RejectReason::Banned {
                own.verdict = Err(refused);
            }
        }
        own
    }

    /// The quota of the client `key` under `limits`.
    fn quota_of(
        &self,
        key: &ClientKey,
        limits: &Limits,
        route: Option<Route<'_>>,
        now: u64,
    ) -> Quota {
        let (peek, in_flight) = match self.shared.clients.get(key) {
            Some(found) => {
                let entry = found.key().entry();
                let peek = entry.record.peek_request(limits, route, now);
                (peek, entry.counts().1)
            }
            // A client not tracked is a quiet one, with every rule's whole quota, unless a
            // network ban covers it (its first decision would ban it).
            None => {
                let fresh = AtomicRate::default();
                let rate = (limits.request_rate.as_ref()).map(|rule| fresh.remaining(rule, now));
                let banned_for = (self.network_ban_of(key, now)).map(|(until, _)| until - now);
                let peek = RequestPeek {
                    rate,
                    banned_for,
                    ..RequestPeek::default()
                };
                (peek, 0)
            }
        };
        let rate = limits
            .request_rate
            .zip(peek.rate)
            .map(|(rule, (remaining, reset))| RateQuota {
                rule,
                remaining,
                reset: Duration::from_nanos(reset),
            });
        let limit = limits.max_requests_per_client;
        let in_flight = (limit != 0).then(|| InFlightQuota {
            limit,
            remaining: limit.saturating_sub(in_flight),
        });
        let refused = |reason, wait: Option<u64>| {
            Err(Rejected {
                reason,
                retry_after: wait.map(Duration::from_nanos),
            })
        };
        let enforced_rate = rate.filter(|rate| !rate.rule.dry_run);
        let verdict = if let Some(left) = peek.banned_for {
            refused(RejectReason::Banned, Some(left))
        } else if let Some(rate) = enforced_rate.filter(|rate| rate.remaining == 0) {
            refused(
                RejectReason::RequestRate,
                Some(crate::clock::nanos(rate.reset)),
            )
        } else if let Some(wait) = peek.path_wait {
            refused(RejectReason::PathRule, Some(wait))
        } else if in_flight.is_some_and(|quota| quota.remaining == 0) {
            refused(RejectReason::ClientRequests, None)
        } else {
            Ok(())
        };
        Quota {
            verdict,
            rate,
            in_flight,
        }
    }
}
