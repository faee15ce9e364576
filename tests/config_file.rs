//! Loading configs from TOML and JSON: every field, defaults, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;

use tower_connlimit::{
    client_ip::ClientIpHeader, config::WhenFull, listener::ProxyProtocol, rate::PathMatch,
    rate::Strategy, Config,
};

#[test]
fn the_documented_example_loads_every_field() {
    let text = std::fs::read_to_string("examples/config.toml").unwrap();
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.max_conns_per_client, 10);
    assert_eq!(config.max_conns_total, 10_000);
    assert_eq!(config.max_requests_per_client, 32);
    assert_eq!(config.when_full, WhenFull::EvictStalest);
    assert_eq!(config.exempt.len(), 2);
    assert_eq!(config.overrides[0].max_conns_per_client, 200);
    let connect = config.connect_rate.unwrap();
    assert_eq!(
        (connect.events, connect.period),
        (10, Duration::from_secs(1))
    );
    assert_eq!(connect.strategy, Strategy::Cooldown);
    let request = config.request_rate.unwrap();
    assert_eq!(
        (request.strategy, request.burst),
        (Strategy::TokenBucket, 50)
    );
    assert_eq!(config.path_rules[0].method.as_deref(), Some("POST"));
    assert_eq!(config.path_rules[0].rate.period, Duration::from_secs(60));
    assert_eq!(config.path_rules[1].matching, PathMatch::Prefix);
    assert!(config.path_rules[1].rate.dry_run);
    let ban = config.ban.unwrap();
    assert_eq!(ban.max_ban_for, Duration::from_secs(24 * 3600));
    assert!(ban.escalate);
    let listener = config.listener;
    assert_eq!(listener.handshake_timeout, Duration::from_secs(10));
    assert_eq!(listener.idle_timeout, Duration::from_secs(300));
    let min_rate = listener.min_receive_rate.unwrap();
    assert_eq!(
        (min_rate.bytes_per_sec, min_rate.grace),
        (500, Duration::from_secs(10))
    );
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(listener.proxy_protocol, ProxyProtocol::Off);
    assert_eq!(listener.proxy_header_timeout, Duration::from_secs(5));
    assert_eq!(config.client_ip.header, ClientIpHeader::XForwardedFor);
    assert_eq!(config.client_ip.trusted_hops, 1);
    tower_connlimit::Limiter::try_new(config).unwrap();
}

#[test]
fn proxy_fields_are_checked_together_and_named() {
    assert_eq!(
        toml_error("[listener]\nproxy_protocol = \"required\"").0,
        "trusted_proxies"
    );
    let err = Config::from_toml_str("[client_ip]\nheader = \"x-forwarded-host\"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: client_ip.header: expected one of: none, forwarded, x-forwarded-for, \
         x-real-ip (line 2, column 10)"
    );
    let (field, _) = toml_error(
        r#"
        trusted_proxies = ["192.0.2.10"]
        [client_ip]
        header = "forwarded"
        trusted_hops = 0
        "#,
    );
    assert_eq!(field, "client_ip.trusted_hops");
    let (field, _) = toml_error(
        r#"
        trusted_proxies = ["192.0.2.10"]
        [listener]
        proxy_protocol = "required"
        proxy_header_timeout = "0s"
        "#,
    );
    assert_eq!(field, "listener.proxy_header_timeout");
    let err = Config::from_json_str(
        r#"{"listener": {"min_receive_rate": {"bytes_per_sec": 0, "grace": "1s"}}}"#,
    )
    .unwrap_err();
    assert_eq!(err.field(), "listener.min_receive_rate.bytes_per_sec");
    let config = Config::from_toml_str(
        r#"
        trusted_proxies = ["192.0.2.10"]
        listener = { proxy_protocol = "required" }
        "#,
    )
    .unwrap();
    assert_eq!(config.listener.proxy_protocol, ProxyProtocol::Required);
    let (field, _) = toml_error(
        r#"
        trusted_proxies = ["192.0.2.10"]
        listener = { proxy_protocol = "required" }
        client_ip = { header = "x-real-ip" }
        "#,
    );
    assert_eq!(field, "client_ip.header");
}

#[test]
fn syntax_and_type_errors_say_where() {
    let err =
        Config::from_toml_str("max_conns_per_client = 5\nexempt = [\"10.0.0.0/8\"\n").unwrap_err();
    let location = err.location().expect("a syntax error has a place");
    assert_eq!((location.line, location.column), (2, 23), "{err}");
    let err = Config::from_toml_str("a = 1\na = 2").unwrap_err();
    assert_eq!(err.location().map(|l| l.line), Some(2), "{err}");
    let err = Config::from_json_str("{\n  \"max_conns_total\": \"many\"\n}").unwrap_err();
    assert_eq!(err.field(), "max_conns_total");
    let location = err.location().unwrap();
    assert_eq!((location.line, location.column), (2, 27), "{err}");
    let err = Config::from_json_str("{\"ipv6_prefix\": 64").unwrap_err();
    assert!(err.location().is_some(), "{err}");
    // What validation refuses has no place in the file: the field names it.
    let err = Config::from_toml_str("\n\nipv4_prefix = 40").unwrap_err();
    assert_eq!((err.field(), err.location()), ("ipv4_prefix", None));
}

