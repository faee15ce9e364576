//! Race stress tests: many OS threads and many tokio tasks admit and release at once against one
//! client's limit, the global cap and the request limit, also while another thread swaps the
//! config, and an outside gauge checks that no more permits are ever held than the limit allows.
//!
//! The gauge goes up right after a successful acquire and down right before the permit is
//! dropped, so it never counts more than the limiter does: a high-water mark above a limit is an
//! over-admission. Workers hold each permit until the gauge reaches the limit (or a few dozen
//! yields pass), so the limit is really reached and the refusals really happen. Every loop is
//! bounded in count and in time.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_connlimit::{Config, Limiter, RejectReason};

/// OS threads per test.
const THREADS: usize = 8;
/// Attempts per worker, at most.
const ITERATIONS: usize = 20_000;
/// How long the workers of one test run at least (when they have not used up their attempts)...
const RUN_FOR: Duration = Duration::from_millis(800);
/// ...and how long they go on, at most, when a loaded machine has kept them from reaching the
/// test's goal (the limit reached, a refusal seen) by then.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);
/// Attempts per worker when the goal is slow to come, at most.
const MAX_ITERATIONS: usize = 5 * ITERATIONS;
/// How many times a holder yields, at most, waiting for the gauge to reach the limit.
const HOLD_YIELDS: usize = 50;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Permits held at once, as seen from outside the limiter, and the most ever held.
///
/// Its read-modify-writes are `SeqCst`, so they stay ordered with the limiter's own counter
/// updates around them: a permit's `leave` comes before the release that lets another thread's
/// acquire (and `enter`) succeed.
#[derive(Default)]
struct Gauge {
    held: AtomicUsize,
    high: AtomicUsize,
}

impl Gauge {
    /// Right after an acquire.
    fn enter(&self) {
        let held = self.held.fetch_add(1, SeqCst) + 1;
        self.high.fetch_max(held, SeqCst);
    }

    /// Right before a release.
    fn leave(&self) {
        self.held.fetch_sub(1, SeqCst);
    }

    fn held(&self) -> usize {
        self.held.load(SeqCst)
    }

    fn high(&self) -> usize {
        self.high.load(SeqCst)
    }
}

/// Admissions and refusals, counted by the workers.
#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    fn count(&self, admitted: bool) {
        let counter = if admitted {
            &self.admitted
        } else {
            &self.refused
        };
        counter.fetch_add(1, SeqCst);
    }

    fn admitted(&self) -> u64 {
        self.admitted.load(SeqCst)
    }

    fn refused(&self) -> u64 {
        self.refused.load(SeqCst)
    }

    /// Both admissions (at least `limit`) and refusals happened.
    fn assert_plausible(&self, limit: usize) {
        let (admitted, refused) = (self.admitted(), self.refused());
        let attempts = admitted + refused;
        assert!(
            admitted >= limit as u64,
            "only {admitted} of {attempts} attempts admitted"
        );
        assert!(refused > 0, "none of {attempts} attempts was refused");
    }
}

/// Whether a worker stops before attempt `i`: once it has made [`ITERATIONS`] attempts or run
/// for [`RUN_FOR`], and `reached` says the test's goal was met; in any case after
/// [`MAX_ITERATIONS`] attempts or [`GIVE_UP_AFTER`] (the test's assertions then say what was
/// missed).
fn stop(i: usize, started: Instant, reached: impl Fn() -> bool) -> bool {
    let ran = started.elapsed();
    i >= MAX_ITERATIONS
        || ran >= GIVE_UP_AFTER
        || ((i >= ITERATIONS || ran >= RUN_FOR) && reached())
}

/// Runs `body(worker, iteration)` on `threads` OS threads until [`stop`] says so, given the
/// test's goal `reached`. A panic in a worker fails the test.
fn on_threads(
    threads: usize,
    reached: impl Fn() -> bool + Sync,
    body: impl Fn(usize, usize) + Sync,
) {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (body, reached) = (&body, &reached);
            scope.spawn(move || {
                for i in 0..MAX_ITERATIONS {
                    if stop(i, started, reached) {
                        break;
                    }
                    body(worker, i);
                }
            });
        }
    });
}

