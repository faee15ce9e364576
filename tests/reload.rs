//! Reloading the config from its file while the limiter runs: an edit takes effect within a
//! second, a broken edit changes nothing, a save by rename is seen, and `SIGHUP` reloads.
#![cfg(feature = "reload")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tower_connlimit::reload::{self, Outcomes};
use tower_connlimit::{Config, Limiter};

/// How long a test waits for the watcher, at most.
const WAIT: Duration = Duration::from_secs(10);

/// A directory of its own for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-connlimit-reload-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A limiter built from a file named `name` holding `text`, and a watcher reloading it.
struct Watched {
    scratch: Scratch,
    path: PathBuf,
    limiter: Limiter,
    outcomes: watch::Receiver<Outcomes>,
    _watcher: reload::ConfigWatcher,
}

fn watched(name: &str, text: &str) -> Watched {
    let scratch = Scratch::new();
    let path = scratch.file(name, text);
    let limiter = Limiter::try_new(Config::from_file(&path).unwrap()).unwrap();
    let watcher = reload::watch(&limiter, &path).unwrap();
    Watched {
        outcomes: watcher.outcomes(),
        scratch,
        path,
        limiter,
        _watcher: watcher,
    }
}

/// Waits, at most [`WAIT`], until the watcher's outcomes satisfy `done`.
async fn wait_for(outcomes: &mut watch::Receiver<Outcomes>, done: impl FnMut(&Outcomes) -> bool) {
    tokio::time::timeout(WAIT, outcomes.wait_for(done))
        .await
        .expect("the watcher reloaded in time")
        .expect("the watcher is running");
}

#[tokio::test]
async fn an_edit_takes_effect_within_a_second_and_a_broken_one_changes_nothing() {
    let w = watched("limits.toml", "max_conns_per_client = 5\n");
    let (path, limiter, mut outcomes) = (&w.path, &w.limiter, w.outcomes.clone());

    let edited = Instant::now();
    std::fs::write(path, "max_conns_per_client = 7\n").unwrap();
    wait_for(&mut outcomes, |o| o.applied == 1).await;
    assert!(
        edited.elapsed() < Duration::from_secs(1),
        "{:?}",
        edited.elapsed()
    );
    assert_eq!(limiter.config().max_conns_per_client, 7);

    // A value of the wrong type: refused, named with its line and column; the limits stay.
    std::fs::write(path, "max_conns_per_client = \"many\"\n").unwrap();
    wait_for(&mut outcomes, |o| o.refused == 1).await;
    let error = outcomes.borrow().last_error.clone().unwrap();
    assert_eq!(error.field(), "max_conns_per_client");
    assert_eq!(error.location().map(|l| l.line), Some(1));
    assert_eq!(limiter.config().max_conns_per_client, 7);

    // A value validation refuses: the same.
    std::fs::write(path, "ipv4_prefix = 40\n").unwrap();
    wait_for(&mut outcomes, |o| o.refused == 2).await;
    assert_eq!(
        outcomes.borrow().last_error.as_ref().unwrap().field(),
        "ipv4_prefix"
    );
    assert_eq!(limiter.config().max_conns_per_client, 7);
    assert_eq!(limiter.config().ipv4_prefix, 32);

    // Fixed: in force again.
    std::fs::write(path, "max_conns_per_client = 9\n").unwrap();
    wait_for(&mut outcomes, |o| o.applied == 2).await;
    assert_eq!(limiter.config().max_conns_per_client, 9);
    assert!(outcomes.borrow().last_error.is_none());
}

#[tokio::test]
async fn a_save_by_rename_is_seen() {
    let w = watched("limits.json", "{\"max_conns_per_client\": 5}");
    let (path, limiter, mut outcomes) = (&w.path, &w.limiter, w.outcomes.clone());
    // As vim and most editors save: a new file, renamed over the old one.
    let fresh = w
        .scratch
        .file("limits.json.swp", "{\"max_conns_per_client\": 11}");
    std::fs::rename(&fresh, path).unwrap();
    wait_for(&mut outcomes, |o| o.applied == 1).await;
    assert_eq!(limiter.config().max_conns_per_client, 11);
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_file() {
    let w = watched("limits.toml", "max_conns_per_client = 5\n");
    let (limiter, mut outcomes) = (&w.limiter, w.outcomes.clone());
    // The text is unchanged: only the signal asks for this reload.
    assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
    wait_for(&mut outcomes, |o| o.applied == 1).await;
    assert_eq!(limiter.config().max_conns_per_client, 5);
}
