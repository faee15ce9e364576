//! `examples/tcp_proxy.rs` over real loopback sockets: distinct 127.0.0.N clients, real upstream
//! servers, and the process's own file descriptors.
//!
//! Every test runs alone (see [`serial`]): one of them compares the count of open file
//! descriptors before and after, which another test's sockets or runtime would disturb.

#[path = "../examples/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

mod support;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::*;
use tcp_proxy::{parse_args, Options, Proxy, Snapshot};

/// Runs `test` on a runtime of its own while no other test of this binary runs. The runtime is
/// built after the lock is taken and dropped before it is released, so even its descriptors
/// never overlap another test's.
fn serial(test: impl Future<Output = ()>) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _alone = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// The proxy's options for a test: the defaults, with a drain shorter than [`WAIT`].
fn options(upstream: SocketAddr) -> Options {
    Options {
        drain_timeout: Duration::from_secs(5),
        ..Options::new(upstream)
    }
}

/// A proxy running in a task, with the handle that stops it.
struct Running {
    proxy: Proxy,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<io::Result<Snapshot>>,
}

impl Running {
    /// Whether the proxy holds no connection and its limiter no permit.
    fn released(&self) -> bool {
        self.stats().active == 0 && self.limits().open_connections == 0
    }

    /// Binds a loopback port and runs a proxy with `options` on it.
    async fn start(options: Options) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy::new(options).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(proxy.clone().run(listener, async move {
            let _ = stopped.await;
        }));
        Running {
            proxy,
            addr,
            stop: Some(stop),
            run,
        }
    }

    fn stats(&self) -> Snapshot {
        self.proxy.stats()
    }

    fn limits(&self) -> tower_connlimit::Stats {
        self.proxy.limiter().stats()
    }

    /// Asks the proxy to shut down.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the proxy down and returns what `run` returned.
    async fn finish(mut self) -> Snapshot {
        self.shut_down();
        bounded(self.run).await.unwrap().unwrap()
    }
}

/// An echo upstream; also returns how many connections it has accepted.
async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, accepted)
}

/// What the "shouting" upstream answers to `request`, once it has all of it.
fn shouted(request: &[u8]) -> Vec<u8> {
    let mut reply = format!("{} bytes: ", request.len()).into_bytes();
    reply.extend(request.iter().map(u8::to_ascii_uppercase));
    reply
}

/// An upstream that reads each request to its end (the client's half-close), then answers with
/// [`shouted`] and closes.
async fn shouting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if stream.read_to_end(&mut request).await.is_ok() {
                    let _ = stream.write_all(&shouted(&request)).await;
                }
            });
        }
    });
    addr
}

/// A port nothing listens on: bound, then closed.
async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The bytes came back.
    Admitted,
    /// Closed or reset without a byte.
    Refused,
}

/// Sends `message` through `stream` to an echo upstream and tells whether it came back whole
/// or the connection was closed without a byte. Anything else fails the test.
async fn probe(stream: &mut TcpStream, message: &[u8]) -> Probe {
    let refusal = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    };
    if let Err(e) = stream.write_all(message).await {
        assert!(refusal(&e), "unexpected write error: {e}");
        return Probe::Refused;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    // At most one turn per byte expected, plus the end.
    for _ in 0..=message.len() {
        if got.len() == message.len() {
            break;
        }
        match bounded(stream.read(&mut buf)).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(refusal(&e), "unexpected read error: {e}");
                break;
            }
        }
    }
    if got.is_empty() {
        Probe::Refused
    } else {
        assert_eq!(got, message, "the echo came back altered");
        Probe::Admitted
    }
}

/// Connects from 127.0.0.n and proves the proxy admitted the connection with an echo round trip.
async fn admitted_from(n: u8, proxy: SocketAddr) -> TcpStream {
    let mut stream = connect_from(n, proxy).await;
    assert_eq!(probe(&mut stream, b"ping").await, Probe::Admitted);
    stream
}

