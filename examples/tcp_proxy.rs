//! A TCP proxy with per-client and global connection caps, timeouts, stats and a graceful
//! shutdown: the classic unbounded Go TCP proxy ("no connection limits in TCP proxy"), done right with
//! `ConnLimitListener`.
//!
//! ```text
//! cargo run --example tcp_proxy -- --listen 127.0.0.1:8000 --upstream 127.0.0.1:9000 \
//!     --max-per-client 10 [--max-total N] [--dial-timeout 5s] [--idle-timeout 300s] \
//!     [--drain-timeout 10s]
//! ```
//!
//! Durations take `ms`, `s`, `m` or `h` (a bare number is seconds); `--max-total 0` and
//! `--idle-timeout 0` mean unlimited and off.
//!
//! What each of that proxy's problems becomes here:
//!
//! | the unbounded proxy | this proxy |
//! |---|---|
//! | a goroutine per accepted connection, unbounded | `ConnLimitListener` refuses a client's connection over `--max-per-client` (and any over `--max-total`) at accept, before a byte is read and before the upstream is dialled; a refused client costs one `accept` and one `close` |
//! | `net.Dial` with no timeout; a failed dial returns silently | the dial runs under `--dial-timeout`; a failure is logged at warn with the client and the error, and counted (`upstream_errors`) |
//! | `<-done` waits for one direction; the other goroutine leaks | `copy_bidirectional` runs both directions in one task and returns when both have ended; when one side stops sending, the other side's write half is shut down (a TCP half-close), so request/response protocols that half-close still get their whole answer |
//! | no timeouts: slowloris holds connections forever | the library's idle timeout (`ListenerConfig::idle_timeout`) closes a connection once no byte has moved either way for `--idle-timeout`; the proxy adds the same bound to the one phase the library cannot watch (see [`serve_connection`]) |
//! | no visibility | active, total, refused, bytes each way, upstream errors and idle timeouts, logged every 10 s when they change and at exit; `tracing` events per connection |
//! | no graceful shutdown | Ctrl-C closes the listener at once (new connects are refused), lets open connections finish for `--drain-timeout`, then closes the rest and prints the final stats |
//!
//! Connection tasks live in a `JoinSet` that the accept loop reaps as they finish, so nothing
//! outlives the proxy and nothing piles up while it runs.
//!
//! # Trying it
//!
//! Start an upstream, the proxy, and go through it:
//!
//! ```text
//! python3 -m http.server 9000 --bind 127.0.0.1 &
//! cargo run --example tcp_proxy -- --listen 127.0.0.1:8000 --upstream 127.0.0.1:9000 --max-per-client 2
//! curl http://127.0.0.1:8000/
//! ```
//!
//! Hold two connections open from one client and watch the third be closed at once, while
//! another loopback address still gets in:
//!
//! ```text
//! nc 127.0.0.1 8000 &  nc 127.0.0.1 8000 &
//! nc -v 127.0.0.1 8000                          # closed immediately: over --max-per-client
//! curl --interface 127.0.0.2 http://127.0.0.1:8000/
//! ```
//!
//! With `--upstream 127.0.0.1:1` (nothing listening) every connection is closed with a warning
//! naming the client and the error. Ctrl-C stops it; per-connection events are at debug level
//! (`RUST_LOG=info` hides them).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tower_connlimit::{
    listener::ListenerConfig, Config, ConfigError, ConnLimitListener, Limiter, TrackedIo,
};
use tracing::Instrument;

const USAGE: &str = "usage: tcp_proxy --upstream HOST:PORT [--listen ADDR] [--max-per-client N] \
[--max-total N] [--dial-timeout DURATION] [--idle-timeout DURATION] [--drain-timeout DURATION]
  --listen ADDR             where to accept clients (default 127.0.0.1:8000)
  --upstream HOST:PORT      where to forward them (required)
  --max-per-client N        concurrent connections per client IP (default 10; 0 = unlimited)
  --max-total N             concurrent connections in all (default 0 = unlimited)
  --dial-timeout DURATION   bound on connecting to the upstream (default 5s)
  --idle-timeout DURATION   close a connection after this long with no bytes either way \
(default 300s; 0 = off)
  --drain-timeout DURATION  on Ctrl-C, how long open connections may finish (default 10s)
DURATION is a number with ms, s, m or h (a bare number is seconds).";

/// What the proxy does; see the module docs for the command-line flags that set each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Where connections are forwarded.
    pub upstream: SocketAddr,
    /// Concurrent connections one client IP may hold; 0 means unlimited.
    pub max_per_client: usize,
    /// Concurrent connections across all clients; 0 means unlimited.
    pub max_total: usize,
    /// How long dialling the upstream may take.
    pub dial_timeout: Duration,
    /// How long a connection may go with no byte moving either way; zero turns it off.
    pub idle_timeout: Duration,
    /// How long open connections may finish after shutdown is asked for.
    pub drain_timeout: Duration,
    /// How often the stats are logged (when they changed).
    pub stats_interval: Duration,
}

