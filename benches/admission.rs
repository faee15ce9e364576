//! Admission cost, side by side: this crate's `Limiter` against the naive
//! `Mutex<HashMap<IpAddr, u32>>`, tower's `GlobalConcurrencyLimit` (a tokio semaphore, acquired
//! and released as that layer does), and the floor of one atomic increment and decrement.
//!
//! `cargo bench --bench admission`. Each group measures every implementation in the same run,
//! so compare the ratios, not the absolute times. The `*_threads` groups run the same work on
//! one thread and on two (each on its own clients) and report the time per operation of both
//! threads together, so a lower figure with two threads is more throughput.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::Semaphore;

use tower_connlimit::{CidrLimit, Config, Limiter, RateLimit, Strategy};

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

/// tower's `GlobalConcurrencyLimit`: one shared semaphore, an owned permit per call, released on
/// drop. The floor for a limiter with a global count and no per-client state.
fn semaphore() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

fn limiter(max_conns_per_client: usize) -> Limiter {
    Limiter::new(Config {
        max_conns_per_client,
        ..Config::default()
    })
}

fn clients_v4(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn admit_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit_release");
    group.throughput(Throughput::Elements(1));
    let cases: [(&str, Vec<IpAddr>); 3] = [
        ("one_client", clients_v4(1)),
        ("10k_clients", clients_v4(10_000)),
        (
            "ipv6_10k_clients",
            (0..10_000u128)
                .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64) | 1)))
                .collect(),
        ),
    ];
    for (case, clients) in cases {
        let limiter = limiter(100);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("tower_connlimit", case), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                drop(black_box(limiter.try_acquire(clients[i]).unwrap()));
            })
        });
        let naive = NaiveLimiter::new(100);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("naive_mutex_hashmap", case), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                assert!(naive.acquire(black_box(clients[i])));
                naive.release(clients[i]);
            })
        });
        let global = semaphore();
        group.bench_function(
            BenchmarkId::new("tower_global_concurrency_limit", case),
            |b| b.iter(|| drop(black_box(Arc::clone(&global).try_acquire_owned().unwrap()))),
        );
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

/// Admit+release for a client that keeps another connection open throughout, so its entry stays
/// in the map: the cost of a decision without the entry's insertion and removal (and without
/// the tracked-clients count that goes with them).
fn admit_release_held(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit_release_held");
    group.throughput(Throughput::Elements(1));
    let client = clients_v4(1)[0];
    let limiter = limiter(100);
    let _held = limiter.try_acquire(client).unwrap();
    group.bench_function(BenchmarkId::new("tower_connlimit", "one_client"), |b| {
        b.iter(|| drop(black_box(limiter.try_acquire(black_box(client)).unwrap())))
    });
    let naive = NaiveLimiter::new(100);
    assert!(naive.acquire(client));
    group.bench_function(BenchmarkId::new("naive_mutex_hashmap", "one_client"), |b| {
        b.iter(|| {
            assert!(naive.acquire(black_box(client)));
            naive.release(client);
        })
    });
    let floor = AtomicUsize::new(1);
    group.bench_function(BenchmarkId::new("atomic_floor", "one_client"), |b| {
        b.iter(|| {
            black_box(floor.fetch_add(1, Ordering::AcqRel));
            floor.fetch_sub(1, Ordering::AcqRel);
        })
    });
    group.finish();
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads started together, and
/// returns the wall time divided by `threads`: criterion then reports the time per operation
/// of all threads together (the inverse of throughput).
fn on_threads(threads: usize, iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let start = &start;
            scope.spawn(move || {
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

/// Admit+release across distinct clients on one thread and on two, each thread on clients of
/// its own, for every implementation.
fn admit_release_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit_release_threads");
    group.throughput(Throughput::Elements(1));
    const CLIENTS_PER_THREAD: u64 = 5_000;
    let clients = clients_v4(2 * CLIENTS_PER_THREAD as u32);
    let client = |thread: usize, i: u64| {
        clients[thread * CLIENTS_PER_THREAD as usize + (i % CLIENTS_PER_THREAD) as usize]
    };
    for threads in [1, 2] {
        let case = format!("{threads}_thread{}", if threads > 1 { "s" } else { "" });
        let limiter = limiter(100);
        group.bench_function(BenchmarkId::new("tower_connlimit", &case), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|t, i| {
                    drop(black_box(limiter.try_acquire(client(t, i)).unwrap()))
                })
            })
        });
        // The same work with nothing shared between the threads: a limiter each. The gap to
        // `tower_connlimit` is what the shared counters and the shared map cost.
        let own: Vec<Limiter> = (0..threads).map(|_| self::limiter(100)).collect();
        group.bench_function(BenchmarkId::new("tower_connlimit_unshared", &case), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|t, i| {
                    drop(black_box(own[t].try_acquire(client(t, i)).unwrap()))
                })
            })
        });
        let naive = NaiveLimiter::new(100);
        group.bench_function(BenchmarkId::new("naive_mutex_hashmap", &case), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|t, i| {
                    assert!(naive.acquire(black_box(client(t, i))));
                    naive.release(client(t, i));
                })
            })
        });
        let global = semaphore();
        group.bench_function(
            BenchmarkId::new("tower_global_concurrency_limit", &case),
            |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|_, _| {
                        drop(black_box(Arc::clone(&global).try_acquire_owned().unwrap()))
                    })
                })
            },
        );
        let floor = AtomicUsize::new(0);
        group.bench_function(BenchmarkId::new("atomic_floor", &case), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|_, _| {
                    black_box(floor.fetch_add(1, Ordering::AcqRel));
                    floor.fetch_sub(1, Ordering::AcqRel);
                })
            })
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
    let mut group = c.benchmark_group("admit_release_config_swap");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(10_000);
    for swapping in [false, true] {
        let limiter = limiter(100);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            if swapping {
                scope.spawn(|| {
                    // Bounded by the flag, which `_stop` below sets when the measurement ends.
                    let mut limit = 100;
                    while !stop.load(Ordering::Relaxed) {
                        limit = if limit == 100 { 101 } else { 100 };
                        limiter
                            .set_config(Config {
                                max_conns_per_client: limit,
                                ..Config::default()
                            })
                            .unwrap();
                    }
                });
            }
            let name = if swapping {
                "while_swapping"
            } else {
                "config_left_alone"
            };
            // Stops the swapping thread when the measurement ends, even by a panic, so that
            // the scope never waits for it forever.
            let _stop = SetOnDrop(&stop);
            let mut i = 0;
            group.bench_function(BenchmarkId::new("tower_connlimit", name), |b| {
                b.iter(|| {
                    i = (i + 1) % clients.len();
                    drop(black_box(limiter.try_acquire(clients[i]).unwrap()));
                })
            });
        });
    }
    group.finish();
}