/// Holds on (yielding the thread) while `more` says the gauge has not reached the limit, at
/// most [`HOLD_YIELDS`] times.
fn hold_while(more: impl Fn() -> bool) {
    for _ in 0..HOLD_YIELDS {
        if !more() {
            return;
        }
        std::thread::yield_now();
    }
}

/// [`hold_while`] for a task: yields to the runtime instead of the OS.
async fn hold_while_async(more: impl Fn() -> bool) {
    for _ in 0..HOLD_YIELDS {
        if !more() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Nothing is left: no connection, no request, and once drained clients are forgotten, no entry.
fn assert_drained(limiter: &Limiter) {
    limiter.purge_expired();
    let stats = limiter.stats();
    assert_eq!(stats.open_connections, 0);
    assert_eq!(stats.in_flight_requests, 0);
    assert_eq!(stats.tracked_clients, 0, "{:?}", limiter.clients());
    assert!(limiter.clients().is_empty());
}

/// Eight threads racing for one client's four connections never hold a fifth, do hold four,
/// and leave nothing behind; the limiter's counts match what the threads saw.
#[test]
fn eight_threads_never_pass_one_clients_connection_limit() {
    const LIMIT: usize = 4;
    let limiter = Limiter::new(Config {
        max_conns_per_client: LIMIT,
        ..Config::default()
    });
    let client = ip("192.0.2.1");
    let (gauge, tally) = (Gauge::default(), Tally::default());
    let reached = || gauge.high() == LIMIT && tally.refused() > 0;
    on_threads(THREADS, reached, |_, _| match limiter.try_acquire(client) {
        Ok(permit) => {
            gauge.enter();
            tally.count(true);
            assert!(limiter.open_connections(client) <= LIMIT);
            hold_while(|| gauge.held() < LIMIT);
            gauge.leave();
            drop(permit);
        }
        Err(refused) => {
            assert_eq!(refused.reason(), RejectReason::ClientConnections);
            tally.count(false);
        }
    });
    // Shown when the test fails (or with --nocapture).
    eprintln!(
        "per-client: high {} of {LIMIT}; admitted {}, refused {}",
        gauge.high(),
        tally.admitted(),
        tally.refused()
    );
    assert!(gauge.high() <= LIMIT, "held {} at once", gauge.high());
    assert_eq!(gauge.high(), LIMIT, "the limit was never reached");
    tally.assert_plausible(LIMIT);
    let stats = limiter.stats();
    assert_eq!(stats.admitted_connections, tally.admitted());
    assert_eq!(stats.rejected["client_connections"], tally.refused());
    assert_drained(&limiter);
}

/// Eight threads over 48 clients never hold more than the global cap of 6 connections, nor more
/// than 2 for one client; they do fill the cap, and leave nothing behind.
#[test]
fn eight_threads_never_pass_the_global_cap_across_many_clients() {
    const CAP: usize = 6;
    const PER_CLIENT: usize = 2;
    const CLIENTS: usize = 48;
    let limiter = Limiter::new(Config {
        max_conns_per_client: PER_CLIENT,
        max_conns_total: CAP,
        ..Config::default()
    });
    let clients: Vec<IpAddr> = (0..CLIENTS as u8)
        .map(|n| IpAddr::from([10, 0, 0, n + 1]))
        .collect();
    let total = Gauge::default();
    let per_client: Vec<Gauge> = clients.iter().map(|_| Gauge::default()).collect();
    let tally = Tally::default();
    let refused_by_cap = AtomicU64::new(0);
    let reached = || total.high() == CAP && refused_by_cap.load(SeqCst) > 0;
    on_threads(THREADS, reached, |worker, i| {
        // Pairs of workers walk the clients side by side, so per-client limits bite too.
        let c = (i + worker / 2) % CLIENTS;
        match limiter.try_acquire(clients[c]) {
            Ok(permit) => {
                total.enter();
                per_client[c].enter();
                tally.count(true);
                assert!(limiter.open_connections(clients[c]) <= PER_CLIENT);
                hold_while(|| total.held() < CAP);
                per_client[c].leave();
                total.leave();
                drop(permit);
            }
            Err(refused) => {
                match refused.reason() {
                    RejectReason::TotalConnections => refused_by_cap.fetch_add(1, SeqCst),
                    RejectReason::ClientConnections => 0,
                    other => panic!("refused for {other:?}"),
                };
                tally.count(false);
            }
        }
    });
    let busiest = per_client.iter().map(Gauge::high).max().unwrap();
    eprintln!(
        "global cap: high {} of {CAP}, busiest client {busiest} of {PER_CLIENT}; admitted {}, \
         refused {} ({} by the cap)",
        total.high(),
        tally.admitted(),
        tally.refused(),
        refused_by_cap.load(SeqCst)
    );
    assert!(total.high() <= CAP, "held {} at once", total.high());
    assert_eq!(total.high(), CAP, "the cap was never reached");
    assert!(busiest <= PER_CLIENT, "one client held {busiest} at once");
    tally.assert_plausible(CAP);
    let stats = limiter.stats();
    assert!(refused_by_cap.load(SeqCst) > 0);
    assert_eq!(
        stats.rejected["total_connections"],
        refused_by_cap.load(SeqCst)
    );
    assert_eq!(
        stats.rejected["total_connections"] + stats.rejected["client_connections"],
        tally.refused()
    );
    assert_eq!(stats.admitted_connections, tally.admitted());
    assert_drained(&limiter);
}

/// What the tasks of the request test share.
struct Shared {
    limiter: Limiter,
    /// Connection and request gauges for the two clients.
    connections: [Gauge; 2],
    requests: [Gauge; 2],
    tally: Tally,
    started: Instant,
}

impl Shared {
    /// The goal: both clients reached both limits, and something was refused.
    fn reached(&self) -> bool {
        self.requests.iter().all(|g| g.high() == TASK_REQUESTS)
            && self
                .connections
                .iter()
                .all(|g| g.high() == TASK_CONNECTIONS)
            && self.tally.refused() > 0
    }
}

/// The limits of the task test.
const TASK_REQUESTS: usize = 3;
const TASK_CONNECTIONS: usize = 2;

/// 64 tasks on a multi-thread runtime, racing for request permits (at most 3 in flight per
/// client) and connection permits (at most 2 per client) of two clients — one IPv4 address and
/// one IPv6 /64 reached from many addresses — never hold more than either limit, reach both,
/// and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_never_pass_the_request_or_connection_limits() {
    const TASKS: usize = 64;
    let shared = Arc::new(Shared {
        limiter: Limiter::new(Config {
            max_conns_per_client: TASK_CONNECTIONS,
            max_requests_per_client: TASK_REQUESTS,
            ..Config::default()
        }),
        connections: Default::default(),
        requests: Default::default(),
        tally: Tally::default(),
        started: Instant::now(),
    });
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let s = &*shared;
                let c = task % 2;
                let addr = if c == 0 {
                    ip("192.0.2.1")
                } else {
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, task as u16])
                };
                for i in 0..MAX_ITERATIONS / 4 {
                    if stop(i * 4, s.started, || s.reached()) {
                        break;
                    }
                    if (i + task / 2) % 2 == 0 {
                        let Ok(permit) = s.limiter.try_acquire_request(addr) else {
                            s.tally.count(false);
                            continue;
                        };
                        s.requests[c].enter();
                        s.tally.count(true);
                        let counted = s.limiter.client(addr).unwrap().in_flight_requests;
                        assert!(counted <= TASK_REQUESTS);
                        hold_while_async(|| s.requests[c].held() < TASK_REQUESTS).await;
                        s.requests[c].leave();
                        drop(permit);
                    } else {
                        let Ok(permit) = s.limiter.try_acquire(addr) else {
                            s.tally.count(false);
                            continue;
                        };
                        s.connections[c].enter();
                        s.tally.count(true);
                        assert!(s.limiter.open_connections(addr) <= TASK_CONNECTIONS);
                        hold_while_async(|| s.connections[c].held() < TASK_CONNECTIONS).await;
                        s.connections[c].leave();
                        drop(permit);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(GIVE_UP_AFTER + Duration::from_secs(5), task)
            .await
            .expect("a task did not finish in time")
            .expect("a task panicked");
    }
    eprintln!(
        "requests: highs {:?} of {TASK_REQUESTS}, connections: highs {:?} of {TASK_CONNECTIONS}; \
         admitted {}, refused {}",
        shared.requests.each_ref().map(Gauge::high),
        shared.connections.each_ref().map(Gauge::high),
        shared.tally.admitted(),
        shared.tally.refused()
    );
    for c in 0..2 {
        let (requests, connections) = (shared.requests[c].high(), shared.connections[c].high());
        assert!(
            requests <= TASK_REQUESTS,
            "client {c} had {requests} in flight"
        );
        assert!(
            connections <= TASK_CONNECTIONS,
            "client {c} held {connections}"
        );
        assert_eq!(
            requests, TASK_REQUESTS,
            "client {c} never reached its request limit"
        );
        assert_eq!(
            connections, TASK_CONNECTIONS,
            "client {c} never reached its limit"
        );
    }
    shared.tally.assert_plausible(TASK_REQUESTS);
    let stats = shared.limiter.stats();
    assert_eq!(
        stats.admitted_connections + stats.admitted_requests,
        shared.tally.admitted()
    );
    assert_eq!(
        stats.rejected["client_connections"] + stats.rejected["client_requests"],
        shared.tally.refused()
    );
    assert!(stats.rejected["client_requests"] > 0 && stats.rejected["client_connections"] > 0);
    assert_drained(&shared.limiter);
}