impl Options {
    /// The defaults, forwarding to `upstream`.
    pub fn new(upstream: SocketAddr) -> Self {
        Options {
            upstream,
            max_per_client: 10,
            max_total: 0,
            dial_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(10),
            stats_interval: Duration::from_secs(10),
        }
    }

    /// The limiter's config for these options.
    pub fn config(&self) -> Config {
        Config {
            max_conns_per_client: self.max_per_client,
            max_conns_total: self.max_total,
            listener: ListenerConfig {
                idle_timeout: self.idle_timeout,
                ..ListenerConfig::default()
            },
            ..Config::default()
        }
    }
}

/// The proxy's own counters. Refusals and the library's idle timeouts live in the limiter's
/// stats; [`ProxyStats::snapshot`] puts both together.
#[derive(Debug, Default)]
pub struct ProxyStats {
    active: AtomicU64,
    total: AtomicU64,
    bytes_client_to_upstream: AtomicU64,
    bytes_upstream_to_client: AtomicU64,
    upstream_errors: AtomicU64,
    idle_timeouts: AtomicU64,
    forced_closed: AtomicU64,
    listening: AtomicBool,
}

/// The stats at one moment; [`run`] returns the final one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections being proxied now.
    pub active: u64,
    /// Connections admitted since the start.
    pub total: u64,
    /// Connections refused at accept (every reason the limiter counts).
    pub rejected: u64,
    /// Bytes written to the upstream.
    pub bytes_client_to_upstream: u64,
    /// Bytes written to clients.
    pub bytes_upstream_to_client: u64,
    /// Upstream dials that failed or timed out.
    pub upstream_errors: u64,
    /// Connections closed for idleness: by the library's idle timeout, plus the proxy's own
    /// for a half-closed connection whose upstream went silent.
    pub idle_timeouts: u64,
    /// Connections still open when the drain timeout passed, closed by force.
    pub forced_closed: u64,
    /// Whether the listener is open.
    pub listening: bool,
}

impl ProxyStats {
    /// The proxy's counters with the limiter's refusals and idle timeouts.
    pub fn snapshot(&self, limiter: &Limiter) -> Snapshot {
        let limits = limiter.stats();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Snapshot {
            active: load(&self.active),
            total: load(&self.total),
            rejected: limits.rejected.total(),
            bytes_client_to_upstream: load(&self.bytes_client_to_upstream),
            bytes_upstream_to_client: load(&self.bytes_upstream_to_client),
            upstream_errors: load(&self.upstream_errors),
            idle_timeouts: limits.closed["idle_timeout"] + load(&self.idle_timeouts),
            forced_closed: load(&self.forced_closed),
            listening: self.listening.load(Ordering::Relaxed),
        }
    }
}

fn log_stats(snapshot: &Snapshot, message: &str) {
    tracing::info!(
        active = snapshot.active,
        total = snapshot.total,
        rejected = snapshot.rejected,
        bytes_client_to_upstream = snapshot.bytes_client_to_upstream,
        bytes_upstream_to_client = snapshot.bytes_upstream_to_client,
        upstream_errors = snapshot.upstream_errors,
        idle_timeouts = snapshot.idle_timeouts,
        forced_closed = snapshot.forced_closed,
        "{message}"
    );
}

/// A proxy: its options, its limiter and its counters. Cheap to clone; clones share everything,
/// so a caller can keep one to watch [`Proxy::stats`] while another runs.
#[derive(Clone, Debug)]
pub struct Proxy {
    options: Arc<Options>,
    limiter: Limiter,
    stats: Arc<ProxyStats>,
}

impl Proxy {
    /// A proxy with `options`, or why they make no valid limiter config.
    pub fn new(options: Options) -> Result<Self, ConfigError> {
        Ok(Proxy {
            limiter: Limiter::try_new(options.config())?,
            options: Arc::new(options),
            stats: Arc::default(),
        })
    }

