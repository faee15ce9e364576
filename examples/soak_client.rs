//! The driver of `scripts/soak.sh`: churns connections through a running `server` example,
//! watches its memory, and checks that every connection is released.
//!
//! ```text
//! cargo run --release --example soak_client -- --addr 127.0.0.1:38081 --server-pid PID \
//!     [--connections 1000000] [--held 10000] [--sources 200] [--greedy 10] [--warmup N] \
//!     [--hold-ms 500-4000] [--timeout SECS] [--drain-timeout SECS] [--rss-slack-mib 8] \
//!     [--rss-slack-percent 10]
//! ```
//!
//! `--held` tasks each open one connection after another, so at most that many are open at
//! once. Task `t` always connects from the same source address, bound before connecting:
//! `--sources` addresses 127.0.0.2, 127.0.0.3, ..., of which the first `--greedy` get a quarter
//! of the tasks between them (with 10,000 tasks and 10 greedy sources, 250 each; the 190 others
//! get about 40 each), so a per-client limit between the two refuses the greedy ones. Each
//! connection does one of, picked by a hash of its number:
//!
//! - 40 %: connect and close at once, half of them with a reset (`SO_LINGER` 0);
//! - 40 %: `GET /` with `Connection: close`, reading the answer to its end;
//! - 20 %: connect and hold the connection idle for `--hold-ms` (0.5 to 4 s by default), then
//!   close. These keep most of the tasks' connections open at any time.
//!
//! A connection the server refuses is closed by it: the client sees that as an end or a reset
//! before any answer (or, holding, before its time is up) and counts it as refused; a connect-
//! and-close cannot tell. The server's `/stats` has the exact refusal count. Sockets set
//! `SO_REUSEADDR`, so ports in `TIME_WAIT` can be bound again; the server closes first on the
//! HTTP connections, and the resets leave no `TIME_WAIT` at all.
//!
//! Phases: a warm-up (`--warmup`, by default a tenth of `--connections` or ten per task,
//! whichever is more) with the same shape, so the server's allocator reaches its working size
//! (the end RSS is compared with the RSS after it, so growth that is not a leak, the allocator
//! keeping what the peak needed, does not count); a drain; the server's
//! RSS (`VmRSS` of `/proc/PID/status`) as the *start* figure; the churn of `--connections`,
//! sampling the RSS and `/stats` as it goes (the *peak*); a drain, waiting up to
//! `--drain-timeout` for `/stats` to show no open connection and no tracked client but the
//! `/stats` request itself; and the RSS again (the *end*, the lowest of a few samples over 2 s).
//!
//! Exits 0 when every connection was made (no more than 1 % failed to connect or timed out),
//! the drain completed, and the end RSS is within `--rss-slack-mib` MiB or `--rss-slack-percent`
//! percent (whichever is larger) of the start; 1 otherwise; 2 on bad arguments. The whole run
//! stops at `--timeout` seconds (default 1800), which counts as a failure.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const USAGE: &str = "usage: soak_client --addr ADDR --server-pid PID [--connections N] [--held N] \
[--sources N] [--greedy N] [--warmup N] [--hold-ms MIN-MAX] [--timeout SECS] [--drain-timeout SECS] \
[--rss-slack-mib N] [--rss-slack-percent N]";

