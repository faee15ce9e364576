//! The limiter under pressure, from the attacker's side: a client table filled by fillers, bans
//! and held requests from fabricated addresses, rotating keys against a rate rule, configs at
//! the edge of what validation accepts, and a panic in the middle of an admission. Through the
//! public API, on a `FakeClock`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_connlimit::{
    ban::BanPolicy, clock::Clock, clock::FakeClock, listener::ListenerConfig, rate::PathRule,
    rate::Strategy, Config, Limiter, RateLimit, RejectReason,
};

const TABLE: usize = 10_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A distinct IPv4 client for each `i`, spread over many /24s.
fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// The `i`-th /64 client of the attacker's /48, 2001:db8:1::/48.
fn in_the_48(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, i, 0, 0, 0, 1))
}

/// The `i`-th client of a /48 of its own.
fn own_48(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100 + i, 0, 0, 0, 0, 1))
}

fn limiter(config: Config) -> (Limiter, FakeClock) {
    let clock = FakeClock::new();
    let limiter = Limiter::try_with_clock(config, clock.clone()).expect("a valid config");
    (limiter, clock)
}

/// A table of 10,000 with a login rule whose record outlives each client's visit.
fn login_config(rate: RateLimit) -> Config {
    Config {
        max_tracked_clients: TABLE,
        path_rules: vec![PathRule::exact("/login", rate)],
        ..Config::default()
    }
}

fn login(limiter: &Limiter, ip: IpAddr) -> Result<(), RejectReason> {
    limiter
        .try_acquire_request_to(ip, "POST", "/login")
        .map(drop)
        .map_err(|refused| refused.reason())
}

#[test]
fn a_full_table_forgets_the_stalest_records_first() {
    let (limiter, clock) = limiter(login_config(RateLimit::new(5, secs(3600))));
    let arrivals = 60_000u32;
    for i in 0..arrivals {
        clock.advance(Duration::from_millis(1));
        assert_eq!(login(&limiter, v4(i)), Ok(()), "arrival {i}");
    }
    let stats = limiter.stats();
    assert_eq!(stats.tracked_clients, TABLE);
    assert_eq!(stats.evictions, u64::from(arrivals) - TABLE as u64);
    let newest: HashSet<IpAddr> = (arrivals - TABLE as u32..arrivals).map(v4).collect();
    let survivors = limiter.clients();
    let fresh = survivors
        .iter()
        .filter(|c| newest.contains(&c.key.network()))
        .count();
    println!(
        "{fresh} of {} survivors among the newest {TABLE}",
        survivors.len()
    );
    assert!(
        fresh * 100 >= survivors.len() * 95,
        "{fresh} of {} survivors among the newest {TABLE}",
        survivors.len()
    );
    assert!(limiter.client(v4(0)).is_none(), "the first arrival is gone");
}

#[test]
fn running_bans_are_never_forgotten_to_make_room() {
    let mut config = login_config(RateLimit::new(1, secs(600)));
    config.ban = Some(BanPolicy::new(1, secs(60), secs(600)));
    let (limiter, clock) = limiter(config);
    // 20 clients banned by the policy (a login, then two refused), 10 by the operator.
    let banned: Vec<IpAddr> = (0..30).map(|i| v4(1_000_000 + i)).collect();
    for &ip in &banned[..20] {
        assert_eq!(login(&limiter, ip), Ok(()));
        for _ in 0..2 {
            assert!(login(&limiter, ip).is_err());
        }
        assert_eq!(login(&limiter, ip), Err(RejectReason::Banned));
    }
    for &ip in &banned[20..] {
        limiter.ban(ip, secs(3600));
    }
    // Fillers: 1.6 per table slot, each one login (a record kept for 10 minutes).
    let mut refused = 0;
    for i in 0..16_000 {
        clock.advance(Duration::from_millis(1));
        refused += usize::from(login(&limiter, v4(i)).is_err());
    }
    assert_eq!(refused, 0, "every filler found room");
    clock.advance(secs(10));
    let readmitted = banned
        .iter()
        .filter(|&&ip| limiter.try_acquire(ip).is_ok())
        .count();
    assert_eq!(readmitted, 0, "0 of 30 banned clients let in while banned");
    assert_eq!(limiter.bans().len(), 30);
}

