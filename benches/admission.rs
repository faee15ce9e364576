//! Admission cost, side by side: this crate's `Limiter` against what else a Rust server could
//! use to count clients, all measured in the same run.
//!
//! - `tower_connlimit`: `try_acquire`, then drop the permit (default config, limit 100 per
//!   client);
//! - `naive_mutex_hashmap`: one `std::sync::Mutex` around a std `HashMap<IpAddr, u32>`, the
//!   entry removed at 0: what a first attempt looks like;
//! - `governor_check_key`: governor's keyed rate limiter (`RateLimiter::dashmap`), one
//!   `check_key`, with a quota that never refuses: a rate check, no release;
//! - `pingora_inflight`: pingora-limits' `Inflight` (an estimator of in-flight counts per key),
//!   `incr` then drop the guard;
//! - `tower_semaphore`: tower's `GlobalConcurrencyLimit`, i.e. `Arc<tokio::sync::Semaphore>`,
//!   `try_acquire_owned` then drop: one global count, no per-client state;
//! - `atomic_floor`: one `fetch_add` and one `fetch_sub` on an `AtomicUsize`: the least an
//!   exact count can cost.
//!
//! `cargo bench --bench admission`. Compare the ratios, not the absolute times. The `threads`
//! group pins its threads to cores and runs a control (a limiter per thread, nothing shared)
//! before and after the others, so that a round in which the machine did not give two threads
//! two cores can be seen, and discarded (`scripts/bench_report.py` does).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pingora_limits::inflight::Inflight;
use tokio::sync::Semaphore;

use tower_connlimit::keys::RequestKey;
use tower_connlimit::rate::{PathRule, Strategy};
use tower_connlimit::{config::CidrLimit, Config, Limiter, RateLimit};

/// The per-client limit every implementation enforces (never reached, but for refusals).
const LIMIT: u32 = 100;

/// The baseline a first attempt would write: one lock around a std `HashMap`.
struct NaiveLimiter {
    limit: u32,
    map: Mutex<HashMap<IpAddr, u32>>,
}

impl NaiveLimiter {
    fn new(limit: u32) -> Self {
        NaiveLimiter {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(&self, ip: IpAddr) -> bool {
        let mut map = self.map.lock().unwrap();
        let count = map.entry(ip).or_insert(0);
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut map = self.map.lock().unwrap();
        if let Some(count) = map.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// governor's keyed limiter, with `quota` per key.
fn governor(quota: Quota) -> DefaultKeyedRateLimiter<IpAddr> {
    RateLimiter::dashmap(quota)
}

/// A quota no benchmark uses up.
fn unlimited() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn limiter(config: Config) -> Limiter {
    Limiter::new(config)
}

fn per_client(limit: u32) -> Config {
    Config {
        max_conns_per_client: limit as usize,
        ..Config::default()
    }
}

fn clients_v4(first: u32, n: u32) -> Vec<IpAddr> {
    (first..first + n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

/// `n` clients (at most 65,536), each in a /48 of its own, as clients of different sites are.
/// (10,000 /64s of one /48 would be one network's many keys: past `max_keys_per_network`, they
/// share the network's key, and take the slower path that finds it.)
fn clients_v6(n: u128) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 80) | 1)))
        .collect()
}

/// The machine's cores, as the process found them before any thread was pinned (a pinned
/// thread sees only its own core).
fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Pins the measuring thread to the first core, so that the scheduler does not move it between
/// measurements (the `threads` group pins its own threads).
fn pin_to_first_core() {
    if let Some(core) = cores().first() {
        core_affinity::set_for_current(*core);
    }
}

/// Measures `op` on each of `clients` in turn, as `implementation` in `case`.
fn each_client(
    group: &mut BenchmarkGroup<'_, WallTime>,
    implementation: &str,
    case: &str,
    clients: &[IpAddr],
    op: impl Fn(IpAddr),
) {
    let mut i = 0;
    group.bench_function(BenchmarkId::new(implementation, case), |b| {
        b.iter(|| {
            // A wrap-around, not a remainder: a division would cost more than some of the
            // implementations measured.
            i += 1;
            if i == clients.len() {
                i = 0;
            }
            op(black_box(clients[i]))
        })
    });
}

/// Admit and release once, for every implementation, with one client, 10,000, and 10,000 IPv6
/// clients.
fn admit_release(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("admit_release");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("one_client", clients_v4(0, 1)),
        ("10k_clients", clients_v4(0, 10_000)),
        ("ipv6_10k_clients", clients_v6(10_000)),
    ];
    for (case, clients) in &cases {
        let ours = limiter(per_client(LIMIT));
        each_client(&mut group, "tower_connlimit", case, clients, |ip| {
            drop(black_box(ours.try_acquire(ip).unwrap()))
        });
        let naive = NaiveLimiter::new(LIMIT);
        each_client(&mut group, "naive_mutex_hashmap", case, clients, |ip| {
            assert!(naive.acquire(ip));
            naive.release(ip);
        });
        let governor = governor(unlimited());
        each_client(&mut group, "governor_check_key", case, clients, |ip| {
            assert!(governor.check_key(&ip).is_ok())
        });
        let inflight = Inflight::new();
        each_client(&mut group, "pingora_inflight", case, clients, |ip| {
            let (guard, count) = inflight.incr(ip, 1);
            assert!(count <= LIMIT as isize);
            drop(black_box(guard));
        });
        let global = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        each_client(&mut group, "tower_semaphore", case, clients, |_| {
            drop(black_box(Arc::clone(&global).try_acquire_owned().unwrap()))
        });
        let floor = AtomicUsize::new(0);
        group.bench_function(BenchmarkId::new("atomic_floor", case), |b| {
            b.iter(|| {
                black_box(floor.fetch_add(1, Ordering::AcqRel));
                floor.fetch_sub(1, Ordering::AcqRel);
            })
        });
    }
    group.finish();
}