/// The number of file descriptors this process has open (including the one reading the list).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn the_per_client_cap_admits_exactly_n_and_other_clients_still_get_in() {
    serial(async {
        const N: usize = 4;
        let (upstream, upstream_accepted) = echo_upstream().await;
        let proxy = Running::start(Options {
            max_per_client: N,
            ..options(upstream)
        })
        .await;

        let mut conns = Vec::new();
        for _ in 0..2 * N {
            conns.push(connect_from(2, proxy.addr).await);
        }
        wait_until("the proxy has admitted or refused every connection", || {
            let s = proxy.stats();
            s.total + s.rejected == 2 * N as u64
        })
        .await;
        let mut outcomes = Vec::new();
        for (i, conn) in conns.iter_mut().enumerate() {
            outcomes.push(probe(conn, format!("ping {i}").as_bytes()).await);
        }
        let admitted = outcomes.iter().filter(|p| **p == Probe::Admitted).count();
        let refused = outcomes.iter().filter(|p| **p == Probe::Refused).count();
        assert_eq!((admitted, refused), (N, N), "{outcomes:?}");

        // Another client is not held back by the first one's cap.
        let other = admitted_from(3, proxy.addr).await;

        let s = proxy.stats();
        assert_eq!(s.active, N as u64 + 1);
        assert_eq!(s.total, N as u64 + 1);
        assert_eq!(s.rejected, N as u64);
        assert_eq!(s.upstream_errors, 0);
        let limits = proxy.limits();
        assert_eq!(limits.open_connections, N + 1);
        assert_eq!(limits.rejected["client_connections"], N as u64);
        assert_eq!(limits.rejected.total(), N as u64);
        let limiter = proxy.proxy.limiter();
        assert_eq!(limiter.open_connections(client_ip(2)), N);
        assert_eq!(limiter.open_connections(client_ip(3)), 1);
        // Refused clients never cost an upstream connection.
        assert_eq!(upstream_accepted.load(Ordering::SeqCst), N + 1);

        drop((conns, other));
        let summary = proxy.finish().await;
        assert_eq!(summary.active, 0);
        assert_eq!(summary.forced_closed, 0);
        assert_eq!(summary.total, N as u64 + 1);
        assert_eq!(summary.rejected, N as u64);
        assert!(!summary.listening);
    });
}

#[test]
fn the_global_cap_refuses_across_clients() {
    serial(async {
        let (upstream, _) = echo_upstream().await;
        let proxy = Running::start(Options {
            max_total: 2,
            ..options(upstream)
        })
        .await;
        let _a = admitted_from(2, proxy.addr).await;
        let _b = admitted_from(3, proxy.addr).await;
        let mut c = connect_from(4, proxy.addr).await;
        assert_eq!(probe(&mut c, b"ping").await, Probe::Refused);
        assert_eq!(proxy.limits().rejected["total_connections"], 1);
        assert_eq!(proxy.stats().rejected, 1);
        assert_eq!(proxy.stats().active, 2);
    });
}

#[test]
fn a_half_close_gets_the_whole_reply_and_bytes_are_counted_both_ways() {
    serial(async {
        let upstream = shouting_upstream().await;
        let proxy = Running::start(options(upstream)).await;
        // Several of the proxy's 8 KiB buffers each way, and not a multiple of them.
        let payload: Vec<u8> = (0..100_003u32).map(|i| b'a' + (i % 26) as u8).collect();
        let expected = shouted(&payload);

        let mut client = connect_from(2, proxy.addr).await;
        bounded(client.write_all(&payload)).await.unwrap();
        client.shutdown().await.unwrap(); // half-close: the request is complete
        let mut reply = Vec::new();
        bounded(client.read_to_end(&mut reply)).await.unwrap();
        assert_eq!(reply.len(), expected.len());
        assert!(reply == expected, "the reply differs from the expected one");

        // The client saw the end only after the proxy wrote everything both ways.
        let s = proxy.stats();
        assert_eq!(s.bytes_client_to_upstream, payload.len() as u64);
        assert_eq!(s.bytes_upstream_to_client, expected.len() as u64);
        assert_eq!(s.total, 1);
        wait_until("the connection is gone", || proxy.released()).await;
        let summary = proxy.finish().await;
        assert_eq!(summary.bytes_client_to_upstream, 100_003);
        assert_eq!(summary.bytes_upstream_to_client, 100_003 + 14);
        assert_eq!(summary.upstream_errors, 0);
    });
}

