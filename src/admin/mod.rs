//! [`Admin`]: an operator's API and live page for one [`Limiter`] (feature `admin`), to mount on
//! a listener of its own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_connlimit::admin::Admin;
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::new(Config::default());
//! let admin = Admin::new(&limiter).token("alice", std::env::var("ADMIN_TOKEN")?).router()?;
//! // A port operators reach and nobody else: never the public one.
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! axum::serve(tcp, admin.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | method and path | answers |
//! |---|---|
//! | `GET /` | the live page: one static HTML file with inline script, no data in it |
//! | `GET /api/stats` | [`Limiter::stats`] as JSON |
//! | `GET /api/clients?top=N` | the `N` (default 20, at most 1,000) clients holding the most |
//! | `GET /api/clients/{ip}` | one client's record (404 when none) |
//! | `GET /api/refused?reason=NAME&top=N` | the clients a reason refused most lately, with about how many refusals each |
//! | `GET /api/history?since=MS` | the last five minutes, one sample a second, after `since` (ms since the Unix epoch) |
//! | `GET /api/bans` | the bans in force: clients and networks, with time left and reason |
//! | `POST /api/bans` | `{"client": "203.0.113.7"}` or `{"network": "203.0.113.0/24"}`, with `"duration": "10m"` and a `"reason"`, as `application/json` |
//! | `DELETE /api/bans?client=…` or `?network=…` | lifts a ban; sent without a body, it needs no content type |
//! | `GET /api/config` | the config in force, in the JSON form config files use |
//! | `PUT /api/config` | a new config (that JSON, as `application/json`): validated first; a bad one is refused with 400, the field, the reason and the line, and the running one stays |
//! | `GET /api/audit` | the recorded changes: who (the token's name), what, when |
//! | `GET /metrics` | the stats as Prometheus text |
//!
//! # Security
//!
//! - **Every endpoint but the page needs a bearer token** (`Authorization: Bearer …`), compared
//!   in constant time; each token has a name, which the audit list and the log record.
//!   [`Admin::router`] refuses to build without one, unless told that the router is reachable
//!   from loopback only ([`Admin::loopback_only_without_token`], which then refuses any other
//!   peer), or that a layer of yours authenticates ([`Admin::authenticated_by_your_layer`],
//!   which then requires the [`AdminUser`] your layer inserts).
//! - **No browser on another origin can change anything**: there are no CORS headers, so no
//!   preflight is ever granted, and no `GET` changes anything. A `POST` or a `PUT` must be sent
//!   as `application/json` (else 415), which a cross-origin form cannot send and a cross-origin
//!   script cannot send without a preflight. A `DELETE` cannot be sent across origins at all
//!   without a preflight (forms send only `GET` and `POST`, and `DELETE` is not a method a
//!   script may send without one), so a `DELETE` without a body needs no content type, and
//!   `curl -X DELETE` works as it is; a `DELETE` that carries a body (a `Content-Length` other
//!   than 0, a `Transfer-Encoding`, or over HTTP/2 a stream its headers did not end) must be
//!   `application/json` too, like every change with a body. This matters most where no token is sent by hand: a router that is
//!   [loopback-only](Admin::loopback_only_without_token) or behind a layer of yours that
//!   authenticates by cookie.
//! - **Every change is audited**: logged at `info` with who, what and when, and kept in a list of
//!   the last 1,000 ([`Admin::audit_capacity`]).
//! - Serve it on a listener of its own, bound to an address only operators reach: it shows
//!   clients' addresses and the limits.
//!
//! With a fleet joined (feature `redis`), a ban or unban made here, of a client or a network,
//! reaches every node with its reason.

mod audit;
mod history;
mod view;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use self::audit::Audit;
use crate::ban::{Ban, BanReason};
use crate::cidr::Cidr;
use crate::error::ConfigError;
use crate::key::ClientKey;
use crate::keys::KeyTier;
use crate::layer::ClientAddr;
use crate::limiter::Limiter;
use crate::Config;

/// Who made an admin request: the name of the token it carried, `loopback` for an
/// unauthenticated loopback router, or what your own authentication layer inserts (with
/// [`Admin::authenticated_by_your_layer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUser(pub String);

/// How requests are authenticated.
#[derive(Clone, Debug)]
enum Auth {
    Tokens(Vec<(String, String)>),
    LoopbackOnly,
    YourLayer,
}

/// Builds the admin router: see the [module docs](self).
#[derive(Debug)]
pub struct Admin {
    limiter: Limiter,
    tokens: Vec<(String, String)>,
    loopback_only: bool,
    your_layer: bool,
    audit_capacity: usize,
}

struct AdminState {
    limiter: Limiter,
    auth: Auth,
    audit: Audit,
    /// The last five minutes, for the page's charts.
    history: history::History,
    /// Held while the admin replaces the config, so that two edits made at once (two keys' tiers
    /// put together, say) are applied one after the other and neither is lost.
    editing: std::sync::Mutex<()>,
}

impl AdminState {
    /// Holds off the admin's other config edits while the caller reads the config in force,
    /// changes it and installs it.
    fn one_edit_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.editing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Admin {
    /// The admin API of `limiter`, with no way in yet: add a [`token`](Admin::token).
    pub fn new(limiter: &Limiter) -> Self {
        Admin {
            limiter: limiter.clone(),
            tokens: Vec::new(),
            loopback_only: false,
            your_layer: false,
            audit_capacity: 1000,
        }
    }

    /// Lets in requests with `Authorization: Bearer {token}`, recorded as `name`.
    pub fn token(mut self, name: impl Into<String>, token: impl Into<String>) -> Self {
        self.tokens.push((name.into(), token.into()));
        self
    }

    /// Lets in requests without a token, but from loopback peers only (any other peer gets 403).
    /// For a router bound to `127.0.0.1` on a machine only operators log in to.
    pub fn loopback_only_without_token(mut self) -> Self {
        self.loopback_only = true;
        self
    }

    /// Lets in requests your own tower layer, in front of the router, authenticated: they must
    /// carry an [`AdminUser`] extension, which the audit records (others get 401).
    pub fn authenticated_by_your_layer(mut self) -> Self {
        self.your_layer = true;
        self
    }

    /// How many changes the audit list keeps (default 1,000).
    pub fn audit_capacity(mut self, entries: usize) -> Self {
        self.audit_capacity = entries;
        self
    }

    /// The router.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (`admin.token`) when no token was given and neither
    /// [`loopback_only_without_token`](Admin::loopback_only_without_token) nor
    /// [`authenticated_by_your_layer`](Admin::authenticated_by_your_layer) was chosen, or a
    /// token or its name is empty.
    pub fn router(self) -> Result<Router, ConfigError> {
        if self
            .tokens
            .iter()
            .any(|(name, token)| name.is_empty() || token.is_empty())
        {
            return Err(ConfigError::new(
                "admin.token",
                "a token and its name must not be empty",
            ));
        }
        let auth = match (self.tokens.is_empty(), self.your_layer, self.loopback_only) {
            (false, _, _) => Auth::Tokens(self.tokens),
            (true, true, _) => Auth::YourLayer,
            (true, false, true) => Auth::LoopbackOnly,
            (true, false, false) => {
                return Err(ConfigError::new(
                    "admin.token",
                    "no token: give one, or say the router is reachable from loopback only \
                     (loopback_only_without_token), or that your layer authenticates",
                ))
            }
        };
        let state = Arc::new(AdminState {
            limiter: self.limiter,
            auth,
            audit: Audit::new(self.audit_capacity),
            editing: std::sync::Mutex::new(()),
            history: history::History::default(),
        });
        history::keep(Arc::downgrade(&state));
        let api = Router::new()
            .route("/api/stats", get(stats))
            .route("/api/clients", get(top_clients))
            .route("/api/refused", get(refused_by))
            .route("/api/history", get(history_since))
            .route("/api/clients/{ip}", get(one_client))
            .route("/api/bans", get(bans).post(ban).delete(unban))
            .route("/api/config", get(config).put(put_config))
            .route("/api/keys/{key}/tier", put(put_key_tier))
            .route("/api/audit", get(audit))
            .route("/metrics", get(metrics))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                authenticate,
            ));
        Ok(Router::new()
            .route("/", get(page))
            .merge(api)
            .with_state(state))
    }
}

