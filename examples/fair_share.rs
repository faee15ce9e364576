//! Static caps against fair share, over real loopback sockets: one heavy client alone, then
//! twenty light ones arriving, each wanting three connections, against a budget of 100.
//!
//! ```text
//! cargo run --example fair_share [-- --svg fair_share.svg]
//! ```
//!
//! Each run serves a small app through `serve::Serve` behind a `ConnLimitListener`. The heavy
//! client (127.0.0.2) opens keep-alive connections as fast as it is let, and keeps asking for
//! more; two seconds in, the light clients (127.0.0.10 to .29) arrive. Every 100 ms the example
//! notes what each side holds. First with static caps (`max_conns_per_client = 80`, so that the
//! heavy client may use the server): it keeps 80, and the light clients share the 20 left. Then
//! with fair share (`max_conns_per_client = 10` guaranteed, `ceiling = 80`): the heavy client
//! gets 80 alone, and gives idle connections back until the light clients hold their 60. It
//! prints the figures, and with `--svg` draws both runs side by side (the picture in the
//! guide's fair share chapter).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{routing::get, Router};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tower_connlimit::config::FairShare;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitListener, Limiter};

const HEAVY: u8 = 2;
const LIGHTS: std::ops::Range<u8> = 10..30;
const LIGHT_WANTS: usize = 3;
const BUDGET: usize = 100;
/// When the light clients arrive, and when the run ends.
const LIGHTS_ARRIVE: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(6);
const SAMPLE: Duration = Duration::from_millis(100);
/// How long a refused client waits before it asks again.
const BACKOFF: Duration = Duration::from_millis(50);

/// One sample: seconds into the run, what the heavy client holds, what the light ones hold
/// together, and the fair level, if any.
type Sample = (f64, usize, usize, Option<usize>);

#[tokio::main]
async fn main() {
    let svg = std::env::args()
        .skip_while(|arg| arg != "--svg")
        .nth(1)
        .map(std::path::PathBuf::from);
    let static_caps = Config {
        max_conns_per_client: 80,
        max_conns_total: BUDGET,
        ..Config::default()
    };
    let fair_share = Config {
        max_conns_per_client: 10,
        max_conns_total: BUDGET,
        fair_share: FairShare {
            enabled: true,
            watermark: 0.8,
            ceiling: 80,
            ..FairShare::default()
        },
        ..Config::default()
    };
    let mut runs = Vec::new();
    for (name, config) in [("static caps", static_caps), ("fair share", fair_share)] {
        let samples = run(config).await;
        let &(_, heavy, light, level) = samples.last().expect("a sample");
        let most = samples.iter().map(|s| s.1).max().unwrap_or(0);
        println!(
            "{name:>11}: the heavy client held {most} alone and {heavy} at the end; the light \
             clients hold {light} of the {} they want; fair level {level:?}",
            LIGHTS.len() * LIGHT_WANTS
        );
        runs.push((name, samples));
    }
    if let Some(path) = svg {
        std::fs::write(&path, chart(&runs)).expect("write the chart");
        println!("drew {}", path.display());
    }
}

