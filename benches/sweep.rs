//! The slowest admission while a sweep clears 1,000,000 expired clients.
//!
//! `cargo bench --bench sweep`. One limiter with a connect rate, on a `FakeClock`, admits and
//! releases 1,000,000 distinct clients (each kept for its rate record), then the clock moves past
//! every record. One thread sweeps (`purge_expired`, what the limiter's sweeper does every
//! second) while another admits and releases 1,000 clients of its own, over and over, timing
//! each admission; each thread is pinned to a core of its own when there are two. Prints the
//! sweep's duration, how many admissions ran during it, and their slowest, 99.9th percentile and
//! median times, over `ROUNDS` rounds; and writes them to `target/bench-results/sweep.json`.
//!
//! Each round then runs a control: the same sweep of a fresh 1,000,000 clients, while the other
//! thread times an atomic increment in the same loop instead of an admission. A stall the
//! control sees too (a slowest time of the same size) is the machine's (the thread was
//! descheduled), not the sweep's.
//!
//! Without the sweeper, the same sweep ran inside an admission, which then took the whole
//! sweep's time.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tower_connlimit::{clock::FakeClock, Config, Limiter, RateLimit};

const CLIENTS: u32 = 1_000_000;
const ROUNDS: usize = 5;
/// Clients the admitting thread cycles through while the sweep runs (10.200.x.y).
const BUSY: u32 = 1_000;

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// What the other thread times while the sweep runs.
#[derive(Clone, Copy, PartialEq)]
enum Timed {
    /// An admission and release of one of its own clients.
    Admissions,
    /// An atomic increment: the control.
    Control,
}

struct Round {
    sweep: Duration,
    admissions: usize,
    slowest: Duration,
    p999: Duration,
    median: Duration,
    left: usize,
}

fn round(cores: &[core_affinity::CoreId], timed: Timed) -> Round {
    let clock = FakeClock::new();
    let limiter = Limiter::try_with_clock(
        Config {
            connect_rate: Some(RateLimit::new(10, Duration::from_secs(1))),
            ..Config::default()
        },
        clock.clone(),
    )
    .expect("a valid config");
    for i in 0..CLIENTS {
        drop(limiter.try_acquire(client(i)).expect("admitted"));
    }
    let busy: Vec<IpAddr> = (0..BUSY).map(|i| client(0x00c8_0000 + i)).collect();
    // The busy clients' entries exist before the sweep (and have an open connection, so that
    // the sweep keeps them).
    let held: Vec<_> = busy
        .iter()
        .map(|&ip| limiter.try_acquire(ip).expect("admitted"))
        .collect();
    clock.advance(Duration::from_secs(5));
    let sweeping = AtomicBool::new(true);
    let mut times = Vec::with_capacity(1 << 20);
    let mut sweep = Duration::ZERO;
    let control = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let (limiter, sweeping, sweep) = (&limiter, &sweeping, &mut sweep);
        let sweeper = scope.spawn(move || {
            if let Some(core) = cores.get(1) {
                core_affinity::set_for_current(*core);
            }
            let started = Instant::now();
            limiter.purge_expired();
            *sweep = started.elapsed();
            sweeping.store(false, Ordering::Release);
        });
        if let Some(core) = cores.first() {
            core_affinity::set_for_current(*core);
        }
        // Bounded by the sweep's end, and by a count.
        for i in 0..50_000_000usize {
            if !sweeping.load(Ordering::Acquire) {
                break;
            }
            let ip = busy[i % busy.len()];
            let started = Instant::now();
            let permit = match timed {
                Timed::Admissions => Some(limiter.try_acquire(ip)),
                Timed::Control => {
                    std::hint::black_box(control.fetch_add(1, Ordering::Relaxed));
                    None
                }
            };
            times.push(started.elapsed());
            drop(permit);
        }
        sweeper.join().expect("the sweep");
    });
    drop(held);
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Round {
        sweep,
        admissions: times.len(),
        slowest: *times.last().expect("admissions during the sweep"),
        p999: at(0.999),
        median: at(0.5),
        left: limiter.stats().tracked_clients,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another benchmark skips this one.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"sweep".contains(&*a))
    {
        return;
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    println!(
        "sweep of {CLIENTS} expired clients while another thread admits ({} cores)",
        cores.len()
    );
    let mut json = Vec::new();
    for n in 1..=ROUNDS {
        let r = round(&cores, Timed::Admissions);
        let c = round(&cores, Timed::Control);
        println!(
            "round {n}: sweep {:.1} ms; {} admissions during it: slowest {:.1} µs, p99.9 {:.2} µs, \
             median {:.0} ns; {} clients left; control: slowest {:.1} µs, p99.9 {:.2} µs",
            r.sweep.as_secs_f64() * 1e3,
            r.admissions,
            r.slowest.as_secs_f64() * 1e6,
            r.p999.as_secs_f64() * 1e6,
            r.median.as_secs_f64() * 1e9,
            r.left,
            c.slowest.as_secs_f64() * 1e6,
            c.p999.as_secs_f64() * 1e6,
        );
        json.push(format!(
            "{{\"sweep_ms\": {:.3}, \"admissions\": {}, \"slowest_us\": {:.3}, \"p999_us\": {:.3}, \
             \"median_ns\": {:.1}, \"left\": {}, \"control_slowest_us\": {:.3}, \
             \"control_p999_us\": {:.3}}}",
            r.sweep.as_secs_f64() * 1e3,
            r.admissions,
            r.slowest.as_secs_f64() * 1e6,
            r.p999.as_secs_f64() * 1e6,
            r.median.as_secs_f64() * 1e9,
            r.left,
            c.slowest.as_secs_f64() * 1e6,
            c.p999.as_secs_f64() * 1e6,
        ));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).expect("target/bench-results");
    std::fs::write(dir.join("sweep.json"), format!("[{}]\n", json.join(",\n")))
        .expect("sweep.json");
}