#[test]
fn an_unreachable_upstream_closes_the_client_and_is_counted() {
    serial(async {
        let upstream = dead_port().await;
        let proxy = Running::start(options(upstream)).await;
        let mut client = connect_from(2, proxy.addr).await;
        assert!(was_refused(&mut client).await, "the client must be closed");
        // Counted before the client connection is dropped.
        let s = proxy.stats();
        assert_eq!(s.upstream_errors, 1);
        assert_eq!(s.total, 1);
        assert_eq!(s.bytes_client_to_upstream + s.bytes_upstream_to_client, 0);
        wait_until("the permit is released", || proxy.released()).await;
    });
}

#[test]
fn an_upstream_that_never_answers_the_dial_times_out() {
    serial(async {
        // A listener whose accept queue is full: Linux drops further SYNs, so a connect to it
        // hangs until the dialler gives up.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let upstream_listener = socket.listen(0).unwrap();
        let upstream = upstream_listener.local_addr().unwrap();
        let _queued = TcpStream::connect(upstream).await.unwrap();
        let mut hanging = Box::pin(TcpSocket::new_v4().unwrap().connect(upstream));
        let hung = tokio::time::timeout(Duration::from_millis(50), &mut hanging).await;
        assert!(hung.is_err(), "the upstream's accept queue is not full");

        let proxy = Running::start(Options {
            dial_timeout: Duration::from_millis(200),
            ..options(upstream)
        })
        .await;
        let started = Instant::now();
        let mut client = connect_from(2, proxy.addr).await;
        assert!(was_refused(&mut client).await, "the client must be closed");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(proxy.stats().upstream_errors, 1);
        wait_until("the permit is released", || {
            proxy.limits().open_connections == 0
        })
        .await;
    });
}

#[cfg(target_os = "linux")]
#[test]
fn file_descriptors_return_to_the_baseline_when_clients_leave() {
    serial(async {
        let (upstream, _) = echo_upstream().await;
        let proxy = Running::start(Options {
            max_per_client: 2,
            ..options(upstream)
        })
        .await;
        let baseline = open_fds();

        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect_from(2, proxy.addr).await);
        }
        wait_until("every connection is decided", || {
            let s = proxy.stats();
            s.total + s.rejected == 4
        })
        .await;
        let mut admitted = 0;
        for client in &mut clients {
            if probe(client, b"ping").await == Probe::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2);
        clients.push(admitted_from(3, proxy.addr).await);
        // Each admitted connection: the client's socket, the proxy's two, the upstream's one.
        // Each refused one: only the client's socket, which the test still holds.
        let during = open_fds();
        assert_eq!(during, baseline + 3 * 4 + 2);

        drop(clients);
        let mut after = open_fds();
        wait_until("the descriptors are back to the baseline", || {
            after = open_fds();
            after == baseline
        })
        .await;
        println!("open file descriptors: baseline {baseline}, with 3 admitted and 2 refused clients {during}, after {after}");
        let s = proxy.stats();
        assert_eq!(s.active, 0);
        let limits = proxy.limits();
        assert_eq!(limits.open_connections, 0);
        proxy.proxy.limiter().purge_expired();
        assert_eq!(proxy.limits().tracked_clients, 0);
    });
}