    /// The limiter that admits connections.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The stats now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot(&self.limiter)
    }

    /// Proxies the connections `listener` accepts until `shutdown` completes, then drains (see
    /// [`run`]).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<Snapshot> {
        let mut listener = ConnLimitListener::new(listener, self.limiter.clone());
        self.stats.listening.store(true, Ordering::Relaxed);
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let period = self.options.stats_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged = self.stats();
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((client, peer)) => self.spawn(&mut tasks, client, peer),
                    Err(err) => {
                        // Out of file descriptors, say: back off rather than spin.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections as they end, so the set holds live ones only.
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => reaped(joined),
                _ = ticker.tick() => {
                    let now = self.stats();
                    if now != logged {
                        log_stats(&now, "stats");
                        logged = now;
                    }
                }
            }
        }

        // Stop accepting: from here a new connect is refused by the kernel.
        drop(listener);
        self.stats.listening.store(false, Ordering::Relaxed);
        let drain = self.options.drain_timeout;
        tracing::info!(
            open = tasks.len(),
            ?drain,
            "shutting down: no longer accepting, draining"
        );
        let drained = tokio::time::timeout(drain, async {
            while let Some(joined) = tasks.join_next().await {
                reaped(joined);
            }
        })
        .await;
        if drained.is_err() {
            let left = tasks.len();
            tracing::warn!(
                left,
                "drain timeout passed; closing the remaining connections"
            );
            self.stats
                .forced_closed
                .fetch_add(left as u64, Ordering::Relaxed);
            // Aborts every task and waits until each is gone: its sockets and permit dropped.
            tasks.shutdown().await;
        }
        let summary = self.stats();
        log_stats(&summary, "stopped");
        Ok(summary)
    }

    /// Starts proxying an admitted connection in a task of `tasks`.
    fn spawn(&self, tasks: &mut JoinSet<()>, client: TrackedIo<TcpStream>, peer: SocketAddr) {
        let id = self.stats.total.fetch_add(1, Ordering::Relaxed) + 1;
        // Counted from here; the guard moves into the task, so even a task aborted before it
        // first runs uncounts itself.
        let active = Active::new(Arc::clone(&self.stats));
        let span = tracing::info_span!("conn", id, client = %peer);
        let options = Arc::clone(&self.options);
        let stats = Arc::clone(&self.stats);
        tasks.spawn(
            async move {
                let _active = active;
                serve_connection(client, peer, &options, &stats).await;
            }
            .instrument(span),
        );
    }
}

/// What a finished connection task left: nothing, unless it panicked.
fn reaped(joined: Result<(), JoinError>) {
    if let Err(err) = joined {
        if err.is_panic() {
            tracing::error!(error = %err, "connection task panicked");
        }
    }
}

/// Counts a connection as active while it lives.
struct Active(Arc<ProxyStats>);

impl Active {
    fn new(stats: Arc<ProxyStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Active(stats)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Proxies `client` to the upstream until both directions have ended, a deadline passes or an
/// error breaks the connection.
///
/// The idle timeout is the library's: `client` is a `TrackedIo`, whose pending reads and writes
/// fail with `TimedOut` once no byte has moved either way for `idle_timeout` (counted in
/// `limiter.stats().closed["idle_timeout"]`). It watches only while a read or write on the client is
/// pending, though, and after the client half-closes, `copy_bidirectional` stops reading it:
/// a client that sends its request, shuts down its write side and leaves, with an upstream that
/// never answers, would hold the connection (and its permit) forever. The proxy bounds that phase
/// itself with the same timeout, counting activity on both sockets; whenever the library's timer
/// is armed, it passes first (it counts the same events or fewer, each a moment earlier).
pub async fn serve_connection(
    client: TrackedIo<TcpStream>,
    peer: SocketAddr,
    options: &Options,
    stats: &Arc<ProxyStats>,
) {
    let upstream_addr = options.upstream;
    let dialled = tokio::time::timeout(options.dial_timeout, TcpStream::connect(upstream_addr));
    let upstream = match dialled.await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => return upstream_failed(stats, peer, upstream_addr, &err),
        Err(_elapsed) => {
            let err = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {:?}", options.dial_timeout),
            );
            return upstream_failed(stats, peer, upstream_addr, &err);
        }
    };
    // Small writes are forwarded as they come, not held back for coalescing.
    let _ = client.get_ref().set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tracing::debug!(upstream = %upstream_addr, "open");

    let conn = Arc::new(Activity::new());
    let mut client = Metered::new(client, &conn, stats, Direction::UpstreamToClient);
    let mut upstream = Metered::new(upstream, &conn, stats, Direction::ClientToUpstream);
    let result = tokio::select! {
        biased;
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => result.map(drop),
        () = conn.idle(options.idle_timeout) => {
            stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::new(io::ErrorKind::TimedOut, "idle while half-closed"))
        }
    };
    let (sent, received) = (upstream.written, client.written);
    let elapsed_ms = conn.started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => tracing::debug!(
            bytes_client_to_upstream = sent,
            bytes_upstream_to_client = received,
            elapsed_ms,
            "closed"
        ),
        Err(err) if err.kind() == io::ErrorKind::TimedOut => tracing::debug!(
            bytes_client_to_upstream = sent,
            bytes_upstream_to_client = received,
            elapsed_ms,
            reason = %err,
            "closed: idle timeout"
        ),
        Err(err) => tracing::debug!(
            bytes_client_to_upstream = sent,
            bytes_upstream_to_client = received,
            elapsed_ms,
            error = %err,
            "closed with an error"
        ),
    }
    // Dropping `client` and `upstream` closes both sockets and releases the permit.
}

