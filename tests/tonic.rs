//! tonic: connections admitted from `serve_with_incoming`, calls admitted by the layer in
//! `Server::builder().layer(..)`, with a real tonic client over loopback.
#![cfg(feature = "tonic")]

mod support;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower_connlimit::{
    config::WhenFull, listener::ListenerConfig, listener::ProxyProtocol, listener::RejectAction,
    Cidr, Config, ConnLimitLayer, ConnLimitListener, Limiter,
};

use support::{bounded, client_ip, connect_from, wait_until, was_refused};

/// The health service asked for by a call, which tells the probe what to do.
const HOLD: &str = "hold"; // `check` waits until the test releases it
const FINITE: &str = "finite"; // `watch` sends two messages and ends

/// A gRPC service the test controls: it records each call's `remote_addr()`, holds `check`
/// calls for [`HOLD`] until released, and keeps `watch` streams open until cancelled.
#[derive(Clone)]
struct Probe {
    remote_addrs: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    gate: Arc<Semaphore>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            remote_addrs: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Probe {
    fn seen(&self) -> Vec<Option<SocketAddr>> {
        self.remote_addrs.lock().unwrap().clone()
    }

    fn record<T>(&self, request: &Request<T>) {
        self.remote_addrs
            .lock()
            .unwrap()
            .push(request.remote_addr());
    }
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for Probe {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.record(&request);
        if request.get_ref().service == HOLD {
            self.gate.acquire().await.unwrap().forget();
        }
        Ok(Response::new(serving()))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.record(&request);
        let stream: Self::WatchStream = if request.get_ref().service == FINITE {
            Box::pin(tokio_stream::iter([Ok(serving()), Ok(serving())]))
        } else {
            Box::pin(tokio_stream::iter([Ok(serving())]).chain(tokio_stream::pending()))
        };
        Ok(Response::new(stream))
    }
}

/// Where a test server admits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Levels {
    /// Connections at the incoming stream, refused with the given action, and calls at the
    /// layer, on one limiter.
    Both(RejectAction),
    /// Calls at the layer only, over tonic's plain `TcpIncoming`.
    CallsOnly,
}

/// Both levels, refusing connections by closing them (the default).
const BOTH: Levels = Levels::Both(RejectAction::Close);

struct TestServer {
    addr: SocketAddr,
    limiter: Limiter,
    probe: Probe,
}

impl TestServer {
    async fn start(config: Config, levels: Levels) -> Self {
        let limiter = Limiter::new(config);
        let probe = Probe::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let builder = tonic::transport::Server::builder();
        let router = builder
            .layer(ConnLimitLayer::with_limiter(limiter.clone()))
            .add_service(HealthServer::new(probe.clone()));
        let limiter_for_incoming = limiter.clone();
        tokio::spawn(async move {
            let served = match levels {
                Levels::Both(action) => {
                    let incoming = ConnLimitListener::from_stream(incoming, limiter_for_incoming)
                        .reject_with(action);
                    router.serve_with_incoming(incoming).await
                }
                Levels::CallsOnly => router.serve_with_incoming(incoming).await,
            };
            served.unwrap();
        });
        TestServer {
            addr,
            limiter,
            probe,
        }
    }

    /// A server with both levels that lets each client have `calls` calls in flight.
    async fn with_call_limit(calls: usize) -> Self {
        let config = Config {
            max_requests_per_client: calls,
            ..Config::default()
        };
        Self::start(config, BOTH).await
    }

