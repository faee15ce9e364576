//! PROXY protocol at the listener: a trusted proxy's header names the client, over real
//! loopback sockets with 127.0.0.N peers.
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_connlimit::{
    listener::ListenerConfig, listener::ProxyProtocol, Config, ConnLimitListener, Limiter,
};

use support::*;

/// The proxy all these tests trust: 127.0.0.2.
const PROXY: u8 = 2;

fn limiter() -> Limiter {
    Limiter::new(Config {
        max_conns_per_client: 1,
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        listener: ListenerConfig {
            proxy_protocol: ProxyProtocol::Required,
            proxy_header_timeout: Duration::from_secs(2),
            ..ListenerConfig::default()
        },
        ..Config::default()
    })
}

/// An axum server behind the PROXY-protocol listener, answering `/` with the client address
/// axum's `ConnectInfo` sees.
async fn server(limiter: Limiter) -> SocketAddr {
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move { client.to_string() }),
    );
    serve_behind_listener(app, limiter).await
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 80\r\n").into_bytes()
}

fn v2(command: u8, client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// One v2 TLV: its type, its big-endian length and its value.
fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![kind];
    t.extend_from_slice(&(value.len() as u16).to_be_bytes());
    t.extend_from_slice(value);
    t
}

/// The v2 `header` with `tlvs` after its addresses, its declared length counting them.
fn with_tlvs(header: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = [header, tlvs].concat();
    let declared = (h.len() - 16) as u16;
    h[14..16].copy_from_slice(&declared.to_be_bytes());
    h
}

/// A header an AWS Network Load Balancer sent (from the tests of AWS's
/// elastic-load-balancing-tools): client 172.31.7.113:51442, then a CRC32c, a VPC endpoint id
/// and NOOP padding.
fn aws_nlb_header() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x54]);
    h.extend_from_slice(&[172, 31, 7, 113, 172, 31, 10, 31, 0xc8, 0xf2, 0x00, 0x50]);
    h.extend_from_slice(&tlv(0x03, &[0xe8, 0xd6, 0x89, 0x2d]));
    h.extend_from_slice(&tlv(0xea, b"\x01vpce-08d2bf15fac5001c9"));
    h.extend_from_slice(&tlv(0x04, &[0; 36]));
    h
}

/// Connects from 127.0.0.n and sends `header` followed by a GET.
async fn send_from(n: u8, server: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect_from(n, server).await;
    stream.write_all(&[header, GET].concat()).await.unwrap();
    stream
}

/// The body of the `200` HTTP/1.1 response the server sends on `stream`.
async fn body_of(stream: &mut TcpStream) -> String {
    let response = read_response(stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a whole response");
    body.to_owned()
}

#[tokio::test]
async fn v1_and_v2_headers_from_a_trusted_proxy_key_the_real_client() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;

    let mut a = send_from(PROXY, server, &v1("203.0.113.7", 5555)).await;
    assert_eq!(body_of(&mut a).await, "203.0.113.7:5555");
    let mut b = send_from(PROXY, server, &v2(0x1, [198, 51, 100, 9], 6666)).await;
    assert_eq!(body_of(&mut b).await, "198.51.100.9:6666");

    // Both are counted under their own address, none under the proxy's.
    let a_ip = "203.0.113.7".parse().unwrap();
    let b_ip = "198.51.100.9".parse().unwrap();
    assert_eq!(limiter.client(a_ip).unwrap().open_connections, 1);
    assert_eq!(limiter.client(b_ip).unwrap().open_connections, 1);
    assert!(limiter.client(client_ip(PROXY)).is_none());

    // The limit of 1 applies to each real client: a second connection for 203.0.113.7 through
    // the same proxy is refused, while the first keeps working.
    let mut again = send_from(PROXY, server, &v2(0x1, [203, 0, 113, 7], 7777)).await;
    assert!(was_refused(&mut again).await);
    assert_eq!(limiter.stats().rejected["client_connections"], 1);
    a.write_all(GET).await.unwrap();
    assert_eq!(body_of(&mut a).await, "203.0.113.7:5555");

    drop((a, b));
    wait_until("both clients are released", || {
        limiter.stats().open_connections == 0 && limiter.stats().tracked_clients == 0
    })
    .await;
}

