//! Reloading the config from its file while the server runs (feature `reload`): on `SIGHUP`,
//! and whenever the file changes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::try_new(Config::from_file("limits.toml")?)?;
//! // Kept alive as long as the file should be watched; dropping it stops the watching.
//! let _watcher = tower_connlimit::reload::watch(&limiter, "limits.toml")?;
//! # Ok(()) }
//! ```
//!
//! A reload reads the file, parses it (TOML, or JSON for a `.json` file) and installs it with
//! [`Limiter::set_config`], which validates it first. A file that cannot be read, parsed or
//! validated changes nothing: the running config stays, and the error is logged at `error`
//! level with the field, the reason, and the line and column when the file has them. Fix the
//! file and save it again, or send `SIGHUP`.
//!
//! The directory holding the file is watched, not the file itself, so that an editor that
//! saves by writing a new file and renaming it over the old one (vim, most others) is seen too.
//! Changes arriving within [`SETTLE`] of each other are read once. A change that leaves the
//! file's text as it was is not reloaded; a `SIGHUP` always is.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch as state};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::ConfigError;
use crate::limiter::Limiter;

/// How long a reload waits after a change for the next one, so that a save made of several
/// writes is read once, when complete.
pub const SETTLE: Duration = Duration::from_millis(100);

/// What the watcher has done so far, for logs, tests and health checks:
/// [`ConfigWatcher::outcomes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Configs read from the file and put in force.
    pub applied: u64,
    /// Reloads refused: the file could not be read, parsed or validated.
    pub refused: u64,
    /// Why the last refused reload was refused; `None` once a reload succeeds.
    pub last_error: Option<ConfigError>,
}

/// Watches a config file and reloads it into a limiter: see the [module docs](self). Dropping
/// it stops the watching.
#[derive(Debug)]
pub struct ConfigWatcher {
    tasks: Vec<JoinHandle<()>>,
    outcomes: state::Receiver<Outcomes>,
    // Kept for as long as the file is watched.
    _watcher: notify::RecommendedWatcher,
}

impl ConfigWatcher {
    /// What the watcher has done so far; `changed().await` on it waits for the next reload.
    pub fn outcomes(&self) -> state::Receiver<Outcomes> {
        self.outcomes.clone()
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why a reason to reload arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Changed,
    Hangup,
}

/// Reloads the config of `limiter` from the file at `path` whenever the file changes, and on
/// `SIGHUP` (on Unix). Call it from within a tokio runtime; the reloads run in a task of their
/// own. The file is not read now: build the limiter from it first, with [`Config::from_file`].
///
/// # Errors
///
/// When the directory holding the file cannot be watched, or the `SIGHUP` handler cannot be
/// installed.
pub fn watch(limiter: &Limiter, path: impl Into<PathBuf>) -> io::Result<ConfigWatcher> {
    let path = std::path::absolute(path.into())?;
    let directory = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let (causes, mut caused) = mpsc::unbounded_channel();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let changes = causes.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = event.is_ok_and(|event| {
            !event.kind.is_access()
                && event
                    .paths
                    .iter()
                    .any(|changed| changed.file_name() == file_name.as_deref())
        });
        if ours {
            let _ = changes.send(Cause::Changed);
        }
    })
    .map_err(io::Error::other)?;
    watcher
        .watch(&directory, notify::RecursiveMode::NonRecursive)
        .map_err(io::Error::other)?;
    let mut tasks = Vec::new();
    #[cfg(unix)]
    {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let hangup = causes.clone();
        tasks.push(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if hangup.send(Cause::Hangup).is_err() {
                    break;
                }
            }
        }));
    }
    drop(causes);
    let (report, outcomes) = state::channel(Outcomes::default());
    let limiter = limiter.clone();
    // The text in force, read before returning, so that a change made right after is seen.
    let mut last_text = std::fs::read_to_string(&path).ok();
    tasks.push(tokio::spawn(async move {
        while let Some(mut cause) = caused.recv().await {
            // Let a save made of several writes finish, and read it once.
            while let Ok(Some(more)) = tokio::time::timeout(SETTLE, caused.recv()).await {
                if more == Cause::Hangup {
                    cause = Cause::Hangup;
                }
            }
            let text = std::fs::read_to_string(&path).ok();
            if cause == Cause::Changed && text.is_some() && text == last_text {
                continue;
            }
            let reloaded = Config::from_file(&path).and_then(|config| limiter.set_config(config));
            report.send_modify(|outcomes| match reloaded {
                Ok(()) => {
                    tracing::info!(path = %path.display(), ?cause, "config reloaded");
                    outcomes.applied += 1;
                    outcomes.last_error = None;
                    last_text = text;
                }
                Err(err) => {
                    tracing::error!(
                        path = %path.display(),
                        field = err.field(),
                        reason = err.reason(),
                        location = ?err.location(),
                        "config file refused; the running config stays"
                    );
                    outcomes.refused += 1;
                    outcomes.last_error = Some(err);
                }
            });
        }
    }));
    Ok(ConfigWatcher {
        tasks,
        outcomes,
        _watcher: watcher,
    })
}