/// Byte strings equal, in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Lets a request in, naming who made it, or answers 401 or 403; a change with a body must be
/// JSON (415).
async fn authenticate(
    State(admin): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match &admin.auth {
        Auth::Tokens(tokens) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            let found = presented.and_then(|presented| {
                tokens
                    .iter()
                    .find(|(_, token)| same(token.as_bytes(), presented.as_bytes()))
            });
            match found {
                Some((name, _)) => AdminUser(name.clone()),
                None => {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        Json(json!({ "error": "a valid bearer token is required" })),
                    )
                        .into_response()
                }
            }
        }
        Auth::LoopbackOnly => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0)
                .or_else(|| request.extensions().get::<ClientAddr>().map(|c| c.0));
            match peer {
                Some(peer) if peer.ip().is_loopback() => AdminUser("loopback".to_owned()),
                _ => return error(StatusCode::FORBIDDEN, "loopback peers only"),
            }
        }
        Auth::YourLayer => match request.extensions().get::<AdminUser>() {
            Some(user) => user.clone(),
            None => return error(StatusCode::UNAUTHORIZED, "not authenticated"),
        },
    };
    if needs_json(&request) && !is_json(&request) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "changes with a body (POST, PUT, a DELETE with a body) must be sent as \
             application/json",
        );
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// Whether `request` must be `application/json`: a `POST` or a `PUT`, always, and a `DELETE`
/// that carries a body. A bodiless `DELETE` needs no content type: no browser sends a `DELETE`
/// to another origin without a preflight, which is never granted (see the module docs).
fn needs_json(request: &Request) -> bool {
    let method = request.method();
    *method == Method::POST
        || *method == Method::PUT
        || (*method == Method::DELETE && has_body(request))
}

