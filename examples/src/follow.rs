//! Follow a remote, pull-only: keep a read-only copy of its newest
//! snapshot (or of a folder of it) behind a symlink that is swapped
//! atomically, like git-sync's `--link` (`tether follow`).
//!
//! ```text
//! ROOT/
//!   current -> .releases/<id>        the link the app reads (renamed over, never rewritten)
//!   .releases/<id>/…                 one complete, verified restore per snapshot
//! ```
//!
//! Every [`Follower::sync_once`] asks the backend for its head
//! ([`Backend::head`]); when it differs from the release `current` points
//! at, it restores that exact id ([`RestoreOptions::at`], with
//! [`RestoreOptions::paths`] for `--path`) into a new directory
//! `.releases/<id>`, converts the entry notebook to a script there if
//! asked (the `notebook` crate), and only then makes a new symlink and
//! `rename(2)`s it over `current`. A reader thus sees either the old tree
//! or the new one, never a mix; a failed restore or an invalid notebook
//! leaves `current` as it was. The previous release is kept (a process
//! started in it keeps working until it is restarted); older ones are
//! removed.
//!
//! [`Follower::run`] polls at an interval, doubling the wait after each
//! failure up to a bound (backoff), and calls a hook after each swap.
//! [`FollowMonitor`] holds what `/healthz`, `/readyz` (200 once the first
//! sync is in place) and `/metrics` report, in the spirit of git-sync's
//! `git_sync_count_total{status}` and `git_sync_duration_seconds`.
//!
//! Only the [`Backend`] trait is used, so every remote tether speaks can be
//! followed; nothing is ever pushed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sync_core::{Backend, BackendError, ExistingPolicy, RelPath, RestoreOptions};

/// The directory below the root that holds the releases.
pub const RELEASES: &str = ".releases";

/// The largest notebook converted to a script: it is parsed in memory
/// (a notebook from a remote must not exhaust the container's memory);
/// notebooks this large are almost all embedded output images.
pub const MAX_NOTEBOOK_BYTES: u64 = 64 << 20;

/// Reads a notebook file, refusing one above [`MAX_NOTEBOOK_BYTES`].
pub fn read_notebook(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_NOTEBOOK_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_NOTEBOOK_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB: clear its outputs (Jupyter: Edit → Clear Outputs of All Cells) or deploy a .py script",
            MAX_NOTEBOOK_BYTES >> 20
        )));
    }
    Ok(bytes)
}

/// The wait after a failure that followed a wait of `previous`: doubled,
/// at least `interval`, at most `max`.
pub fn next_backoff(previous: Duration, interval: Duration, max: Duration) -> Duration {
    previous
        .saturating_mul(2)
        .max(interval)
        .min(max.max(interval))
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The backend failed (head or restore).
    #[error("{what}: {source}")]
    Backend {
        /// What was being done.
        what: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A local file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The entry notebook could not be converted.
    #[error("converting {path}: {source}")]
    Notebook {
        /// The notebook, inside the remote.
        path: String,
        /// Why.
        #[source]
        source: notebook::NotebookError,
    },
    /// The link exists and is not a symlink.
    #[error("{} exists and is not a symbolic link: move it away (tether follow owns it)", .0.display())]
    NotALink(PathBuf),
    /// A blocking task was lost.
    #[error("a background task failed: {0}")]
    Task(String),
}

/// What to follow and where.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The root: holds the link and [`RELEASES`].
    pub root: PathBuf,
    /// The link's name in the root.
    pub link: String,
    /// Restore only these paths (empty: everything).
    pub paths: Vec<RelPath>,
    /// A notebook (path inside the remote) converted to `STEM.py` next to
    /// it in every release before the swap.
    pub convert: Option<RelPath>,
    /// Time between polls while all is well.
    pub interval: Duration,
    /// Upper bound of the wait after failures (doubling from `interval`).
    pub max_backoff: Duration,
}

impl FollowOptions {
    /// Options for `root` with git-sync-like defaults: link `current`,
    /// 30 s interval, backoff up to 5 minutes.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            link: "current".into(),
            paths: Vec::new(),
            convert: None,
            interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
        }
    }

    /// The link path.
    pub fn link_path(&self) -> PathBuf {
        self.root.join(&self.link)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// Readiness and metrics of a follower.
#[derive(Debug)]
pub struct FollowMonitor {
    registry: Registry,
    count: Family<StatusLabel, Counter>,
    duration: Family<StatusLabel, Histogram, fn() -> Histogram>,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    ready_gauge: Gauge,
    state: Mutex<MonitorState>,
}

#[derive(Debug, Default)]
struct MonitorState {
    current: Option<String>,
    last_error: Option<String>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0])
}

