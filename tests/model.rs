//! Model-based property tests: random sequences of connections, requests, releases, live config
//! changes, bans and clock moves run against the `Limiter` and, step by step, against a small
//! reference model of what it must decide.
//!
//! The model is written from the documented semantics rather than from the code: checks in
//! the order ban, rate, path rules, per-client limit, global cap; `0` is unlimited; exempt
//! clients are counted but never refused; overrides go by the longest prefix; a config change
//! applies to new admissions only; a drained client is remembered only while its rate or ban
//! state can still refuse something (and, from the code's comments, a ban's record is kept for
//! one more ban length, for escalation). Rates use [`FixedWindow`](RateStrategy::FixedWindow),
//! whose documented rule ("fewer than `events` allowed in the current window of `period`,
//! aligned to the clock's origin") is simple enough to model exactly, so every decision, refusal
//! reason, retry time and count can be compared exactly.
//!
//! The race tests (`tests/race.rs`) cover concurrency; this file covers the decisions.
//!
//! Run a longer search with `PROPTEST_CASES=5000 cargo test --all-features --test model`.

use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError};
use tower_connlimit::{
    ban::BanPolicy, clock::FakeClock, config::CidrLimit, rate::PathRule,
    rate::Strategy as RateStrategy, Config, ConnPermit, Limiter, RateLimit, RejectReason, Rejected,
    RequestPermit,
};

/// The clients: four IPv4 hosts (each its own key under the default `/32`) and two addresses
/// in one IPv6 `/64` (one key under the default `/64`).
const CLIENTS: [&str; 6] = [
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "2001:db8::1",
    "2001:db8::2",
];

/// Client keys: one per IPv4 client, one for the IPv6 `/64`.
const KEYS: usize = 5;

/// The client that configs may exempt (`127.0.0.4/32`): exempt or not, its key is its `/32`.
const EXEMPTABLE: usize = 3;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// `connect_rate` and `request_rate` count per window of this length.
const RATE_PERIOD: u64 = SEC;
/// Path rules count per window of this length.
const PATH_PERIOD: u64 = 2 * SEC;
/// The ban policy counts violations per window of this length...
const BAN_WITHIN: u64 = 2 * SEC;
/// ...and bans for this long (no escalation, no jitter: `max_ban_for == ban_for`).
const BAN_FOR: u64 = 3 * SEC;

fn ip(client: usize) -> IpAddr {
    CLIENTS[client].parse().unwrap()
}

fn key_of(client: usize) -> usize {
    client.min(KEYS - 1)
}

/// An address counted under `key`.
fn ip_of_key(key: usize) -> IpAddr {
    ip(key)
}

fn fixed(events: u32, period: u64) -> RateLimit {
    RateLimit::new(events, Duration::from_nanos(period)).strategy(RateStrategy::FixedWindow)
}

/// The part of a [`Config`] the test varies. Rate periods stay fixed, so that a client's rate
/// state means the same under every config; event counts and the presence of each rule vary.
#[derive(Clone, Debug)]
struct Limits {
    per_client: usize,
    total: usize,
    requests: usize,
    /// An override for `127.0.0.0/8`.
    override_wide: Option<usize>,
    /// An override for `127.0.0.0/30` (clients 1 to 3), longer so it wins over the `/8`.
    override_narrow: Option<usize>,
    /// An override for `2001:db8::/64`.
    override_v6: Option<usize>,
    /// Whether `127.0.0.4/32` is exempt.
    exempt: bool,
    connect_rate: Option<u32>,
    request_rate: Option<u32>,
    /// Path rules: a prefix rule on `/api` with this many events per window, and an exact rule
    /// allowing one `/api/login` per window.
    paths: Option<u32>,
    /// A ban policy tolerating this many violations per window.
    ban: Option<u32>,
}