/// Whether `request` carries a body: a `Content-Length` other than 0, any `Transfer-Encoding`,
/// or a body that does not say it is empty (an HTTP/2 request whose headers did not end the
/// stream). Anything unsure counts as a body, which then has to be JSON.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    // A length that is not a number is not known to be 0.
    let nonzero_length = headers.get(header::CONTENT_LENGTH).is_some_and(|value| {
        value
            .to_str()
            .ok()
            .and_then(|n| n.trim().parse::<u64>().ok())
            != Some(0)
    });
    nonzero_length
        || headers.contains_key(header::TRANSFER_ENCODING)
        || !http_body::Body::is_end_stream(request.body())
}

/// Whether `request` says its body is `application/json` (with or without a charset).
fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn stats(State(admin): State<Arc<AdminState>>) -> Json<Value> {
    Json(view::stats(&admin.limiter.stats()))
}

async fn top_clients(
    State(admin): State<Arc<AdminState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let top = match query.get("top").map(|n| n.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) => n.min(1000),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "top must be a whole number"),
    };
    let clients: Vec<Value> = admin
        .limiter
        .top_clients(top)
        .iter()
        .map(view::client)
        .collect();
    Json(json!({ "clients": clients })).into_response()
}

/// `GET /api/refused?reason=banned&top=10`: the clients a reason refused most lately, with
/// about how many refusals each.
async fn refused_by(
    State(admin): State<Arc<AdminState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(reason) = query.get("reason") else {
        return error(StatusCode::BAD_REQUEST, "reason: give a reason's name");
    };
    let top = match query.get("top").map(|n| n.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) => n.min(100),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "top must be a whole number"),
    };
    let clients: Vec<Value> = (admin.limiter.top_refused(reason, top).iter())
        .map(|(client, refusals)| json!({ "client": client.to_string(), "refusals": refusals }))
        .collect();
    Json(json!({ "reason": reason, "clients": clients })).into_response()
}

