//! The admin API over real sockets: a public port served by `Serve` with the request layer, and
//! the admin router on a listener of its own, both on one limiter.
#![cfg(feature = "admin")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tower_connlimit::admin::Admin;
use tower_connlimit::serve::Serve;
use tower_connlimit::{Config, ConnLimitLayer, ConnLimitListener, Limiter};

use support::*;

const TOKEN: &str = "s3cret-admin-token";

struct Servers {
    public: SocketAddr,
    admin: SocketAddr,
    limiter: Limiter,
}

async fn servers() -> Servers {
    let limiter = Limiter::new(Config::default());
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(ConnLimitLayer::with_limiter(limiter.clone()));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = Serve::new(ConnLimitListener::new(tcp, limiter.clone()), app);
    let public_addr = public.local_addr().unwrap();
    tokio::spawn(public.run());
    let admin = Admin::new(&limiter).token("alice", TOKEN).router().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            tcp,
            admin.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    Servers {
        public: public_addr,
        admin: admin_addr,
        limiter,
    }
}

/// One request to the admin API from 127.0.0.1: the status and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = bounded(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "admin");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let (content_type, text) = body.unwrap_or(("application/json", ""));
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(Bytes::from(text.to_owned())))
        .unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    let status = response.status().as_u16();
    let body = bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

#[tokio::test]
async fn every_endpoint_wants_the_token() {
    let s = servers().await;
    let endpoints = [
        ("GET", "/api/stats", None),
        ("GET", "/api/clients?top=5", None),
        ("GET", "/api/clients/127.0.0.1", None),
        ("GET", "/api/bans", None),
        (
            "POST",
            "/api/bans",
            Some((
                "application/json",
                r#"{"client":"203.0.113.1","duration":"1m"}"#,
            )),
        ),
        (
            "DELETE",
            "/api/bans?client=203.0.113.1",
            Some(("application/json", "")),
        ),
        ("GET", "/api/config", None),
        ("PUT", "/api/config", Some(("application/json", "{}"))),
        ("GET", "/api/audit", None),
        ("GET", "/metrics", None),
    ];
    for (method, path, body) in endpoints {
        for token in [None, Some("wrong-token-of-same-len")] {
            let (status, _) = call(s.admin, method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
        }
        let (status, text) = call(s.admin, method, path, Some(TOKEN), body).await;
        assert!(
            [200, 201, 404].contains(&status),
            "{method} {path}: {status} {text}"
        );
    }
    // The page itself holds no data, and is served to anyone.
    let (status, page) = call(s.admin, "GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>tower-connlimit</title>"));
    // A change sent as a form (what a page on another origin could send) is refused.
    let form = Some((
        "application/x-www-form-urlencoded",
        "client=203.0.113.9&duration=1h",
    ));
    assert_eq!(
        call(s.admin, "POST", "/api/bans", Some(TOKEN), form)
            .await
            .0,
        415
    );
    assert!(s.limiter.bans().is_empty());
}

#[tokio::test]
async fn a_ban_through_the_api_refuses_the_client_on_the_public_port_and_an_unban_admits_it() {
    let s = servers().await;
    // Traffic: 127.0.0.9 holds three connections.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = http1_client(connect_from(9, s.public).await).await;
        assert_eq!(h1_get(&mut client, "/").await.0, 200);
        held.push(client);
    }
    let (_, top) = call(s.admin, "GET", "/api/clients?top=1", Some(TOKEN), None).await;
    let top = json(&top);
    assert_eq!(top["clients"][0]["client"], "127.0.0.9");
    assert_eq!(top["clients"][0]["open_connections"], 3);
    let (_, stats) = call(s.admin, "GET", "/api/stats", Some(TOKEN), None).await;
    assert_eq!(json(&stats)["open_connections"], 3);

    let body = r#"{"client":"127.0.0.5","duration":"10m","reason":"scraping"}"#;
    let (status, _) = call(
        s.admin,
        "POST",
        "/api/bans",
        Some(TOKEN),
        Some(("application/json", body)),
    )
    .await;
    assert_eq!(status, 201);
    // In force as soon as the API answers: the next connection is refused at accept.
    let answered = Instant::now();
    assert!(was_refused(&mut connect_from(5, s.public).await).await);
    assert!(
        answered.elapsed() < Duration::from_millis(100),
        "{:?}",
        answered.elapsed()
    );
    let (_, bans) = call(s.admin, "GET", "/api/bans", Some(TOKEN), None).await;
    let bans = json(&bans);
    assert_eq!(bans["clients"][0]["name"], "127.0.0.5");
    assert_eq!(bans["clients"][0]["reason"], "scraping");

    let (status, _) = call(
        s.admin,
        "DELETE",
        "/api/bans?client=127.0.0.5",
        Some(TOKEN),
        Some(("application/json", "")),
    )
    .await;
    assert_eq!(status, 200);
    let mut again = http1_client(connect_from(5, s.public).await).await;
    assert_eq!(h1_get(&mut again, "/").await.0, 200);

    // A network, too.
    let body = r#"{"network":"127.0.0.0/30","duration":"1h"}"#;
    assert_eq!(
        call(
            s.admin,
            "POST",
            "/api/bans",
            Some(TOKEN),
            Some(("application/json", body))
        )
        .await
        .0,
        201
    );
    assert!(was_refused(&mut connect_from(2, s.public).await).await);
    let mut outside = http1_client(connect_from(6, s.public).await).await;
    assert_eq!(h1_get(&mut outside, "/").await.0, 200);

    let (_, audit) = call(s.admin, "GET", "/api/audit", Some(TOKEN), None).await;
    let changes = json(&audit)["changes"].as_array().unwrap().clone();
    let actions: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c["who"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("alice", "ban"), ("alice", "unban"), ("alice", "ban")]
    );
    drop(held);
}

#[tokio::test]
async fn a_bad_config_is_refused_by_name_and_changes_nothing() {
    let s = servers().await;
    let (_, config) = call(s.admin, "GET", "/api/config", Some(TOKEN), None).await;
    let mut config = json(&config);
    assert_eq!(config["max_conns_per_client"], 100);

    config["ipv4_prefix"] = 40.into();
    let bad = config.to_string();
    let (status, answer) = call(
        s.admin,
        "PUT",
        "/api/config",
        Some(TOKEN),
        Some(("application/json", &bad)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(json(&answer)["field"], "ipv4_prefix");
    assert_eq!(s.limiter.config().ipv4_prefix, 32);

    // The config as GET gives it, edited, goes back in.
    config["ipv4_prefix"] = 32.into();
    config["max_conns_per_client"] = 7.into();
    let good = config.to_string();
    let (status, answer) = call(
        s.admin,
        "PUT",
        "/api/config",
        Some(TOKEN),
        Some(("application/json", &good)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(s.limiter.config().max_conns_per_client, 7);
    let (_, audit) = call(s.admin, "GET", "/api/audit", Some(TOKEN), None).await;
    assert_eq!(json(&audit)["changes"][0]["action"], "config");
}

#[test]
fn the_router_refuses_to_build_without_a_way_in() {
    let limiter = Limiter::new(Config::default());
    let err = Admin::new(&limiter).router().unwrap_err();
    assert_eq!(err.field(), "admin.token");
    assert!(Admin::new(&limiter)
        .loopback_only_without_token()
        .router()
        .is_ok());
    assert!(Admin::new(&limiter).token("bob", "").router().is_err());
}
