//! The one-command tour: `cargo run --example demo`.
//!
//! Starts an axum server on loopback behind `ConnLimitListener` (2 connections per client,
//! refusals answered with a canned HTTP 429), opens keep-alive connections from several
//! 127.0.0.x clients, prints who was admitted and who was refused, lowers and raises the limit
//! live, limits in-flight requests on one HTTP/2 connection with the request layer (sharing the
//! same limiter), turns on the gate (a connect rate and bans) to stop a flood, and checks that
//! everything is released at the end. Exits 0 when every step
//! behaved as described, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower_connlimit::{
    ban::BanPolicy, listener::RejectAction, rate::Strategy, Config, ConnLimitLayer,
    ConnLimitListener, Limiter, RateLimit,
};

type Sender = http1::SendRequest<Empty<Bytes>>;

fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn config(max_conns_per_client: usize) -> Config {
    Config {
        max_conns_per_client,
        max_requests_per_client: 2,
        ..Config::default()
    }
}

async fn connect_from(n: u8, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(client(n), 0))?;
    socket.connect(server).await
}

fn request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header("host", "demo")
        .body(Empty::new())
        .expect("static request")
}

/// Opens a connection from 127.0.0.n and sends `GET /`. Returns the open connection when the
/// server answered 200, or the refusal status.
async fn open(n: u8, server: SocketAddr) -> Result<Sender, String> {
    let stream = connect_from(n, server).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request("/"))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    match status.as_u16() {
        200 => Ok(sender),
        _ => Err(format!(
            "{status} {:?}",
            String::from_utf8_lossy(&body.to_bytes())
        )),
    }
}

struct Tour {
    server: SocketAddr,
    limiter: Limiter,
    ok: bool,
}

impl Tour {
    fn check(&mut self, what: &str, holds: bool) {
        println!("  {} {what}", if holds { "ok  " } else { "FAIL" });
        self.ok &= holds;
    }

    /// Each client in `clients` opens `attempts` connections; prints a table and returns the
    /// admitted connections, which stay open.
    async fn open_from(&mut self, clients: &[u8], attempts: usize) -> Vec<Sender> {
        println!(
            "  {:<12} {:>9} {:>9} {:>8}  first refusal",
            "client", "attempted", "admitted", "refused"
        );
        let mut open_connections = Vec::new();
        for &n in clients {
            let (mut admitted, mut refused, mut first_refusal) = (0, 0, String::new());
            for _ in 0..attempts {
                match open(n, self.server).await {
                    Ok(sender) => {
                        admitted += 1;
                        open_connections.push(sender);
                    }
                    Err(status) => {
                        refused += 1;
                        if first_refusal.is_empty() {
                            first_refusal = status;
                        }
                    }
                }
            }
            println!(
                "  {:<12} {attempts:>9} {admitted:>9} {refused:>8}  {first_refusal}",
                client(n).to_string()
            );
        }
        open_connections
    }

    fn print_stats(&self) {
        let s = self.limiter.stats();
        println!(
            "  stats: open {} | tracked clients {} | admitted {} | refused {} (per-client {}, global {}, requests {})",
            s.open_connections,
            s.tracked_clients,
            s.admitted_connections,
            s.rejected.total(),
            s.rejected["client_connections"],
            s.rejected["total_connections"],
            s.rejected["client_requests"],
        );
    }