/// `GET /api/history?since=MS`: the samples of the last five minutes taken after `since`
/// (milliseconds since the Unix epoch; all of them without it).
async fn history_since(
    State(admin): State<Arc<AdminState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let since = match query.get("since").map(|n| n.parse::<u64>()) {
        None => 0,
        Some(Ok(since)) => since,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "since must be a whole number"),
    };
    Json(admin.history.since(since)).into_response()
}

async fn one_client(State(admin): State<Arc<AdminState>>, Path(ip): Path<String>) -> Response {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return error(StatusCode::BAD_REQUEST, "not an IP address");
    };
    match admin.limiter.client(ip) {
        Some(client) => Json(view::client(&client)).into_response(),
        None => error(StatusCode::NOT_FOUND, "nothing tracked for this client"),
    }
}

async fn bans(State(admin): State<Arc<AdminState>>) -> Json<Value> {
    let row = |kind: &str, name: String, ban: Ban| {
        json!({
            "kind": kind,
            "reason": ban.reason.to_string(),
            "left_secs": ban.left.as_secs(),
            "name": name,
        })
    };
    let clients: Vec<Value> = admin
        .limiter
        .bans()
        .into_iter()
        .map(|(key, ban)| row("client", key.to_string(), ban))
        .collect();
    let networks: Vec<Value> = admin
        .limiter
        .banned_networks()
        .into_iter()
        .map(|(network, ban)| row("network", network.to_string(), ban))
        .collect();
    Json(json!({ "clients": clients, "networks": networks }))
}

/// What a ban or unban names: a client (an address), a request key (`key:…`), or a network.
enum Target {
    Client(IpAddr),
    Key(ClientKey),
    Network(Cidr),
}

impl Target {
    fn from_fields(client: Option<&str>, network: Option<&str>) -> Result<Target, String> {
        match (client, network) {
            (Some(client), None) if client.starts_with("key:") => {
                named_key(client).map(Target::Key)
            }
            (Some(client), None) => client
                .parse()
                .map(Target::Client)
                .map_err(|_| format!("client: {client:?} is not an IP address or a key:…")),
            (None, Some(network)) => network
                .parse()
                .map(Target::Network)
                .map_err(|err| format!("network: {err}")),
            _ => Err("name either a client or a network".to_owned()),
        }
    }
}

async fn ban(
    State(admin): State<Arc<AdminState>>,
    Extension(user): Extension<AdminUser>,
    body: String,
) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let text = |field: &str| body.get(field).and_then(Value::as_str);
    let target = match Target::from_fields(text("client"), text("network")) {
        Ok(target) => target,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let duration = match text("duration").map(humantime::parse_duration) {
        Some(Ok(duration)) if !duration.is_zero() && duration <= crate::clock::LONGEST => duration,
        _ => return error(
            StatusCode::BAD_REQUEST,
            "duration: give one such as \"10m\" or \"1h\", longer than zero and at most 100 years",
        ),
    };
    let reason = match text("reason") {
        Some(words) if !words.trim().is_empty() => BanReason::given(words),
        _ => BanReason::given(&format!("banned by {} through the admin API", user.0)),
    };
    let name = match target {
        Target::Client(ip) => {
            admin.limiter.ban_with_reason(ip, duration, reason.clone());
            admin
                .limiter
                .client(ip)
                .map_or(ip.to_string(), |c| c.key.to_string())
        }
        Target::Key(key) => {
            admin.limiter.ban_client(key, duration, reason.clone());
            key.to_string()
        }
        Target::Network(network) => {
            admin
                .limiter
                .ban_network_with_reason(network, duration, reason.clone());
            network.to_string()
        }
    };
    let detail = json!({
        "target": name,
        "duration": humantime::format_duration(duration).to_string(),
        "reason": reason.to_string(),
    });
    admin.audit.record(&user.0, "ban", detail.clone());
    (StatusCode::CREATED, Json(detail)).into_response()
}