    fn endpoint(&self, n: u8) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .local_address(Some(client_ip(n)))
    }

    /// A client from `127.0.0.n` on a connection of its own (a tonic `Channel` keeps one).
    async fn client(&self, n: u8) -> HealthClient<Channel> {
        HealthClient::new(bounded(self.endpoint(n).connect()).await.unwrap())
    }

    /// A call from `127.0.0.n` on a new connection that the server refuses: it fails as over a
    /// broken connection (tonic 0.14 says `CANCELLED` after a close and `UNAVAILABLE` after a
    /// reset; `UNKNOWN` is what it says for some other transport errors), never with a status
    /// from the server.
    async fn call_on_refused_connection(&self, n: u8) -> Status {
        // Lazy, so the refusal always surfaces as the call's status, never as a connect error.
        let mut client = HealthClient::new(self.endpoint(n).connect_lazy());
        let status = check(&mut client)
            .await
            .expect_err("a refused connection serves no call");
        assert!(
            matches!(
                status.code(),
                Code::Cancelled | Code::Unavailable | Code::Unknown
            ),
            "{status:?}"
        );
        status
    }

    fn in_flight(&self, n: u8) -> usize {
        in_flight(&self.limiter, n)
    }
}

/// The calls `limiter` counts in flight for `127.0.0.n`.
fn in_flight(limiter: &Limiter, n: u8) -> usize {
    limiter
        .client(client_ip(n))
        .map_or(0, |client| client.in_flight_requests)
}

fn asking(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

/// A unary call that answers at once.
async fn check(client: &mut HealthClient<Channel>) -> Result<(), Status> {
    bounded(client.check(asking(""))).await.map(drop)
}

/// A unary call the probe holds until the test releases it, running in a task of its own.
fn held_check(client: &HealthClient<Channel>) -> tokio::task::JoinHandle<Result<(), Status>> {
    let mut client = client.clone();
    tokio::spawn(async move { client.check(asking(HOLD)).await.map(drop) })
}

/// Asserts a refusal is the given gRPC status with a generic message: no digits, so no limit
/// or count.
fn assert_refused(result: Result<(), Status>, code: Code) {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        !status.message().chars().any(|c| c.is_ascii_digit()),
        "the message names no limit: {status:?}"
    );
}

#[tokio::test]
async fn connection_over_the_limit_is_closed_before_the_preface_while_others_work() {
    let server = TestServer::start(
        Config {
            max_conns_per_client: 2,
            ..Config::default()
        },
        BOTH,
    )
    .await;
    let mut first = server.client(2).await;
    let mut second = server.client(2).await;
    check(&mut first).await.unwrap();
    check(&mut second).await.unwrap();
    assert_eq!(server.limiter.open_connections(client_ip(2)), 2);

    // A third connection from the same client is closed without a byte: no HTTP/2 SETTINGS.
    let mut raw = connect_from(2, server.addr).await;
    assert!(was_refused(&mut raw).await, "closed before the preface");
    // And a tonic client on a third connection gets no call through.
    server.call_on_refused_connection(2).await;
    assert!(server.limiter.stats().rejected["client_connections"] >= 2);
    assert_eq!(
        server.probe.seen().len(),
        2,
        "no call from a refused connection"
    );

    // The admitted connections and another client keep working.
    check(&mut first).await.unwrap();
    check(&mut second).await.unwrap();
    let mut other = server.client(3).await;
    check(&mut other).await.unwrap();
    assert_eq!(server.limiter.open_connections(client_ip(2)), 2);
    assert_eq!(server.limiter.open_connections(client_ip(3)), 1);

    // Closing one admitted connection makes room for a new one.
    drop(first);
    wait_until("the first connection is released", || {
        server.limiter.open_connections(client_ip(2)) == 1
    })
    .await;
    check(&mut server.client(2).await).await.unwrap();
}

#[tokio::test]
async fn a_reset_connection_fails_its_call_too() {
    let config = Config {
        max_conns_per_client: 1,
        ..Config::default()
    };
    let server = TestServer::start(config, Levels::Both(RejectAction::Reset)).await;
    let mut admitted = server.client(2).await;
    check(&mut admitted).await.unwrap();
    server.call_on_refused_connection(2).await;
    assert_eq!(server.limiter.stats().rejected["client_connections"], 1);
    assert_eq!(
        server.probe.seen().len(),
        1,
        "no call from a refused connection"
    );
    check(&mut admitted).await.unwrap();
}