/// A refused admission: the client is at its limit (the global semaphore is empty, governor's
/// quota used up).
fn rejected(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("rejected");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 1);
    let ip = clients[0];
    let ours = limiter(per_client(1));
    let _held = ours.try_acquire(ip).unwrap();
    each_client(
        &mut group,
        "tower_connlimit",
        "one_client",
        &clients,
        |ip| assert!(ours.try_acquire(ip).is_err()),
    );
    let naive = NaiveLimiter::new(1);
    assert!(naive.acquire(ip));
    each_client(
        &mut group,
        "naive_mutex_hashmap",
        "one_client",
        &clients,
        |ip| assert!(!naive.acquire(ip)),
    );
    // One per hour: used up by the first check, not replenished while the benchmark runs.
    let governor = governor(Quota::per_hour(NonZeroU32::MIN));
    assert!(governor.check_key(&ip).is_ok());
    each_client(
        &mut group,
        "governor_check_key",
        "one_client",
        &clients,
        |ip| assert!(governor.check_key(&ip).is_err()),
    );
    let inflight = Inflight::new();
    let (_taken, _) = inflight.incr(ip, 1);
    each_client(
        &mut group,
        "pingora_inflight",
        "one_client",
        &clients,
        |ip| {
            let (guard, count) = inflight.incr(ip, 1);
            assert!(count > 1);
            drop(black_box(guard));
        },
    );
    let full = Arc::new(Semaphore::new(1));
    let _all = Arc::clone(&full).try_acquire_owned().unwrap();
    each_client(
        &mut group,
        "tower_semaphore",
        "one_client",
        &clients,
        |_| assert!(Arc::clone(&full).try_acquire_owned().is_err()),
    );
    let floor = AtomicUsize::new(0);
    group.bench_function(BenchmarkId::new("atomic_floor", "one_client"), |b| {
        b.iter(|| {
            black_box(floor.fetch_add(1, Ordering::AcqRel));
            floor.fetch_sub(1, Ordering::AcqRel);
        })
    });
    group.finish();
}

/// A newcomer to a full table of 10,000: making room by forgetting the stalest of a sample of
/// drained records (each newcomer leaves a record behind, so every admission evicts one), and
/// refused when every client holds a connection, so that nothing can go.
fn full_table(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("full_table");
    group.throughput(Throughput::Elements(1));
    let config = |rate| Config {
        max_tracked_clients: 10_000,
        connect_rate: rate,
        ..Config::default()
    };
    let records = limiter(config(Some(RateLimit::new(
        1_000,
        Duration::from_secs(3600),
    ))));
    for ip in clients_v4(0, 10_000) {
        drop(records.try_acquire(ip).unwrap());
    }
    let newcomers = clients_v4(100_000, 1_000_000);
    let next = AtomicUsize::new(0);
    group.bench_function(BenchmarkId::new("tower_connlimit", "evict_one"), |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) % newcomers.len();
            drop(black_box(records.try_acquire(newcomers[i]).unwrap()));
        })
    });
    let busy = limiter(config(None));
    let _held: Vec<_> = clients_v4(0, 10_000)
        .into_iter()
        .map(|ip| busy.try_acquire(ip).unwrap())
        .collect();
    each_client(
        &mut group,
        "tower_connlimit",
        "refused",
        &clients_v4(20_000, 1),
        |ip| assert!(busy.try_acquire(ip).is_err()),
    );
    group.finish();
}