fn upstream_failed(stats: &ProxyStats, peer: SocketAddr, upstream: SocketAddr, err: &io::Error) {
    stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        client = %peer,
        %upstream,
        error = %err,
        "upstream unreachable; closing the client connection"
    );
    // The client connection is dropped by the caller's return: closed, its permit released.
}

/// One connection's last activity, on either socket.
struct Activity {
    started: Instant,
    /// Nanoseconds from `started` to the last byte read or written.
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = self.started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`; never when `timeout` is zero.
    async fn idle(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = self.started + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Which way the bytes a [`Metered`] writes are going.
#[derive(Clone, Copy, Debug)]
enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

/// An IO that counts the bytes written to it (per connection and in the proxy's totals, as they
/// go) and notes every read or write that moves a byte as activity.
struct Metered<IO> {
    io: IO,
    written: u64,
    conn: Arc<Activity>,
    stats: Arc<ProxyStats>,
    direction: Direction,
}

impl<IO> Metered<IO> {
    fn new(io: IO, conn: &Arc<Activity>, stats: &Arc<ProxyStats>, direction: Direction) -> Self {
        Metered {
            io,
            written: 0,
            conn: Arc::clone(conn),
            stats: Arc::clone(stats),
            direction,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            self.written += n as u64;
            self.conn.touch();
            let total = match self.direction {
                Direction::ClientToUpstream => &self.stats.bytes_client_to_upstream,
                Direction::UpstreamToClient => &self.stats.bytes_upstream_to_client,
            };
            total.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Proxies the connections `listener` accepts to `options.upstream` until `shutdown`
/// completes; then stops accepting, lets open connections finish for `options.drain_timeout`,
/// closes the rest, and returns the final stats.
///
/// # Errors
///
/// `InvalidInput` when the options make no valid limiter config. Accept errors (running out of
/// file descriptors) are logged and retried, never returned.
pub async fn run(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Snapshot> {
    let proxy = Proxy::new(options).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    proxy.run(listener, shutdown).await
}

/// The command line: where to listen, and the options.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// Where to accept clients.
    pub listen: SocketAddr,
    /// Everything else.
    pub options: Options,
}

/// Parses the flags (without the program name). `Ok(None)` asks for the usage text.
///
/// # Errors
///
/// A message naming the flag and what is wrong with its value.
pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut listen: SocketAddr = "127.0.0.1:8000".parse().expect("a valid address");
    let mut upstream = None;
    let mut options = Options::new(listen); // the upstream is set below, once known
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = value()?;
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not IP:PORT"))?;
            }
            "--upstream" => upstream = Some(resolve(&value()?)?),
            "--max-per-client" => options.max_per_client = number(&flag, &value()?)?,
            "--max-total" => options.max_total = number(&flag, &value()?)?,
            "--dial-timeout" => {
                options.dial_timeout = duration(&flag, &value()?)?;
                if options.dial_timeout.is_zero() {
                    return Err("--dial-timeout: must be more than zero".to_owned());
                }
            }
            "--idle-timeout" => options.idle_timeout = duration(&flag, &value()?)?,
            "--drain-timeout" => options.drain_timeout = duration(&flag, &value()?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.upstream = upstream.ok_or("--upstream HOST:PORT is required")?;
    Ok(Some(Args { listen, options }))
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a whole number"))
}

fn duration(flag: &str, value: &str) -> Result<Duration, String> {
    parse_duration(value).map_err(|why| format!("{flag}: {why}"))
}

/// `HOST:PORT` to an address, resolving a name once, at start-up.
fn resolve(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let bad = |why: String| format!("--upstream: {value:?} is not HOST:PORT ({why})");
    let mut addrs = value.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("the name has no addresses".to_owned()))
}

/// `300ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let bad = || format!("{value:?} is not a duration such as 300ms, 5s, 2m or 1h");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)
}

/// Completes at the first Ctrl-C; never, if the handler cannot be installed.
async fn ctrl_c() {
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("Ctrl-C"),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C; stop the process another way");
            std::future::pending().await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tcp_proxy=debug,tower_connlimit=debug".into()),
        )
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tcp_proxy: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("tcp_proxy: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let options = args.options;
    tracing::info!(
        listen = %args.listen,
        upstream = %options.upstream,
        max_per_client = options.max_per_client,
        max_total = options.max_total,
        dial_timeout = ?options.dial_timeout,
        idle_timeout = ?options.idle_timeout,
        drain_timeout = ?options.drain_timeout,
        "proxying"
    );
    match run(listener, options, ctrl_c()).await {
        Ok(_summary) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcp_proxy: {err}");
            ExitCode::FAILURE
        }
    }
}