#[tokio::test]
async fn call_over_the_limit_in_flight_gets_resource_exhausted_over_one_connection() {
    let server = TestServer::with_call_limit(2).await;
    let mut client = server.client(2).await;
    let held = [held_check(&client), held_check(&client)];
    wait_until("two calls are in flight", || server.in_flight(2) == 2).await;

    // The third call, unary or streaming, on the same HTTP/2 connection is refused.
    assert_refused(check(&mut client).await, Code::ResourceExhausted);
    let watched = bounded(client.watch(asking(""))).await.map(drop);
    assert_refused(watched, Code::ResourceExhausted);
    assert_eq!(
        server.limiter.open_connections(client_ip(2)),
        1,
        "every call went over one connection"
    );
    assert_eq!(server.limiter.stats().rejected["client_requests"], 2);

    // Another client is not affected.
    check(&mut server.client(3).await).await.unwrap();

    // When the held calls finish, the client gets in again.
    server.probe.gate.add_permits(2);
    for call in held {
        bounded(call).await.unwrap().unwrap();
    }
    wait_until("the calls are released", || server.in_flight(2) == 0).await;
    check(&mut client).await.unwrap();
}

#[tokio::test]
async fn remote_addr_is_the_counted_client_behind_the_wrapper() {
    let server = TestServer::start(Config::default(), BOTH).await;
    check(&mut server.client(2).await).await.unwrap();
    check(&mut server.client(3).await).await.unwrap();
    let ips: Vec<Option<IpAddr>> = server
        .probe
        .seen()
        .iter()
        .map(|addr| addr.map(|a| a.ip()))
        .collect();
    assert_eq!(ips, [Some(client_ip(2)), Some(client_ip(3))]);
}

#[tokio::test]
async fn remote_addr_is_the_proxied_client_with_the_proxy_protocol() {
    let server = TestServer::start(
        Config {
            max_conns_per_client: 1,
            listener: ListenerConfig {
                proxy_protocol: ProxyProtocol::Required,
                ..ListenerConfig::default()
            },
            trusted_proxies: vec!["127.0.0.2/32".parse::<Cidr>().unwrap()],
            ..Config::default()
        },
        BOTH,
    )
    .await;
    let server_addr = server.addr;
    // A load balancer at 127.0.0.2 announcing its client before the client's HTTP/2.
    let through_proxy = Endpoint::from_static("http://proxied.invalid")
        .connect_with_connector(tower::service_fn(move |_| async move {
            let mut stream = connect_from(2, server_addr).await;
            stream
                .write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 50051\r\n")
                .await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }))
        .await
        .unwrap();
    check(&mut HealthClient::new(through_proxy)).await.unwrap();
    let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
    assert_eq!(server.probe.seen(), [Some(client)]);
    assert_eq!(server.limiter.open_connections(client.ip()), 1);
    assert_eq!(server.limiter.open_connections(client_ip(2)), 0);
}

#[tokio::test]
async fn unary_calls_release_their_permits_when_they_finish_or_are_cancelled() {
    // One call at a time: a leaked permit would lock the client out.
    let server = TestServer::with_call_limit(1).await;
    let mut client = server.client(2).await;

    let finishing = held_check(&client);
    wait_until("the call is in flight", || server.in_flight(2) == 1).await;
    server.probe.gate.add_permits(1);
    bounded(finishing).await.unwrap().unwrap();
    wait_until("the finished call is released", || server.in_flight(2) == 0).await;

    let cancelled = held_check(&client);
    wait_until("the call is in flight", || server.in_flight(2) == 1).await;
    cancelled.abort();
    wait_until("the cancelled call is released", || {
        server.in_flight(2) == 0
    })
    .await;

    check(&mut client).await.unwrap();
    let stats = server.limiter.stats();
    assert_eq!(stats.admitted_requests, 3);
    assert_eq!(stats.in_flight_requests, 0);
    assert_eq!(stats.rejected.total(), 0);
}