/// Admission with the layered gate on (a connect rate, a token bucket that never refuses here,
/// and ten /24 overrides), against the bare limiter, over 10,000 clients.
fn gate(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("gate");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 10_000);
    let gate_on = limiter(Config {
        connect_rate: Some(
            RateLimit::new(1_000_000_000, Duration::from_secs(1)).strategy(Strategy::TokenBucket),
        ),
        overrides: (0..10u8)
            .map(|i| CidrLimit::new(format!("192.0.{i}.0/24").parse().unwrap(), 50))
            .collect(),
        ..per_client(LIMIT)
    });
    let gate_off = limiter(per_client(LIMIT));
    for (name, limiter) in [("tower_connlimit", &gate_off), ("gate_on", &gate_on)] {
        each_client(&mut group, name, "10k_clients", &clients, |ip| {
            drop(black_box(limiter.try_acquire(ip).unwrap()))
        });
    }
    group.finish();
}

/// Admission with a rate rule that never refuses here, by strategy, against governor's keyed
/// `check_key` (which makes only the rate check, with quanta's clock and one compare-and-swap):
/// connections with a `connect_rate`, and requests with a `request_rate` and one path rule
/// the request matches.
fn rated(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("rated");
    group.throughput(Throughput::Elements(1));
    let never_refuses =
        |strategy| RateLimit::new(1_000_000, Duration::from_nanos(1_000_000)).strategy(strategy);
    let cases = [
        ("one_client", clients_v4(0, 1)),
        ("10k_clients", clients_v4(0, 10_000)),
    ];
    for (case, clients) in &cases {
        for (name, strategy) in [
            ("token_bucket", Strategy::TokenBucket),
            ("sliding_window", Strategy::SlidingWindow),
            ("cooldown", Strategy::Cooldown),
        ] {
            let ours = limiter(Config {
                connect_rate: Some(never_refuses(strategy)),
                ..per_client(LIMIT)
            });
            each_client(&mut group, name, case, clients, |ip| {
                drop(black_box(ours.try_acquire(ip).unwrap()))
            });
        }
        let requests = limiter(Config {
            request_rate: Some(never_refuses(Strategy::SlidingWindow)),
            path_rules: vec![PathRule::prefix(
                "/api",
                never_refuses(Strategy::TokenBucket),
            )],
            ..per_client(LIMIT)
        });
        each_client(&mut group, "request_and_path", case, clients, |ip| {
            drop(black_box(
                requests
                    .try_acquire_request_to(ip, "GET", "/api/items")
                    .unwrap(),
            ))
        });
        let governor = governor(unlimited());
        each_client(&mut group, "governor_check_key", case, clients, |ip| {
            assert!(governor.check_key(&ip).is_ok())
        });
    }
    group.finish();
}

/// Fair share against the same budget without it, over 10,000 clients (each admitted and
/// released at once): with the budget nearly idle, and contended (950 of 1,000 held by other
/// clients, one each, so that every decision reads the fair level).
fn fair_share(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("fair_share");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 10_000);
    let holders = clients_v4(100_000, 950);
    for (case, budget, held) in [("idle", 100_000, 0), ("contended", 1_000, 950)] {
        for fair in [false, true] {
            let limiter = limiter(Config {
                max_conns_per_client: 10,
                max_conns_total: budget,
                fair_share: tower_connlimit::config::FairShare {
                    enabled: fair,
                    ..Default::default()
                },
                ..Config::default()
            });
            let held: Vec<_> = holders[..held]
                .iter()
                .map(|&ip| limiter.try_acquire(ip).unwrap())
                .collect();
            let name = if fair { "fair_share" } else { "budget_only" };
            each_client(&mut group, name, case, &clients, |ip| {
                drop(black_box(limiter.try_acquire(ip).unwrap()))
            });
            drop(held);
        }
    }
    group.finish();
}

