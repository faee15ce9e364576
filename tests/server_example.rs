//! The `server` example's own logic: rates and bans written with durations, `--trusted-hops`,
//! a bad value refused with its whole reason and an example, the start-up line of the limits in
//! force, and the refusal report, over real loopback sockets.
#![cfg(all(feature = "axum", feature = "serve"))]

#[path = "../examples/server.rs"]
#[allow(dead_code)]
mod server;
mod support;

use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use tower_connlimit::serve::Serve;
use tower_connlimit::{
    ban::BanPolicy, Config, ConnLimitLayer, ConnLimitListener, Limiter, RateLimit, RejectReason,
};

use server::{limits_line, refusal_report, Args, Mode, Refusals};
use support::*;

/// The server's flags, parsed as from its command line.
fn args(flags: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("server").chain(flags.iter().copied()))
}

/// The config the flags describe.
fn config(flags: &[&str]) -> Config {
    args(flags).unwrap().config().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn rates_and_bans_take_durations_and_bare_seconds() {
    for (flag, events, period) in [
        ("5/500ms", 5, ms(500)),
        ("100/1m", 100, secs(60)),
        ("10/60s", 10, secs(60)),
        // A bare number is seconds, as before durations were taken.
        ("10/60", 10, secs(60)),
        ("5/0.5", 5, ms(500)),
        ("1/0.000000001", 1, Duration::from_nanos(1)),
    ] {
        assert_eq!(
            config(&["--request-rate", flag]).request_rate,
            Some(RateLimit::new(events, period)),
            "--request-rate {flag}"
        );
    }
    for (flag, violations, within, ban_for) in [
        ("5/1m/10m", 5, secs(60), secs(600)),
        ("5/60/600", 5, secs(60), secs(600)),
        ("3/0.25/90s", 3, ms(250), secs(90)),
    ] {
        assert_eq!(
            config(&["--ban", flag]).ban,
            Some(BanPolicy::new(violations, within, ban_for)),
            "--ban {flag}"
        );
    }
    let none = config(&[]);
    assert_eq!((none.request_rate, none.ban), (None, None));
}

/// What reaches the terminal is clap's rendered error: it must name the value and the flag, say
/// what is wrong with the value, and show how to write one.
#[test]
fn a_bad_rate_or_ban_is_refused_with_its_whole_reason_and_an_example() {
    for (flag, value, reason) in [
        (
            "--request-rate",
            "5/abc",
            r#""abc" is not a duration (500ms, 10s, 1m) or a number"#,
        ),
        ("--request-rate", "5", r#""5" is not N/PERIOD"#),
        (
            "--request-rate",
            "x/1m",
            r#""x" is not a whole number of requests"#,
        ),
        ("--request-rate", "5/0.5.5", r#""0.5.5" is not a duration"#),
        ("--request-rate", "5/.5", r#"".5" is not a duration"#),
        (
            "--request-rate",
            "5/1.0000000001",
            r#""1.0000000001" is not a duration"#,
        ),
        (
            "--ban",
            "5/1m",
            r#""5/1m" is not VIOLATIONS/WITHIN/BAN_FOR"#,
        ),
        (
            "--ban",
            "x/1m/10m",
            r#""x" is not a whole number of violations"#,
        ),
        ("--ban", "5/x/10m", r#"WITHIN "x" is not a duration"#),
        ("--ban", "5/1m/zz", r#"BAN_FOR "zz" is not a duration"#),
    ] {
        let err = args(&[flag, value]).expect_err(value);
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flag} {value}");
        let text = err.render().to_string();
        let example = match flag {
            "--request-rate" => "write N/PERIOD, such as 5/500ms, 100/1m or 10/60 (seconds)",
            _ => "write VIOLATIONS/WITHIN/BAN_FOR, such as 5/1m/10m or 5/60/600 (seconds)",
        };
        for part in [
            &format!("invalid value '{value}' for '{flag} <"),
            reason,
            example,
        ] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
    }
}

#[test]
fn trusted_hops_reach_the_config_and_the_crate_checks_them() {
    assert_eq!(config(&[]).client_ip.trusted_hops, 1);
    let behind = |hops: &str| {
        config(&[
            "--trusted-proxy",
            "10.0.0.0/8",
            "--client-ip-header",
            "x-forwarded-for",
            "--trusted-hops",
            hops,
        ])
    };
    assert_eq!(behind("2").client_ip.trusted_hops, 2);
    assert!(Limiter::try_new(behind("2")).is_ok());
    let err = Limiter::try_new(behind("0")).unwrap_err();
    assert_eq!(err.field(), "client_ip.trusted_hops");
    // Hops count entries of the header: without one they would mean nothing.
    let alone = args(&["--trusted-hops", "2"]).unwrap_err();
    assert_eq!(alone.kind(), ErrorKind::MissingRequiredArgument);
    // A config file says it instead.
    let with_file = args(&["--config", "limits.toml", "--trusted-hops", "2"]).unwrap_err();
    assert_eq!(with_file.kind(), ErrorKind::ArgumentConflict);
}

#[test]
fn the_start_up_line_names_the_limits_in_force() {
    let config = config(&[
        "--max-per-client",
        "3",
        "--max-requests",
        "8",
        "--request-rate",
        "5/500ms",
        "--ban",
        "5/60/600",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy",
        "192.168.0.0/16",
        "--client-ip-header",
        "x-forwarded-for",
        "--trusted-hops",
        "2",
        "--idle-timeout",
        "90m",
        "--min-rate",
        "100",
    ]);
    let common = "max-per-client=3 max-total=off max-requests=8 request-rate=5/500ms \
                  ban=5/1m/10m trusted-proxies=10.0.0.0/8,192.168.0.0/16 \
                  client-ip-header=x-forwarded-for trusted-hops=2";
    assert_eq!(
        limits_line(&config, Mode::Listener, secs(10)),
        format!(
            "{common} handshake-timeout=off idle-timeout=1h30m min-rate=100B/s header-timeout=10s"
        )
    );
    // Only the listener applies the deadlines.
    assert_eq!(
        limits_line(&config, Mode::MakeService, secs(10)),
        format!("{common} deadlines=off (only --mode listener applies them)")
    );
    assert_eq!(
        limits_line(&config, Mode::Off, secs(10)),
        "none: --mode off serves with no limiter"
    );

    // What only a config file sets is shown when set; a long list of proxies is cut short.
    let file = Config {
        connect_rate: Some(RateLimit::new(5, secs(1)).dry_run()),
        exempt: vec!["192.0.2.0/24".parse().unwrap()],
        trusted_proxies: (1..=6)
            .map(|n| format!("10.0.{n}.0/24").parse().unwrap())
            .collect(),
        ..Config::default()
    };
    let line = limits_line(&file, Mode::Listener, secs(10));
    for part in [
        "max-per-client=100 ",
        " connect-rate=5/1s(dry-run) exempt=1 ",
        " trusted-proxies=10.0.1.0/24,10.0.2.0/24,10.0.3.0/24,10.0.4.0/24(+2 more) ",
        " client-ip-header=off ",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

#[tokio::test]
async fn refusals_are_reported_per_reason_with_the_flag_that_governs_them() {
    let mut config = Config {
        max_conns_per_client: 1,
        ..Config::default()
    };
    config.listener.handshake_timeout = ms(200);
    let limiter = Limiter::try_new(config).unwrap();
    // The example's stack in `--mode listener`.
    let app = server::routes()
        .layer(ConnLimitLayer::with_limiter(limiter.clone()))
        .with_state(limiter.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = Serve::new(ConnLimitListener::new(tcp, limiter.clone()), app);
    let addr = served.local_addr().unwrap();
    tokio::spawn(served.run());
    let before = Refusals::of(&limiter);

    // 127.0.0.3 holds its one connection and is refused two more.
    let mut held = http1_client(connect_from(3, addr).await).await;
    assert_eq!(h1_get(&mut held, "/").await.0, 200);
    for _ in 0..2 {
        assert!(was_refused(&mut connect_from(3, addr).await).await);
    }
    // 127.0.0.4 says nothing, and the handshake deadline closes it.
    assert!(was_refused(&mut connect_from(4, addr).await).await);
    wait_until("the two refusals and the close are counted", || {
        let stats = limiter.stats();
        stats.rejected[RejectReason::ClientConnections] == 2
            && stats.closed.get("handshake_timeout") == Some(1)
    })
    .await;

    let now = Refusals::of(&limiter);
    assert_eq!(
        refusal_report(&before, &now, false),
        [
            "client_connections: 2 refused in the last 10s; see --max-per-client",
            "handshake_timeout: 1 connection closed early in the last 10s; see --handshake-timeout",
        ]
    );
    // With --config, the hint names the file's field instead of the flag.
    assert_eq!(
        refusal_report(&before, &now, true),
        [
            "client_connections: 2 refused in the last 10s; see max_conns_per_client in the \
             config file",
            "handshake_timeout: 1 connection closed early in the last 10s; see \
             listener.handshake_timeout in the config file",
        ]
    );
    // Nothing new since: nothing to say.
    assert_eq!(
        refusal_report(&now, &Refusals::of(&limiter), false),
        Vec::<String>::new()
    );
    drop(held);
}