impl Default for FollowMonitor {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tether_follow");
        let count = Family::<StatusLabel, Counter>::default();
        let duration: Family<StatusLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let last_sync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let ready_gauge = Gauge::default();
        registry.register(
            "sync_count",
            "Sync attempts by status (success: swapped, noop: already current, error)",
            count.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of sync attempts by status",
            duration.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync (swap or noop)",
            last_sync.clone(),
        );
        registry.register(
            "ready",
            "1 once the first sync is in place",
            ready_gauge.clone(),
        );
        Self {
            registry,
            count,
            duration,
            last_sync,
            ready_gauge,
            state: Mutex::new(MonitorState::default()),
        }
    }
}

impl FollowMonitor {
    fn record(&self, status: &'static str, took: Duration) {
        self.count.get_or_create(&StatusLabel { status }).inc();
        self.duration
            .get_or_create(&StatusLabel { status })
            .observe(took.as_secs_f64());
        if status != "error" {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
        }
    }

    fn set_current(&self, id: Option<String>) {
        let ready = id.is_some();
        self.state.lock().current = id;
        self.ready_gauge.set(i64::from(ready));
    }

    /// The id `current` points at, once a sync is in place.
    pub fn current(&self) -> Option<String> {
        self.state.lock().current.clone()
    }

    /// `Ok` once a release is in place; otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        let state = self.state.lock();
        match (&state.current, &state.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(e)) => Err(format!("no sync in place yet; last error: {e}")),
            (None, None) => Err("no sync in place yet".into()),
        }
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode_metrics(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl crate::health::Probe for FollowMonitor {
    fn ready(&self) -> Result<(), String> {
        FollowMonitor::ready(self)
    }
    fn encode_metrics(&self) -> String {
        FollowMonitor::encode_metrics(self)
    }
}

/// `/healthz` (the process answers), `/readyz` (a sync is in place) and
/// `/metrics`: the sidecar's endpoint ([`crate::health::router`]).
pub fn router(monitor: Arc<FollowMonitor>) -> Router {
    crate::health::router(monitor)
}

/// What one [`Follower::sync_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// `current` now points at this new id.
    Swapped(String),
    /// `current` already pointed at the newest id.
    Unchanged(String),
    /// The remote holds nothing yet.
    EmptyRemote,
}

/// Keeps `root/link` on the newest snapshot of a backend.
#[derive(Debug)]
pub struct Follower {
    backend: Arc<dyn Backend>,
    options: FollowOptions,
    monitor: Arc<FollowMonitor>,
}

/// A release directory name for an id: the id itself when it is a plain
/// name (hex commit and snapshot ids are), else its BLAKE3 hash.
fn release_name(id: &str) -> String {
    if !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        id.to_owned()
    } else {
        format!("h-{}", blake3::hash(id.as_bytes()).to_hex())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FollowError> + Send + 'static,
) -> Result<T, FollowError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FollowError::Task(e.to_string()))?
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FollowError {
    let path = path.to_owned();
    move |source| FollowError::Io { what, path, source }
}

/// The release name `link` points at (`.releases/NAME`), if it is a link.
fn read_link(link: &Path) -> Result<Option<String>, FollowError> {
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", link)(e)),
        Ok(m) if !m.file_type().is_symlink() => return Err(FollowError::NotALink(link.into())),
        Ok(_) => {}
    }
    let target = std::fs::read_link(link).map_err(io("reading", link))?;
    Ok(target
        .strip_prefix(RELEASES)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_owned))
}