#[test]
fn shutdown_refuses_new_connections_and_lets_open_ones_finish() {
    serial(async {
        // An upstream that reads a 5-byte request, says so, and answers when told to.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (got_tx, mut got) = mpsc::channel::<Vec<u8>>(1);
        let (release, released) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 5];
            stream.read_exact(&mut request).await.unwrap();
            got_tx.send(request.to_vec()).await.unwrap();
            released.await.unwrap();
            stream
                .write_all(&request.to_ascii_uppercase())
                .await
                .unwrap();
        });
        let mut proxy = Running::start(Options {
            drain_timeout: Duration::from_secs(60), // longer than any wait: no forcing here
            ..options(upstream)
        })
        .await;

        let mut client = connect_from(2, proxy.addr).await;
        client.write_all(b"hello").await.unwrap();
        assert_eq!(bounded(got.recv()).await.unwrap(), b"hello");

        // Mid-exchange: shut down.
        proxy.shut_down();
        wait_until("the proxy stops listening", || !proxy.stats().listening).await;
        let late = TcpSocket::new_v4().unwrap();
        late.bind(SocketAddr::new(client_ip(4), 0)).unwrap();
        let refused = bounded(late.connect(proxy.addr)).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        // The open connection still completes its exchange.
        release.send(()).unwrap();
        let answer = read_to_close(&mut client).await.unwrap();
        assert_eq!(answer, "HELLO");
        drop(client);

        let summary = bounded(proxy.run).await.unwrap().unwrap();
        assert_eq!(
            summary,
            Snapshot {
                active: 0,
                total: 1,
                rejected: 0,
                bytes_client_to_upstream: 5,
                bytes_upstream_to_client: 5,
                upstream_errors: 0,
                idle_timeouts: 0,
                forced_closed: 0,
                listening: false,
            }
        );
        assert_eq!(proxy.proxy.limiter().stats().open_connections, 0);
    });
}

#[test]
fn shutdown_force_closes_what_is_still_open_after_the_drain_timeout() {
    serial(async {
        let (upstream, _) = echo_upstream().await;
        let drain = Duration::from_millis(300);
        let proxy = Running::start(Options {
            drain_timeout: drain,
            ..options(upstream)
        })
        .await;
        let limiter = proxy.proxy.limiter().clone();
        // Admitted, and never finishing on its own.
        let mut client = admitted_from(2, proxy.addr).await;
        assert_eq!(limiter.stats().open_connections, 1);

        let started = Instant::now();
        let summary = proxy.finish().await;
        let took = started.elapsed();
        assert!(took >= drain, "returned after {took:?}");
        assert!(
            took < drain + Duration::from_secs(2),
            "returned after {took:?}"
        );
        assert_eq!(summary.forced_closed, 1);
        assert_eq!(summary.active, 0);
        assert_eq!(summary.total, 1);
        // The permit went with the aborted task, and the client sees its connection end.
        limiter.purge_expired();
        let stats = limiter.stats();
        assert_eq!((stats.open_connections, stats.tracked_clients), (0, 0));
        assert!(was_refused(&mut client).await);
    });
}

#[test]
fn an_idle_connection_is_closed_and_counted_while_a_chatty_one_stays() {
    serial(async {
        let (upstream, _) = echo_upstream().await;
        let idle = Duration::from_millis(300);
        let proxy = Running::start(Options {
            idle_timeout: idle,
            ..options(upstream)
        })
        .await;

        let silent = async {
            let started = Instant::now();
            let mut silent = admitted_from(2, proxy.addr).await;
            let mut buf = [0u8; 8];
            let end = bounded(silent.read(&mut buf)).await;
            assert!(matches!(end, Ok(0)), "expected the proxy to close: {end:?}");
            started.elapsed()
        };
        let chatty = async {
            let mut chatty = admitted_from(3, proxy.addr).await;
            // Three idle timeouts long, one round trip per third of one: never idle.
            for i in 0..9 {
                tokio::time::sleep(idle / 3).await;
                let ping = format!("ping {i}");
                assert_eq!(probe(&mut chatty, ping.as_bytes()).await, Probe::Admitted);
            }
            chatty
        };
        let (silent_for, _chatty) = tokio::join!(silent, chatty);
        assert!(silent_for >= idle, "closed after {silent_for:?}");

        assert_eq!(proxy.limits().closed["idle_timeout"], 1);
        assert_eq!(proxy.stats().idle_timeouts, 1);
        wait_until("only the chatty connection is left", || {
            proxy.stats().active == 1 && proxy.limits().open_connections == 1
        })
        .await;
        assert_eq!(proxy.proxy.limiter().open_connections(client_ip(2)), 0);
    });
}