#[tokio::test]
async fn a_local_header_counts_the_proxy_itself() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    let mut health = send_from(PROXY, server, &v2(0x0, [0; 4], 0)).await;
    assert!(body_of(&mut health).await.starts_with("127.0.0.2:"));
    assert_eq!(
        limiter.client(client_ip(PROXY)).unwrap().open_connections,
        1
    );
}

#[tokio::test]
async fn the_same_header_from_an_untrusted_peer_is_refused() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    let mut spoofer = send_from(3, server, &v1("203.0.113.7", 5555)).await;
    assert!(was_refused(&mut spoofer).await);
    let mut plain = send_from(4, server, b"").await;
    assert!(was_refused(&mut plain).await);

    let stats = limiter.stats();
    assert_eq!(stats.rejected["proxy_untrusted"], 2);
    assert_eq!(stats.admitted_connections, 0);
    assert_eq!(stats.tracked_clients, 0);
    // The trusted proxy still gets through.
    let mut ok = send_from(PROXY, server, &v1("203.0.113.7", 5555)).await;
    assert_eq!(body_of(&mut ok).await, "203.0.113.7:5555");
}

#[tokio::test]
async fn malformed_headers_from_the_trusted_proxy_close_the_connection() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    let bad: [&[u8]; 3] = [
        b"PROXY TCP4 nonsense\r\n",
        b"GET / HTTP/1.1\r\n", // no header at all
        b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\n",
    ];
    for header in bad {
        let mut stream = send_from(PROXY, server, header).await;
        assert!(was_refused(&mut stream).await, "{header:?}");
    }
    let stats = limiter.stats();
    assert_eq!(stats.rejected["proxy_header_invalid"], 3);
    assert_eq!(stats.admitted_connections, 0);
}

#[tokio::test]
async fn a_v2_header_whose_tlv_runs_past_its_length_is_refused() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    // The TLV claims its 11 bytes and the whole GET after them: a reader believing it would take
    // the request for the TLV's value.
    let mut overrun = tlv(0x02, b"example.com");
    overrun[1..3].copy_from_slice(&(11 + GET.len() as u16).to_be_bytes());
    let header = with_tlvs(&v2(0x1, [198, 51, 100, 9], 6666), &overrun);
    let mut stream = send_from(PROXY, server, &header).await;
    assert!(was_refused(&mut stream).await);

    let stats = limiter.stats();
    assert_eq!(stats.rejected["proxy_header_invalid"], 1);
    assert_eq!(stats.admitted_connections, 0);
    assert!(limiter.client("198.51.100.9".parse().unwrap()).is_none());
}

#[tokio::test]
async fn a_v2_header_with_tlvs_names_the_client() {
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    let tlvs = [tlv(0x02, b"example.com"), tlv(0xea, b"\x01vpce-0123456")].concat();
    let header = with_tlvs(&v2(0x1, [198, 51, 100, 9], 6666), &tlvs);
    let mut a = send_from(PROXY, server, &header).await;
    assert_eq!(body_of(&mut a).await, "198.51.100.9:6666");
    // AWS's own, whose CRC32c is checked.
    let mut b = send_from(PROXY, server, &aws_nlb_header()).await;
    assert_eq!(body_of(&mut b).await, "172.31.7.113:51442");

    let stats = limiter.stats();
    assert_eq!(stats.rejected["proxy_header_invalid"], 0);
    assert_eq!(stats.admitted_connections, 2);
}