impl Limits {
    fn config(&self) -> Config {
        let mut overrides = Vec::new();
        if let Some(n) = self.override_wide {
            overrides.push(CidrLimit::new("127.0.0.0/8".parse().unwrap(), n));
        }
        if let Some(n) = self.override_narrow {
            overrides.push(CidrLimit::new("127.0.0.0/30".parse().unwrap(), n));
        }
        if let Some(n) = self.override_v6 {
            overrides.push(CidrLimit::new("2001:db8::/64".parse().unwrap(), n));
        }
        Config {
            max_conns_per_client: self.per_client,
            max_conns_total: self.total,
            max_requests_per_client: self.requests,
            overrides,
            exempt: if self.exempt {
                vec!["127.0.0.4/32".parse().unwrap()]
            } else {
                Vec::new()
            },
            connect_rate: self.connect_rate.map(|n| fixed(n, RATE_PERIOD)),
            request_rate: self.request_rate.map(|n| fixed(n, RATE_PERIOD)),
            path_rules: match self.paths {
                Some(n) => vec![
                    PathRule::prefix("/api", fixed(n, PATH_PERIOD)),
                    PathRule::exact("/api/login", fixed(1, PATH_PERIOD)),
                ],
                None => Vec::new(),
            },
            ban: self.ban.map(|n| {
                BanPolicy::new(
                    n,
                    Duration::from_nanos(BAN_WITHIN),
                    Duration::from_nanos(BAN_FOR),
                )
            }),
            ..Config::default()
        }
    }

    fn is_exempt(&self, client: usize) -> bool {
        self.exempt && client == EXEMPTABLE
    }

    /// The per-client connection limit of `client`: the longest matching override, else the
    /// default.
    fn conn_limit(&self, client: usize) -> usize {
        let narrow = (0..3).contains(&client);
        let v4 = client < 4;
        let found = if v4 {
            (if narrow { self.override_narrow } else { None }).or(self.override_wide)
        } else {
            self.override_v6
        };
        found.unwrap_or(self.per_client)
    }
}

/// A request's route, if the request is made with one.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// `try_acquire_request`: no route, so no path rule applies.
    None,
    /// `GET /api/items`: the `/api` prefix rule.
    Api,
    /// `GET /api/login`: both path rules, prefix first.
    Login,
    /// `GET /home`: no rule.
    Home,
}

impl Route {
    fn path(self) -> Option<&'static str> {
        match self {
            Route::None => None,
            Route::Api => Some("/api/items"),
            Route::Login => Some("/api/login"),
            Route::Home => Some("/home"),
        }
    }

    /// The path rules (by index) that match, in config order.
    fn rules(self) -> &'static [usize] {
        match self {
            Route::None | Route::Home => &[],
            Route::Api => &[0],
            Route::Login => &[0, 1],
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Connect(usize),
    Request(usize, Route),
    /// Drops a held permit, chosen by this number modulo the number held.
    Release(usize),
    SetConfig(Limits),
    /// Bans a client for this many milliseconds.
    Ban(usize, u64),
    Unban(usize),
    /// Advances the clock by this many milliseconds.
    Advance(u64),
    Purge,
}

/// Events allowed in the current window: `(window index, events allowed in it)`.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    index: u64,
    count: u32,
}

impl Window {
    /// Allows and counts one event at `now`, or says how long until the window ends. Either way
    /// the record must be kept until the current window ends: `*keep` is raised to that.
    fn check(&mut self, events: u32, period: u64, now: u64, keep: &mut u64) -> Result<(), u64> {
        let index = now / period;
        if index != self.index {
            *self = Window { index, count: 0 };
        }
        let end = (index + 1) * period;
        *keep = (*keep).max(end);
        if self.count < events {
            self.count += 1;
            Ok(())
        } else {
            Err(end - now)
        }
    }
}

/// What the limiter must know about one client key.
#[derive(Clone, Debug, Default)]
struct KeyModel {
    conns: usize,
    reqs: usize,
    connect: Window,
    request: Window,
    /// One per path rule; started afresh by every config change.
    paths: [Window; 2],
    violations: Window,
    banned_until: u64,
    /// Until when a drained entry must be kept (0: never needed).
    keep_until: u64,
}

impl KeyModel {
    fn idle(&self) -> bool {
        self.conns == 0 && self.reqs == 0
    }

    /// Whether the limiter must hold an entry for this key now.
    fn must_be_tracked(&self, now: u64) -> bool {
        !self.idle() || self.keep_until > now
    }

    /// Whether the limiter may hold an entry: an expired record may linger until a sweep.
    fn may_be_tracked(&self, now: u64) -> bool {
        self.must_be_tracked(now) || self.keep_until != 0
    }

