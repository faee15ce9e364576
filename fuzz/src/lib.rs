//! Checks shared by the fuzz targets in `fuzz_targets/`.

use std::net::IpAddr;
use std::time::Duration;

use tower_connlimit::{Config, ConfigError, FakeClock, Limiter};

/// Addresses that hit the interesting key paths: IPv4, IPv6, IPv4-mapped IPv6, loopback, and
/// the networks of `examples/config.toml` (exempt, override, trusted proxy).
const CLIENTS: [&str; 7] = [
    "127.0.0.1",
    "10.1.2.3",
    "203.0.113.9",
    "192.0.2.10",
    "::1",
    "2001:db8::1",
    "::ffff:198.51.100.7",
];

/// What a parsed config must satisfy: an error names something; a config that parsed is
/// valid, builds a limiter, is accepted by `set_config`, and the limiter admits and releases
/// connections and requests under it without panicking and without leaking a count.
pub fn check_config(parsed: Result<Config, ConfigError>) {
    let config = match parsed {
        Ok(config) => config,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an empty error: {err:?}");
            return;
        }
    };
    if let Err(err) = config.validate() {
        panic!("a parsed config does not validate: {err}\n{config:?}");
    }
    let clock = FakeClock::new();
    let limiter = match Limiter::try_with_clock(config.clone(), clock.clone()) {
        Ok(limiter) => limiter,
        Err(err) => panic!("a parsed config builds no limiter: {err}\n{config:?}"),
    };
    let routes = [("GET", "/"), ("POST", "/login"), ("GET", "/api/users")];
    for round in 0..3 {
        let mut held = Vec::new();
        for (i, client) in CLIENTS.iter().enumerate() {
            let ip: IpAddr = client.parse().unwrap();
            held.push(limiter.try_acquire(ip).ok());
            let (method, path) = &routes[(i + round) % routes.len()];
            let request = limiter.try_acquire_request_to(ip, method, path);
            let _ = limiter.open_connections(ip);
            let _ = limiter.client(ip);
            drop(request);
        }
        let _ = limiter.top_clients(3);
        drop(held);
        let stats = limiter.stats();
        assert_eq!(stats.open_connections, 0, "permits leaked: {stats:?}");
        assert_eq!(stats.in_flight_requests, 0, "permits leaked: {stats:?}");
        clock.advance(Duration::from_secs(1));
    }
    // The same config, swapped in live, is accepted too.
    if let Err(err) = limiter.set_config(config.clone()) {
        panic!("set_config refuses a parsed config: {err}\n{config:?}");
    }
    limiter.purge_expired();
}
