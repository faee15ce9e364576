//! Hostile clients against the production stack of `examples/server.rs`: clients that connect
//! and say nothing, send garbage, reset mid-request, half-close, churn thousands of connections,
//! or open HTTP/2 streams past their limit and vanish. Every test ends with the limiter holding
//! nothing (no open connection, no in-flight request, no tracked client) and honest clients
//! served, from a fresh address and from a hostile one: nobody is locked out.
#![cfg(feature = "axum")]

#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod server;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_connlimit::{
    listener::ListenerConfig, listener::MinReceiveRate, Config, ConnLimitLayer, Limiter,
};

use support::*;

/// The connections the listener admitted.
fn listener_admitted(stats: &tower_connlimit::Stats) -> u64 {
    stats
        .point("listener")
        .map_or(0, |listener| listener.admitted)
}

/// The example's defaults (`--max-per-client 10`) with `--max-requests 4`.
fn config() -> Config {
    Config {
        max_conns_per_client: 10,
        max_requests_per_client: 4,
        ..Config::default()
    }
}

/// A running server and the limiter it admits through.
struct Server {
    addr: SocketAddr,
    limiter: Limiter,
}

/// `serve` in `examples/server.rs` in its default `--mode listener --reject close`: the
/// example's own routes under a request-level `ConnLimitLayer`, with the limiter as router
/// state, served by `Serve` (10 s header timeout) from a `ConnLimitListener` sharing the same
/// `Limiter` (which applies the config's deadlines). Left out: the Ctrl-C graceful shutdown and
/// `/metrics`. Added, for clients that vanish mid-upload: `POST /upload`, which reads its whole
/// body.
async fn server(config: Config) -> Server {
    let limiter = Limiter::try_new(config).unwrap();
    let app = server::routes()
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("read {}\n", body.len()) }),
        )
        .layer(ConnLimitLayer::with_limiter(limiter.clone()))
        .with_state(limiter.clone());
    // The listener's default reject action is the example's default, `close`.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tower_connlimit::serve::Serve::new(
        tower_connlimit::ConnLimitListener::new(tcp, limiter.clone()),
        app,
    );
    let addr = served.local_addr().unwrap();
    tokio::spawn(served.run());
    Server { addr, limiter }
}

const HELLO: &str = "hello from tower-connlimit\n";
/// A keep-alive `GET /`, as a raw client sends it.
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
/// A `GET /` that asks the server to close after answering.
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
/// A request head that never ends.
const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Partial: aaaa";
/// A whole upload of three bytes.
const UPLOAD: &[u8] = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Whether `answer` is the whole `200` answer to `GET /`.
fn is_hello(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with(HELLO)
}

/// Sends `request` from `127.0.0.n`, then reads until the server closes.
async fn raw_exchange(n: u8, server: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect_from(n, server).await;
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, WAIT).await
}

/// The end of every test: the limiter drains to nothing, then honest clients are served over
/// HTTP/1.1 and HTTP/2 from a fresh address and from `hostile` (one of the test's hostile
/// addresses), and the limiter drains again once they leave.
async fn drains_then_serves_honest_clients(server: &Server, hostile: u8) {
    for n in [250, hostile] {
        // Also lets the previous turn's clients go before counting this one's.
        wait_until_drained(&server.limiter).await;
        let mut h1 = http1_client(connect_from(n, server.addr).await).await;
        let (status, _, body) = h1_get(&mut h1, "/").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, HELLO), "from {n}");
        // The server's own view: this request on this connection is all it holds.
        let (status, _, body) = h1_get(&mut h1, "/stats").await;
        assert_eq!(status, 200);
        let stats: Value = serde_json::from_str(&body).unwrap();
        let totals = ["open_connections", "in_flight_requests", "tracked_clients"]
            .map(|total| stats[total].clone());
        assert_eq!(totals, [json!(1), json!(1), json!(1)], "from {n}");
        let mut h2 = http2_client(connect_from(n, server.addr).await).await;
        let response = bounded(h2.send_request(get_request("/"))).await.unwrap();
        let (status, _, body) = collect(response).await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, HELLO),
            "h2 from {n}"
        );
    }
    wait_until_drained(&server.limiter).await;
}

