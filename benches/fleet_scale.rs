//! What a fleet costs its Redis as the fleet grows: N = 2, 8 and 32 limiters (in this process,
//! each with its own fleet task and connection) against one real `redis-server`, with the same
//! total traffic whatever N, over K active clients, under one rule or two.
//!
//! `cargo bench --bench fleet_scale --features redis` (needs `redis-server` and `redis-cli`;
//! `scripts/test.sh` installs them). Each client sends 10 requests a second, evenly spread, each
//! to the next node in turn (round robin), so that every client is active on every node and in
//! every sync interval whatever N; the request rate allows 5 a second, so half are refused. With
//! two rules, a path rule (`/api`, 20 a second) counts the same requests too.
//!
//! Before and after each run, Redis's own counters are read (`INFO commandstats`, `INFO stats`:
//! `total_net_input_bytes` and `total_net_output_bytes`, `INFO cpu`: `used_cpu_user` and
//! `used_cpu_sys`), and the figures are given per *client-rule sync*: one client's events
//! under one rule sent by one node in one sync (one `INCRBY`), the unit of the fleet's work.
//! The fleet-rate overshoot is what the whole fleet admitted of one client in each one-second
//! window against the rule's 5: its mean, and the worst window of any client.
//!
//! Environment: `FLEET_CLIENTS` (default 1000), `FLEET_SECONDS` measured per run (default 5).

#[path = "../tests/support/redis.rs"]
mod redis_server;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use redis_server::Redis;
use tower_connlimit::fleet::{Fleet, FleetConfig};
use tower_connlimit::rate::PathRule;
use tower_connlimit::{Config, Limiter, RateLimit};

/// Requests per client per second, and what the request rate allows.
const SENDS: u32 = 10;
const ALLOWED: u32 = 5;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(rules: usize) -> Config {
    let second = Duration::from_secs(1);
    Config {
        request_rate: Some(RateLimit::new(ALLOWED, second)),
        path_rules: if rules == 2 {
            vec![PathRule::prefix("/api", RateLimit::new(20, second))]
        } else {
            Vec::new()
        },
        ..Config::default()
    }
}

/// Redis's counters at one moment.
#[derive(Debug, Default, Clone)]
struct Counters {
    commands: HashMap<String, u64>,
    bytes_in: u64,
    bytes_out: u64,
    cpu: f64,
}

fn counters(redis: &Redis) -> Counters {
    let info = redis.cli(&["INFO", "all"]);
    let mut c = Counters::default();
    for line in info.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        if let Some(command) = name.strip_prefix("cmdstat_") {
            let calls = value
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            c.commands.insert(command.to_owned(), calls);
        }
        match name {
            "total_net_input_bytes" => c.bytes_in = value.parse().unwrap_or(0),
            "total_net_output_bytes" => c.bytes_out = value.parse().unwrap_or(0),
            "used_cpu_user" | "used_cpu_sys" => c.cpu += value.parse::<f64>().unwrap_or(0.0),
            _ => {}
        }
    }
    c
}

/// One run's figures.
struct Run {
    nodes: usize,
    rules: usize,
    client_rule_syncs: u64,
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
    cpu: f64,
    seconds: f64,
    mean_ratio: f64,
    worst: u32,
}

async fn run(nodes: usize, rules: usize, clients: u32, seconds: u64) -> Run {
    let redis = Redis::start();
    let config = config(rules);
    let mut fleet = Vec::new();
    for i in 0..nodes {
        let limiter = Limiter::new(config.clone());
        let mut joining = FleetConfig::new(redis.url(), format!("n{i}"));
        joining.sync_interval = Duration::from_millis(100);
        let joined = Fleet::join(&limiter, joining).await.unwrap();
        fleet.push((limiter, joined));
    }
    let ips: Vec<IpAddr> = (0..clients)
        .map(|c| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + c)))
        .collect();
    // Ticks of 10 ms: client c sends at the ticks where (tick + c) % 10 == 0, 10 a second.
    let tick = Duration::from_millis(10);
    let warmup = 1;
    let total_ticks = (warmup + seconds) * 100;
    let mut sent = vec![0u32; clients as usize];
    // Admitted per client per one-second window of the measured part.
    let mut admitted = vec![vec![0u32; seconds as usize]; clients as usize];
    let mut before = None;
    let started = Instant::now();
    let mut measured_from = started;
    for t in 0..total_ticks {
        if t == warmup * 100 {
            before = Some(counters(&redis));
            measured_from = Instant::now();
        }
        let deadline = started + tick * (t as u32 + 1);
        for c in 0..clients as usize {
            if (t as usize + c) % 10 != 0 {
                continue;
            }
            let node = (c + sent[c] as usize) % nodes;
            sent[c] += 1;
            let ok = fleet[node]
                .0
                .try_acquire_request_to(ips[c], "GET", "/api/items")
                .is_ok();
            if ok && t >= warmup * 100 {
                let window = ((t - warmup * 100) / 100) as usize;
                admitted[c][window] += 1;
            }
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    let after = counters(&redis);
    let before = before.unwrap();
    let calls = |name: &str| {
        after.commands.get(name).copied().unwrap_or(0)
            - before.commands.get(name).copied().unwrap_or(0)
    };
    let commands: u64 = after
        .commands
        .keys()
        .filter(|name| !matches!(name.as_str(), "info" | "config"))
        .map(|name| calls(name))
        .sum();
    let windows: Vec<u32> = admitted.iter().flatten().copied().collect();
    let mean_ratio = windows.iter().map(|n| f64::from(*n)).sum::<f64>()
        / windows.len() as f64
        / f64::from(ALLOWED);
    let run = Run {
        nodes,
        rules,
        client_rule_syncs: calls("incrby"),
        commands,
        bytes_in: after.bytes_in - before.bytes_in,
        bytes_out: after.bytes_out - before.bytes_out,
        cpu: after.cpu - before.cpu,
        seconds: elapsed,
        mean_ratio,
        worst: windows.iter().copied().max().unwrap_or(0),
    };
    drop(fleet);
    run
}

fn main() {
    let clients = env("FLEET_CLIENTS", 1000) as u32;
    let seconds = env("FLEET_SECONDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{clients} active clients, {SENDS} requests/s each (round robin over the nodes), request \
         rate {ALLOWED}/s; {seconds} s measured per run; sync every 100 ms"
    );
    println!(
        "| nodes | rules | client-rule syncs/s | Redis commands per client-rule sync | bytes in | \
         bytes out | Redis CPU µs | commands/s | Redis CPU | admitted / rule, mean | worst window |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for rules in [1, 2] {
        for nodes in [2, 8, 32] {
            let r = runtime.block_on(run(nodes, rules, clients, seconds));
            let per = r.client_rule_syncs.max(1) as f64;
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0}% | {:.2} | {} ({:.1}×) |",
                r.nodes,
                r.rules,
                per / r.seconds,
                r.commands as f64 / per,
                r.bytes_in as f64 / per,
                r.bytes_out as f64 / per,
                r.cpu * 1e6 / per,
                r.commands as f64 / r.seconds,
                r.cpu / r.seconds * 100.0,
                r.mean_ratio,
                r.worst,
                f64::from(r.worst) / f64::from(ALLOWED),
            );
        }
    }
}