#[tokio::test]
async fn streaming_calls_release_their_permits_when_they_end_or_are_cancelled() {
    let server = TestServer::with_call_limit(1).await;
    let mut client = server.client(2).await;

    // A stream read to its end.
    let mut finite = bounded(client.watch(asking(FINITE)))
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    while let Some(message) = bounded(finite.message()).await.unwrap() {
        assert_eq!(message, serving());
        messages += 1;
        assert!(messages <= 2, "the stream ends");
    }
    assert_eq!(messages, 2);
    wait_until("the ended stream is released", || server.in_flight(2) == 0).await;
    // (A response stream keeps its HTTP/2 connection open while it exists, even ended.)
    drop(finite);

    // A stream dropped by the client while the server still has it open.
    let mut endless = bounded(client.watch(asking("")))
        .await
        .unwrap()
        .into_inner();
    bounded(endless.message()).await.unwrap().unwrap();
    assert_eq!(server.in_flight(2), 1);
    assert_refused(check(&mut client).await, Code::ResourceExhausted);
    drop(endless);
    wait_until("the cancelled stream is released", || {
        server.in_flight(2) == 0
    })
    .await;

    // A stream whose whole connection goes away.
    let mut endless = bounded(client.watch(asking("")))
        .await
        .unwrap()
        .into_inner();
    bounded(endless.message()).await.unwrap().unwrap();
    drop((endless, client));
    wait_until("the stream is released", || server.in_flight(2) == 0).await;
    wait_until("the connection is released", || {
        server.limiter.open_connections(client_ip(2)) == 0
    })
    .await;

    check(&mut server.client(2).await).await.unwrap();
    wait_until("nothing is tracked", || {
        server.limiter.stats().tracked_clients == 0
    })
    .await;
}

#[tokio::test]
async fn a_server_wide_refusal_is_unavailable() {
    // Room to track one client, and no room made for a newcomer.
    let server = TestServer::start(
        Config {
            max_tracked_clients: 1,
            when_full: WhenFull::RefuseNew,
            ..Config::default()
        },
        Levels::CallsOnly,
    )
    .await;
    let first = server.client(2).await;
    let held = held_check(&first);
    wait_until("the first client is tracked", || server.in_flight(2) == 1).await;

    assert_refused(check(&mut server.client(3).await).await, Code::Unavailable);
    assert_eq!(server.limiter.stats().rejected["tracked_clients_full"], 1);

    server.probe.gate.add_permits(1);
    bounded(held).await.unwrap().unwrap();
    wait_until("the first client is forgotten", || {
        server.limiter.stats().tracked_clients == 0
    })
    .await;
    check(&mut server.client(3).await).await.unwrap();
}

/// TLS: the listener refuses before any handshake, and the layer finds the client in the connect
/// info either way tonic serves TLS.
mod tls {
    use super::*;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

    const CERT: &str = include_str!("data/localhost.crt");
    const KEY: &str = include_str!("data/localhost.key");

    /// With `--all-features` rustls has two crypto providers compiled in (tonic's `tls-aws-lc`
    /// and `tls-ring`), and a process using it must then choose one, as a server would.
    fn choose_crypto_provider() {
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    }