/// Long enough for every deadline of the silent-client test, in virtual time.
const SCENARIO: Duration = Duration::from_secs(300);

#[tokio::test(start_paused = true)]
async fn silent_clients_are_cut_at_the_deadlines_and_give_their_slots_back() {
    // `--handshake-timeout 5 --idle-timeout 20 --min-rate 500` (with the example's 10 s grace),
    // on paused time as in tests/deadlines.rs: each close is checked to the virtual second.
    let server = server(Config {
        listener: ListenerConfig {
            handshake_timeout: secs(5),
            idle_timeout: secs(20),
            min_receive_rate: Some(MinReceiveRate::new(500, secs(10))),
            ..ListenerConfig::default()
        },
        ..config()
    })
    .await;
    let started = Instant::now();
    // Client 2 fills its ten slots with connections that never send a byte; ten more clients
    // hold two such connections each.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(connect_from(2, server.addr).await);
    }
    for n in 3..=12 {
        for _ in 0..2 {
            silent.push(connect_from(n, server.addr).await);
        }
    }
    wait_until("the silent connections are admitted", || {
        server.limiter.stats().open_connections == 30
    })
    .await;
    // While they sit there, client 2 is locked out.
    assert!(was_refused(&mut connect_from(2, server.addr).await).await);

    // Clients that start a request and go quiet, and clients answered once that then stay
    // quiet on keep-alive: both past the handshake, both cut by `Serve`'s header timeout (10 s),
    // before the listener's idle timeout (20 s) would.
    let mut quiet = Vec::new();
    for n in 13..=17 {
        let mut stream = connect_from(n, server.addr).await;
        stream.write_all(PARTIAL_HEAD).await.unwrap();
        quiet.push(stream);
    }
    for n in 18..=20 {
        let mut stream = connect_from(n, server.addr).await;
        stream.write_all(GET).await.unwrap();
        assert!(is_hello(&read_response(&mut stream).await));
        quiet.push(stream);
    }
    let closed_after = |mut stream: TcpStream| async move {
        assert_eq!(read_until_closed(&mut stream, SCENARIO).await, "");
        started.elapsed()
    };
    let silent: Vec<_> = silent
        .into_iter()
        .map(|s| tokio::spawn(closed_after(s)))
        .collect();
    let quiet: Vec<_> = quiet
        .into_iter()
        .map(|s| tokio::spawn(closed_after(s)))
        .collect();

    for closed in silent {
        assert_eq!(closed.await.unwrap().as_secs(), 5, "the handshake timeout");
    }
    // The deadline gave client 2 its slots back, long before the quiet clients are cut.
    let mut again = http1_client(connect_from(2, server.addr).await).await;
    assert_eq!(h1_get(&mut again, "/").await.0, 200);
    drop(again);
    for closed in quiet {
        assert_eq!(closed.await.unwrap().as_secs(), 10, "the header timeout");
    }
    let stats = server.limiter.stats();
    assert_eq!(stats.closed["handshake_timeout"], 30);
    assert_eq!(
        stats.closed["idle_timeout"], 0,
        "the header timeout came first"
    );
    assert_eq!(stats.closed["min_receive_rate"], 0);
    assert_eq!(stats.rejected.total(), 1);
    assert_eq!(stats.rejected["client_connections"], 1);
    drains_then_serves_honest_clients(&server, 2).await;
}

/// What a client sending garbage should get back.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// An HTTP/1.1 error answer with this status line.
    Status(&'static str),
    /// An HTTP/2 GOAWAY frame (after the server's SETTINGS).
    GoAway,
}