/// Hammers `clients` from [`THREADS`] threads while another thread swaps the config between
/// `low` and `high` (whose limit, read by `limit`, is larger), then settles on `low` and lets
/// the workers go on a while. Checks that:
///
/// - no more permits are ever held than `high` allows, and `high` is reached;
/// - of the permits acquired after the settling swap returned, no more are held at once than
///   `low` allows, and `low` is reached: each such admission saw a count under `low`, and
///   permits held from before only make that count larger;
/// - everything is released at the end.
fn swap_limits_under_load(
    low: Config,
    high: Config,
    limit: fn(&Config) -> usize,
    clients: &[IpAddr],
) {
    const MAX_SWAPS: usize = 5_000;
    const SWAP_FOR: Duration = Duration::from_millis(500);
    /// How long the workers go on once the config has settled, at most.
    const SETTLED_FOR: Duration = Duration::from_millis(300);
    /// How many attempts each worker makes once the config has settled, at most; it stops
    /// early after [`SETTLED_ENOUGH`] once permits acquired since have reached the limit.
    const SETTLED_ITERATIONS: usize = 50_000;
    const SETTLED_ENOUGH: usize = 1_000;
    let (low_limit, high_limit) = (limit(&low), limit(&high));
    assert!(low_limit < high_limit);
    let limiter = Limiter::new(low.clone());
    let all = Gauge::default();
    let after_settling = Gauge::default();
    let settled = AtomicBool::new(false);
    let refused_after_settling = AtomicU64::new(0);
    let (swaps, highs_reached) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let hard_deadline = Instant::now() + SWAP_FOR + SETTLED_FOR + Duration::from_secs(2);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let deadline = Instant::now() + SWAP_FOR;
            for round in 0..MAX_SWAPS {
                if Instant::now() >= deadline {
                    break;
                }
                limiter.set_config(high.clone()).unwrap();
                // Every 32nd round, let the workers fill the larger limit (a bounded wait on
                // the gauge); the other rounds swap back at once, racing the admissions.
                for _ in 0..if round % 32 == 0 { 10_000 } else { 0 } {
                    let full = all.held() >= high_limit;
                    if full || Instant::now() >= deadline {
                        highs_reached.fetch_add(usize::from(full), SeqCst);
                        break;
                    }
                    std::thread::yield_now();
                }
                limiter.set_config(low.clone()).unwrap();
                swaps.fetch_add(1, SeqCst);
            }
            limiter.set_config(low.clone()).unwrap();
            settled.store(true, SeqCst);
        });
        for worker in 0..THREADS {
            let (limiter, all, after_settling) = (&limiter, &all, &after_settling);
            let (settled, refused_after_settling) = (&settled, &refused_after_settling);
            scope.spawn(move || {
                let mut settled_since: Option<Instant> = None;
                let mut settled_attempts = 0;
                for i in 0..ITERATIONS * 4 {
                    let now = Instant::now();
                    if now >= hard_deadline
                        || settled_attempts >= SETTLED_ITERATIONS
                        || (settled_attempts >= SETTLED_ENOUGH
                            && after_settling.high() >= low_limit)
                        || settled_since.is_some_and(|since| now - since >= SETTLED_FOR)
                    {
                        break;
                    }
                    // Read before the attempt: if set, this attempt sees the settled config.
                    let is_settled = settled.load(SeqCst);
                    if is_settled {
                        settled_since.get_or_insert(now);
                        settled_attempts += 1;
                    }
                    let client = clients[(i + worker) % clients.len()];
                    let Ok(permit) = limiter.try_acquire(client) else {
                        if is_settled {
                            refused_after_settling.fetch_add(1, SeqCst);
                            // Leave the cores to the holders of earlier permits.
                            std::thread::yield_now();
                        }
                        continue;
                    };
                    all.enter();
                    if is_settled {
                        after_settling.enter();
                    }
                    let target = limit(&limiter.config());
                    // A permit from before the settling swap is let go once it happened, so
                    // that the settled limit can be reached by new ones (on two busy cores, a
                    // holder's yields can take long).
                    hold_while(|| all.held() < target && (is_settled || !settled.load(SeqCst)));
                    if is_settled {
                        after_settling.leave();
                    }
                    all.leave();
                    drop(permit);
                }
            });
        }
    });
    eprintln!(
        "swaps {} ({} reached {high_limit}): high {} of {high_limit}, after settling {} of \
         {low_limit}, {} refused after settling; left open {}, tracked {}",
        swaps.load(SeqCst),
        highs_reached.load(SeqCst),
        all.high(),
        after_settling.high(),
        refused_after_settling.load(SeqCst),
        limiter.stats().open_connections,
        limiter.stats().tracked_clients,
    );
    assert!(all.high() <= high_limit, "held {} at once", all.high());
    assert!(
        after_settling.high() <= low_limit,
        "held {} at once after settling on {low_limit}",
        after_settling.high()
    );
    assert_drained(&limiter);
    assert!(swaps.load(SeqCst) > 0, "the config was never swapped");
    assert_eq!(all.high(), high_limit, "the larger limit was never reached");
    assert!(highs_reached.load(SeqCst) > 0);
    assert_eq!(
        after_settling.high(),
        low_limit,
        "the settled limit was never reached"
    );
    assert!(refused_after_settling.load(SeqCst) > 0);
}