    /// A client from `127.0.0.n` over TLS.
    async fn tls_client(addr: SocketAddr, n: u8) -> HealthClient<Channel> {
        choose_crypto_provider();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(CERT))
            .domain_name("localhost");
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .local_address(Some(client_ip(n)));
        let channel = bounded(endpoint.connect()).await.unwrap();
        HealthClient::new(channel)
    }

    /// With one call and one connection per client: the second call is refused under the
    /// right client, the second connection before its handshake, and the first call's end
    /// lets the client in again.
    async fn assert_counted_per_client(addr: SocketAddr, limiter: &Limiter, probe: &Probe) {
        let mut client = tls_client(addr, 2).await;
        let held = held_check(&client);
        wait_until("the call is counted under its client", || {
            in_flight(limiter, 2) == 1
        })
        .await;
        assert_refused(check(&mut client).await, Code::ResourceExhausted);
        assert_eq!(limiter.stats().rejected["no_client_address"], 0);

        // A second connection is refused before the handshake: not a byte comes back.
        let mut raw = connect_from(2, addr).await;
        raw.write_all(b"\x16\x03\x01").await.ok();
        assert!(was_refused(&mut raw).await);

        probe.gate.add_permits(1);
        bounded(held).await.unwrap().unwrap();
        wait_until("the call is released", || in_flight(limiter, 2) == 0).await;
        check(&mut client).await.unwrap();
        assert_eq!(probe.seen()[0].map(|a| a.ip()), Some(client_ip(2)));
    }

    fn one_each() -> Limiter {
        Limiter::new(Config {
            max_conns_per_client: 1,
            max_requests_per_client: 1,
            ..Config::default()
        })
    }

    /// tonic's own TLS (`tls_config`) runs the handshake on the connections the listener
    /// admitted, and gives each call both `TcpConnectInfo` and `TlsConnectInfo`. The accepted
    /// connections come from a hand-made stream, which is not `Unpin`.
    #[tokio::test]
    async fn calls_are_counted_per_client_under_tonics_tls() {
        choose_crypto_provider();
        let limiter = one_each();
        let probe = Probe::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = futures_util::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _peer)| stream);
            Some((accepted, listener))
        });
        let incoming = ConnLimitListener::from_stream(accepted, limiter.clone());
        let router = tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(CERT, KEY)))
            .unwrap()
            .layer(ConnLimitLayer::with_limiter(limiter.clone()))
            .add_service(HealthServer::new(probe.clone()));
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
        assert_counted_per_client(addr, &limiter, &probe).await;
    }

    /// TLS terminated in the incoming stream (tokio-rustls over the admitted connections):
    /// each call has only `TlsConnectInfo<TcpConnectInfo>`, which the layer reads with
    /// `tonic-tls`.
    #[cfg(any(feature = "tonic-tls", feature = "tonic-tls-ring"))]
    #[tokio::test]
    async fn calls_are_counted_per_client_with_tls_in_the_incoming_stream() {
        choose_crypto_provider();
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certs = CertificateDer::pem_slice_iter(CERT.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let mut config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let limiter = one_each();
        let probe = Probe::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = ConnLimitListener::from_stream(TcpIncoming::from(listener), limiter.clone())
            .then(move |admitted| {
                let acceptor = acceptor.clone();
                async move { acceptor.accept(admitted?).await }
            });
        let router = tonic::transport::Server::builder()
            .layer(ConnLimitLayer::with_limiter(limiter.clone()))
            .add_service(HealthServer::new(probe.clone()));
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
        assert_counted_per_client(addr, &limiter, &probe).await;
    }
}

/// What a gRPC client sees when its connection is refused, exactly as the README's table says:
/// `connect()` makes a channel (the TCP connection is accepted, then refused), and its first
/// call fails, like a `connect_lazy()` channel's, with a status that says the connection broke
/// (there is no HTTP/2 connection for the server to send one on). Refused with a reset, that is
/// `UNAVAILABLE`, which standard retry policies retry; closed, `CANCELLED` (or `UNKNOWN`,
/// depending on when the close reaches the client), which they do not.
#[tokio::test]
async fn a_refused_connection_as_connect_and_connect_lazy_see_it() {
    for (action, codes) in [
        (RejectAction::Reset, &[Code::Unavailable][..]),
        (RejectAction::Close, &[Code::Cancelled, Code::Unknown][..]),
    ] {
        let config = Config {
            max_conns_per_client: 1,
            ..Config::default()
        };
        let server = TestServer::start(config, Levels::Both(action)).await;
        let mut admitted = server.client(2).await;
        check(&mut admitted).await.unwrap();
        let channel = bounded(server.endpoint(2).connect())
            .await
            .expect("connect() makes a channel");
        let status = check(&mut HealthClient::new(channel)).await.unwrap_err();
        assert!(
            codes.contains(&status.code()),
            "{action:?}, connect(): {status:?}"
        );
        let status = server.call_on_refused_connection(2).await;
        assert!(
            codes.contains(&status.code()),
            "{action:?}, connect_lazy(): {status:?}"
        );
        check(&mut admitted).await.unwrap();
    }
}