async fn unban(
    State(admin): State<Arc<AdminState>>,
    Extension(user): Extension<AdminUser>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str);
    let target = match Target::from_fields(field("client"), field("network")) {
        Ok(target) => target,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (name, was_banned) = match target {
        Target::Client(ip) => {
            let name = admin
                .limiter
                .client(ip)
                .map_or(ip.to_string(), |c| c.key.to_string());
            (name, admin.limiter.unban(ip))
        }
        Target::Key(key) => (key.to_string(), admin.limiter.unban_client(key)),
        Target::Network(network) => (network.to_string(), admin.limiter.unban_network(network)),
    };
    let detail = json!({ "target": name, "was_banned": was_banned });
    admin.audit.record(&user.0, "unban", detail.clone());
    Json(detail).into_response()
}

async fn config(State(admin): State<Arc<AdminState>>) -> Json<Value> {
    Json(view::config(&admin.limiter.config()))
}

async fn put_config(
    State(admin): State<Arc<AdminState>>,
    Extension(user): Extension<AdminUser>,
    body: String,
) -> Response {
    let installed = Config::from_json_str(&body).and_then(|config| {
        let _edit = admin.one_edit_at_a_time();
        admin.limiter.set_config(config)
    });
    match installed {
        Ok(()) => {
            let summary = view::config(&admin.limiter.config());
            admin
                .audit
                .record(&user.0, "config", json!({ "config": summary }));
            Json(json!({ "installed": true })).into_response()
        }
        Err(err) => config_refused(&err),
    }
}

/// A 400 naming the field of a config that was refused, and why.
fn config_refused(err: &ConfigError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": err.to_string(),
            "field": err.field(),
            "reason": err.reason(),
            "line": err.location().map(|at| at.line),
            "column": err.location().map(|at| at.column),
        })),
    )
        .into_response()
}

/// A request key as stats print it, `key:` and 16 hex digits.
fn named_key(text: &str) -> Result<ClientKey, String> {
    text.parse::<ClientKey>()
        .ok()
        .filter(|key| key.fingerprint().is_some())
        .ok_or_else(|| format!("{text:?} is not a key: `key:` and 16 hex digits"))
}

/// `PUT /api/keys/{key}/tier` with `{"tier": "pro"}` assigns the key a tier in the config in
/// force (`keys.assigned`); `{"tier": null}` takes its assignment away. Audited.
async fn put_key_tier(
    State(admin): State<Arc<AdminState>>,
    Extension(user): Extension<AdminUser>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    let key = match named_key(&key) {
        Ok(key) => key,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let tier = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(fields)) => match fields.get("tier") {
            Some(Value::String(tier)) => Some(tier.clone()),
            Some(Value::Null) => None,
            _ => return error(StatusCode::BAD_REQUEST, "tier: give a tier's name, or null"),
        },
        _ => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
    };
    let edit = admin.one_edit_at_a_time();
    let mut config = (*admin.limiter.config()).clone();
    config.keys.assigned.retain(|assigned| assigned.key != key);
    if let Some(tier) = &tier {
        config.keys.assigned.push(KeyTier {
            key,
            tier: tier.clone(),
        });
    }
    let installed = admin.limiter.set_config(config);
    drop(edit);
    match installed {
        Ok(()) => {
            let detail = json!({ "key": key.to_string(), "tier": tier });
            admin.audit.record(&user.0, "key_tier", detail.clone());
            Json(detail).into_response()
        }
        Err(err) => config_refused(&err),
    }
}

async fn audit(State(admin): State<Arc<AdminState>>) -> Json<Value> {
    Json(json!({ "changes": admin.audit.list() }))
}

async fn metrics(State(admin): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        view::prometheus(&admin.limiter.stats()),
    )
        .into_response()
}
