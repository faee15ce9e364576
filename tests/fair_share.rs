//! Fair share over real loopback sockets, served by `Serve`: one heavy client alone gets past its
//! static cap up to the ceiling; then twenty light clients each wanting three all get them, and
//! the heavy one is cut back to its fair share (40 of a budget of 100) — at the connection level
//! through reclaim of its idle keep-alive connections, at the request level by refusing its new
//! requests as its slow ones end — without one of its in-flight requests cut.
#![cfg(all(feature = "serve", feature = "axum"))]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use tokio::sync::Semaphore;
use tower_connlimit::config::FairShare;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, Limiter};

use support::*;

const HEAVY: u8 = 2;
/// The light clients: 127.0.0.10 to 127.0.0.29.
const LIGHTS: std::ops::Range<u8> = 10..30;
const LIGHT_WANTS: usize = 3;
/// How long a refused light client waits before it tries again: a client's backoff, not a
/// synchronisation (every wait on the server's state below is on observable state).
const BACKOFF: Duration = Duration::from_millis(20);
/// The most tries one client makes for one connection or request.
const TRIES: usize = 500;

fn fair(ceiling: usize, request_ceiling: usize) -> FairShare {
    FairShare {
        enabled: true,
        watermark: 0.8,
        ceiling,
        request_ceiling,
        reclaim: true,
    }
}

/// Requests to `/hold-heavy` wait for a permit of `heavy` each, those to `/hold-light` for
/// `light` to open: slow requests the test ends when it chooses.
struct Gates {
    heavy: Semaphore,
    light: Semaphore,
    /// Requests that reached `/hold-heavy`.
    heavy_arrived: AtomicUsize,
}

/// Serves the gated app through `Serve` on `limiter`, with the request layer when `requests`.
async fn serve(limiter: &Limiter, requests: bool) -> (SocketAddr, Arc<Gates>) {
    let gates = Arc::new(Gates {
        heavy: Semaphore::new(0),
        light: Semaphore::new(0),
        heavy_arrived: AtomicUsize::new(0),
    });
    let (heavy, light) = (Arc::clone(&gates), Arc::clone(&gates));
    let mut app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/hold-heavy",
            get(move || async move {
                heavy.heavy_arrived.fetch_add(1, Ordering::Relaxed);
                heavy.heavy.acquire().await.unwrap().forget();
                "done\n"
            }),
        )
        .route(
            "/hold-light",
            get(move || async move {
                let _open = light.light.acquire().await.unwrap();
                "done\n"
            }),
        );
    if requests {
        app = app.layer(ConnLimitLayer::with_limiter(limiter.clone()));
    }
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Serve::new(ConnLimitListener::new(tcp, limiter.clone()), app);
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    (addr, gates)
}

/// A GET on a fresh connection from `127.0.0.n`: the status, or `None` when the connection was
/// refused (closed by the listener before an answer).
async fn get_from(
    n: u8,
    server: SocketAddr,
    path: &str,
) -> (Option<http::StatusCode>, http1::SendRequest<Empty<Bytes>>) {
    let mut sender = http1_client(connect_from(n, server).await).await;
    let status = try_get(&mut sender, path).await;
    (status, sender)
}

