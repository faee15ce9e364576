//! The warm admission paths allocate nothing: counted with a global allocator that tallies
//! every allocation made by this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::time::Duration;

use tower_connlimit::keys::{KeyConfig, RequestKey, Tier};
use tower_connlimit::rate::{PathRule, RateLimit, Strategy};
use tower_connlimit::{config::CidrLimit, Config, Limiter};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn limiter() -> Limiter {
    Limiter::new(Config {
        max_conns_per_client: 2,
        max_conns_total: 1_000_000,
        max_requests_per_client: 2,
        exempt: vec!["10.0.0.0/8".parse().unwrap()],
        overrides: vec![CidrLimit::new("192.0.2.0/24".parse().unwrap(), 3)],
        ..Config::default()
    })
}

fn clients() -> Vec<IpAddr> {
    let mut clients: Vec<IpAddr> = (1..=200u8)
        .map(|n| IpAddr::from([198, 51, 100, n]))
        .collect();
    clients.push("192.0.2.1".parse().unwrap());
    clients.push("10.1.1.1".parse().unwrap());
    clients.push("2001:db8::1".parse().unwrap());
    clients.push("::ffff:203.0.113.9".parse().unwrap());
    clients
}

#[test]
fn warm_admit_and_release_allocate_nothing() {
    let limiter = limiter();
    let clients = clients();
    // Warm-up: every client gets its entry (the one allocation of a client's first visit), and
    // holds a request, so that no sweep forgets it while the loop below runs.
    let held: Vec<_> = clients
        .iter()
        .map(|&ip| limiter.try_acquire_request(ip).unwrap())
        .collect();
    let allocations = allocations_in(|| {
        for _ in 0..100 {
            for &ip in &clients {
                let a = limiter.try_acquire(ip).unwrap();
                let b = limiter.try_acquire(ip).unwrap();
                let r = limiter.try_acquire_request(ip).unwrap();
                drop((a, b, r));
            }
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(limiter.stats().tracked_clients, clients.len());
    drop(held);
    limiter.purge_expired();
    assert_eq!(
        limiter.stats().tracked_clients,
        0,
        "drained clients are forgotten"
    );
}

#[test]
fn refusals_allocate_nothing() {
    let limiter = limiter();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let _held = [
        limiter.try_acquire(ip).unwrap(),
        limiter.try_acquire(ip).unwrap(),
    ];
    let _requests = [
        limiter.try_acquire_request(ip).unwrap(),
        limiter.try_acquire_request(ip).unwrap(),
    ];
    let allocations = allocations_in(|| {
        for _ in 0..1000 {
            assert!(limiter.try_acquire(ip).is_err());
            assert!(limiter.try_acquire_request(ip).is_err());
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(limiter.stats().rejected.total(), 2000);
}

#[test]
fn rated_admissions_and_refusals_allocate_nothing() {
    for strategy in [
        Strategy::Cooldown,
        Strategy::FixedWindow,
        Strategy::SlidingWindow,
        Strategy::TokenBucket,
    ] {
        // Rules that admit the loop's first round and refuse what comes after it.
        let rule = RateLimit::new(2, Duration::from_secs(3600)).strategy(strategy);
        let limiter = Limiter::new(Config {
            connect_rate: Some(rule),
            request_rate: Some(rule),
            path_rules: vec![PathRule::prefix("/api", rule)],
            ..Config::default()
        });
        let clients = clients();
        // Warm-up: each client's entry, and its path rule's state, are made.
        let held: Vec<_> = clients
            .iter()
            .map(|&ip| {
                let request = limiter.try_acquire_request_to(ip, "GET", "/api/x").unwrap();
                (limiter.try_acquire(ip).unwrap(), request)
            })
            .collect();
        let allocations = allocations_in(|| {
            for round in 0..20 {
                for &ip in &clients {
                    let connect = limiter.try_acquire(ip);
                    let request = limiter.try_acquire_request_to(ip, "GET", "/api/x");
                    if round == 0 && strategy != Strategy::Cooldown {
                        assert!(connect.is_ok() && request.is_ok(), "{strategy:?}");
                    }
                    if round > 0 {
                        assert!(connect.is_err() && request.is_err(), "{strategy:?}");
                    }
                }
            }
        });
        assert_eq!(allocations, 0, "{strategy:?}");
        drop(held);
    }
}

#[test]
fn keyed_requests_allocate_nothing_for_keys_up_to_64_bytes() {
    let tiered = KeyConfig {
        tiers: vec![Tier::new("pro").max_requests(4)],
        default_tier: Some("pro".into()),
        max_requests_per_address: 1000,
        ..KeyConfig::default()
    };
    // Keys held to the config's own limits (the fast path), and keys in a tier (the whole way).
    for keys in [KeyConfig::default(), tiered] {
        let limiter = Limiter::new(Config {
            request_rate: Some(RateLimit::new(1_000_000, Duration::from_secs(1))),
            keys,
            ..Config::default()
        });
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("{i:0>64}")).collect();
        let short: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let all = || names.iter().chain(&short);
        // Warm-up: each key's entry is made.
        for name in all() {
            drop(
                limiter
                    .try_acquire_request_as(ip, &RequestKey::new(name), "GET", "/")
                    .unwrap(),
            );
        }
        let allocations = allocations_in(|| {
            for _ in 0..10 {
                for name in all() {
                    let key = RequestKey::new(name);
                    drop(
                        limiter
                            .try_acquire_request_as(ip, &key, "GET", "/")
                            .unwrap(),
                    );
                }
            }
        });
        assert_eq!(allocations, 0);
    }
}

#[test]
fn the_counter_counts() {
    let limiter = limiter();
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 8]))),
        1
    );
    // A cold map must grow: the first client allocates its shard's table.
    assert!(allocations_in(|| drop(limiter.try_acquire("198.51.100.1".parse().unwrap()))) > 0);
}