    /// Forgets the key if nothing about it needs remembering, as a release, an unban or a
    /// purge must.
    fn forget_if_expired(&mut self, now: u64) {
        if !self.must_be_tracked(now) {
            *self = KeyModel::default();
        }
    }
}

type Denial = (RejectReason, Option<u64>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connection,
    Request,
}

/// The reference model of the whole limiter.
struct Model {
    now: u64,
    limits: Limits,
    keys: [KeyModel; KEYS],
    open: usize,
    in_flight: usize,
    admitted_connections: u64,
    admitted_requests: u64,
    /// Refusals, by [`reason_index`].
    rejected: [u64; 8],
    bans: u64,
}

fn reason_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::ClientConnections => 0,
        RejectReason::TotalConnections => 1,
        RejectReason::ClientRequests => 2,
        RejectReason::ConnectRate => 3,
        RejectReason::RequestRate => 4,
        RejectReason::PathRule => 5,
        RejectReason::Banned => 6,
        RejectReason::TrackedClientsFull => 7,
        other => panic!("unexpected reason {other:?}"),
    }
}

impl Model {
    fn new(limits: Limits) -> Self {
        Model {
            now: 0,
            limits,
            keys: Default::default(),
            open: 0,
            in_flight: 0,
            admitted_connections: 0,
            admitted_requests: 0,
            rejected: [0; 8],
            bans: 0,
        }
    }

    /// The decision for a connection (`route` is `None`) or a request from `client`.
    fn admit(&mut self, client: usize, kind: Kind, route: Route) -> Result<(), Denial> {
        let verdict = self.decide(client, kind, route);
        match verdict {
            Ok(()) => match kind {
                Kind::Connection => self.admitted_connections += 1,
                Kind::Request => self.admitted_requests += 1,
            },
            Err((reason, _)) => self.rejected[reason_index(reason)] += 1,
        }
        verdict
    }

    fn decide(&mut self, client: usize, kind: Kind, route: Route) -> Result<(), Denial> {
        let now = self.now;
        let limits = &self.limits;
        let exempt = limits.is_exempt(client);
        let key = &mut self.keys[key_of(client)];
        if !exempt {
            gate(key, limits, kind, route, now, &mut self.bans)?;
        }
        match kind {
            Kind::Connection => {
                let limit = if exempt { 0 } else { limits.conn_limit(client) };
                let cap = if exempt { 0 } else { limits.total };
                if limit != 0 && key.conns >= limit {
                    Err((RejectReason::ClientConnections, None))
                } else if cap != 0 && self.open >= cap {
                    Err((RejectReason::TotalConnections, None))
                } else {
                    key.conns += 1;
                    self.open += 1;
                    Ok(())
                }
            }
            Kind::Request => {
                let limit = if exempt { 0 } else { limits.requests };
                if limit != 0 && key.reqs >= limit {
                    Err((RejectReason::ClientRequests, None))
                } else {
                    key.reqs += 1;
                    self.in_flight += 1;
                    Ok(())
                }
            }
        }
    }

    fn release(&mut self, key: usize, kind: Kind) {
        let now = self.now;
        let state = &mut self.keys[key];
        match kind {
            Kind::Connection => {
                state.conns -= 1;
                self.open -= 1;
            }
            Kind::Request => {
                state.reqs -= 1;
                self.in_flight -= 1;
            }
        }
        state.forget_if_expired(now);
    }

    fn set_config(&mut self, limits: Limits) {
        self.limits = limits;
        // Path rule states belong to the config they were counted under.
        for key in &mut self.keys {
            key.paths = Default::default();
        }
    }

    fn ban(&mut self, client: usize, millis: u64) {
        let key = &mut self.keys[key_of(client)];
        key.banned_until = key.banned_until.max(self.now + millis * MS);
        key.keep_until = key.keep_until.max(key.banned_until);
        self.bans += 1;
    }

    /// Lifts a ban and forgets violations; returns whether the client was banned.
    fn unban(&mut self, client: usize) -> bool {
        let key = &mut self.keys[key_of(client)];
        let was_banned = key.banned_until > self.now;
        key.banned_until = 0;
        key.violations = Window::default();
        key.forget_if_expired(self.now);
        was_banned
    }

