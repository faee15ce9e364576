//! Admission with a fleet joined, against the same limiter alone: a fleet must never be on the
//! admission path, whether its Redis is up, down, or accepting connections and never answering.
//!
//! `cargo bench --bench fleet --features redis` (needs `redis-server`, which
//! `scripts/need.sh redis-server redis-server` installs). Each case admits and releases a
//! connection for 10,000 clients in turn under a connect rate that never refuses, so every
//! admission goes through the rate check and, with a fleet, leaves its note for the sync task,
//! which meanwhile talks to Redis every 100 ms on a runtime thread of its own. The four
//! limiters (and three fleets) live through the whole run, so each measurement shares the
//! machine with the same background work.

#[path = "../tests/support/redis.rs"]
mod redis_server;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use redis_server::{free_port, Redis};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tower_connlimit::fleet::{Fleet, FleetConfig};
use tower_connlimit::{Config, Limiter, RateLimit};

fn clients() -> Vec<IpAddr> {
    (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn limiter() -> Limiter {
    Limiter::new(Config {
        connect_rate: Some(RateLimit::new(1_000_000_000, Duration::from_secs(1))),
        ..Config::default()
    })
}

fn fleet(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let clients = clients();
    let mut group = c.benchmark_group("fleet");
    group.throughput(Throughput::Elements(1));

    let redis = Redis::start();
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}/", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(1000) {
            held.push(stream);
        }
    });
    let cases = [
        ("no_fleet", None),
        ("joined", Some(redis.url())),
        (
            "redis_down",
            Some(format!("redis://127.0.0.1:{}/", free_port())),
        ),
        ("never_answers", Some(silent_url)),
    ];
    // Every case's limiter and fleet live through the whole run, so that the fleets' tasks
    // share the machine with every measurement alike, and only the limiter measured differs.
    let limiters: Vec<_> = cases
        .into_iter()
        .map(|(case, url)| {
            let limiter = limiter();
            let fleet = url.map(|url| {
                let joining = Fleet::join(&limiter, FleetConfig::new(url, case));
                runtime.block_on(joining).unwrap()
            });
            (case, limiter, fleet)
        })
        .collect();
    for (case, limiter, _fleet) in &limiters {
        let mut i = 0;
        group.bench_function(BenchmarkId::new("tower_connlimit", case), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                drop(black_box(limiter.try_acquire(clients[i]).unwrap()));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fleet);
criterion_main!(benches);
