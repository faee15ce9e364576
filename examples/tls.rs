//! HTTPS with connection limits: TLS on top of a `ConnLimitListener`, served by `serve::Serve`.
//!
//! ```text
//! cargo run --example tls -- [--addr 127.0.0.1:3443] [--max-per-client 4] \
//!     [--cert tests/data/localhost.crt] [--key tests/data/localhost.key]
//! curl --cacert tests/data/localhost.crt https://localhost:3443/
//! ```
//!
//! `TlsListener` below is a listener (`listener::Accept`) of its own around any other: here a
//! `ConnLimitListener`, so a refused peer is closed before the server spends a handshake on it.
//! Handshakes run beside accepting, each bounded by a deadline and at most `MAX_HANDSHAKES` at
//! once, so a client that opens a connection and never says hello stalls nobody. Its
//! `permit()` passes the inner listener's on, so `Serve` still counts the connections its
//! header timeout cuts. `tests/tls.rs` runs it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_connlimit::listener::Accept;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, ConnPermit, Limiter};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes in progress at once; past that, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 256;

/// A finished handshake: the TLS connection and where it comes from, or `None` when the
/// handshake failed or took too long.
type Handshake<L> = Option<(TlsStream<<L as Accept>::Io>, <L as Accept>::Addr)>;

/// TLS on top of the connections of `L`.
pub struct TlsListener<L: Accept> {
    inner: L,
    acceptor: TlsAcceptor,
    timeout: Duration,
    handshakes: JoinSet<Handshake<L>>,
}

impl<L: Accept> TlsListener<L> {
    /// TLS with `config` on the connections `inner` accepts, each handshake within `timeout`.
    pub fn new(inner: L, config: Arc<ServerConfig>, timeout: Duration) -> Self {
        TlsListener {
            inner,
            acceptor: TlsAcceptor::from(config),
            timeout,
            handshakes: JoinSet::new(),
        }
    }
}

impl<L> Accept for TlsListener<L>
where
    L: Accept,
    L::Addr: 'static,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    /// The next connection whose handshake finished. A failed or late handshake only closes
    /// its own connection. Cancel safe: handshakes in progress stay in the listener.
    async fn accept(&mut self) -> io::Result<(Self::Io, Self::Addr)> {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return Ok(connection);
                    }
                }
                accepted = self.inner.accept(), if room => {
                    let (io, addr) = accepted?;
                    let (acceptor, timeout) = (self.acceptor.clone(), self.timeout);
                    self.handshakes.spawn(async move {
                        let tls = tokio::time::timeout(timeout, acceptor.accept(io)).await;
                        Some((tls.ok()?.ok()?, addr))
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }

    fn permit(io: &Self::Io) -> Option<&ConnPermit> {
        L::permit(io.get_ref().0)
    }
}

/// The server's certificate chain and key, from PEM files, with the crypto provider chosen
/// explicitly (several may be compiled in).
pub fn server_config(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the certificate: {err}"))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|err| format!("the key: {err}"))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| err.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// HTTPS with connection limits.
#[derive(Debug, clap::Parser)]
#[command(name = "tls")]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3443")]
    addr: SocketAddr,
    /// Connections one client may hold (0: unlimited).
    #[arg(long, default_value_t = 4, value_name = "N")]
    max_per_client: usize,
    /// The certificate chain, PEM.
    #[arg(long, default_value = "tests/data/localhost.crt")]
    cert: PathBuf,
    /// Its private key, PEM.
    #[arg(long, default_value = "tests/data/localhost.key")]
    key: PathBuf,
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    let config = server_config(&std::fs::read(&args.cert)?, &std::fs::read(&args.key)?)?;
    let limiter = Limiter::new(Config {
        max_conns_per_client: args.max_per_client,
        ..Config::default()
    });
    let app = Router::new()
        .route("/", get(|| async { "hello over TLS\n" }))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let tcp = tokio::net::TcpListener::bind(args.addr).await?;
    let listener = TlsListener::new(
        ConnLimitListener::new(tcp, limiter),
        config,
        HANDSHAKE_TIMEOUT,
    );
    tracing::info!(addr = %Accept::local_addr(&listener)?, "serving HTTPS");
    Serve::new(listener, app)
        .run_until(async { drop(tokio::signal::ctrl_c().await) })
        .await?;
    Ok(())
}