#[test]
fn a_half_closed_connection_whose_upstream_goes_silent_is_closed_too() {
    serial(async {
        // An upstream that reads the request to its end and then never answers nor closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let idle = Duration::from_millis(200);
        let proxy = Running::start(Options {
            idle_timeout: idle,
            ..options(upstream)
        })
        .await;

        let started = Instant::now();
        let mut client = connect_from(2, proxy.addr).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 8];
        let end = bounded(client.read(&mut buf)).await;
        assert!(matches!(end, Ok(0)), "expected the proxy to close: {end:?}");
        assert!(started.elapsed() >= idle);

        // The library's timer cannot see this phase (nothing reads the client any more); the
        // proxy's own bound closed it.
        assert_eq!(proxy.limits().closed["idle_timeout"], 0);
        assert_eq!(proxy.stats().idle_timeouts, 1);
        assert_eq!(proxy.stats().bytes_client_to_upstream, 7);
        wait_until("the permit is released", || proxy.released()).await;
    });
}

#[test]
fn bad_arguments_get_errors_that_name_the_flag() {
    serial(async {
        let parse = |line: &str| parse_args(line.split_whitespace().map(str::to_owned));
        let err = |line: &str| parse(line).unwrap_err();

        let args = parse(
            "--listen 127.0.0.1:8001 --upstream 127.0.0.1:9001 --max-per-client 3 \
             --max-total 50 --dial-timeout 250ms --idle-timeout 2m --drain-timeout 1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:8001".parse().unwrap());
        let o = args.options;
        assert_eq!(o.upstream, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((o.max_per_client, o.max_total), (3, 50));
        assert_eq!(o.dial_timeout, Duration::from_millis(250));
        assert_eq!(o.idle_timeout, Duration::from_secs(120));
        assert_eq!(o.drain_timeout, Duration::from_secs(1));

        let defaults = parse("--upstream 127.0.0.1:9000").unwrap().unwrap();
        assert_eq!(defaults.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(
            defaults.options,
            Options::new("127.0.0.1:9000".parse().unwrap())
        );
        assert!(parse("--help").unwrap().is_none());

        assert_eq!(err(""), "--upstream HOST:PORT is required");
        assert_eq!(
            err("--upstream 127.0.0.1:9000 --max-per-client ten"),
            "--max-per-client: \"ten\" is not a whole number"
        );
        assert_eq!(
            err("--upstream 127.0.0.1:9000 --idle-timeout 5x"),
            "--idle-timeout: \"5x\" is not a duration such as 300ms, 5s, 2m or 1h"
        );
        assert_eq!(
            err("--upstream 127.0.0.1:9000 --dial-timeout 0s"),
            "--dial-timeout: must be more than zero"
        );
        assert_eq!(
            err("--listen localhost --upstream 127.0.0.1:9000"),
            "--listen: \"localhost\" is not IP:PORT"
        );
        assert_eq!(
            err("--upstream 127.0.0.1:9000 --max-total"),
            "--max-total needs a value"
        );
        assert_eq!(err("--bogus"), "unknown argument \"--bogus\"");
    });
}