/// Converts `notebook` (inside `release`) to `STEM.py` next to it.
fn convert_in(release: &Path, notebook: &RelPath) -> Result<(), FollowError> {
    let path = notebook.to_path(release);
    let bytes = read_notebook(&path).map_err(io("reading", &path))?;
    let parsed = notebook::Notebook::parse(&bytes).map_err(|source| FollowError::Notebook {
        path: notebook.to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let script = path.with_extension("py");
    std::fs::write(&script, parsed.to_script(&name)).map_err(io("writing", &script))
}

/// Points `link` at `.releases/name` atomically: a new symlink beside it,
/// renamed over it.
fn swap(root: &Path, link: &Path, name: &str) -> Result<(), FollowError> {
    let target = Path::new(RELEASES).join(name);
    let tmp = root.join(format!(
        ".{}.tmp-{}",
        link.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).map_err(io("creating the link", &tmp))?;
    std::fs::rename(&tmp, link).map_err(io("replacing the link", link))?;
    // The rename is durable once the directory is.
    if let Ok(dir) = std::fs::File::open(root) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Removes every release but `keep`.
fn prune(releases: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if keep.iter().any(|k| name.to_str() == Some(*k)) {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an old release");
        }
    }
}

impl Follower {
    /// A follower of `backend` with `options`.
    pub fn new(backend: Arc<dyn Backend>, options: FollowOptions) -> Self {
        Self {
            backend,
            options,
            monitor: Arc::new(FollowMonitor::default()),
        }
    }

    /// Its monitor (for [`router`]).
    pub fn monitor(&self) -> Arc<FollowMonitor> {
        Arc::clone(&self.monitor)
    }

    /// One poll: the newest id, restored and swapped in when new.
    pub async fn sync_once(&self) -> Result<SyncOutcome, FollowError> {
        let started = Instant::now();
        let result = self.sync_inner().await;
        match &result {
            Ok(SyncOutcome::Swapped(id)) => {
                self.monitor.record("success", started.elapsed());
                self.monitor.set_current(Some(id.clone()));
                self.monitor.state.lock().last_error = None;
            }
            Ok(SyncOutcome::Unchanged(id)) => {
                self.monitor.record("noop", started.elapsed());
                self.monitor.set_current(Some(id.clone()));
                self.monitor.state.lock().last_error = None;
            }
            Ok(SyncOutcome::EmptyRemote) => {
                self.monitor.record("noop", started.elapsed());
                self.monitor.state.lock().last_error =
                    Some("the remote holds no snapshot yet".into());
            }
            Err(e) => {
                self.monitor.record("error", started.elapsed());
                self.monitor.state.lock().last_error = Some(e.to_string());
            }
        }
        result
    }

    async fn sync_inner(&self) -> Result<SyncOutcome, FollowError> {
        let remote = self.backend.describe();
        let head = self
            .backend
            .head()
            .await
            .map_err(|source| FollowError::Backend {
                what: format!("reading the newest state of {remote}"),
                source,
            })?;
        let Some(head) = head else {
            return Ok(SyncOutcome::EmptyRemote);
        };
        let name = release_name(&head.id);
        let root = self.options.root.clone();
        let link = self.options.link_path();
        let current = {
            let link = link.clone();
            blocking(move || read_link(&link)).await?
        };
        if current.as_deref() == Some(name.as_str()) {
            return Ok(SyncOutcome::Unchanged(head.id));
        }
        let releases = root.join(RELEASES);
        let release = releases.join(&name);
        {
            let (releases, release) = (releases.clone(), release.clone());
            blocking(move || {
                std::fs::create_dir_all(&releases).map_err(io("creating", &releases))?;
                // A leftover of an interrupted sync: start it again.
                match std::fs::remove_dir_all(&release) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(io("removing", &release)(e))
                    }
                    _ => Ok(()),
                }
            })
            .await?;
        }
        let options = RestoreOptions {
            at: Some(head.id.clone()),
            existing: ExistingPolicy::Fail,
            paths: self.options.paths.clone(),
            ..RestoreOptions::default()
        };
        self.backend
            .restore(&release, &options)
            .await
            .map_err(|source| FollowError::Backend {
                what: format!("restoring {} of {remote}", head.id),
                source,
            })?;
        let convert = self.options.convert.clone();
        let previous = current.clone();
        blocking(move || {
            if let Some(notebook) = &convert {
                convert_in(&release, notebook)?;
            }
            swap(&root, &link, &name)?;
            let mut keep = vec![name.as_str()];
            if let Some(p) = previous.as_deref() {
                keep.push(p);
            }
            prune(&releases, &keep);
            Ok(())
        })
        .await?;
        tracing::info!(id = %head.id, remote = %remote, "swapped in a new snapshot");
        Ok(SyncOutcome::Swapped(head.id))
    }

    /// Polls until `stop` resolves: every `interval` while all is well,
    /// doubling the wait after each failure up to `max_backoff`. Calls
    /// `on_change(id)` after every swap (the first included).
    pub async fn run<F, S>(&self, mut on_change: F, stop: S)
    where
        F: FnMut(&str),
        S: std::future::Future<Output = ()>,
    {
        tokio::pin!(stop);
        let mut backoff = self.options.interval;
        loop {
            let wait = match self.sync_once().await {
                Ok(outcome) => {
                    if let SyncOutcome::Swapped(id) = &outcome {
                        on_change(id);
                    }
                    backoff = self.options.interval;
                    self.options.interval
                }
                Err(e) => {
                    let wait = backoff;
                    tracing::warn!(error = %e, retry_in = ?wait, "sync failed; the link is unchanged");
                    backoff =
                        next_backoff(backoff, self.options.interval, self.options.max_backoff);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let s = Duration::from_secs;
        let mut wait = s(30);
        let mut seen = Vec::new();
        for _ in 0..6 {
            wait = next_backoff(wait, s(30), s(300));
            seen.push(wait.as_secs());
        }
        assert_eq!(seen, [60, 120, 240, 300, 300, 300]);
        // A bound below the interval never shortens the interval.
        assert_eq!(next_backoff(s(1), s(30), s(5)), s(30));
    }

    #[test]
    fn oversized_notebooks_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("big.ipynb");
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        file.set_len(MAX_NOTEBOOK_BYTES + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = read_notebook(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("larger than 64 MiB")));
        std::fs::write(&path, b"{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_notebook(&path).ok(), Some(b"{}".to_vec()));
    }

    #[test]
    fn release_names_are_plain() {
        assert_eq!(release_name("abc-123"), "abc-123");
        assert!(release_name("../x").starts_with("h-"));
        assert!(release_name(".hidden").starts_with("h-"));
        assert!(release_name("").starts_with("h-"));
    }
}