/// A request keyed by a 32-byte API key (its hash included) against one keyed by its address,
/// both with a token-bucket request rate that never refuses here, over 10,000 clients: keys
/// from 10,000 addresses, and 10,000 keys from one address.
fn keyed(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("keyed");
    group.throughput(Throughput::Elements(1));
    let rate =
        RateLimit::new(1_000_000, Duration::from_nanos(1_000_000)).strategy(Strategy::TokenBucket);
    let limiter = limiter(Config {
        request_rate: Some(rate),
        ..per_client(LIMIT)
    });
    let clients = clients_v4(0, 10_000);
    let keys: Vec<String> = (0..clients.len())
        .map(|i| format!("sk_live_{i:024}"))
        .collect();
    assert!(keys.iter().all(|key| key.len() == 32));
    let mut measure = |name: &str, op: &dyn Fn(usize)| {
        let mut i = 0;
        group.bench_function(BenchmarkId::new(name, "10k_clients"), |b| {
            b.iter(|| {
                i += 1;
                if i == clients.len() {
                    i = 0;
                }
                op(black_box(i))
            })
        });
    };
    measure("by_address", &|i| {
        drop(black_box(
            limiter
                .try_acquire_request_to(clients[i], "GET", "/")
                .unwrap(),
        ))
    });
    measure("by_key", &|i| {
        let key = RequestKey::new(&keys[i]);
        drop(black_box(
            limiter
                .try_acquire_request_as(clients[i], &key, "GET", "/")
                .unwrap(),
        ))
    });
    measure("by_key_one_address", &|i| {
        let key = RequestKey::new(&keys[i]);
        drop(black_box(
            limiter
                .try_acquire_request_as(clients[0], &key, "GET", "/")
                .unwrap(),
        ))
    });
    group.finish();
}

/// `n` networks of `prefix` bits, one after the other from `start` (IPv4).
fn networks(start: u32, prefix: u8, n: u32) -> Vec<tower_connlimit::Cidr> {
    let step = 1u32 << (32 - prefix);
    (0..n)
        .map(|i| {
            let network = IpAddr::V4(Ipv4Addr::from(start + i * step));
            tower_connlimit::Cidr::new(network, prefix).unwrap()
        })
        .collect()
}

/// Admission with 10,000 networks in each list (exempt, overrides, trusted proxies), against
/// none; and looking up a trusted proxy among 10 and among 10,000.
fn cidr_lists(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("cidr_lists");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 10_000);
    // The clients' 40 /24s get an override each; the rest of every list matches none of them.
    let overrides = networks(0x0a00_0000, 24, 40)
        .into_iter()
        .chain(networks(0x6440_0000, 24, 9_960))
        .map(|network| CidrLimit::new(network, LIMIT as usize))
        .collect();
    let listed = limiter(Config {
        exempt: networks(0xc0a8_0000, 32, 10_000),
        overrides,
        trusted_proxies: networks(0xc612_0000, 32, 10_000),
        ..per_client(LIMIT)
    });
    let bare = limiter(per_client(LIMIT));
    for (name, limiter) in [("tower_connlimit", &bare), ("10k_cidrs_each", &listed)] {
        each_client(&mut group, name, "admit_release", &clients, |ip| {
            drop(black_box(limiter.try_acquire(ip).unwrap()))
        });
    }
    let few = limiter(Config {
        trusted_proxies: networks(0xc612_0000, 32, 10),
        ..per_client(LIMIT)
    });
    let proxies: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)))
        .collect();
    for (name, limiter) in [("10_cidrs", &few), ("10k_cidrs_each", &listed)] {
        each_client(&mut group, name, "is_trusted_proxy", &proxies, |ip| {
            black_box(limiter.is_trusted_proxy(ip));
        });
    }
    group.finish();
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Admit+release while another thread replaces the config as fast as it can, against the same
/// with the config left alone.
fn config_swap(c: &mut Criterion) {
    pin_to_first_core();
    let mut group = c.benchmark_group("config_swap");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 10_000);
    for swapping in [false, true] {
        let limiter = limiter(per_client(LIMIT));
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            if swapping {
                scope.spawn(|| {
                    // Bounded by the flag, which `_stop` below sets when the measurement ends.
                    let mut limit = LIMIT;
                    while !stop.load(Ordering::Relaxed) {
                        limit = if limit == LIMIT { LIMIT + 1 } else { LIMIT };
                        limiter.set_config(per_client(limit)).unwrap();
                    }
                });
            }
            let name = if swapping {
                "while_swapping"
            } else {
                "tower_connlimit"
            };
            // Stops the swapping thread when the measurement ends, even by a panic, so that
            // the scope never waits for it forever.
            let _stop = SetOnDrop(&stop);
            each_client(&mut group, name, "10k_clients", &clients, |ip| {
                drop(black_box(limiter.try_acquire(ip).unwrap()))
            });
        });
    }
    group.finish();
}