/// One run of the scenario on `config`: the samples.
async fn run(config: Config) -> Vec<Sample> {
    let limiter = Limiter::new(config);
    let app = Router::new().route("/", get(|| async { "hello\n" }));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Serve::new(ConnLimitListener::new(tcp, limiter.clone()), app);
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(server.run());
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = vec![tokio::spawn(client(HEAVY, addr, usize::MAX, done.clone()))];
    let mut samples = Vec::new();
    let mut lights_started = false;
    while started.elapsed() < RUN {
        if !lights_started && started.elapsed() >= LIGHTS_ARRIVE {
            lights_started = true;
            for n in LIGHTS {
                clients.push(tokio::spawn(client(n, addr, LIGHT_WANTS, done.clone())));
            }
        }
        let light = LIGHTS.map(|n| limiter.open_connections(ip(n))).sum();
        let level = limiter
            .stats()
            .fair_share
            .and_then(|fair| fair.connections.level);
        let held = limiter.open_connections(ip(HEAVY));
        samples.push((started.elapsed().as_secs_f64(), held, light, level));
        tokio::time::sleep(SAMPLE).await;
    }
    done.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    serving.abort();
    samples
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A client from `127.0.0.n` that keeps up to `wants` keep-alive connections open (each one
/// answered once), asking again after a refusal or a connection given back, until `done`.
async fn client(n: u8, server: SocketAddr, wants: usize, done: Arc<AtomicBool>) {
    let mut held: Vec<http1::SendRequest<Empty<Bytes>>> = Vec::new();
    while !done.load(Ordering::Relaxed) {
        held.retain(|sender| !sender.is_closed());
        if held.len() >= wants {
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        match connect(n, server).await {
            Some(sender) => held.push(sender),
            None => tokio::time::sleep(BACKOFF).await,
        }
    }
}

/// A keep-alive connection from `127.0.0.n` that was answered, or `None` if it was refused.
async fn connect(n: u8, server: SocketAddr) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let attempt = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(ip(n), 0)).ok()?;
        let stream = socket.connect(server).await.ok()?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let request = http::Request::get("/")
            .header(http::header::HOST, "localhost")
            .body(Empty::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        response.status().is_success().then_some(sender)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Both runs side by side as an SVG chart: connections held over time by the heavy client and
/// by the light ones together, against the budget, with the fair level where there is one.
fn chart(runs: &[(&str, Vec<Sample>)]) -> String {
    const W: f64 = 340.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 40.0;
    const TOP: f64 = 30.0;
    let width = LEFT + runs.len() as f64 * (W + 50.0);
    let height = TOP + H + 70.0;
    let seconds = RUN.as_secs_f64();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="11" role="img" aria-label="Connections held by one heavy client and twenty light ones, static caps against fair share">"#
    );
    svg.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    for (i, (name, samples)) in runs.iter().enumerate() {
        let x0 = LEFT + i as f64 * (W + 50.0);
        let x = |t: f64| x0 + t / seconds * W;
        let y = |v: f64| TOP + H - v / BUDGET as f64 * H;
        svg.push_str(&format!(
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{name}</text>"#,
            x0,
            TOP - 12.0
        ));
        // Axes, ticks and grid.
        for v in (0..=BUDGET).step_by(20) {
            let yv = y(v as f64);
            svg.push_str(&format!(
                r##"<line x1="{x0}" x2="{}" y1="{yv}" y2="{yv}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{v}</text>"##,
                x0 + W,
                x0 - 4.0,
                yv + 4.0
            ));
        }
        for t in 0..=RUN.as_secs() {
            let xt = x(t as f64);
            svg.push_str(&format!(
                r#"<text x="{xt}" y="{}" text-anchor="middle">{t} s</text>"#,
                TOP + H + 14.0
            ));
        }
        svg.push_str(&format!(
            r##"<line x1="{x0}" x2="{x0}" y1="{TOP}" y2="{}" stroke="#333"/><line x1="{x0}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
            TOP + H,
            x0 + W,
            TOP + H,
            TOP + H
        ));
        let budget = y(BUDGET as f64);
        svg.push_str(&format!(
            r##"<line x1="{x0}" x2="{}" y1="{budget}" y2="{budget}" stroke="#555" stroke-dasharray="4,3"/>"##,
            x0 + W
        ));
        let line = |values: Vec<(f64, f64)>, color: &str, dash: &str| {
            let points: Vec<String> = values
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            format!(
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                points.join(" ")
            )
        };
        let heavy = samples.iter().map(|s| (s.0, s.1 as f64)).collect();
        let light = samples.iter().map(|s| (s.0, s.2 as f64)).collect();
        let level: Vec<_> = (samples.iter())
            .filter_map(|s| Some((s.0, s.3?.min(BUDGET) as f64)))
            .collect();
        svg.push_str(&line(heavy, "#2b6cb0", "none"));
        svg.push_str(&line(light, "#2f855a", "none"));
        if !level.is_empty() {
            svg.push_str(&line(level, "#dd6b20", "2,2"));
        }
    }
    // The legend, below the charts.
    let legend_y = TOP + H + 40.0;
    for (i, (label, color)) in [
        ("the heavy client (127.0.0.2)", "#2b6cb0"),
        ("20 light clients together", "#2f855a"),
        ("the fair level", "#dd6b20"),
        ("the budget (max_conns_total)", "#555"),
    ]
    .iter()
    .enumerate()
    {
        let lx = LEFT + i as f64 * 180.0;
        svg.push_str(&format!(
            r#"<rect x="{lx}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
            legend_y - 4.0,
            lx + 18.0,
            legend_y + 1.0
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{LEFT}" y="{}">connections held, sampled every 100 ms; the light clients arrive at 2 s, each wanting 3</text>"#,
        legend_y + 20.0
    ));
    svg.push_str("</svg>\n");
    svg
}
