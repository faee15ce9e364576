//! `redis-server` processes on free loopback ports, for the fleet's tests and benchmark
//! (`scripts/test.sh` installs Debian's `redis-server` and `redis-tools`): one server, with a
//! password, a memory cap or TLS if asked, or a Redis Cluster of three masters. Each is
//! stopped when dropped; every wait is bounded.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start.
const START: Duration = Duration::from_secs(10);

/// A running `redis-server`, stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Child,
    password: Option<String>,
    tls: bool,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`, at most [`START`].
fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < START, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `requirepass`.
    pub password: Option<String>,
    /// `maxmemory`, with `maxmemory-policy noeviction`.
    pub maxmemory: Option<String>,
    /// TLS only, with this directory's `ca.pem`, `server.pem` and `server.key`.
    pub tls: Option<PathBuf>,
    /// Extra arguments.
    pub args: Vec<String>,
}

impl Options {
    /// A server that wants `password`.
    pub fn password(password: &str) -> Options {
        Options {
            password: Some(password.to_owned()),
            ..Options::default()
        }
    }

    /// A server of at most `maxmemory`, refusing writes beyond it.
    pub fn maxmemory(maxmemory: &str) -> Options {
        Options {
            maxmemory: Some(maxmemory.to_owned()),
            ..Options::default()
        }
    }

    /// A TLS server, with the certificates in `dir` ([`make_certificates`]).
    pub fn tls(dir: &Path) -> Options {
        Options {
            tls: Some(dir.to_owned()),
            ..Options::default()
        }
    }
}

impl Redis {
    /// A server on a free port.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// A server on `port` (to restart one where it was, empty), once it accepts connections.
    pub fn start_on(port: u16) -> Redis {
        Redis::with(port, Options::default())
    }

    /// A server on `port`, started with `options`.
    pub fn with(port: u16, options: Options) -> Redis {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"]);
        match &options.tls {
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port.to_string()]);
            }
        }
        if let Some(password) = &options.password {
            command.args(["--requirepass", password]);
        }
        if let Some(maxmemory) = &options.maxmemory {
            command.args(["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]);
        }
        command.args(&options.args);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server: `scripts/test.sh` installs it (Debian's redis-server)");
        wait_for_port(port, "redis-server");
        Redis {
            port,
            child,
            password: options.password,
            tls: options.tls.is_some(),
        }
    }

    /// The URL to reach it, with its password if it has one.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    /// `redis-cli` against this server: its output (trimmed). Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.password.as_deref(), args)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-cli -p PORT ARGS…`, with the password if any: its output, trimmed.
pub fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(password) = password {
        command.args(["--no-auth-warning", "-a", password]);
    }
    let output = command
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("redis-cli: `scripts/test.sh` installs it (Debian's redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A Redis Cluster of three masters (no replicas) on free ports, stopped when dropped.
pub struct Cluster {
    pub nodes: Vec<Redis>,
    dir: PathBuf,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = temp_dir("cluster");
        let nodes: Vec<Redis> = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.join(format!("nodes-{i}.conf")).display().to_string();
                let options = Options {
                    args: vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf,
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                    ..Options::default()
                };
                Redis::with(port, options)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = Command::new("redis-cli")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("redis-cli: `scripts/test.sh` installs it (Debian's redis-tools)");
        assert!(output.success(), "redis-cli --cluster create failed");
        // Bounded: until every node says the cluster is ok, at most 10 s.
        let started = Instant::now();
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(started.elapsed() < START, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        Cluster { nodes, dir }
    }

    /// The seed URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// How many keys each master holds.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.cli(&["DBSIZE"]).parse().unwrap())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system's temporary one.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "connlimit-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl: `scripts/test.sh` installs it");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
}