/// How long one connect may take (a dropped SYN is retried after 1 s, then 3 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP exchange may take once connected.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n";

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    server_pid: u32,
    connections: u64,
    held: usize,
    sources: usize,
    greedy: usize,
    warmup: Option<u64>,
    timeout: Duration,
    drain_timeout: Duration,
    rss_slack_mib: f64,
    rss_slack_percent: f64,
    /// The shortest and longest idle hold, in milliseconds.
    hold_ms: (u64, u64),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut addr = None;
    let mut server_pid = None;
    let mut parsed = Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        server_pid: 0,
        connections: 1_000_000,
        held: 10_000,
        sources: 200,
        greedy: 10,
        warmup: None,
        timeout: Duration::from_secs(1800),
        drain_timeout: Duration::from_secs(30),
        rss_slack_mib: 8.0,
        rss_slack_percent: 10.0,
        hold_ms: (500, 4000),
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--addr" => addr = Some(parse(&flag, &value)?),
            "--server-pid" => server_pid = Some(parse(&flag, &value)?),
            "--connections" => parsed.connections = parse(&flag, &value)?,
            "--held" => parsed.held = parse(&flag, &value)?,
            "--sources" => parsed.sources = parse(&flag, &value)?,
            "--greedy" => parsed.greedy = parse(&flag, &value)?,
            "--warmup" => parsed.warmup = Some(parse(&flag, &value)?),
            "--timeout" => parsed.timeout = Duration::from_secs(parse(&flag, &value)?),
            "--drain-timeout" => parsed.drain_timeout = Duration::from_secs(parse(&flag, &value)?),
            "--rss-slack-mib" => parsed.rss_slack_mib = parse(&flag, &value)?,
            "--rss-slack-percent" => parsed.rss_slack_percent = parse(&flag, &value)?,
            "--hold-ms" => {
                let (min, max) = value
                    .split_once('-')
                    .ok_or_else(|| format!("--hold-ms: {value:?} is not MIN-MAX"))?;
                parsed.hold_ms = (parse(&flag, min)?, parse(&flag, max)?);
                if parsed.hold_ms.0 > parsed.hold_ms.1 {
                    return Err(format!("--hold-ms: {value:?} has MIN above MAX"));
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    parsed.addr = addr.ok_or_else(|| format!("--addr is required\n{USAGE}"))?;
    parsed.server_pid = server_pid.ok_or_else(|| format!("--server-pid is required\n{USAGE}"))?;
    if parsed.held == 0 || parsed.sources == 0 || parsed.sources > 250 {
        return Err("--held must be positive and --sources between 1 and 250".to_owned());
    }
    if parsed.greedy >= parsed.sources {
        return Err("--greedy must be less than --sources".to_owned());
    }
    Ok(parsed)
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not valid"))
}

/// What one connection does.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Connect and close; `reset` closes with an RST.
    Close { reset: bool },
    /// `GET /`, `Connection: close`.
    Http,
    /// Connect and hold it idle this long.
    Hold(Duration),
}

impl Shape {
    fn of(n: u64, (min_hold, max_hold): (u64, u64)) -> Shape {
        let h = splitmix64(n);
        match h % 100 {
            0..40 => Shape::Close {
                reset: (h >> 32) & 1 == 1,
            },
            40..80 => Shape::Http,
            _ => Shape::Hold(Duration::from_millis(
                min_hold + (h >> 40) % (max_hold - min_hold + 1),
            )),
        }
    }
}

fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How one connection ended.
enum Outcome {
    /// It did what its shape says.
    Done(Shape),
    /// The server closed it before answering (or before the hold was over).
    RefusedSeen(Shape),
    ConnectError(io::Error),
    Timeout,
    Error(io::Error),
}

/// Counts for one phase.
#[derive(Default)]
struct Tally {
    next: AtomicU64,
    done: AtomicU64,
    closed: AtomicU64,
    http_ok: AtomicU64,
    held_ok: AtomicU64,
    http_refused: AtomicU64,
    hold_refused: AtomicU64,
    refused_greedy: AtomicU64,
    refused_normal: AtomicU64,
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    other_errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    stopped_by_deadline: AtomicBool,
}

impl Tally {
    fn record(&self, outcome: Outcome, greedy: bool) {
        let counter = match &outcome {
            Outcome::Done(Shape::Close { .. }) => &self.closed,
            Outcome::Done(Shape::Http) => &self.http_ok,
            Outcome::Done(Shape::Hold(_)) => &self.held_ok,
            Outcome::RefusedSeen(shape) => {
                let by = if greedy {
                    &self.refused_greedy
                } else {
                    &self.refused_normal
                };
                by.fetch_add(1, Relaxed);
                match shape {
                    Shape::Hold(_) => &self.hold_refused,
                    _ => &self.http_refused,
                }
            }
            Outcome::ConnectError(_) => &self.connect_errors,
            Outcome::Timeout => &self.timeouts,
            Outcome::Error(_) => &self.other_errors,
        };
        counter.fetch_add(1, Relaxed);
        self.done.fetch_add(1, Relaxed);
        if let Outcome::ConnectError(err) | Outcome::Error(err) = &outcome {
            let mut first = self.first_errors.lock().unwrap();
            if first.len() < 5 {
                first.push(err.to_string());
            }
        }
    }