impl Reply {
    fn matches(self, answer: &str) -> bool {
        match self {
            Reply::Status(line) => answer.starts_with(line),
            // A GOAWAY frame header: length 8, type 7, no flags, stream 0.
            Reply::GoAway => answer.contains("\0\0\u{8}\u{7}\0\0\0\0\0"),
        }
    }
}

#[tokio::test]
async fn garbage_gets_an_error_answer_and_every_connection_is_released() {
    let server = server(config()).await;
    let bad_request = Reply::Status("HTTP/1.1 400 Bad Request\r\n");
    let header_flood: Vec<u8> = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n".as_slice(),
        &b"X-Flood: 1\r\n".repeat(200),
        b"\r\n",
    ]
    .concat();
    let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let cases: Vec<(&str, Vec<u8>, Reply)> = vec![
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".repeat(8),
            bad_request,
        ),
        (
            "an SSH banner",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            bad_request,
        ),
        (
            "a line of text",
            b"HELLO WORLD\r\n\r\n".to_vec(),
            bad_request,
        ),
        ("binary noise", binary, bad_request),
        (
            "a bad Content-Length",
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n".to_vec(),
            bad_request,
        ),
        (
            "200 headers",
            header_flood,
            Reply::Status("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        ),
        (
            "an HTTP/2 preface and a broken frame",
            [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), &[0xff; 16]].concat(),
            Reply::GoAway,
        ),
    ];
    let count = cases.len();
    let mut clients = JoinSet::new();
    for (i, (what, garbage, reply)) in cases.into_iter().enumerate() {
        let n = 30 + i as u8;
        let addr = server.addr;
        clients.spawn(async move {
            // Fifteen in turn, more than the ten a client may hold: a leaked permit would have
            // the last ones refused (closed with no answer).
            for round in 0..15 {
                let answer = raw_exchange(n, addr, &garbage).await;
                assert!(
                    reply.matches(&answer),
                    "{what}, round {round}: expected {reply:?}, got {answer:?}"
                );
            }
        });
    }
    // Bounded: each client's exchanges are bounded in time.
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    let stats = server.limiter.stats();
    assert_eq!(listener_admitted(&stats), 15 * count as u64);
    assert_eq!(stats.rejected.total(), 0, "{:?}", stats.rejected);
    drains_then_serves_honest_clients(&server, 30).await;
}

