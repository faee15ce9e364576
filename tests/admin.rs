//! The admin API over real sockets: a public port served by `Serve` with the request layer, and
//! the admin router on a listener of its own, both on one limiter.
#![cfg(feature = "admin")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tower_connlimit::admin::Admin;
use tower_connlimit::keys::{RequestKey, Tier};
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

/// One request to the admin API written byte for byte, as curl writes it: `head` is the request
/// line and the headers after the token, so that the test alone decides which body headers go
/// (hyper's client adds its own). Returns the status and the whole response.
async fn raw(addr: SocketAddr, request_line: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{request_line} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n"
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    bounded(stream.write_all(request.as_bytes())).await.unwrap();
    let response = read_to_close(&mut stream).await.unwrap();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"));
    (status, response)
}

/// An HTTP/2 (prior knowledge) `DELETE` of `path` with the token and no content type: `data`
/// sent as one DATA frame of a body of unknown length (no `Content-Length`, which HTTP/2 has no
/// `Transfer-Encoding` to replace), or, for `None`, no body at all (the headers end the stream).
async fn h2_delete(addr: SocketAddr, path: &str, data: Option<&'static str>) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = bounded(hyper::client::conn::http2::handshake::<
        _,
        _,
        UnsyncBoxBody<Bytes, Infallible>,
    >(TokioExecutor::new(), TokioIo::new(stream)))
    .await
    .unwrap();
    tokio::spawn(conn);
    let body = match data {
        // Known to be empty, so the headers carry END_STREAM.
        None => Empty::new().boxed_unsync(),
        Some(data) => {
            let frame = Ok(Frame::data(Bytes::from_static(data.as_bytes())));
            StreamBody::new(futures_util::stream::iter([frame])).boxed_unsync()
        }
    };
    let request = http::Request::delete(format!("http://admin{path}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(body)
        .unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    response.status().as_u16()
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
    // The ban's reason is the limiter's, shown for the network and each client in it; with none
    // given, it says who banned.
    let (_, bans) = call(s.admin, "GET", "/api/bans", Some(TOKEN), None).await;
    let bans = json(&bans);
    assert_eq!(bans["networks"][0]["name"], "127.0.0.0/30");
    let by_api = "banned by alice through the admin API";
    assert_eq!(bans["networks"][0]["reason"], by_api);
    assert_eq!(bans["clients"][0]["name"], "127.0.0.2");
    assert_eq!(bans["clients"][0]["reason"], by_api);
    let (_, in_limiter) = &s.limiter.bans()[0];
    assert_eq!(in_limiter.reason.to_string(), by_api);

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
async fn a_delete_without_a_body_needs_no_content_type_but_every_change_with_a_body_does() {
    let s = servers().await;
    // 127.0.0.5 is the only client ever banned here.
    let banned = |limiter: &Limiter| !limiter.bans().is_empty();
    let ban = || s.limiter.ban(client_ip(5), Duration::from_secs(600));

    // As `curl -X DELETE` sends it: no body, no body headers, no content type.
    ban();
    let (status, answer) = raw(s.admin, "DELETE /api/bans?client=127.0.0.5", &[], "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""was_banned":true"#), "{answer}");
    assert!(!banned(&s.limiter));
    let mut again = http1_client(connect_from(5, s.public).await).await;
    assert_eq!(h1_get(&mut again, "/").await.0, 200);
    // `Content-Length: 0` says there is no body, too; and a network's ban is lifted the same way.
    ban();
    let empty = ["Content-Length: 0"];
    let (status, answer) = raw(s.admin, "DELETE /api/bans?client=127.0.0.5", &empty, "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(!banned(&s.limiter));
    s.limiter
        .ban_network("127.0.0.0/30".parse().unwrap(), Duration::from_secs(600));
    let (status, answer) = raw(s.admin, "DELETE /api/bans?network=127.0.0.0/30", &[], "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(s.limiter.banned_networks().is_empty());
    // Over HTTP/2, a DELETE whose headers end the stream has no body either.
    ban();
    assert_eq!(
        h2_delete(s.admin, "/api/bans?client=127.0.0.5", None).await,
        200
    );
    assert!(!banned(&s.limiter));

    // A POST is a change with a body: without the content type, 415, and nothing is banned.
    let body = r#"{"client":"127.0.0.7","duration":"1h"}"#;
    let length = format!("Content-Length: {}", body.len());
    let (status, answer) = raw(s.admin, "POST /api/bans", &[&length], body).await;
    assert_eq!(status, 415, "{answer}");
    let form = [length.as_str(), "Content-Type: text/plain"];
    assert_eq!(raw(s.admin, "POST /api/bans", &form, body).await.0, 415);
    assert!(s.limiter.bans().is_empty());

    // A DELETE that carries a body must be JSON like any change with one: a wrong content type,
    // none with a chunked body, and none with a body of unknown length over HTTP/2 are all 415,
    // and the ban stays.
    ban();
    let wrong = ["Content-Length: 2", "Content-Type: text/plain"];
    let (status, answer) = raw(s.admin, "DELETE /api/bans?client=127.0.0.5", &wrong, "{}").await;
    assert_eq!(status, 415, "{answer}");
    let chunked = ["Transfer-Encoding: chunked"];
    let chunks = "2\r\n{}\r\n0\r\n\r\n";
    let (status, answer) = raw(
        s.admin,
        "DELETE /api/bans?client=127.0.0.5",
        &chunked,
        chunks,
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    let path = "/api/bans?client=127.0.0.5";
    assert_eq!(h2_delete(s.admin, path, Some("{}")).await, 415);
    assert!(banned(&s.limiter));
    assert!(was_refused(&mut connect_from(5, s.public).await).await);
    // With the content type, the same DELETE lifts the ban.
    let json_body = ["Content-Length: 2", "Content-Type: application/json"];
    let (status, answer) = raw(
        s.admin,
        "DELETE /api/bans?client=127.0.0.5",
        &json_body,
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(!banned(&s.limiter));

    // The unbans are audited like any change: four bodiless ones and the JSON one.
    let (_, audit) = call(s.admin, "GET", "/api/audit", Some(TOKEN), None).await;
    let changes = json(&audit)["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert!(
        changes.iter().all(|c| c["action"] == "unban"),
        "{changes:?}"
    );
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

#[tokio::test]
async fn a_keys_tier_and_ban_are_set_through_the_api_and_audited() {
    let s = servers().await;
    let key = RequestKey::new("sk_live_admin_test").client_key();
    let path = format!("/api/keys/{key}/tier");
    let pro = Some(("application/json", r#"{"tier": "pro"}"#));
    // No such tier yet: refused by field, nothing changed.
    let (status, answer) = call(s.admin, "PUT", &path, Some(TOKEN), pro).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(json(&answer)["field"], "keys.assigned[0].tier");
    let one_at_a_time = Tier::new("pro").max_requests(1);
    let mut config = (*s.limiter.config()).clone();
    config.keys.tiers = vec![Tier::new("free"), one_at_a_time];
    s.limiter.set_config(config).unwrap();
    let ip = client_ip(40);
    let held: Vec<_> = (0..3)
        .map(|_| {
            s.limiter
                .try_acquire_request_as(ip, &RequestKey::new("sk_live_admin_test"), "GET", "/")
        })
        .collect();
    assert!(held.iter().all(Result::is_ok), "no tier: no limit");
    drop(held);
    let (status, answer) = call(s.admin, "PUT", &path, Some(TOKEN), pro).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json(&answer)["tier"], "pro");
    // The key's next requests are held to the tier: one in flight.
    let request = || {
        s.limiter
            .try_acquire_request_as(ip, &RequestKey::new("sk_live_admin_test"), "GET", "/")
    };
    let first = request().unwrap();
    assert!(request().is_err());
    drop(first);
    let (status, _) = call(
        s.admin,
        "PUT",
        "/api/keys/203.0.113.7/tier",
        Some(TOKEN),
        pro,
    )
    .await;
    assert_eq!(status, 400, "an address is no key");
    // A key's ban, by the name stats give it.
    let body = format!(r#"{{"client": "{key}", "duration": "10m"}}"#);
    let (status, answer) = call(
        s.admin,
        "POST",
        "/api/bans",
        Some(TOKEN),
        Some(("application/json", &body)),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert!(s.limiter.bans().iter().any(|(banned, _)| *banned == key));
    assert!(request().is_err());
    let (_, audit) = call(s.admin, "GET", "/api/audit", Some(TOKEN), None).await;
    let actions: Vec<_> = json(&audit)["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.contains(&"key_tier".to_owned()) && actions.contains(&"ban".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn the_page_reads_who_each_reason_refused_and_the_last_minutes() {
    let s = servers().await;
    let mut config = (*s.limiter.config()).clone();
    config.max_conns_per_client = 1;
    s.limiter.set_config(config).unwrap();
    let heavy = client_ip(41);
    let _held = s.limiter.try_acquire(heavy).unwrap();
    for _ in 0..8 {
        assert!(s.limiter.try_acquire(heavy).is_err());
    }
    let (status, answer) = call(
        s.admin,
        "GET",
        "/api/refused?reason=client_connections&top=5",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let clients = json(&answer)["clients"].clone();
    assert_eq!(clients[0]["client"], heavy.to_string(), "{answer}");
    // One refusal in four is sampled, weighing four: eight refusals are about eight.
    assert_eq!(clients[0]["refusals"], 8, "{answer}");
    let (status, _) = call(s.admin, "GET", "/api/refused", Some(TOKEN), None).await;
    assert_eq!(status, 400, "a reason is needed");
    // The admin samples the limiter every second: a sample after the refusals is there within
    // a few (polled, at most 100 times 50 ms).
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, answer) = call(s.admin, "GET", "/api/history", Some(TOKEN), None).await;
        last = json(&answer)["samples"]
            .as_array()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default();
        if last["open_connections"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last["open_connections"], 1, "{last}");
    assert_eq!(last["rejected"]["client_connections"], 8, "{last}");
    let since = last["t"].as_u64().unwrap();
    let path = format!("/api/history?since={since}");
    let (_, answer) = call(s.admin, "GET", &path, Some(TOKEN), None).await;
    let newer = json(&answer)["samples"].as_array().unwrap().len();
    assert!(newer <= 1, "only what came after: {answer}");
}

// Two workers, so that the admin's handlers really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_put_at_once_for_many_keys_are_all_kept() {
    let s = servers().await;
    let mut config = (*s.limiter.config()).clone();
    config.keys.tiers = vec![Tier::new("pro")];
    s.limiter.set_config(config).unwrap();
    let keys: Vec<_> = (0..16)
        .map(|n| RequestKey::new(format!("sk_live_at_once_{n}")).client_key())
        .collect();
    let puts = keys.iter().map(|key| {
        let path = format!("/api/keys/{key}/tier");
        async move {
            let body = Some(("application/json", r#"{"tier": "pro"}"#));
            call(s.admin, "PUT", &path, Some(TOKEN), body).await.0
        }
    });
    let statuses = futures_util::future::join_all(puts).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let assigned = s.limiter.config().keys.assigned.clone();
    for key in &keys {
        assert!(
            assigned.iter().any(|kept| kept.key == *key),
            "{key} was lost: {} of 16 kept",
            assigned.len()
        );
    }
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