/// One operation of thread `thread`, its `i`th.
type Op<'a> = dyn Fn(usize, u64) + Sync + 'a;

/// Runs `op(thread, i)` `iters` times on each of `threads` threads started together, each pinned
/// to a core of its own (as far as there are cores), and returns the wall time divided by
/// `threads`: criterion then reports the time per operation of all threads together (the
/// inverse of throughput).
fn on_threads(threads: usize, iters: u64, op: &Op<'_>) -> Duration {
    let cores = cores();
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let start = &start;
            scope.spawn(move || {
                if let Some(core) = cores.get(thread % cores.len().max(1)) {
                    core_affinity::set_for_current(*core);
                }
                start.wait();
                for i in 0..iters {
                    op(thread, i);
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins every thread before returning.
        began
    })
    .elapsed()
        / threads as u32
}

/// Admit+release on one thread and on two, each thread on 5,000 clients of its own, for every
/// implementation, between two runs of the control: a limiter per thread.
fn threads(c: &mut Criterion) {
    const PER_THREAD: u32 = 5_000;
    let mut group = c.benchmark_group("threads");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(0, 2 * PER_THREAD);
    let client = |thread: usize, i: u64| {
        clients[thread * PER_THREAD as usize + (i % u64::from(PER_THREAD)) as usize]
    };
    for threads in [1, 2] {
        let case = format!("{threads}_thread{}", if threads > 1 { "s" } else { "" });
        let mut measure = |implementation: &str, op: &Op<'_>| {
            group.bench_function(BenchmarkId::new(implementation, &case), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, op))
            });
        };
        // Nothing shared between the threads: what two cores give when nothing is shared.
        let own: Vec<Limiter> = (0..threads).map(|_| limiter(per_client(LIMIT))).collect();
        let control: &Op<'_> = &|t, i| drop(black_box(own[t].try_acquire(client(t, i)).unwrap()));
        measure("control_before", control);
        let ours = limiter(per_client(LIMIT));
        measure("tower_connlimit", &|t, i| {
            drop(black_box(ours.try_acquire(client(t, i)).unwrap()))
        });
        let rated = limiter(Config {
            connect_rate: Some(
                RateLimit::new(1_000_000, Duration::from_nanos(1_000_000))
                    .strategy(Strategy::TokenBucket),
            ),
            ..per_client(LIMIT)
        });
        measure("tower_connlimit_rated", &|t, i| {
            drop(black_box(rated.try_acquire(client(t, i)).unwrap()))
        });
        let naive = NaiveLimiter::new(LIMIT);
        measure("naive_mutex_hashmap", &|t, i| {
            assert!(naive.acquire(black_box(client(t, i))));
            naive.release(client(t, i));
        });
        let governor = governor(unlimited());
        measure("governor_check_key", &|t, i| {
            assert!(governor.check_key(&client(t, i)).is_ok())
        });
        let inflight = Inflight::new();
        measure("pingora_inflight", &|t, i| {
            let (guard, count) = inflight.incr(client(t, i), 1);
            assert!(count <= LIMIT as isize);
            drop(black_box(guard));
        });
        let global = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        measure("tower_semaphore", &|_, _| {
            drop(black_box(Arc::clone(&global).try_acquire_owned().unwrap()))
        });
        let floor = AtomicUsize::new(0);
        measure("atomic_floor", &|_, _| {
            black_box(floor.fetch_add(1, Ordering::AcqRel));
            floor.fetch_sub(1, Ordering::AcqRel);
        });
        measure("control_after", control);
    }
    group.finish();
}

/// Notes the machine's cores before any benchmark pins a thread.
fn find_cores(_: &mut Criterion) {
    cores();
}

criterion_group!(
    benches,
    find_cores,
    admit_release,
    rejected,
    full_table,
    gate,
    rated,
    keyed,
    fair_share,
    cidr_lists,
    config_swap,
    threads
);
criterion_main!(benches);