/// Admission with the layered gate on: a connect-rate rule that never refuses here, and an
/// override list to search, against the bare limiter.
fn gate_on(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit_release_gate");
    group.throughput(Throughput::Elements(1));
    let clients = clients_v4(10_000);
    let gated = Limiter::new(Config {
        max_conns_per_client: 100,
        connect_rate: Some(
            RateLimit::new(1_000_000_000, Duration::from_secs(1)).strategy(Strategy::TokenBucket),
        ),
        overrides: (0..10u8)
            .map(|i| CidrLimit::new(format!("192.0.{i}.0/24").parse().unwrap(), 50))
            .collect(),
        ..Config::default()
    });
    for (name, limiter) in [
        ("tower_connlimit_gate_on", &gated),
        ("tower_connlimit", &limiter(100)),
    ] {
        let mut i = 0;
        group.bench_function(BenchmarkId::new(name, "10k_clients"), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                drop(black_box(limiter.try_acquire(clients[i]).unwrap()));
            })
        });
    }
    group.finish();
}

fn rejected(c: &mut Criterion) {
    let mut group = c.benchmark_group("rejected_admit");
    group.throughput(Throughput::Elements(1));
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let limiter = limiter(1);
    let _held = limiter.try_acquire(ip).unwrap();
    group.bench_function(BenchmarkId::new("tower_connlimit", "one_client"), |b| {
        b.iter(|| assert!(limiter.try_acquire(black_box(ip)).is_err()))
    });
    let naive = NaiveLimiter::new(1);
    assert!(naive.acquire(ip));
    group.bench_function(BenchmarkId::new("naive_mutex_hashmap", "one_client"), |b| {
        b.iter(|| assert!(!naive.acquire(black_box(ip))))
    });
    let full = Arc::new(Semaphore::new(1));
    let _taken = Arc::clone(&full).try_acquire_owned().unwrap();
    group.bench_function(
        BenchmarkId::new("tower_global_concurrency_limit", "one_client"),
        |b| b.iter(|| assert!(Arc::clone(black_box(&full)).try_acquire_owned().is_err())),
    );
    group.finish();
}

criterion_group!(
    benches,
    admit_release,
    admit_release_held,
    admit_release_threads,
    gate_on,
    config_swap,
    rejected
);
criterion_main!(benches);
