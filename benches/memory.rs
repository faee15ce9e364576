//! What a tracked client costs in memory, and whether the memory comes back once clients expire.
//!
//! `cargo bench --bench memory`. For each config, in a process of its own, one limiter on a
//! `FakeClock` admits 1,000,000 distinct clients (a connection, held, and a request to
//! `/api/login`, released), so that the table holds all of them; then the connections close,
//! the clock moves past every record and the table is swept (`purge_expired`). Counts the heap
//! bytes in use with a counting allocator (exact, without the allocator's own overhead), and
//! reads the process's resident set size (`VmRSS` in `/proc/self/status`) at the start, with
//! the clients, after the sweep, and (with glibc) after `malloc_trim(0)`, which hands the
//! allocator's free pages back to the system. Prints bytes per client and the RSS, and writes
//! them to `target/bench-results/memory.json`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use tower_connlimit::{clock::FakeClock, rate::PathRule, Config, Limiter, RateLimit};

/// The heap bytes in use, as the program asked for them (the allocator's own overhead per
/// block is not counted: see the RSS for that).
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENTS: u32 = 1_000_000;

fn heap() -> isize {
    IN_USE.load(Ordering::Relaxed)
}

/// The resident set size, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

struct Measured {
    heap_per_client: f64,
    rss_per_client: f64,
    rss_start: usize,
    rss_full: usize,
    rss_after: usize,
    rss_trimmed: usize,
    heap_left: isize,
}

/// Hands the allocator's free pages back to the system, where the allocator is glibc's.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn measure(config: Config) -> Measured {
    let clock = FakeClock::new();
    // Every client keeps its connection open until the end, so that no sweep forgets it; the
    // permits' own memory is taken before the start.
    let heap_base = heap();
    let mut connections = Vec::with_capacity(CLIENTS as usize);
    let rss_start = rss();
    let heap_start = heap();
    let limiter = Limiter::try_with_clock(config, clock.clone()).expect("a valid config");
    for i in 0..CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        connections.push(limiter.try_acquire(ip).expect("admitted"));
        drop(limiter.try_acquire_request_to(ip, "POST", "/api/login"));
    }
    assert_eq!(limiter.stats().tracked_clients, CLIENTS as usize);
    let heap_full = heap();
    let rss_full = rss();
    drop(connections);
    // Past every record: the longest is the path rule of an hour.
    clock.advance(Duration::from_secs(3 * 3_600));
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0);
    let heap_left = heap() - heap_base;
    let rss_after = rss();
    trim();
    let rss_trimmed = rss();
    drop(limiter);
    Measured {
        heap_per_client: (heap_full - heap_start) as f64 / f64::from(CLIENTS),
        rss_per_client: rss_full.saturating_sub(rss_start) as f64 / f64::from(CLIENTS),
        rss_start,
        rss_full,
        rss_after,
        rss_trimmed,
        heap_left,
    }
}

fn cases() -> Vec<(&'static str, Config)> {
    let per_second = |n| Some(RateLimit::new(n, Duration::from_secs(1)));
    let rates = Config {
        connect_rate: per_second(10),
        request_rate: per_second(100),
        ..Config::default()
    };
    vec![
        ("no rates", Config::default()),
        ("connect and request rates", rates.clone()),
        (
            "rates and three path rules",
            Config {
                path_rules: vec![
                    PathRule::prefix("/api", RateLimit::new(50, Duration::from_secs(1))),
                    PathRule::exact("/api/login", RateLimit::new(5, Duration::from_secs(60))),
                    PathRule::exact("/api/login", RateLimit::new(20, Duration::from_secs(3_600)))
                        .method("POST"),
                ],
                ..rates
            },
        ),
    ]
}

/// Measures case `n` in this process, and prints it as one JSON object.
fn run_case(n: usize) {
    let (name, config) = cases().swap_remove(n);
    let m = measure(config);
    println!(
        "{{\"case\": \"{name}\", \"heap_per_client\": {:.1}, \"rss_per_client\": {:.1}, \
         \"rss_start\": {}, \"rss_full\": {}, \"rss_after\": {}, \"rss_trimmed\": {}, \
         \"heap_left\": {}}}",
        m.heap_per_client,
        m.rss_per_client,
        m.rss_start,
        m.rss_full,
        m.rss_after,
        m.rss_trimmed,
        m.heap_left
    );
}

/// A number out of one of `run_case`'s JSON objects.
fn field(json: &str, name: &str) -> f64 {
    let at = json.find(&format!("\"{name}\": ")).expect("the field") + name.len() + 4;
    let rest = &json[at..];
    let end = rest.find([',', '}']).expect("the end of the field");
    rest[..end].trim().parse().expect("a number")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        run_case(args[at + 1].parse().expect("a case number"));
        return;
    }
    // `cargo bench` passes `--bench`; a filter that names another benchmark skips this one.
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"memory".contains(&**a))
    {
        return;
    }
    println!("{CLIENTS} clients, each a connection and a request; then all expired and swept");
    let me = std::env::current_exe().expect("this benchmark's path");
    let mut json = Vec::new();
    for (n, (name, _)) in cases().iter().enumerate() {
        let out = std::process::Command::new(&me)
            .args(["--case", &n.to_string()])
            .output()
            .expect("a process for the case");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout)
            .expect("JSON")
            .trim()
            .to_owned();
        let (start, full) = (field(&line, "rss_start"), field(&line, "rss_full"));
        let (after, trimmed) = (field(&line, "rss_after"), field(&line, "rss_trimmed"));
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        println!(
            "{name:<28} heap {:6.1} B/client, RSS {:6.1} B/client; RSS start {:6.1} MiB, with \
             the clients {:6.1} MiB, after the sweep {:6.1} MiB, after malloc_trim {:6.1} MiB \
             ({:+.0}% of the start); heap left {} B",
            field(&line, "heap_per_client"),
            field(&line, "rss_per_client"),
            mib(start),
            mib(full),
            mib(after),
            mib(trimmed),
            (trimmed / start - 1.0) * 100.0,
            field(&line, "heap_left"),
        );
        json.push(line);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).expect("target/bench-results");
    std::fs::write(dir.join("memory.json"), format!("[{}]\n", json.join(",\n")))
        .expect("memory.json");
}