#[test]
fn a_table_full_of_running_bans_refuses_newcomers_until_they_end() {
    let mut config = login_config(RateLimit::new(1, secs(600)));
    config.max_tracked_clients = 1_000;
    config.ban = Some(BanPolicy::new(1, secs(60), secs(600)));
    let (limiter, clock) = limiter(config);
    // Self-banning fillers from 1,000 /24s fill the table with bans.
    for i in 0..1_000 {
        let ip = v4(i * 256);
        assert_eq!(login(&limiter, ip), Ok(()));
        for _ in 0..2 {
            assert!(login(&limiter, ip).is_err());
        }
    }
    assert_eq!(limiter.bans().len(), 1_000);
    assert_eq!(
        limiter.try_acquire(v4(7)).unwrap_err().reason(),
        RejectReason::TrackedClientsFull,
        "no ban is dropped to make room"
    );
    clock.advance(secs(601));
    assert!(
        limiter.try_acquire(v4(7)).is_ok(),
        "an ended ban makes room"
    );
}

#[test]
fn honest_newcomers_get_in_while_the_attacker_holds_requests() {
    let (limiter, _clock) = limiter(login_config(RateLimit::new(5, secs(3600))));
    // The attacker holds a request on each of 50,000 keys of its /48: past 256 keys, they
    // share the /48's own key, so it holds 257 entries, not 50,000.
    let held: Vec<_> = (0..50_000u16)
        .map(|i| {
            limiter
                .try_acquire_request(in_the_48(i))
                .expect("no request limit")
        })
        .collect();
    assert_eq!(limiter.stats().tracked_clients, 257);
    let shared = limiter
        .client(in_the_48(40_000))
        .expect("counted under the /48's key");
    assert_eq!(shared.key.prefix_len(), 48);
    assert_eq!(shared.in_flight_requests, 50_000 - 256);
    // 8,000 more attackers, each holding a request from a /48 of its own, and enough records
    // of past logins to fill the rest of the table.
    let busy: Vec<_> = (0..8_000u16)
        .map(|i| limiter.try_acquire_request(own_48(i)).unwrap())
        .collect();
    for i in 0..(TABLE - 8_257) as u32 {
        assert_eq!(login(&limiter, v4(i)), Ok(()));
    }
    assert_eq!(limiter.stats().tracked_clients, TABLE);
    // 1,000 honest newcomers, each holding its connection: every one finds room while at
    // least a tenth of the table could go.
    let mut newcomers = Vec::new();
    for i in 0..1_000u32 {
        match limiter.try_acquire(v4(500_000 + i)) {
            Ok(permit) => newcomers.push(permit),
            Err(refused) => panic!("newcomer {i} refused: {:?}", refused.reason()),
        }
    }
    assert_eq!(limiter.stats().tracked_clients, TABLE);
    drop((held, busy, newcomers));
}

#[test]
fn rotating_keys_within_a_48_gains_no_more_than_the_rule_per_key() {
    let (limiter, _clock) = limiter(login_config(RateLimit::new(5, secs(60))));
    let mut admitted: HashMap<IpAddr, u32> = HashMap::new();
    let mut attempt = |ip: IpAddr| {
        if login(&limiter, ip).is_ok() {
            *admitted.entry(ip).or_default() += 1;
        }
    };
    // Within one minute: every one of the 65,536 keys tries once, and between them the
    // attacker keeps trying its favourite key, hoping to see its record forgotten.
    for i in 0..=u16::MAX {
        attempt(in_the_48(i));
        if i % 16 == 0 {
            attempt(in_the_48(7));
        }
    }
    assert!(
        admitted.values().all(|&n| n <= 5),
        "no key got more than 5 a minute"
    );
    assert_eq!(admitted[&in_the_48(7)], 5, "the favourite key got its 5");
    let total: u32 = admitted.values().sum();
    // 256 keys of their own (5 each at most) and the /48's shared key (5).
    assert!(total <= 257 * 5, "the /48 got {total}");
    assert!(limiter.stats().tracked_clients <= 257);
}

