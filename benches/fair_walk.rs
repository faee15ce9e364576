//! The slowest admission while fair share's level is worked out over 1,000,000 tracked clients.
//!
//! `cargo bench --bench fair_walk`. One limiter with fair share on holds a connection for each
//! of 1,000,000 distinct clients (a budget of 2,000,000, so that nothing is refused), and the
//! thread the process's limiters share walks them to work out the fair level (every 100 ms, or
//! less often with a table this large). Meanwhile a thread of its own, pinned to a core of its
//! own when there are two, admits and releases 1,000 other clients over and over for
//! `MEASURE`, timing each admission; it prints the slowest, 99.9th percentile and median
//! times. The control is the same table with fair share off: no walk runs, so a stall the
//! control sees too is the machine's, not the walk's. Rounds alternate the two.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tower_connlimit::config::FairShare;
use tower_connlimit::{Config, Limiter};

const CLIENTS: u32 = 1_000_000;
const ROUNDS: usize = 3;
const BUSY: u32 = 1_000;
const MEASURE: Duration = Duration::from_secs(3);

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

struct Round {
    admissions: usize,
    slowest: Duration,
    p999: Duration,
    median: Duration,
}

fn round(cores: &[core_affinity::CoreId], fair: bool) -> Round {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 10,
        max_conns_total: 2 * CLIENTS as usize,
        fair_share: FairShare {
            enabled: fair,
            ..FairShare::default()
        },
        ..Config::default()
    });
    let held: Vec<_> = (0..CLIENTS)
        .map(|i| limiter.try_acquire(client(i)).expect("under the budget"))
        .collect();
    let timer = {
        let limiter = limiter.clone();
        let core = cores.get(1).copied();
        std::thread::spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let mut times = Vec::with_capacity(1 << 22);
            let started = Instant::now();
            let mut i = 0;
            // Bounded by `MEASURE`.
            while started.elapsed() < MEASURE {
                let ip = client(CLIENTS + 1 + i % BUSY);
                let before = Instant::now();
                let permit = limiter.try_acquire(ip);
                times.push(before.elapsed());
                drop(permit);
                i += 1;
            }
            times
        })
    };
    let mut times = timer.join().expect("the timing thread");
    drop(held);
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Round {
        admissions: times.len(),
        slowest: *times.last().expect("some admissions"),
        p999: at(0.999),
        median: at(0.5),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(core) = cores.first() {
        core_affinity::set_for_current(*core);
    }
    println!(
        "{CLIENTS} clients each holding a connection; {} s of admissions per round",
        MEASURE.as_secs()
    );
    println!("round  fair share  admissions  slowest      p99.9     median");
    for n in 0..ROUNDS {
        for fair in [false, true] {
            let r = round(&cores, fair);
            println!(
                "{n:>5}  {:>10}  {:>10}  {:>9.3?}  {:>9.3?}  {:>9.3?}",
                if fair { "on" } else { "off" },
                r.admissions,
                r.slowest,
                r.p999,
                r.median
            );
        }
    }
}