/// A GET on `sender`'s connection: the status, or `None` if the connection is gone.
async fn try_get(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Option<http::StatusCode> {
    bounded(sender.ready()).await.ok()?;
    let response = bounded(sender.send_request(get_request(path))).await.ok()?;
    Some(collect(response).await.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_client_gives_back_idle_connections_to_light_ones() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 10,
        max_conns_total: 100,
        fair_share: fair(80, 0),
        ..Config::default()
    });
    let (server, gates) = serve(&limiter, false).await;
    let heavy_ip = client_ip(HEAVY);

    // Alone, the heavy client gets the ceiling, far past its static cap of 10.
    let mut heavy = Vec::new();
    let mut refused = 0;
    for _ in 0..90 {
        match get_from(HEAVY, server, "/").await {
            (Some(status), sender) => {
                assert_eq!(status, 200);
                heavy.push(sender);
            }
            (None, _) => refused += 1,
        }
    }
    assert_eq!((heavy.len(), refused), (80, 10), "the ceiling");
    // Ten of its connections are busy with a slow request each: those are never cut.
    let busy: Vec<_> = heavy
        .drain(..10)
        .map(|mut sender| tokio::spawn(async move { try_get(&mut sender, "/hold-heavy").await }))
        .collect();
    wait_until("the heavy client's ten slow requests are in", || {
        gates.heavy_arrived.load(Ordering::Relaxed) == 10
    })
    .await;

    // Twenty light clients arrive, each wanting three connections.
    let lights: Vec<_> = LIGHTS
        .map(|n| {
            tokio::spawn(async move {
                let mut held = Vec::new();
                for _ in 0..TRIES {
                    if held.len() == LIGHT_WANTS {
                        break;
                    }
                    match get_from(n, server, "/").await {
                        (Some(status), sender) if status == 200 => held.push(sender),
                        _ => tokio::time::sleep(BACKOFF).await,
                    }
                }
                held
            })
        })
        .collect();
    let mut light_connections = Vec::new();
    for light in lights {
        let held = bounded(light).await.unwrap();
        assert_eq!(
            held.len(),
            LIGHT_WANTS,
            "a light client got fewer than it wanted"
        );
        light_connections.extend(held);
    }
    let stats = limiter.stats();
    let held_by_heavy = limiter.open_connections(heavy_ip);
    assert!(
        held_by_heavy <= 40,
        "the heavy client holds {held_by_heavy}, over its share of 40"
    );
    let reclaimed = stats.closed.get("reclaimed_idle").unwrap_or(0);
    assert!(
        reclaimed >= 30,
        "only {reclaimed} idle connections were given back"
    );
    let fair = stats.fair_share.expect("fair share is on");
    eprintln!(
        "connections: the heavy client holds {held_by_heavy}, {reclaimed} given back, {} asked, \
         level {:?}",
        fair.reclaims_asked, fair.connections.level
    );
    assert_eq!(fair.connections.budget, 100);
    assert!(fair.reclaims_asked >= reclaimed, "{fair:?}");
    assert_eq!(fair.reclaimed, reclaimed);

    // The heavy client's slow requests were never cut: each ends with its answer.
    gates.heavy.add_permits(10);
    for request in busy {
        assert_eq!(bounded(request).await.unwrap(), Some(http::StatusCode::OK));
    }
    drop((heavy, light_connections));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_clients_slow_requests_make_room_for_light_ones() {
    let limiter = Limiter::new(Config {
        max_requests_per_client: 10,
        max_requests_total: 100,
        fair_share: fair(0, 80),
        ..Config::default()
    });
    let (server, gates) = serve(&limiter, true).await;
    let heavy_ip = client_ip(HEAVY);
    let in_flight = |limiter: &Limiter, ip| {
        (limiter.clients().iter())
            .find(|client| client.key.to_string() == ip)
            .map_or(0, |client| client.in_flight_requests)
    };

    // Alone, the heavy client gets 80 slow requests in flight, past its static cap of 10.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let heavy: Vec<_> = (0..90)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            tokio::spawn(async move {
                // The heavy client sends a slow request, and another as soon as one ends or is
                // refused, until told to stop: every one admitted must end with its answer.
                let mut sender = http1_client(connect_from(HEAVY, server).await).await;
                for _ in 0..TRIES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match try_get(&mut sender, "/hold-heavy").await {
                        Some(status) if status == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(status) => {
                            assert!(status == 429 || status == 503, "{status}");
                            tokio::time::sleep(BACKOFF).await;
                        }
                        None => panic!("a heavy request was cut"),
                    }
                }
            })
        })
        .collect();
    wait_until("the heavy client holds the ceiling", || {
        in_flight(&limiter, heavy_ip.to_string()) == 80
    })
    .await;

    // Twenty light clients arrive, each wanting three slow requests; the heavy client's end,
    // one every few milliseconds, and it asks again at once.
    let lights: Vec<_> = LIGHTS
        .flat_map(|n| (0..LIGHT_WANTS).map(move |_| n))
        .map(|n| {
            tokio::spawn(async move {
                let mut sender = http1_client(connect_from(n, server).await).await;
                for _ in 0..TRIES {
                    match try_get(&mut sender, "/hold-light").await {
                        Some(status) if status == 200 => return true,
                        Some(_) => tokio::time::sleep(BACKOFF).await,
                        None => return false,
                    }
                }
                false
            })
        })
        .collect();
    let light_in_flight = |limiter: &Limiter| {
        LIGHTS
            .map(|n| in_flight(limiter, client_ip(n).to_string()))
            .sum::<usize>()
    };
    let all_in = tokio::time::timeout(WAIT * 3, async {
        // Bounded by the timeout; one heavy request ends per turn.
        loop {
            if light_in_flight(&limiter) == LIGHTS.len() * LIGHT_WANTS {
                return;
            }
            gates.heavy.add_permits(1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        all_in.is_ok(),
        "only {} of the light clients' 60 requests got in",
        light_in_flight(&limiter)
    );
    let held_by_heavy = in_flight(&limiter, heavy_ip.to_string());
    assert!(
        held_by_heavy <= 40,
        "the heavy client has {held_by_heavy} in flight, over its share of 40"
    );
    let stats = limiter.stats();
    assert!(
        stats.rejected.get("fair_share").unwrap_or(0) > 0,
        "{:?}",
        stats.rejected
    );
    let fair = stats.fair_share.expect("fair share is on");
    eprintln!(
        "requests: the heavy client has {held_by_heavy} in flight, level {:?}, refusals {:?}",
        fair.requests.level, stats.rejected
    );
    assert_eq!((fair.requests.budget, fair.requests.ceiling), (100, 80));

    // Everything admitted ends with its answer.
    stop.store(true, Ordering::Relaxed);
    gates.heavy.add_permits(1000);
    gates.light.add_permits(1000);
    for request in heavy {
        bounded(request).await.unwrap();
    }
    for light in lights {
        assert!(bounded(light).await.unwrap());
    }
    assert!(answered.load(Ordering::Relaxed) >= 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_given_back_with_a_goaway() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 1,
        max_conns_total: 10,
        fair_share: fair(8, 0),
        ..Config::default()
    });
    let (server, gates) = serve(&limiter, false).await;
    // The heavy client holds the ceiling over HTTP/2, each connection answered once, and one
    // with a slow stream open: that one is never given back.
    let mut heavy = Vec::new();
    for _ in 0..8 {
        let mut sender = http2_client(connect_from(HEAVY, server).await).await;
        bounded(sender.ready()).await.unwrap();
        let response = bounded(sender.send_request(get_request("/")))
            .await
            .unwrap();
        assert_eq!(collect(response).await.0, 200);
        heavy.push(sender);
    }
    let mut busy_sender = heavy.pop().unwrap();
    let busy = tokio::spawn(async move {
        let response = bounded(busy_sender.send_request(get_request("/hold-heavy"))).await;
        collect(response.expect("the slow stream is answered"))
            .await
            .0
    });
    wait_until("the slow stream is in", || {
        gates.heavy_arrived.load(Ordering::Relaxed) == 1
    })
    .await;
    // Four light clients, each wanting the one connection it is guaranteed: two take the last
    // places, and the other two find the budget full, so the heavy client is asked to give
    // back idle connections.
    let mut lights = Vec::new();
    for n in LIGHTS.take(4) {
        let mut got = None;
        for _ in 0..TRIES {
            match get_from(n, server, "/").await {
                (Some(status), sender) if status == 200 => {
                    got = Some(sender);
                    break;
                }
                _ => tokio::time::sleep(BACKOFF).await,
            }
        }
        lights.push(got.expect("a light client got its guaranteed connection"));
    }
    let stats = limiter.stats();
    let given = stats.closed.get("reclaimed_goaway").unwrap_or(0);
    assert!(given >= 2, "{:?}", stats.closed);
    assert!(limiter.open_connections(client_ip(HEAVY)) <= 6);
    // The given-back connections were closed gracefully: their senders see the GOAWAY.
    wait_until("the heavy client sees its connections go", || {
        heavy.iter().filter(|sender| sender.is_closed()).count() as u64 >= given
    })
    .await;
    gates.heavy.add_permits(1);
    assert_eq!(
        bounded(busy).await.unwrap(),
        200,
        "the slow stream was not cut"
    );
}

/// At the limiter, without sockets: an exempt client is counted against the budget but never
/// refused; the addresses of one IPv6 /64 are one client with one share.
#[test]
fn exempt_clients_count_and_a_64_has_one_share() {
    let limiter = Limiter::new(Config {
        max_conns_per_client: 2,
        max_conns_total: 20,
        exempt: vec!["10.0.0.0/8".parse().unwrap()],
        fair_share: fair(10, 0),
        ..Config::default()
    });
    let exempt: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let mut held: Vec<_> = (0..15)
        .map(|_| limiter.try_acquire(exempt).unwrap())
        .collect();
    // Two addresses of one /64 share the ceiling's room: 5 places are left in the budget.
    for i in 0..5 {
        let ip: std::net::IpAddr = format!("2001:db8::{}", i % 2 + 1).parse().unwrap();
        held.push(limiter.try_acquire(ip).unwrap());
    }
    let refused = limiter
        .try_acquire("2001:db8::3".parse().unwrap())
        .unwrap_err();
    assert_eq!(
        refused.reason(),
        tower_connlimit::RejectReason::TotalConnections
    );
    assert_eq!(limiter.open_connections("2001:db8::9".parse().unwrap()), 5);
    // The budget is full, and the exempt client is still let in.
    held.push(limiter.try_acquire(exempt).expect("exempt"));
    assert_eq!(limiter.stats().open_connections, 21);
}

/// Fair share put in force on a live limiter applies from the next decision, and taken away,
/// the static caps are hard caps again.
#[test]
fn fair_share_is_changed_live() {
    let static_caps = Config {
        max_conns_per_client: 2,
        max_conns_total: 100,
        ..Config::default()
    };
    let limiter = Limiter::new(static_caps.clone());
    let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let mut held: Vec<_> = (0..2).map(|_| limiter.try_acquire(ip).unwrap()).collect();
    assert!(limiter.try_acquire(ip).is_err(), "the static cap");
    limiter
        .set_config(Config {
            fair_share: fair(50, 0),
            ..static_caps.clone()
        })
        .unwrap();
    held.extend((0..48).map(|_| limiter.try_acquire(ip).unwrap()));
    assert!(limiter.try_acquire(ip).is_err(), "the ceiling");
    assert!(limiter.stats().fair_share.is_some());
    limiter.set_config(static_caps).unwrap();
    held.truncate(2);
    assert!(limiter.try_acquire(ip).is_err(), "the static cap again");
    assert_eq!(limiter.stats().fair_share, None);
}