    fn errors(&self) -> u64 {
        self.connect_errors.load(Relaxed)
            + self.timeouts.load(Relaxed)
            + self.other_errors.load(Relaxed)
    }

    fn refused_seen(&self) -> u64 {
        self.http_refused.load(Relaxed) + self.hold_refused.load(Relaxed)
    }
}

/// Counts a connection as open while it lives.
struct Open<'a>(&'a Tally);

impl<'a> Open<'a> {
    fn new(tally: &'a Tally) -> Self {
        let now = tally.open.fetch_add(1, Relaxed) + 1;
        tally.peak_open.fetch_max(now, Relaxed);
        Open(tally)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

fn is_refusal(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

async fn one_connection(n: u64, src: IpAddr, plan: &Plan, tally: &Tally) -> Outcome {
    let shape = Shape::of(n, plan.hold_ms);
    let addr = plan.addr;
    let socket = match TcpSocket::new_v4()
        .and_then(|s| s.set_reuseaddr(true).map(|()| s))
        .and_then(|s| s.bind(SocketAddr::new(src, 0)).map(|()| s))
    {
        Ok(socket) => socket,
        Err(err) => return Outcome::ConnectError(err),
    };
    let mut stream = match timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Outcome::ConnectError(err),
        Err(_) => return Outcome::Timeout,
    };
    let _open = Open::new(tally);
    match shape {
        Shape::Close { reset } => {
            if reset {
                let _ = stream.set_zero_linger();
            }
            drop(stream);
            Outcome::Done(shape)
        }
        Shape::Http => match timeout(EXCHANGE_TIMEOUT, exchange(&mut stream)).await {
            Err(_) => Outcome::Timeout,
            Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Outcome::Done(shape),
            // Nothing, or with `--reject http` the canned refusal.
            Ok(Ok(answer))
                if answer.is_empty()
                    || answer.starts_with(b"HTTP/1.1 429")
                    || answer.starts_with(b"HTTP/1.1 503") =>
            {
                Outcome::RefusedSeen(shape)
            }
            Ok(Ok(answer)) => Outcome::Error(io::Error::other(format!(
                "unexpected answer {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            ))),
            Ok(Err(err)) if is_refusal(&err) => Outcome::RefusedSeen(shape),
            Ok(Err(err)) => Outcome::Error(err),
        },
        Shape::Hold(hold) => {
            let mut byte = [0u8; 1];
            match timeout(hold, stream.read(&mut byte)).await {
                Err(_) => Outcome::Done(shape),
                Ok(Ok(0)) => Outcome::RefusedSeen(shape),
                Ok(Err(err)) if is_refusal(&err) => Outcome::RefusedSeen(shape),
                Ok(Err(err)) => Outcome::Error(err),
                Ok(Ok(_)) => Outcome::Error(io::Error::other("the server sent unasked bytes")),
            }
        }
    }
}

async fn exchange(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    stream.write_all(REQUEST).await?;
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

struct Plan {
    addr: SocketAddr,
    held: usize,
    sources: usize,
    greedy: usize,
    hold_ms: (u64, u64),
    deadline: Instant,
}

impl Plan {
    /// The source address of task `t`, and whether it is a greedy one.
    fn source(&self, t: usize) -> (IpAddr, bool) {
        let greedy_tasks = if self.greedy == 0 { 0 } else { self.held / 4 };
        let (index, greedy) = if t < greedy_tasks {
            (t % self.greedy, true)
        } else {
            (self.greedy + t % (self.sources - self.greedy), false)
        };
        let ip = Ipv4Addr::new(127, 0, 0, 2 + index as u8);
        (IpAddr::V4(ip), greedy)
    }
}

/// Runs `total` connections on `plan.held` tasks; returns when all are done or the deadline
/// has passed.
async fn churn(plan: &Arc<Plan>, total: u64, tally: &Arc<Tally>) {
    let tasks = plan.held.min(usize::try_from(total).unwrap_or(usize::MAX));
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let plan = Arc::clone(plan);
        let tally = Arc::clone(tally);
        handles.push(tokio::spawn(async move {
            // Spread the first connects over about a second, not one SYN burst.
            tokio::time::sleep(Duration::from_micros(100 * t as u64)).await;
            let (src, greedy) = plan.source(t);
            loop {
                let n = tally.next.fetch_add(1, Relaxed);
                if n >= total {
                    break;
                }
                if Instant::now() >= plan.deadline {
                    tally.stopped_by_deadline.store(true, Relaxed);
                    break;
                }
                let outcome = one_connection(n, src, &plan, &tally).await;
                tally.record(outcome, greedy);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a churn task panicked");
    }
}

/// The server's figures from `/stats`, asked from 127.0.0.1 (not one of the churn sources).
async fn server_stats(addr: SocketAddr) -> io::Result<Value> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /stats HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let start = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("no end of headers in the /stats answer"))?;
        serde_json::from_slice(&answer[start + 4..]).map_err(io::Error::other)
    };
    timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| io::Error::other("/stats took over 10 s"))?
}

fn number(stats: &Value, field: &str) -> u64 {
    stats[field].as_u64().unwrap_or(0)
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn rss(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmRSS:").unwrap_or(0)
}

struct Mib(u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

/// What `/stats` says once the churn has drained.
struct Drained {
    open: u64,
    tracked: u64,
    in_flight: u64,
    others: Vec<String>,
    ok: bool,
    waited: Duration,
}

/// Waits until `/stats` shows only the `/stats` request itself: one open connection (from
/// 127.0.0.1), one tracked client, one request in flight.
async fn drain(addr: SocketAddr, within: Duration) -> Drained {
    let started = Instant::now();
    loop {
        let stats = server_stats(addr).await;
        if let Ok(stats) = &stats {
            let open = number(stats, "open_connections");
            let tracked = number(stats, "tracked_clients");
            let in_flight = number(stats, "in_flight_requests");
            let others: Vec<String> = stats["top_clients"]
                .as_array()
                .map(|clients| {
                    clients
                        .iter()
                        .filter(|c| c["client"] != "127.0.0.1")
                        .map(|c| c.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let ok = open <= 1 && tracked <= 1 && in_flight <= 1 && others.is_empty();
            if ok || started.elapsed() >= within {
                return Drained {
                    // Less the /stats request itself.
                    open: open.saturating_sub(1),
                    tracked: tracked.saturating_sub(1),
                    in_flight: in_flight.saturating_sub(1),
                    others,
                    ok,
                    waited: started.elapsed(),
                };
            }
        } else if started.elapsed() >= within {
            return Drained {
                open: u64::MAX,
                tracked: u64::MAX,
                in_flight: u64::MAX,
                others: vec![format!("/stats failed: {}", stats.err().unwrap())],
                ok: false,
                waited: started.elapsed(),
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lowest RSS over `samples` samples 500 ms apart.
async fn settled_rss(pid: u32, samples: u32) -> u64 {
    let mut lowest = rss(pid);
    for _ in 1..samples {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lowest = lowest.min(rss(pid));
    }
    lowest
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<bool> {
    let started = Instant::now();
    let pid = args.server_pid;
    if proc_status_bytes(pid, "VmRSS:").is_none() {
        return Err(io::Error::other(format!("no process {pid} to watch")));
    }
    let plan = Arc::new(Plan {
        addr: args.addr,
        held: args.held,
        sources: args.sources,
        greedy: args.greedy,
        hold_ms: args.hold_ms,
        deadline: started + args.timeout,
    });
    let first = server_stats(args.addr).await?;
    let limit = first["config"]["max_conns_per_client"].clone();
    let launch_rss = rss(pid);
    let greedy_tasks = if args.greedy == 0 { 0 } else { args.held / 4 };
    let tasks_per_greedy_source = greedy_tasks.checked_div(args.greedy).unwrap_or(0);
    // How many a greedy source can hold open: its tasks, or the limit (0 is none).
    let per_greedy_source = match limit.as_u64().unwrap_or(0) as usize {
        0 => tasks_per_greedy_source,
        limit => limit.min(tasks_per_greedy_source),
    };
    println!(
        "soak: {} connections to {} from {} sources 127.0.0.2..={} ({} greedy with {} tasks each, \
         the others about {}), at most {} open at once (about {} while the greedy ones are held to the \
         limit); server limit per client {limit}, RSS at launch {}",
        args.connections,
        args.addr,
        args.sources,
        1 + args.sources,
        args.greedy,
        tasks_per_greedy_source,
        (args.held - greedy_tasks) / (args.sources - args.greedy),
        args.held,
        args.held - greedy_tasks + args.greedy * per_greedy_source,
        Mib(launch_rss),
    );

    // Warm-up: the same shape, so the allocator reaches its working size before `start`.
    // The server's working size depends on how many connections are open at once, so the
    // warm-up is at least ten per task.
    let warmup = args
        .warmup
        .unwrap_or((args.connections / 10).max(10 * args.held as u64));
    if warmup > 0 {
        let tally = Arc::new(Tally::default());
        let t = Instant::now();
        churn(&plan, warmup, &tally).await;
        let drained = drain(args.addr, args.drain_timeout).await;
        println!(
            "warm-up: {warmup} connections in {:.1} s, peak {} open; drained in {:.1} s{}",
            t.elapsed().as_secs_f64(),
            tally.peak_open.load(Relaxed),
            drained.waited.as_secs_f64(),
            if drained.ok { "" } else { " (NOT drained)" }
        );
    }
    let start_rss = settled_rss(pid, 5).await;
    let before = server_stats(args.addr).await?;
    println!("RSS at start (after warm-up and drain): {}", Mib(start_rss));

    // The churn, with a sampler of the server's RSS and open connections.
    let tally = Arc::new(Tally::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let tally = Arc::clone(&tally);
        let sampling = Arc::clone(&sampling);
        let addr = args.addr;
        tokio::spawn(async move {
            let (mut peak_rss, mut peak_server_open) = (0u64, 0u64);
            let t = Instant::now();
            let mut tick = 0u64;
            while sampling.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                tick += 1;
                peak_rss = peak_rss.max(rss(pid));
                if tick % 4 == 0 {
                    if let Ok(stats) = server_stats(addr).await {
                        peak_server_open = peak_server_open.max(number(&stats, "open_connections"));
                    }
                }
                if tick % 40 == 0 {
                    let done = tally.done.load(Relaxed);
                    println!(
                        "  {:>6.0} s  {done:>9} done  {:>7.0} conn/s  {:>5} open  refused seen {:>8}  errors {:>5}  RSS {}",
                        t.elapsed().as_secs_f64(),
                        done as f64 / t.elapsed().as_secs_f64(),
                        tally.open.load(Relaxed),
                        tally.refused_seen(),
                        tally.errors(),
                        Mib(rss(pid)),
                    );
                }
            }
            (peak_rss, peak_server_open)
        })
    };
    let t = Instant::now();
    churn(&plan, args.connections, &tally).await;
    let elapsed = t.elapsed();
    sampling.store(false, Relaxed);
    let (peak_rss, peak_server_open) = sampler.await.expect("the sampler panicked");
    let hwm = proc_status_bytes(pid, "VmHWM:").unwrap_or(0);

    let drained = drain(args.addr, args.drain_timeout).await;
    let end_rss = settled_rss(pid, 5).await;
    let after = server_stats(args.addr).await?;

    // The verdict.
    let done = tally.done.load(Relaxed);
    let errors = tally.errors();
    let slack = ((start_rss as f64 * args.rss_slack_percent / 100.0) as u64)
        .max((args.rss_slack_mib * 1024.0 * 1024.0) as u64);
    let rss_ok = end_rss <= start_rss + slack;
    let all_done = done == args.connections && !tally.stopped_by_deadline.load(Relaxed);
    let errors_ok = errors * 100 <= args.connections;
    let passed = all_done && errors_ok && drained.ok && rss_ok;

    let delta = |field: &str| number(&after, field).saturating_sub(number(&before, field));
    let refused_by_reason: Vec<String> = after["rejected"]
        .as_object()
        .map(|reasons| {
            reasons
                .iter()
                .map(|(reason, n)| {
                    let was = before["rejected"][reason].as_u64().unwrap_or(0);
                    format!("{reason} {}", n.as_u64().unwrap_or(0).saturating_sub(was))
                })
                .collect()
        })
        .unwrap_or_default();
    let end_delta = end_rss as i64 - start_rss as i64;

    println!();
    println!("summary");
    println!(
        "  connections done     {done} of {} ({} in total with the warm-up)",
        args.connections,
        done + warmup
    );
    println!(
        "    closed at once     {}   HTTP 200 {}   held to the end {}",
        tally.closed.load(Relaxed),
        tally.http_ok.load(Relaxed),
        tally.held_ok.load(Relaxed)
    );
    println!(
        "    refused, seen by the client  {} (HTTP {}, holding {}; greedy sources {}, others {})",
        tally.refused_seen(),
        tally.http_refused.load(Relaxed),
        tally.hold_refused.load(Relaxed),
        tally.refused_greedy.load(Relaxed),
        tally.refused_normal.load(Relaxed),
    );
    println!(
        "    errors             {errors} (connect {}, timeouts {}, other {}){}",
        tally.connect_errors.load(Relaxed),
        tally.timeouts.load(Relaxed),
        tally.other_errors.load(Relaxed),
        match tally.first_errors.lock().unwrap().as_slice() {
            [] => String::new(),
            first => format!(": {}", first.join("; ")),
        }
    );
    println!(
        "  refused (server)     {} [{}]; admitted {}",
        delta("rejected_total"),
        refused_by_reason.join(", "),
        delta("admitted_connections"),
    );
    let timeout_delta = |reason: &str| {
        let at = |stats: &Value| stats["closed"][reason].as_u64().unwrap_or(0);
        at(&after).saturating_sub(at(&before))
    };
    println!(
        "  closed by deadlines  handshake {}, idle {} (server; half-open sockets whose client is gone)",
        timeout_delta("handshake_timeout"),
        timeout_delta("idle_timeout"),
    );
    println!("  elapsed              {:.1} s", elapsed.as_secs_f64());
    println!(
        "  rate                 {:.0} conn/s",
        done as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  peak held            {} (client), {} (server's open connections, sampled each second)",
        tally.peak_open.load(Relaxed),
        peak_server_open
    );
    println!(
        "  server RSS           start {}, peak {} (sampled; VmHWM {}), end {} ({}{:.1} MiB, {:+.1} %; allowed +{})",
        Mib(start_rss),
        Mib(peak_rss),
        Mib(hwm),
        Mib(end_rss),
        if end_delta < 0 { "-" } else { "+" },
        end_delta.unsigned_abs() as f64 / (1024.0 * 1024.0),
        end_delta as f64 * 100.0 / start_rss.max(1) as f64,
        Mib(slack),
    );
    println!(
        "  final                open connections {}, tracked clients {}, requests in flight {} \
         (less the /stats request itself), drained in {:.1} s{}",
        drained.open,
        drained.tracked,
        drained.in_flight,
        drained.waited.as_secs_f64(),
        if drained.others.is_empty() {
            String::new()
        } else {
            format!("; still there: {}", drained.others.join(", "))
        }
    );
    println!(
        "  run time             {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    if !all_done {
        failures.push("not every connection was made before --timeout");
    }
    if !errors_ok {
        failures.push("more than 1 % of the connections failed");
    }
    if !drained.ok {
        failures.push("the server did not drain to 0 open connections and 0 tracked clients");
    }
    if !rss_ok {
        failures.push("the server's RSS did not come back near its start");
    }
    if passed {
        println!("  result               PASS");
    } else {
        println!("  result               FAIL: {}", failures.join("; "));
    }
    Ok(passed)
}