    fn purge(&mut self) {
        for key in &mut self.keys {
            key.forget_if_expired(self.now);
        }
    }
}

/// Everything before the concurrency limits: a ban, the kind's rate, then every matching path
/// rule in order. A rate refusal is a violation, which may ban the client.
fn gate(
    key: &mut KeyModel,
    limits: &Limits,
    kind: Kind,
    route: Route,
    now: u64,
    bans: &mut u64,
) -> Result<(), Denial> {
    if now < key.banned_until {
        return Err((RejectReason::Banned, Some(key.banned_until - now)));
    }
    let (rate, window, reason) = match kind {
        Kind::Connection => (
            limits.connect_rate,
            &mut key.connect,
            RejectReason::ConnectRate,
        ),
        Kind::Request => (
            limits.request_rate,
            &mut key.request,
            RejectReason::RequestRate,
        ),
    };
    let mut refusal = rate.and_then(|events| {
        window
            .check(events, RATE_PERIOD, now, &mut key.keep_until)
            .err()
            .map(|wait| (reason, Some(wait)))
    });
    if refusal.is_none() {
        if let Some(events) = limits.paths {
            for &rule in route.rules() {
                let events = if rule == 0 { events } else { 1 };
                if let Err(wait) =
                    key.paths[rule].check(events, PATH_PERIOD, now, &mut key.keep_until)
                {
                    refusal = Some((RejectReason::PathRule, Some(wait)));
                    break;
                }
            }
        }
    }
    let Some(refusal) = refusal else {
        return Ok(());
    };
    if let Some(tolerated) = limits.ban {
        let crossed = key
            .violations
            .check(tolerated, BAN_WITHIN, now, &mut key.keep_until)
            .is_err();
        if crossed {
            key.violations = Window::default();
            let until = now + BAN_FOR;
            key.banned_until = key.banned_until.max(until);
            // The record of bans is kept for one longest ban after the ban ends.
            key.keep_until = key.keep_until.max(until + BAN_FOR);
            *bans += 1;
        }
    }
    Err(refusal)
}