#[test]
fn left_out_fields_keep_their_defaults_and_strategies_follow_the_rule() {
    let config = Config::from_toml_str(
        r#"
        [connect_rate]
        events = 1
        period = "100ms"
        [request_rate]
        events = 5
        period = "1s"
        "#,
    )
    .unwrap();
    assert_eq!(config.max_conns_per_client, 100);
    assert_eq!(config.connect_rate.unwrap().strategy, Strategy::Cooldown);
    assert_eq!(
        config.request_rate.unwrap().strategy,
        Strategy::SlidingWindow
    );
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(Config::from_json_str("{}").unwrap(), Config::default());
}

#[test]
fn json_loads_the_same_config() {
    let config = Config::from_json_str(
        r#"{"max_conns_per_client": 3, "exempt": ["192.0.2.0/24"],
            "path_rules": [{"path": "/x", "match": "prefix", "rate": {"events": 2, "period": "5s"}}]}"#,
    )
    .unwrap();
    assert_eq!(config.max_conns_per_client, 3);
    assert_eq!(config.path_rules[0].rate.period, Duration::from_secs(5));
}

/// `Config::from_file` needs only `serde` (this file's feature), not `reload`: a TOML file loads
/// as its text does, a `.json` file is read as JSON, and a file that cannot be read is an error
/// for the field `(file)` naming the path.
#[test]
fn a_file_is_read_as_toml_or_by_its_name_as_json() {
    let toml = "max_conns_per_client = 3\n\n[listener]\nidle_timeout = \"5m\"\n";
    let json = r#"{"max_conns_per_client": 3, "listener": {"idle_timeout": "5m"}}"#;
    let dir =
        std::env::temp_dir().join(format!("tower-connlimit-from-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let from_toml = Config::from_file(write("limits.toml", toml));
    let from_json = Config::from_file(write("limits.json", json));
    // The JSON text in a file not named .json is read as TOML, which it is not.
    let json_as_toml = Config::from_file(write("limits.conf", json));
    let missing = dir.join("missing.toml");
    let from_nothing = Config::from_file(&missing);
    let _ = std::fs::remove_dir_all(&dir);

    let expected = Config::from_toml_str(toml).unwrap();
    assert_eq!(expected.listener.idle_timeout, Duration::from_secs(300));
    assert_eq!(from_toml.unwrap(), expected);
    assert_eq!(from_json.unwrap(), expected);
    assert_eq!(json_as_toml.unwrap_err().field(), "(toml)");
    let err = from_nothing.unwrap_err();
    assert_eq!(err.field(), "(file)");
    assert!(
        err.reason().contains(&missing.display().to_string()),
        "{err}"
    );
}

fn toml_error(text: &str) -> (String, String) {
    let err = Config::from_toml_str(text).unwrap_err();
    (err.field().to_owned(), err.reason().to_owned())
}

#[test]
fn bad_files_get_errors_that_name_the_field_and_the_reason() {
    let (field, reason) = toml_error("max_conns_per_clinet = 5");
    assert_eq!(field, "max_conns_per_clinet");
    assert!(reason.contains("unknown field"), "{reason}");

    let (field, reason) = toml_error("exempt = [\"10.0.0.0/8\", \"10.0.0.1/8\"]");
    assert_eq!(field, "exempt[1]");
    assert!(reason.contains("host bits set"), "{reason}");

    let (field, reason) =
        toml_error("[[path_rules]]\npath = \"/a\"\nrate = { events = 1, period = \"soon\" }");
    assert_eq!(field, "path_rules[0].rate.period");
    assert!(!reason.is_empty());

    let (field, reason) = toml_error(
        "[[path_rules]]\npath = \"/a\"\nmethod = \"GE T\"\nrate = { events = 1, period = \"1s\" }",
    );
    assert_eq!(field, "path_rules[0].method");
    assert!(reason.contains("not an HTTP method"), "{reason}");

    let (field, _) = toml_error("max_conns_total = -1");
    assert_eq!(field, "max_conns_total");

    let (field, reason) =
        toml_error("[ban]\nmax_violations = 0\nwithin = \"1m\"\nban_for = \"1m\"");
    assert_eq!(
        (field.as_str(), reason.as_str()),
        (
            "ban.max_violations",
            "must be at least 1: 0 cannot mean unlimited here (leave `ban` out for no limit)"
        )
    );
    // Every count where 0 cannot mean unlimited says the same.
    for (text, field, leave_out) in [
        (
            "[connect_rate]\nevents = 0\nperiod = \"1s\"",
            "connect_rate.events",
            "connect_rate",
        ),
        (
            "[listener.min_receive_rate]\nbytes_per_sec = 0\ngrace = \"1s\"",
            "listener.min_receive_rate.bytes_per_sec",
            "min_receive_rate",
        ),
    ] {
        let (got, reason) = toml_error(text);
        assert_eq!(got, field);
        assert_eq!(
            reason,
            format!("must be at least 1: 0 cannot mean unlimited here (leave `{leave_out}` out for no limit)")
        );
    }

    let (field, _) = toml_error("when_full = \"panic\"");
    assert_eq!(field, "when_full");

    let err = Config::from_json_str(r#"{"ipv6_prefix": 129}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: ipv6_prefix: must be at most 128, got 129"
    );
    let err = Config::from_json_str(r#"{"ipv6_prefix": 64"#).unwrap_err();
    assert!(!err.reason().is_empty());
}