/// Swapping one client's limit between 2 and 5 under eight threads never lets it hold more than
/// 5; once settled on 2, permits acquired afterwards never number more than 2 at once.
#[test]
fn swapping_the_per_client_limit_never_admits_past_the_larger_one() {
    let config = |max_conns_per_client| Config {
        max_conns_per_client,
        ..Config::default()
    };
    swap_limits_under_load(
        config(2),
        config(5),
        |c| c.max_conns_per_client,
        &[ip("192.0.2.1")],
    );
}

/// Swapping the global cap between 3 and 7 under eight threads over 32 clients never lets more
/// than 7 be held; once settled on 3, permits acquired afterwards never number more than 3.
#[test]
fn swapping_the_global_cap_never_admits_past_the_larger_one() {
    let config = |max_conns_total| Config {
        max_conns_per_client: 0,
        max_conns_total,
        ..Config::default()
    };
    let clients: Vec<IpAddr> = (1..=32u8).map(|n| IpAddr::from([10, 1, 0, n])).collect();
    swap_limits_under_load(config(3), config(7), |c| c.max_conns_total, &clients);
}

/// Turning the global cap on and off while four threads churn connections: every time it is
/// turned on, it counts the connections admitted while it was off, including those admitted in
/// the instant it was turned on, so that exactly `cap - held` more are admitted.
#[test]
fn turning_the_global_cap_on_counts_every_open_connection() {
    const WORKERS: u8 = 4;
    const CAP: usize = 64;
    const ROUNDS: usize = 100;
    const RUN_AT_MOST: Duration = Duration::from_secs(5);
    /// Attempts per worker, at most: the workers churn until the rounds are done.
    const ATTEMPTS: usize = 20_000_000;
    let uncapped = Config {
        max_conns_per_client: 0,
        ..Config::default()
    };
    let capped = Config {
        max_conns_total: CAP,
        ..uncapped.clone()
    };
    let limiter = Limiter::new(uncapped.clone());
    let held = Gauge::default();
    let admitted = AtomicU64::new(0);
    let (pause, paused, done) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicBool::new(false),
    );
    let deadline = Instant::now() + RUN_AT_MOST;
    // Waits (yielding) until `cond`, or the deadline; says which.
    let wait_for = |cond: &dyn Fn() -> bool| {
        while !cond() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    };
    let mut rounds = 0;
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (limiter, held, admitted) = (&limiter, &held, &admitted);
            let (pause, paused, done, wait_for) = (&pause, &paused, &done, &wait_for);
            scope.spawn(move || {
                let mut ring = std::collections::VecDeque::new();
                for i in 0..ATTEMPTS {
                    if done.load(SeqCst) || Instant::now() >= deadline {
                        break;
                    }
                    if pause.load(SeqCst) {
                        // Keep what is held while the main thread counts.
                        paused.fetch_add(1, SeqCst);
                        wait_for(&|| !pause.load(SeqCst) || done.load(SeqCst));
                        paused.fetch_sub(1, SeqCst);
                    }
                    let client = IpAddr::from([10, 1, worker, (i % 8) as u8]);
                    if let Ok(permit) = limiter.try_acquire(client) {
                        held.enter();
                        admitted.fetch_add(1, SeqCst);
                        ring.push_back(permit);
                    }
                    if ring.len() > 2 {
                        held.leave();
                        drop(ring.pop_front());
                    }
                }
                for permit in ring {
                    held.leave();
                    drop(permit);
                }
            });
        }
        // Lets the workers make `n` more admissions.
        let churn = |n: u64| {
            let from = admitted.load(SeqCst);
            wait_for(&|| admitted.load(SeqCst) >= from + n)
        };
        while rounds < ROUNDS && churn(50) {
            limiter.set_config(capped.clone()).unwrap();
            if !churn(50) {
                break;
            }
            pause.store(true, SeqCst);
            if !wait_for(&|| paused.load(SeqCst) == usize::from(WORKERS)) {
                break;
            }
            let before = held.held();
            let mut more = Vec::new();
            for n in 0..=CAP {
                match limiter.try_acquire(IpAddr::from([10, 2, (n / 250) as u8, (n % 250) as u8])) {
                    Ok(permit) => more.push(permit),
                    Err(refused) => {
                        assert_eq!(refused.reason(), RejectReason::TotalConnections);
                        break;
                    }
                }
            }
            assert_eq!(
                more.len(),
                CAP - before,
                "round {rounds}: {before} held, so {} more fit under {CAP}",
                CAP - before
            );
            drop(more);
            limiter.set_config(uncapped.clone()).unwrap();
            pause.store(false, SeqCst);
            rounds += 1;
        }
        done.store(true, SeqCst);
        pause.store(false, SeqCst);
    });
    eprintln!("{rounds} rounds of turning the cap on and off");
    assert!(rounds >= 10, "only {rounds} rounds ran");
    assert_drained(&limiter);
}