enum Permit {
    Connection(#[allow(dead_code)] ConnPermit),
    Request(#[allow(dead_code)] RequestPermit),
}

/// A held permit and what the model counts it under.
struct Held {
    key: usize,
    kind: Kind,
    permit: Permit,
}

/// The limiter under test, the model, and the permits held.
struct Harness {
    limiter: Limiter,
    clock: FakeClock,
    model: Model,
    held: Vec<Held>,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let clock = FakeClock::new();
        let limiter = Limiter::try_with_clock(limits.config(), clock.clone()).unwrap();
        Harness {
            limiter,
            clock,
            model: Model::new(limits),
            held: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Connect(client) => {
                let expected = self.model.admit(client, Kind::Connection, Route::None);
                let got = self.limiter.try_acquire(ip(client));
                self.compare(
                    op,
                    expected,
                    got,
                    Kind::Connection,
                    client,
                    Permit::Connection,
                )?;
            }
            Op::Request(client, route) => {
                let expected = self.model.admit(client, Kind::Request, route);
                let got = match route.path() {
                    None => self.limiter.try_acquire_request(ip(client)),
                    Some(path) => self.limiter.try_acquire_request_to(ip(client), "GET", path),
                };
                self.compare(op, expected, got, Kind::Request, client, Permit::Request)?;
            }
            Op::Release(n) => {
                if !self.held.is_empty() {
                    let held = self.held.swap_remove(n % self.held.len());
                    drop(held.permit);
                    self.model.release(held.key, held.kind);
                }
            }
            Op::SetConfig(ref limits) => {
                let config = limits.config();
                self.limiter.set_config(config.clone()).unwrap();
                prop_assert_eq!(&*self.limiter.config(), &config);
                self.model.set_config(limits.clone());
            }
            Op::Ban(client, millis) => {
                self.limiter.ban(ip(client), Duration::from_millis(millis));
                self.model.ban(client, millis);
            }
            Op::Unban(client) => {
                let expected = self.model.unban(client);
                prop_assert_eq!(self.limiter.unban(ip(client)), expected, "{:?}", op);
            }
            Op::Advance(millis) => {
                self.clock.advance(Duration::from_millis(millis));
                self.model.now += millis * MS;
            }
            Op::Purge => {
                self.limiter.purge_expired();
                self.model.purge();
            }
        }
        self.check(op)
    }

    /// Compares one decision with the model's, and keeps the permit if admitted.
    fn compare<P>(
        &mut self,
        op: &Op,
        expected: Result<(), Denial>,
        got: Result<P, Rejected>,
        kind: Kind,
        client: usize,
        wrap: fn(P) -> Permit,
    ) -> Result<(), TestCaseError> {
        match (expected, got) {
            (Ok(()), Ok(permit)) => {
                self.held.push(Held {
                    key: key_of(client),
                    kind,
                    permit: wrap(permit),
                });
            }
            (Err((reason, wait)), Err(rejected)) => {
                prop_assert_eq!(rejected.reason(), reason, "{:?}", op);
                prop_assert_eq!(
                    rejected.retry_after(),
                    wait.map(Duration::from_nanos),
                    "{:?}: retry time",
                    op
                );
            }
            (Ok(()), Err(rejected)) => {
                return Err(TestCaseError::fail(format!(
                    "{op:?} refused ({:?}) where the model has room",
                    rejected.reason()
                )));
            }
            (Err(denial), Ok(_)) => {
                return Err(TestCaseError::fail(format!(
                    "{op:?} admitted where the model refuses with {denial:?}"
                )));
            }
        }
        Ok(())
    }

    /// Every observable count against the model.
    fn check(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let mut tracked = 0;
        for (k, model) in self.model.keys.iter_mut().enumerate() {
            let seen = self.limiter.client(ip_of_key(k));
            match seen {
                Some(client) => {
                    tracked += 1;
                    prop_assert!(
                        model.may_be_tracked(now),
                        "after {:?}: key {} is tracked but has nothing to remember: {:?}",
                        op,
                        k,
                        client
                    );
                    prop_assert_eq!(client.open_connections, model.conns, "after {:?}", op);
                    prop_assert_eq!(client.in_flight_requests, model.reqs, "after {:?}", op);
                    let banned_for = (model.banned_until > now)
                        .then(|| Duration::from_nanos(model.banned_until - now));
                    prop_assert_eq!(client.banned_for, banned_for, "after {:?}", op);
                    let remembered_for = (model.keep_until > now)
                        .then(|| Duration::from_nanos(model.keep_until - now));
                    prop_assert_eq!(client.remembered_for, remembered_for, "after {:?}", op);
                }
                None => {
                    prop_assert!(
                        !model.must_be_tracked(now),
                        "after {:?}: key {} was forgotten too early: {:?}",
                        op,
                        k,
                        model
                    );
                    // Swept: an expired record is the same as none.
                    *model = KeyModel::default();
                }
            }
        }
        for (client, name) in CLIENTS.iter().enumerate() {
            prop_assert_eq!(
                self.limiter.open_connections(ip(client)),
                self.model.keys[key_of(client)].conns,
                "after {:?}: open_connections({})",
                op,
                name
            );
        }
        let banned = self.model.keys.iter().filter(|k| k.banned_until > now);
        prop_assert_eq!(self.limiter.bans().len(), banned.count(), "after {:?}", op);

        let stats = self.limiter.stats();
        let m = &self.model;
        prop_assert_eq!(stats.open_connections, m.open, "after {:?}", op);
        prop_assert_eq!(stats.in_flight_requests, m.in_flight, "after {:?}", op);
        let direct = stats.point("direct").expect("always there");
        prop_assert_eq!(direct.open_connections, m.open, "after {:?}", op);
        prop_assert_eq!(direct.in_flight_requests, m.in_flight, "after {:?}", op);
        // Drained clients stay in the map until a sweep: at least the clients worth tracking,
        // and just those right after one.
        prop_assert!(stats.tracked_clients >= tracked, "after {:?}", op);
        if matches!(op, Op::Purge) {
            prop_assert_eq!(stats.tracked_clients, tracked, "after a sweep");
        }
        prop_assert_eq!(self.limiter.clients().len(), tracked, "after {:?}", op);
        prop_assert_eq!(stats.admitted_connections, m.admitted_connections);
        prop_assert_eq!(stats.admitted_requests, m.admitted_requests);
        let rejected = [
            "client_connections",
            "total_connections",
            "client_requests",
            "connect_rate",
            "request_rate",
            "path_rule",
            "banned",
            "tracked_clients_full",
        ]
        .map(|reason| stats.rejected[reason]);
        prop_assert_eq!(rejected, m.rejected, "after {:?}", op);
        prop_assert_eq!(stats.bans, m.bans, "after {:?}", op);
        prop_assert_eq!(self.held.len(), m.open + m.in_flight);
        Ok(())
    }

    /// Drops every permit, moves past every retention, purges, and checks nothing is left.
    fn finish(mut self) -> Result<(), TestCaseError> {
        while let Some(held) = self.held.pop() {
            drop(held.permit);
            self.model.release(held.key, held.kind);
            self.check(&Op::Release(0))?;
        }
        // The longest record: a ban of up to 5 s, or an automatic ban's 3 s kept 3 s more.
        let past = Op::Advance(60_000);
        self.apply(&past)?;
        self.apply(&Op::Purge)?;
        let stats = self.limiter.stats();
        prop_assert_eq!(stats.open_connections, 0);
        prop_assert_eq!(stats.in_flight_requests, 0);
        prop_assert_eq!(stats.tracked_clients, 0, "{:?}", self.limiter.clients());
        prop_assert!(self.limiter.clients().is_empty());
        prop_assert!(self.limiter.bans().is_empty());
        Ok(())
    }
}

fn limits() -> impl Strategy<Value = Limits> {
    let counts = (0usize..=3, 0usize..=6, 0usize..=3);
    let overrides = (
        proptest::option::weighted(0.3, 0usize..=4),
        proptest::option::weighted(0.3, 0usize..=4),
        proptest::option::weighted(0.3, 0usize..=4),
        proptest::bool::weighted(0.3),
    );
    let rates = (
        proptest::option::weighted(0.3, 1u32..=3),
        proptest::option::weighted(0.3, 1u32..=3),
        proptest::option::weighted(0.3, 1u32..=3),
        proptest::option::weighted(0.3, 1u32..=2),
    );
    (counts, overrides, rates).prop_map(
        |(
            (per_client, total, requests),
            (override_wide, override_narrow, override_v6, exempt),
            (connect_rate, request_rate, paths, ban),
        )| Limits {
            per_client,
            total,
            requests,
            override_wide,
            override_narrow,
            override_v6,
            exempt,
            connect_rate,
            request_rate,
            paths,
            ban,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS.len();
    let route = prop_oneof![
        Just(Route::None),
        Just(Route::Api),
        Just(Route::Login),
        Just(Route::Home),
    ];
    prop_oneof![
        8 => client.clone().prop_map(Op::Connect),
        6 => (client.clone(), route).prop_map(|(c, r)| Op::Request(c, r)),
        8 => any::<usize>().prop_map(Op::Release),
        2 => limits().prop_map(Op::SetConfig),
        1 => (client.clone(), 1u64..=5_000).prop_map(|(c, ms)| Op::Ban(c, ms)),
        1 => client.prop_map(Op::Unban),
        3 => prop_oneof![Just(0u64), Just(1), 0u64..=2_500, Just(RATE_PERIOD / MS)]
            .prop_map(Op::Advance),
        1 => Just(Op::Purge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 512 cases of up to 80 steps take about a second in debug; PROPTEST_CASES searches
        // longer.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(512),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Every admission, refusal reason, retry time and count matches the model, across live
    /// config changes (held permits stay held above a lowered limit), bans, rates and clock
    /// moves; no count goes negative; once every permit is dropped and every record has
    /// expired, the map is empty.
    #[test]
    fn the_limiter_decides_and_counts_as_the_model_does(
        initial in limits(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut harness = Harness::new(initial);
        harness.check(&Op::Purge)?;
        for op in &ops {
            harness.apply(op)?;
        }
        harness.finish()?;
    }
}

/// The model itself against outcomes worked out by hand, so that a model drifting from the
/// documented semantics fails here, not only by agreeing with a limiter that drifted the same
/// way; then the same sequence through the limiter.
#[test]
fn the_model_agrees_with_a_hand_written_sequence() {
    let limits = Limits {
        per_client: 2,
        total: 3,
        requests: 1,
        override_wide: None,
        override_narrow: Some(1),
        override_v6: None,
        exempt: true,
        connect_rate: None,
        request_rate: None,
        paths: None,
        ban: None,
    };
    let mut model = Model::new(limits);
    // 127.0.0.1 is under the /30 override of 1.
    assert!(model.admit(0, Kind::Connection, Route::None).is_ok());
    assert_eq!(
        model.admit(0, Kind::Connection, Route::None),
        Err((RejectReason::ClientConnections, None))
    );
    // The IPv6 /64 has the default of 2; its two addresses share it.
    assert!(model.admit(4, Kind::Connection, Route::None).is_ok());
    assert!(model.admit(5, Kind::Connection, Route::None).is_ok());
    assert_eq!(
        model.admit(4, Kind::Connection, Route::None),
        Err((RejectReason::ClientConnections, None))
    );
    // The global cap of 3 is full for everyone but the exempt client.
    assert_eq!(
        model.admit(1, Kind::Connection, Route::None),
        Err((RejectReason::TotalConnections, None))
    );
    assert!(model.admit(3, Kind::Connection, Route::None).is_ok());
    assert_eq!(model.open, 4);
    assert!(model.admit(1, Kind::Request, Route::None).is_ok());
    assert_eq!(
        model.admit(1, Kind::Request, Route::None),
        Err((RejectReason::ClientRequests, None))
    );

    // The same sequence through the harness: the limiter agrees.
    let mut harness = Harness::new(model.limits.clone());
    for op in [
        Op::Connect(0),
        Op::Connect(0),
        Op::Connect(4),
        Op::Connect(5),
        Op::Connect(4),
        Op::Connect(1),
        Op::Connect(3),
        Op::Request(1, Route::None),
        Op::Request(1, Route::None),
    ] {
        harness.apply(&op).unwrap();
    }
    assert_eq!(harness.limiter.stats().open_connections, 4);
    assert_eq!(harness.model.rejected[..3], [2, 1, 1]);
    harness.finish().unwrap();
}

/// Rates, path rules and the ban policy in the model, by hand: a refused rate is a violation,
/// the violation past the tolerated count bans, and a ban outlives the connection.
#[test]
fn rate_violations_ban_in_the_model_and_in_the_limiter() {
    let limits = Limits {
        per_client: 0,
        total: 0,
        requests: 0,
        override_wide: None,
        override_narrow: None,
        override_v6: None,
        exempt: false,
        connect_rate: Some(1),
        request_rate: None,
        paths: Some(2),
        ban: Some(1),
    };
    let mut harness = Harness::new(limits);
    let ops = [
        Op::Connect(0),
        Op::Connect(0),               // connect_rate: violation 1
        Op::Request(0, Route::Login), // /api 1 of 2, /api/login 1 of 1
        Op::Request(0, Route::Login), // /api 2 of 2, /api/login refused: violation 2, banned
        Op::Request(0, Route::Home),  // banned
        Op::Advance(BAN_FOR / MS),    // the ban is over
        Op::Request(0, Route::Api),   // a new window
        Op::Release(0),
        Op::Release(0),
        Op::Release(0),
    ];
    for op in &ops {
        harness.apply(op).unwrap();
    }
    let stats = harness.limiter.stats();
    assert_eq!(
        (stats.open_connections, stats.in_flight_requests),
        (0, 0),
        "every permit is released"
    );
    let client = harness.limiter.client(ip(0)).expect("still tracked");
    assert!(client.banned_for.is_none(), "the ban is over");
    assert!(
        client.remembered_for.is_some(),
        "the record of the ban is kept for escalation"
    );
    assert_eq!(stats.rejected["connect_rate"], 1);
    assert_eq!(stats.rejected["path_rule"], 1);
    assert_eq!(stats.rejected["banned"], 1);
    assert_eq!(stats.bans, 1);
    assert_eq!(
        stats.tracked_clients, 1,
        "the ban record outlives the client's permits"
    );
    harness.finish().unwrap();
}