#[tokio::test]
async fn clients_that_reset_mid_request_are_released() {
    let server = server(config()).await;
    let mut doomed = Vec::new();
    for n in 40..=49 {
        // Two connections with half a request head each.
        for _ in 0..2 {
            let mut stream = connect_from(n, server.addr).await;
            stream.write_all(PARTIAL_HEAD).await.unwrap();
            doomed.push(stream);
        }
        // Two uploads a hundredth of the way through their declared body.
        for _ in 0..2 {
            let mut stream = connect_from(n, server.addr).await;
            stream
                .write_all(
                    b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
                )
                .await
                .unwrap();
            stream.write_all(&[b'x'; 1000]).await.unwrap();
            doomed.push(stream);
        }
        // A request whose handler is still working.
        let mut stream = connect_from(n, server.addr).await;
        stream
            .write_all(b"GET /slow?ms=60000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        doomed.push(stream);
    }
    wait_until("every connection and request is in", || {
        let stats = server.limiter.stats();
        stats.open_connections == 50 && stats.in_flight_requests == 30
    })
    .await;
    // And a WebSocket, mid-session.
    let (mut ws, _) = bounded(tokio_tungstenite::client_async(
        format!("ws://{}/ws", server.addr),
        connect_from(50, server.addr).await,
    ))
    .await
    .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert!(bounded(ws.next()).await.unwrap().is_ok());
    assert_eq!(server.limiter.stats().open_connections, 51);

    for stream in doomed {
        reset(stream);
    }
    ws.get_ref().set_zero_linger().unwrap();
    drop(ws);
    assert_eq!(server.limiter.stats().rejected.total(), 0);
    drains_then_serves_honest_clients(&server, 40).await;
}

/// What a half-closing client should get back.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A close with no answer: there was no whole request to answer.
    Nothing,
    /// The whole `200` answer, ending with this body.
    Whole(&'static str),
    /// The whole `200` answer ending with this body, or a close with nothing; never a partial
    /// answer. `axum::serve` leaves hyper's `http1().half_close(..)` off, so when hyper sees
    /// the end of the client's stream before the handler has answered, it takes the request
    /// for aborted and drops it: always with a handler that takes a while, and, with several
    /// clients at once, about one keep-alive request in three to an instant handler (measured,
    /// the same with no limiter at all). Only a `Connection: close` request to an instant
    /// handler was answered every time.
    WholeOrNothing(&'static str),
}

impl Answer {
    fn matches(self, answer: &str) -> bool {
        let whole = |body| answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with(body);
        match self {
            Answer::Nothing => answer.is_empty(),
            Answer::Whole(body) => whole(body),
            Answer::WholeOrNothing(body) => answer.is_empty() || whole(body),
        }
    }
}

#[tokio::test]
async fn half_closing_clients_get_their_answers_and_are_released() {
    let server = server(config()).await;
    let cases: [(u8, &'static [u8], Answer); 6] = [
        // Connects, shuts down writing: nothing to answer.
        (60, b"", Answer::Nothing),
        // Half a request head, then the end of the stream: nothing to answer.
        (61, PARTIAL_HEAD, Answer::Nothing),
        (62, GET_CLOSE, Answer::Whole(HELLO)),
        (63, GET, Answer::WholeOrNothing(HELLO)),
        (64, UPLOAD, Answer::WholeOrNothing("read 3\n")),
        (
            65,
            b"GET /slow?ms=50 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            Answer::WholeOrNothing("slept 50 ms\n"),
        ),
    ];
    let mut clients = JoinSet::new();
    for (n, request, expected) in cases {
        let addr = server.addr;
        clients.spawn(async move {
            // Fifteen in turn, more than the ten a client may hold.
            for round in 0..15 {
                let mut stream = connect_from(n, addr).await;
                stream.write_all(request).await.unwrap();
                stream.shutdown().await.unwrap();
                let answer = read_until_closed(&mut stream, WAIT).await;
                assert!(
                    expected.matches(&answer),
                    "client {n}, round {round}: expected {expected:?}, got {answer:?}"
                );
            }
        });
    }
    // And a keep-alive client that half-closes after its answer: the server closes too.
    clients.spawn({
        let addr = server.addr;
        async move {
            for _ in 0..15 {
                let mut stream = connect_from(66, addr).await;
                stream.write_all(GET).await.unwrap();
                assert!(is_hello(&read_response(&mut stream).await));
                stream.shutdown().await.unwrap();
                assert_eq!(read_until_closed(&mut stream, WAIT).await, "");
            }
        }
    });
    // Bounded: each client's exchanges are bounded in time.
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    let stats = server.limiter.stats();
    assert_eq!(listener_admitted(&stats), 7 * 15);
    assert_eq!(stats.rejected.total(), 0, "{:?}", stats.rejected);
    drains_then_serves_honest_clients(&server, 62).await;
}

/// Clients of the burst: 127.0.0.2 to 127.0.0.51.
const BURST_CLIENTS: std::ops::RangeInclusive<u8> = 2..=51;
/// Connections each burst client opens: 10 held, 5 refused, 25 churned.
const PER_BURST_CLIENT: usize = 40;

/// One burst client: fills its ten slots (each proven admitted by an answer), has five more
/// connections refused, drops the ten (half with a reset), then churns 25 connections at once
/// that drop at once, reset, send garbage, ask and read, or reset mid-head. Returns how many
/// churned requests were answered.
async fn burst_client(
    n: u8,
    server: SocketAddr,
    holding: Arc<Semaphore>,
    gate: Arc<Semaphore>,
) -> usize {
    // At most 20 clients hold their ten at once: with both ends in this process, that keeps
    // the test well under the common soft limit of 1,024 open files.
    let hold = holding.acquire_many_owned(10).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut stream = connect_from(n, server).await;
        stream.write_all(GET).await.unwrap();
        assert!(is_hello(&read_response(&mut stream).await));
        held.push(stream);
    }
    for _ in 0..5 {
        assert!(
            was_refused(&mut connect_from(n, server).await).await,
            "client {n}: an eleventh connection was admitted"
        );
    }
    for (i, stream) in held.into_iter().enumerate() {
        if i % 2 == 0 {
            reset(stream);
        }
    }
    drop(hold);

    let mut churn = JoinSet::new();
    for i in 0..25 {
        // Bounds the connections being set up at once below the listen backlog.
        let permit = Arc::clone(&gate).acquire_owned().await.unwrap();
        churn.spawn(async move {
            let _permit = permit;
            let mut stream = connect_from(n, server).await;
            match i % 5 {
                0 => drop(stream),
                1 => reset(stream),
                2 => {
                    // The write fails if the connection was refused already: either is fine.
                    let _ = stream.write_all(b"\x00\x01garbage\xff\r\n\r\n").await;
                }
                3 => {
                    let _ = stream.write_all(GET_CLOSE).await;
                    let answer = read_until_closed(&mut stream, WAIT).await;
                    // Answered whole if admitted, closed with nothing if refused.
                    assert!(answer.is_empty() || is_hello(&answer), "{answer:?}");
                    return usize::from(!answer.is_empty());
                }
                _ => {
                    let _ = stream.write_all(PARTIAL_HEAD).await;
                    reset(stream);
                }
            }
            0
        });
    }
    let mut answered = 0;
    // Bounded: 25 tasks, each bounded in time.
    while let Some(task) = churn.join_next().await {
        answered += task.unwrap();
    }
    answered
}

#[tokio::test]
async fn a_burst_of_two_thousand_connections_drains_to_zero() {
    let server = server(config()).await;
    let started = std::time::Instant::now();
    let holding = Arc::new(Semaphore::new(20 * 10));
    let gate = Arc::new(Semaphore::new(128));
    let mut clients = JoinSet::new();
    for n in BURST_CLIENTS {
        clients.spawn(burst_client(
            n,
            server.addr,
            Arc::clone(&holding),
            Arc::clone(&gate),
        ));
    }
    let burst = async {
        let mut answered = 0;
        // Bounded: 50 clients, each bounded in time.
        while let Some(client) = clients.join_next().await {
            answered += client.unwrap();
        }
        answered
    };
    let answered = tokio::time::timeout(Duration::from_secs(60), burst)
        .await
        .expect("the burst did not finish within 60 s");
    let total = BURST_CLIENTS.count() * PER_BURST_CLIENT;
    assert_eq!(total, 2000);
    // Every connection reaches the listener and is admitted or refused, even those reset
    // before it accepted them.
    wait_until("the listener has seen every connection", || {
        let stats = server.limiter.stats();
        let listener = stats.point("listener").expect("the listener is in use");
        listener.admitted + listener.rejected.total() == total as u64
    })
    .await;
    let stats = server.limiter.stats();
    assert!(
        stats.rejected["client_connections"] >= 50 * 5,
        "{:?}",
        stats.rejected
    );
    assert_eq!(stats.rejected.total(), stats.rejected["client_connections"]);
    wait_until_drained(&server.limiter).await;
    eprintln!(
        "burst: {total} connections in {:?}: {} admitted, {} refused, {answered} churned \
         requests answered",
        started.elapsed(),
        listener_admitted(&stats),
        stats.rejected["client_connections"],
    );
    drains_then_serves_honest_clients(&server, 2).await;
}

/// The request body type of the HTTP/2 clients: empty, or one that never ends.
type H2Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body that sends a few bytes and then never another, nor its end.
fn never_ending_body() -> H2Body {
    let first = futures_util::stream::once(futures_util::future::ready(Ok::<_, Infallible>(
        Frame::data(Bytes::from_static(b"the first of many bytes")),
    )));
    StreamBody::new(first.chain(futures_util::stream::pending())).boxed_unsync()
}

/// How an HTTP/2 client vanishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vanish {
    /// Its process dies: the sockets close (FIN) with streams open.
    Close,
    /// Its sockets are reset (RST) with streams open.
    Reset,
    /// It cancels its open streams first (RST_STREAM), then dies.
    CancelThenClose,
    /// Its streams are uploads with bodies that never end; then its sockets are reset.
    UploadThenReset,
}

#[tokio::test]
async fn http2_clients_past_their_request_limit_that_vanish_are_released() {
    let server = server(config()).await;
    let clients = [
        (70, Vanish::Close),
        (71, Vanish::Reset),
        (72, Vanish::CancelThenClose),
        (73, Vanish::UploadThenReset),
    ];
    let (statuses, mut answered) = mpsc::unbounded_channel();
    let mut executors = Vec::new();
    let mut streams = Vec::new();
    // Held until the end: a connection whose every sender is dropped is closed politely.
    let mut senders = Vec::new();
    for (n, vanish) in clients {
        // Two connections of twelve streams each: 24 requests, 4 allowed in flight.
        for _ in 0..2 {
            let stream = connect_from(n, server.addr).await;
            if matches!(vanish, Vanish::Reset | Vanish::UploadThenReset) {
                stream.set_zero_linger().unwrap();
            }
            let (sender, executor) = killable_http2_client::<H2Body>(stream).await;
            for _ in 0..12 {
                let request = if vanish == Vanish::UploadThenReset {
                    http::Request::post("/upload")
                        .header(http::header::CONTENT_LENGTH, "1000000")
                        .body(never_ending_body())
                } else {
                    http::Request::get("/slow?ms=60000").body(Empty::new().boxed_unsync())
                };
                let request = request.unwrap();
                let mut sender = sender.clone();
                let statuses = statuses.clone();
                let stream = tokio::spawn(async move {
                    if let Ok(response) = sender.send_request(request).await {
                        let (status, _, body) = collect(response).await;
                        let _ = statuses.send((n, status, body));
                    }
                });
                streams.push((n, stream));
            }
            senders.push(sender);
            executors.push((n, executor));
        }
    }
    // Each client's first four requests stay in flight; the other twenty are refused at once.
    for _ in 0..4 * 20 {
        let (n, status, body) = bounded(answered.recv()).await.unwrap();
        assert_eq!(status, 429, "client {n}");
        assert_eq!(body, "too many requests");
    }
    wait_until("four requests of each client are in flight", || {
        server.limiter.stats().in_flight_requests == 4 * 4
    })
    .await;
    for (n, _) in clients {
        let client = server.limiter.client(client_ip(n)).unwrap();
        assert_eq!(
            (client.open_connections, client.in_flight_requests),
            (2, 4),
            "client {n}"
        );
    }
    assert_eq!(server.limiter.stats().rejected["client_requests"], 4 * 20);
    assert!(answered.try_recv().is_err(), "an admitted request finished");

    // Client 72 gives up on its streams: each reset releases its request, on a live connection.
    for (n, stream) in &streams {
        if *n == 72 {
            stream.abort();
        }
    }
    wait_until("the cancelled streams are released", || {
        server
            .limiter
            .client(client_ip(72))
            .is_some_and(|c| c.in_flight_requests == 0 && c.open_connections == 2)
    })
    .await;
    // Then every client vanishes.
    for (_, executor) in &executors {
        executor.kill();
    }
    drop(senders);
    // Every stream ends, with an error, once its connection is gone.
    for (n, stream) in streams {
        let ended = bounded(stream).await;
        assert!(
            ended.is_ok() || (n == 72 && ended.unwrap_err().is_cancelled()),
            "client {n}"
        );
    }
    drains_then_serves_honest_clients(&server, 70).await;
}
