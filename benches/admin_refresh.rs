//! What one refresh of the admin's live page costs the server, with 10,000 tracked clients.
//!
//! `cargo bench --bench admin_refresh`. A limiter holds a connection for each of 10,000 clients,
//! with two bans; the admin's router answers the four requests the page makes every second
//! (`/api/stats`, `/api/clients?top=10`, `/api/bans`, and `/api/history` since the last sample),
//! called in turn on one thread, bodies read to the end. The page's own weight (its bytes, and
//! those of each answer) is printed first.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::body::Body;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_connlimit::admin::Admin;
use tower_connlimit::{Config, Limiter};

const CLIENTS: u32 = 10_000;
const REFRESH: [&str; 4] = [
    "/api/stats",
    "/api/clients?top=10",
    "/api/bans",
    "/api/history?since=18446744073709551615",
];

async fn get(router: &axum::Router, path: &str) -> usize {
    let request = http::Request::get(path)
        .header("authorization", "Bearer bench")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

fn refresh(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = Limiter::new(Config {
        max_conns_total: 100_000,
        ..Config::default()
    });
    let held: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            limiter.try_acquire(ip).unwrap()
        })
        .collect();
    limiter.ban("192.0.2.1".parse().unwrap(), Duration::from_secs(3600));
    limiter.ban("192.0.2.2".parse().unwrap(), Duration::from_secs(3600));
    let router = runtime.block_on(async { Admin::new(&limiter).token("bench", "bench").router() });
    let router = router.unwrap();
    runtime.block_on(async {
        let page = get(&router, "/").await;
        let mut answers = 0;
        for path in REFRESH {
            answers += get(&router, path).await;
        }
        println!(
            "page: {page} bytes, once; each refresh: {} requests, {answers} bytes of answers \
             (with {CLIENTS} tracked clients)",
            REFRESH.len()
        );
    });
    c.bench_function("admin_refresh/10k_clients", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for path in REFRESH {
                    black_box(get(&router, path).await);
                }
            })
        })
    });
    for path in REFRESH {
        c.bench_function(&format!("admin_refresh/{path}"), |b| {
            b.iter(|| runtime.block_on(async { black_box(get(&router, path).await) }))
        });
    }
    drop(held);
}

criterion_group!(benches, refresh);
criterion_main!(benches);