#[tokio::test(start_paused = true)]
async fn a_header_that_never_comes_times_out_without_stalling_others() {
    let started = tokio::time::Instant::now();
    let limiter = limiter();
    let server = server(limiter.clone()).await;
    // Half a header, then silence.
    let mut stalled = connect_from(PROXY, server).await;
    stalled.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    // Another connection through the proxy is served meanwhile.
    let mut ok = send_from(PROXY, server, &v1("198.51.100.9", 1)).await;
    assert_eq!(body_of(&mut ok).await, "198.51.100.9:1");
    // The stalled one is closed at the 2-second header deadline.
    assert!(was_refused(&mut stalled).await);
    assert_eq!(started.elapsed().as_secs(), 2);
    assert_eq!(limiter.stats().rejected["proxy_header_timeout"], 1);
}

#[tokio::test]
async fn several_tasks_accepting_each_get_a_finished_header() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    // Shared as a server shares it between acceptor tasks: behind an async mutex.
    let listener = std::sync::Arc::new(tokio::sync::Mutex::new(ConnLimitListener::new(
        tcp,
        limiter(),
    )));
    let (done, mut accepted) = tokio::sync::mpsc::channel(2);
    // Two acceptors, each taking one connection and then keeping it.
    for _ in 0..2 {
        let listener = std::sync::Arc::clone(&listener);
        let done = done.clone();
        tokio::spawn(async move {
            let (io, client) = listener.lock().await.accept().await.unwrap();
            done.send(client).await.unwrap();
            std::future::pending::<()>().await;
            drop(io);
        });
    }
    let _a = send_from(PROXY, addr, &v1("203.0.113.7", 1)).await;
    let _b = send_from(PROXY, addr, &v1("203.0.113.8", 2)).await;
    let mut clients = vec![
        bounded(accepted.recv()).await.unwrap().to_string(),
        bounded(accepted.recv()).await.unwrap().to_string(),
    ];
    clients.sort();
    assert_eq!(clients, ["203.0.113.7:1", "203.0.113.8:2"]);
}

#[tokio::test]
async fn when_too_many_headers_are_pending_the_oldest_is_dropped() {
    // A header deadline far away, so only the cap closes anything here.
    let limiter = limiter();
    limiter
        .set_config(Config {
            listener: ListenerConfig {
                proxy_header_timeout: Duration::from_secs(600),
                ..limiter.config().listener
            },
            ..(*limiter.config()).clone()
        })
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = ConnLimitListener::new(tcp, limiter.clone()).max_pending_proxy_headers(2);
    tokio::spawn(async move {
        // Keeps every admitted connection open.
        let mut held = Vec::new();
        while let Ok((io, _)) = listener.accept().await {
            held.push(io);
        }
    });
    let admitted = |ip: &str| limiter.client(ip.parse().unwrap()).is_some();
    // Two silent connections fill the pending reads; a third connection, with a header, pushes
    // out the oldest silent one and is admitted.
    let mut oldest = connect_from(PROXY, addr).await;
    let mut second = connect_from(PROXY, addr).await;
    let _honest = send_from(PROXY, addr, &v1("203.0.113.7", 1)).await;
    assert!(was_refused(&mut oldest).await);
    wait_until("the honest client is admitted", || admitted("203.0.113.7")).await;
    // Another silent one fills the cap again; the next header pushes out `second`, the oldest.
    let mut third = connect_from(PROXY, addr).await;
    let _honest2 = send_from(PROXY, addr, &v1("203.0.113.8", 2)).await;
    assert!(was_refused(&mut second).await);
    wait_until("the second honest client is admitted", || {
        admitted("203.0.113.8")
    })
    .await;
    assert_eq!(limiter.stats().rejected["proxy_header_timeout"], 2);
    // `third` is still waiting for its header.
    third
        .write_all(&[v1("203.0.113.9", 3), GET.to_vec()].concat())
        .await
        .unwrap();
    wait_until("the third client is admitted", || admitted("203.0.113.9")).await;
}