#[test]
fn validation_refuses_durations_the_admission_path_cannot_compute_with() {
    let too_long = secs(101 * 365 * 86_400);
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                ban: Some(BanPolicy::new(1, secs(1), secs(1)).jitter(too_long)),
                ..Config::default()
            },
            "ban.jitter",
        ),
        (
            Config {
                ban: Some(BanPolicy::new(1, secs(1), too_long)),
                ..Config::default()
            },
            "ban.ban_for",
        ),
        (
            Config {
                connect_rate: Some(RateLimit::new(1, too_long).strategy(Strategy::TokenBucket)),
                ..Config::default()
            },
            "connect_rate.period",
        ),
        (
            Config {
                listener: ListenerConfig {
                    idle_timeout: too_long,
                    ..ListenerConfig::default()
                },
                ..Config::default()
            },
            "listener.idle_timeout",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains("100 years"), "{err}");
    }
}

#[test]
fn no_config_that_validates_panics_the_admission_path() {
    let longest = secs(100 * 365 * 86_400);
    for strategy in [
        Strategy::Cooldown,
        Strategy::FixedWindow,
        Strategy::SlidingWindow,
        Strategy::TokenBucket,
    ] {
        // The most events each strategy counts: a sliding window's counts take 20 bits.
        let most = match strategy {
            Strategy::SlidingWindow => (1 << 20) - 1,
            _ => u32::MAX,
        };
        for events in [1, most] {
            let rule = RateLimit::new(events, longest).strategy(strategy);
            let config = Config {
                connect_rate: Some(rule),
                request_rate: Some(rule.burst(u32::MAX)),
                path_rules: vec![PathRule::prefix("/", rule)],
                ban: Some(
                    BanPolicy::new(1, longest, longest)
                        .escalate(longest)
                        .jitter(longest),
                ),
                ..Config::default()
            };
            let (limiter, clock) = limiter(config);
            let ip = v4(1);
            // Bounded: 40 rounds, over some 400 years of the clock.
            for _ in 0..40 {
                for _ in 0..5 {
                    drop(limiter.try_acquire(ip));
                    drop(limiter.try_acquire_request_to(ip, "GET", "/x"));
                }
                clock.advance(secs(10 * 365 * 86_400));
            }
            limiter.purge_expired();
            assert_eq!(limiter.stats().open_connections, 0);
        }
    }
}

/// A clock that panics when told to, as a stand-in for any panic inside an admission.
#[derive(Debug, Default)]
struct PanickingClock {
    armed: Arc<AtomicBool>,
    fake: FakeClock,
}

impl Clock for PanickingClock {
    fn now(&self) -> Duration {
        assert!(!self.armed.load(Ordering::Relaxed), "the clock failed");
        self.fake.now()
    }
}

#[test]
fn a_panic_inside_an_admission_leaves_no_count_and_no_slot_behind() {
    let clock = PanickingClock::default();
    let armed = Arc::clone(&clock.armed);
    let limiter = Limiter::try_with_clock(
        Config {
            max_conns_per_client: 1,
            max_tracked_clients: 1,
            connect_rate: Some(RateLimit::new(100, secs(1))),
            ..Config::default()
        },
        clock,
    )
    .unwrap();
    armed.store(true, Ordering::Relaxed);
    let panicked = catch_unwind(AssertUnwindSafe(|| limiter.try_acquire(v4(1)).map(drop)));
    assert!(panicked.is_err(), "the admission panicked");
    armed.store(false, Ordering::Relaxed);
    assert_eq!(limiter.stats().open_connections, 0);
    limiter.purge_expired();
    assert_eq!(limiter.stats().tracked_clients, 0, "no slot left behind");
    // The table's one slot and the client's one connection are both there to take.
    let permit = limiter.try_acquire(v4(2)).expect("the slot is free");
    assert_eq!(
        limiter.try_acquire(v4(2)).unwrap_err().reason(),
        RejectReason::ClientConnections
    );
    drop(permit);
}