    async fn wait_until(&self, mut cond: impl FnMut(&Limiter) -> bool) -> bool {
        for _ in 0..500 {
            if cond(&self.limiter) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let limiter = Limiter::new(config(2));
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow\n"
            }),
        )
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let server = tcp.local_addr().expect("local address");
    let listener = ConnLimitListener::new(tcp, limiter.clone())
        .reject_with(RejectAction::HttpResponse)
        .for_axum();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("server runs");
    });
    let mut tour = Tour {
        server,
        limiter,
        ok: true,
    };

    println!("tower-connlimit demo: axum on http://{server}, ConnLimitListener with max_conns_per_client = 2\n");
    println!("1. Four clients each open 3 keep-alive connections:");
    let mut held = tour.open_from(&[2, 3, 4, 5], 3).await;
    tour.print_stats();
    let s = tour.limiter.stats();
    tour.check(
        "each client got exactly 2; the third was refused with 429",
        s.open_connections == 8 && s.rejected["client_connections"] == 4,
    );

    println!("\n2. Lower the limit to 1, live. Open connections stay open; new ones are refused:");
    tour.limiter.set_config(config(1)).expect("valid config");
    let more = tour.open_from(&[2], 1).await;
    tour.check(
        "127.0.0.2 still holds 2 connections and its new one is refused",
        more.is_empty() && tour.limiter.open_connections(client(2)) == 2,
    );
    let newcomer = tour.open_from(&[6], 2).await;
    tour.check("a new client 127.0.0.6 gets 1 of 2", newcomer.len() == 1);
    held.extend(newcomer);

    println!("\n3. Raise the limit to 4, live:");
    tour.limiter.set_config(config(4)).expect("valid config");
    let more = tour.open_from(&[2], 3).await;
    tour.check(
        "127.0.0.2 gets 2 more (4 open), the next is refused",
        more.len() == 2 && tour.limiter.open_connections(client(2)) == 4,
    );
    held.extend(more);
    tour.print_stats();

    println!("\n4. Request layer, same limiter: max_requests_per_client = 2. 127.0.0.7 sends 3 concurrent /slow on one HTTP/2 connection:");
    let stream = connect_from(7, server).await.expect("connect");
    let (h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let mut h2 = h2.clone();
            tokio::spawn(async move {
                h2.send_request(request("/slow"))
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.ok().and_then(Result::ok).unwrap_or(0));
    }
    statuses.sort_unstable();
    println!("  statuses: {statuses:?}");
    tour.check(
        "two were served, one was refused with 429 while two were in flight",
        statuses == [200, 200, 429],
    );
    drop(h2);

    println!("\n5. The gate: a connect rate (1 per 200 ms) and bans (a third violation within 1 s bans for 1 s). 127.0.0.8 floods 6 connects:");
    tour.limiter
        .set_config(Config {
            connect_rate: Some(
                RateLimit::new(1, Duration::from_millis(200)).strategy(Strategy::Cooldown),
            ),
            ban: Some(BanPolicy::new(
                2,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )),
            ..config(4)
        })
        .expect("valid config");
    let flood = tour.open_from(&[8], 6).await;
    let s = tour.limiter.stats();
    println!(
        "  refused by the connect rate: {}, refused while banned: {}, bans: {}",
        s.rejected["connect_rate"], s.rejected["banned"], s.bans
    );
    tour.check(
        "1 admitted, 3 refused by the rate, then banned and refused at accept",
        flood.len() == 1
            && s.rejected["connect_rate"] == 3
            && s.rejected["banned"] == 2
            && s.bans == 1,
    );
    let others = tour.open_from(&[9], 1).await;
    tour.check("another client is unaffected", others.len() == 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = tour.open_from(&[8], 1).await;
    tour.check(
        "after the ban's 1 s, 127.0.0.8 is admitted again",
        back.len() == 1,
    );
    held.extend(flood.into_iter().chain(others).chain(back));
    tour.limiter.set_config(config(4)).expect("valid config");

    println!("\n6. Every client disconnects:");
    drop(held);
    let drained = tour
        .wait_until(|l| {
            // Clients that left are remembered while their rate or ban record matters.
            l.purge_expired();
            let s = l.stats();
            s.open_connections == 0 && s.tracked_clients == 0 && s.in_flight_requests == 0
        })
        .await;
    tour.print_stats();
    tour.check(
        "every permit was released and the client map is empty",
        drained,
    );

    println!();
    if tour.ok {
        println!("demo finished: every step behaved as described");
        ExitCode::SUCCESS
    } else {
        println!("demo finished: some steps did NOT behave as described");
        ExitCode::FAILURE
    }
}
