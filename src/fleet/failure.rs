//! What can go wrong between a node and its Redis, told apart: each failure has a [`Kind`], the
//! status counts them by kind and keeps the last of each (bounded, with passwords taken out),
//! and the log gets one line per kind at most once a minute.

use std::time::{Duration, Instant};

use redis::{RedisError, ServerError};

use super::redact;
use crate::limiter::{FleetError, Limiter};

/// The longest failure text kept or logged, in bytes.
pub(super) const MAX_TEXT: usize = 1024;
/// How often one kind of failure is logged again while it goes on.
const REMINDER: Duration = Duration::from_secs(60);

/// A kind of failure, with its stable name (the status's and the metric's `reason`) and what it
/// means for the node, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    /// Redis cannot be reached, or dropped the connection.
    Connection,
    /// Redis did not answer within the sync timeout.
    Timeout,
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`) or a command (`NOPERM`).
    Auth,
    /// Redis is full (`OOM`, `maxmemory` with `noeviction`): writes are refused, reads go on.
    Oom,
    /// A cluster's answer: a slot moved (`MOVED`, `ASK`), the cluster is down, or a replica
    /// answered (`READONLY`).
    Cluster,
    /// TLS could not be set up: the certificate, the CA, or the handshake.
    Tls,
    /// Anything else Redis or the client said.
    Other,
}

impl Kind {
    /// Every kind, in the order the status lists them.
    pub(super) const ALL: [Kind; 7] = [
        Kind::Connection,
        Kind::Timeout,
        Kind::Auth,
        Kind::Oom,
        Kind::Cluster,
        Kind::Tls,
        Kind::Other,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Timeout => "timeout",
            Kind::Auth => "auth",
            Kind::Oom => "oom",
            Kind::Cluster => "cluster",
            Kind::Tls => "tls",
            Kind::Other => "other",
        }
    }

    /// What the node does about it, for the log line.
    fn consequence(self) -> &'static str {
        match self {
            Kind::Connection | Kind::Timeout | Kind::Tls => {
                "cannot reach the fleet's Redis: this node decides alone, keeping its bans, until it is back"
            }
            Kind::Auth => "the fleet's Redis refused this node's credentials: this node decides alone",
            Kind::Oom => {
                "the fleet's Redis is full (maxmemory): what this node would write is kept for later, reads go on"
            }
            Kind::Cluster => "the fleet's Redis Cluster redirected or refused commands: retrying them",
            Kind::Other => "the fleet's Redis refused some commands",
        }
    }

    /// Whether it means that nothing reached Redis.
    pub(super) fn unreached(self) -> bool {
        matches!(
            self,
            Kind::Connection | Kind::Timeout | Kind::Tls | Kind::Auth
        )
    }

    /// The kind of an error from the client.
    pub(super) fn of(err: &RedisError) -> Kind {
        use redis::ErrorKind as E;
        if let Some(code) = err.code() {
            return Kind::of_code(code);
        }
        match err.kind() {
            E::AuthenticationFailed => Kind::Auth,
            E::ClusterConnectionNotFound => Kind::Connection,
            _ if err.is_timeout() => Kind::Timeout,
            _ if looks_like_tls(&err.to_string()) => Kind::Tls,
            E::Io => Kind::Connection,
            _ if err.is_connection_refusal() || err.is_connection_dropped() => Kind::Connection,
            _ => Kind::Other,
        }
    }

    /// The kind of an error one command got back.
    pub(super) fn of_server(err: &ServerError) -> Kind {
        Kind::of_code(err.code())
    }

    fn of_code(code: &str) -> Kind {
        match code {
            "OOM" => Kind::Oom,
            // Not ready yet (restarting, loading its data, a replica without its master).
            "LOADING" | "BUSY" | "MASTERDOWN" => Kind::Connection,
            "NOAUTH" | "WRONGPASS" | "NOPERM" => Kind::Auth,
            "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "CROSSSLOT" | "READONLY" => {
                Kind::Cluster
            }
            _ => Kind::Other,
        }
    }
}

fn looks_like_tls(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "crypto provider"]
        .iter()
        .any(|word| text.contains(word))
}

/// One failure: its kind, and what was said, bounded and scrubbed.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) kind: Kind,
    pub(super) text: String,
}

impl Failure {
    pub(super) fn new(kind: Kind, text: &str, secrets: &[String]) -> Self {
        Failure {
            kind,
            text: redact::scrub(text, secrets, MAX_TEXT),
        }
    }

    pub(super) fn of(err: &RedisError, secrets: &[String]) -> Self {
        Failure::new(Kind::of(err), &err.to_string(), secrets)
    }
}

/// The failures of one sync and the pace of their log lines.
#[derive(Debug, Default)]
pub(super) struct Failures {
    /// This sync's, one per kind (the first of each).
    this_sync: Vec<Failure>,
    /// Whether some command of this sync was answered by Redis (with a value or an error of
    /// its own): on a cluster with one master away, the others still count as reached.
    answered: bool,
    /// When each kind was last logged, and whether it is going on.
    logged: Vec<(Kind, Instant, bool)>,
}

impl Failures {
    /// Notes how one command of this sync went.
    pub(super) fn note(&mut self, reply: &Result<redis::Value, Failure>) {
        match reply {
            Ok(_) => self.answered = true,
            Err(failure) => {
                self.answered |= !failure.kind.unreached();
                if !self.this_sync.iter().any(|f| f.kind == failure.kind) {
                    self.this_sync.push(failure.clone());
                }
            }
        }
    }

    /// Whether this sync reached Redis: some command of it was answered.
    pub(super) fn reached(&self) -> bool {
        self.answered
    }

    /// Ends the sync: counts its failures in the limiter's fleet status, logs each kind at most
    /// once a minute, and says when a kind that was going on is over.
    pub(super) fn end_sync(&mut self, limiter: &Limiter) {
        let failures = std::mem::take(&mut self.this_sync);
        self.answered = false;
        for failure in &failures {
            self.log(failure);
        }
        for (kind, _, going_on) in &mut self.logged {
            if *going_on && !failures.iter().any(|f| f.kind == *kind) {
                *going_on = false;
                tracing::info!(kind = kind.as_str(), "the fleet's Redis is fine again");
            }
        }
        limiter.update_fleet_status(|status| {
            if !failures.is_empty() {
                status.sync_errors += 1;
            }
            for failure in &failures {
                let kind = failure.kind.as_str();
                match status.errors.iter_mut().find(|e| e.kind == kind) {
                    Some(error) => {
                        error.count += 1;
                        error.last = Some(failure.text.clone());
                    }
                    None => status.errors.push(FleetError {
                        count: 1,
                        last: Some(failure.text.clone()),
                        ..FleetError::new(kind)
                    }),
                }
            }
        });
    }

    fn log(&mut self, failure: &Failure) {
        let now = Instant::now();
        let kind = failure.kind;
        match self.logged.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, at, going_on)) if *going_on && at.elapsed() < REMINDER => return,
            Some((_, at, going_on)) => {
                *at = now;
                *going_on = true;
            }
            None => self.logged.push((kind, now, true)),
        }
        tracing::warn!(
            kind = kind.as_str(),
            error = %failure.text,
            "{}",
            kind.consequence()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_have_their_kinds() {
        for (code, kind) in [
            ("OOM", Kind::Oom),
            ("WRONGPASS", Kind::Auth),
            ("NOAUTH", Kind::Auth),
            ("MOVED", Kind::Cluster),
            ("CLUSTERDOWN", Kind::Cluster),
            ("WRONGTYPE", Kind::Other),
        ] {
            assert_eq!(Kind::of_code(code), kind, "{code}");
        }
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "connection",
                "timeout",
                "auth",
                "oom",
                "cluster",
                "tls",
                "other"
            ]
        );
    }
}
