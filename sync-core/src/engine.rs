//! The [`Engine`]: watcher → policy → checkpoint → backend, in one task.
//!
//! ```text
//!  inotify ──► Watcher ──dirty set──► Policy::decide ──► detect() ──► pending ──► Backend::push
//!                ▲                                          │                        │ Ok
//!                └──────── add_dir (walks) ◄────────────────┘            Index::apply ◄┘
//! ```
//!
//! * **Start**: the index is loaded from the state directory and the whole
//!   tree is compared with it (stat only; files hashed only when size, mtime
//!   or mode differ), adding inotify watches as directories are walked. What
//!   changed while nothing ran becomes the first checkpoint, pushed at once.
//!   If the index remembers a remote head but the remote is empty (wiped or
//!   re-created), everything is pushed again.
//! * **Running**: changes are debounced by the [`Policy`]; each checkpoint is
//!   pushed in batches. The index advances only after the backend confirms,
//!   and is fsynced before the next push, so a crash re-sends exactly the
//!   unconfirmed changes.
//! * **Failures**: a failed batch goes back into the pending checkpoint, newer
//!   changes are merged into it, and the push is retried with exponential
//!   backoff and jitter. Status shows the error meanwhile. A source file that
//!   changed during the push is re-examined at once.
//! * **Shutdown**: [`EngineHandle::shutdown`] pushes everything pending until a
//!   deadline and reports what it could not save.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendError};
use crate::checkpoint::Checkpoint;
use crate::detect::{self, DirtySet};
use crate::index::{Index, IndexError};
use crate::path::RelPath;
use crate::policy::{Decision, Pending, Policy};
use crate::rules::{IgnoreConfig, IgnoreRules, RulesError};
use crate::source::Source;
use crate::watcher::{WatchMode, Watcher};

/// Retry timing for failed pushes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// First delay (default 1 s).
    pub min_delay: Duration,
    /// Largest delay (default 60 s).
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Everything the engine needs to know.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The directory to keep in sync.
    pub root: PathBuf,
    /// Where the index lives; must be outside `root`.
    pub state_dir: PathBuf,
    /// Ignore rules.
    pub ignore: IgnoreConfig,
    /// Debounce and batching.
    pub policy: Policy,
    /// Backoff for failed pushes.
    pub retry: RetryConfig,
    /// Full-rescan interval when inotify is unavailable (default 30 s).
    pub poll_interval: Duration,
    /// Use inotify (default true); false forces periodic rescans.
    pub use_inotify: bool,
}

impl EngineConfig {
    /// Defaults for syncing `root` with state in `state_dir`.
    pub fn new(root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            root: root.into(),
            state_dir: state_dir.into(),
            ignore: IgnoreConfig::default(),
            policy: Policy::default(),
            retry: RetryConfig::default(),
            poll_interval: Duration::from_secs(30),
            use_inotify: true,
        }
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The synced directory is missing or not a directory.
    #[error("synced directory {path}: {message}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The state directory is inside the synced directory.
    #[error("state directory {state} must be outside the synced directory {root}")]
    StateInsideRoot {
        /// The state directory.
        state: PathBuf,
        /// The synced directory.
        root: PathBuf,
    },
    /// Ignore rules are invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The index could not be loaded.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The engine task is gone.
    #[error("the engine has stopped")]
    Stopped,
}

/// What the engine is doing, for health checks and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// How changes are noticed.
    pub watch_mode: WatchMode,
    /// Paths changed but not yet confirmed by the backend.
    pub pending_paths: usize,
    /// The start-up comparison is done (the first checkpoint is built).
    pub scanned: bool,
    /// When a push last succeeded.
    pub last_success: Option<SystemTime>,
    /// The last push error, cleared by a success.
    pub last_error: Option<String>,
    /// When pushes started failing (cleared by a success).
    pub failing_since: Option<SystemTime>,
    /// Checkpoint batches pushed.
    pub checkpoints_pushed: u64,
    /// Files uploaded.
    pub files_pushed: u64,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
    /// Failed pushes.
    pub push_failures: u64,
    /// Pushes diverted because another writer changed the same paths.
    pub conflicts: u64,
    /// Where the last diverted push went.
    pub last_conflict: Option<String>,
    /// Duration of the last successful push.
    pub last_push_duration: Option<Duration>,
    /// The remote head after the last push.
    pub remote_head: Option<String>,
    /// Full-tree comparisons done (start-up, inotify overflow, polling).
    pub rescans: u64,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            watch_mode: WatchMode::Inotify,
            pending_paths: 0,
            scanned: false,
            last_success: None,
            last_error: None,
            failing_since: None,
            checkpoints_pushed: 0,
            files_pushed: 0,
            bytes_pushed: 0,
            push_failures: 0,
            conflicts: 0,
            last_conflict: None,
            last_push_duration: None,
            remote_head: None,
            rescans: 0,
        }
    }
}

/// What [`EngineHandle::shutdown`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Everything noticed before the deadline was pushed.
    pub flushed: bool,
    /// Paths whose changes were not saved.
    pub unsaved: Vec<RelPath>,
    /// The last push error, if the flush failed.
    pub last_error: Option<String>,
}

/// One push attempt, as it happened; see [`EngineHandle::push_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// How long the backend took.
    pub duration: Duration,
    /// Changed paths in the pushed batch.
    pub paths: usize,
    /// Files uploaded (0 on failure).
    pub files: u64,
    /// Bytes uploaded (0 on failure).
    pub bytes: u64,
    /// The error, if the push failed.
    pub error: Option<String>,
}

enum Command {
    Flush(oneshot::Sender<Result<(), String>>),
    Shutdown(Instant, oneshot::Sender<ShutdownReport>),
}

/// A running engine. Dropping it stops the engine without flushing; call
/// [`shutdown`](Self::shutdown) to save pending changes first.
#[derive(Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<Status>>,
    watcher: Arc<Watcher>,
    events: tokio::sync::broadcast::Sender<PushEvent>,
    task: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EngineHandle {
    /// The current status.
    pub fn status(&self) -> Status {
        let mut s = lock(&self.status).clone();
        s.pending_paths += self.watcher.timing().count;
        s.watch_mode = self.watcher.mode();
        s
    }

    /// Every push attempt from now on, for metrics such as a duration
    /// histogram. A receiver that falls more than 1,024 events behind misses
    /// the oldest ones.
    pub fn push_events(&self) -> tokio::sync::broadcast::Receiver<PushEvent> {
        self.events.subscribe()
    }

    /// Pushes everything noticed so far now, without waiting for the quiet
    /// period. Returns the push error if a push failed.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .await
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.await.map_err(|_| "the engine has stopped".to_string())?
    }

    /// Pushes everything pending, retrying until `grace` has passed, then
    /// stops the engine.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let deadline = Instant::now() + grace;
        let (tx, rx) = oneshot::channel();
        let stopped = ShutdownReport {
            flushed: false,
            unsaved: Vec::new(),
            last_error: Some("the engine has stopped".into()),
        };
        if self
            .commands
            .send(Command::Shutdown(deadline, tx))
            .await
            .is_err()
        {
            return stopped;
        }
        let report = rx.await.unwrap_or(stopped);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        report
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts engines.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Loads the index, compares the tree with it, starts watching, and runs
    /// the engine in a background task of the current tokio runtime.
    pub async fn start(
        config: EngineConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<EngineHandle, EngineError> {
        let root = std::fs::canonicalize(&config.root).map_err(|e| EngineError::Root {
            path: config.root.clone(),
            message: e.to_string(),
        })?;
        if !root.is_dir() {
            return Err(EngineError::Root {
                path: root,
                message: "not a directory".into(),
            });
        }
        std::fs::create_dir_all(&config.state_dir).map_err(|e| {
            EngineError::Index(IndexError::Io {
                op: "create state directory",
                path: config.state_dir.clone(),
                source: e,
            })
        })?;
        let state_dir =
            std::fs::canonicalize(&config.state_dir).unwrap_or(config.state_dir.clone());
        if state_dir.starts_with(&root) {
            return Err(EngineError::StateInsideRoot {
                state: state_dir,
                root,
            });
        }
        let ignore_paths = crate::rules::ignore_file_paths(&root, &config.ignore);
        let ignore_text = match &ignore_paths {
            Some((full, _)) => crate::rules::read_ignore_file(full)?,
            None => None,
        };
        let rules = IgnoreRules::build(&root, &config.ignore, ignore_text.as_deref())?;
        // Live reload needs the watcher to see the file: only inside the tree.
        let ignore_file = ignore_paths.and_then(|(full, inside)| {
            if inside.is_none() {
                tracing::info!(file = %full.display(), "the ignore file is outside the synced directory; its edits apply at the next start");
            }
            inside
        });
        let mut index = Index::open(&state_dir)?;
        let status = Arc::new(Mutex::new(Status {
            remote_head: index.remote_head().map(str::to_owned),
            ..Status::default()
        }));

        // A remote that lost everything we pushed gets everything again.
        if index.remote_head().is_some() {
            match backend.head().await {
                Ok(None) => {
                    tracing::warn!(remote = %backend.describe(), "remote is empty but the index says it was pushed to; pushing everything again");
                    index.replace_all(std::iter::empty(), None)?;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(remote = %backend.describe(), error = %e, "cannot read the remote head; continuing")
                }
            }
        }

        let watcher = Arc::new(Watcher::new(&root, rules.clone(), config.use_inotify));
        watcher.mark_rescan();
        let (tx, rx) = mpsc::channel(16);
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let retry = config.retry;
        let runner = Runner {
            policy: config.policy,
            poll_interval: config.poll_interval,
            backoff_builder: backon::ExponentialBuilder::new()
                .with_min_delay(retry.min_delay)
                .with_max_delay(retry.max_delay)
                .with_jitter()
                .without_max_times(),
            backoff: None,
            source: Source::new(&root),
            root,
            rules,
            ignore: config.ignore.clone(),
            ignore_file,
            ignore_text,
            index: Arc::new(Mutex::new(index)),
            watcher: Arc::clone(&watcher),
            backend,
            pending: Checkpoint::new(),
            retry_at: None,
            status: Arc::clone(&status),
            flush_waiters: Vec::new(),
            shutdown: None,
            next_poll: None,
            startup: true,
            in_flight: 0,
            events: events.clone(),
        };
        let task = tokio::spawn(runner.run(rx));
        Ok(EngineHandle {
            commands: tx,
            status,
            watcher,
            events,
            task: Some(task),
        })
    }
}

struct Runner {
    policy: Policy,
    poll_interval: Duration,
    backoff_builder: backon::ExponentialBuilder,
    backoff: Option<backon::ExponentialBackoff>,
    root: PathBuf,
    source: Source,
    rules: IgnoreRules,
    /// How `rules` were built, to build them again.
    ignore: IgnoreConfig,
    /// The ignore file, when it lies inside the tree (so the watcher sees
    /// it change).
    ignore_file: Option<RelPath>,
    /// Its contents when `rules` were built (`None`: absent or unreadable).
    ignore_text: Option<String>,
    index: Arc<Mutex<Index>>,
    watcher: Arc<Watcher>,
    backend: Arc<dyn Backend>,
    pending: Checkpoint,
    retry_at: Option<Instant>,
    status: Arc<Mutex<Status>>,
    flush_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    shutdown: Option<(Instant, oneshot::Sender<ShutdownReport>)>,
    next_poll: Option<Instant>,
    startup: bool,
    /// Paths taken out of the dirty set or the pending checkpoint and not
    /// yet back or confirmed (being detected or pushed): still pending.
    in_flight: usize,
    events: tokio::sync::broadcast::Sender<PushEvent>,
}

impl Runner {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let now = Instant::now();
            if let Some((deadline, _)) = &self.shutdown
                && now >= *deadline
            {
                self.finish_shutdown(false);
                return;
            }
            self.schedule_poll(now);
            let timing = self.watcher.timing();
            let flush = self.startup || !self.flush_waiters.is_empty() || self.shutdown.is_some();
            let pending = Pending {
                first_change: timing.first,
                last_change: timing.last,
                dirty_paths: timing.count,
                retry_at: self.retry_at,
                // A batch left over from a split checkpoint goes at once too.
                flush: (flush || !self.pending.is_empty()) && self.retry_at.is_none(),
            };
            let wake_at = match self.policy.decide(&pending, now) {
                Decision::CheckpointNow(reason) => {
                    tracing::debug!(?reason, "checkpoint");
                    self.cycle().await;
                    if self.shutdown.is_some()
                        && self.pending.is_empty()
                        && self.watcher.timing().count == 0
                    {
                        self.finish_shutdown(true);
                        return;
                    }
                    continue;
                }
                Decision::WaitUntil(t) => Some(t),
                Decision::Idle => None,
            };
            let wake_at = [wake_at, self.next_poll, self.shutdown.as_ref().map(|s| s.0)]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.watcher.changed() => {}
                cmd = commands.recv() => match cmd {
                    Some(Command::Flush(reply)) => self.flush_waiters.push(reply),
                    Some(Command::Shutdown(deadline, reply)) => self.shutdown = Some((deadline, reply)),
                    None => return,
                },
            }
        }
    }

    fn schedule_poll(&mut self, now: Instant) {
        if matches!(self.watcher.mode(), WatchMode::Polling { .. }) {
            match self.next_poll {
                Some(t) if now >= t => {
                    self.watcher.mark_rescan();
                    self.next_poll = Some(now + self.poll_interval);
                }
                Some(_) => {}
                None => self.next_poll = Some(now + self.poll_interval),
            }
        } else {
            self.next_poll = None;
        }
    }

    /// Detects changes, then pushes one batch of the pending checkpoint.
    async fn cycle(&mut self) {
        let dirty = self.watcher.take_dirty();
        if !dirty.is_empty() {
            self.in_flight = dirty.len();
            self.update_status(|_| {});
            self.detect(dirty).await;
            self.in_flight = 0;
        }
        self.startup = false;
        if self.pending.is_empty() {
            self.retry_at = None;
            self.answer_flush(Ok(()));
            self.update_status(|_| {});
            return;
        }
        let batch = self.policy.take_batch(&mut self.pending);
        self.in_flight = batch.len();
        self.update_status(|_| {});
        let started = Instant::now();
        let push = self.backend.push(&batch, &self.source);
        let result = match self.shutdown.as_ref().map(|s| s.0) {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), push).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::transient(
                    "push",
                    self.backend.describe(),
                    "shutdown deadline reached",
                )),
            },
            None => push.await,
        };
        self.in_flight = 0;
        let paths = batch.len();
        let _ = self.events.send(match &result {
            Ok(r) => PushEvent {
                duration: started.elapsed(),
                paths,
                files: r.files_uploaded,
                bytes: r.bytes_uploaded,
                error: None,
            },
            Err(e) => PushEvent {
                duration: started.elapsed(),
                paths,
                files: 0,
                bytes: 0,
                error: Some(e.to_string()),
            },
        });
        match result {
            Ok(receipt) => {
                let elapsed = started.elapsed();
                let index = Arc::clone(&self.index);
                let head = receipt.head.clone();
                let applied =
                    tokio::task::spawn_blocking(move || lock(&index).apply(&batch, head)).await;
                if let Err(e) | Ok(Err(e)) = applied
                    .map_err(|e| e.to_string())
                    .map(|r| r.map_err(|e| e.to_string()))
                {
                    // The remote has it; only our record is missing, so the
                    // next start pushes it again (idempotent).
                    tracing::error!(error = %e, "pushed, but the index could not be updated");
                }
                self.retry_at = None;
                self.backoff = None;
                tracing::info!(
                    remote = %self.backend.describe(),
                    files = receipt.files_uploaded,
                    bytes = receipt.bytes_uploaded,
                    ms = elapsed.as_millis() as u64,
                    "checkpoint pushed"
                );
                if let Some(c) = &receipt.conflict {
                    tracing::warn!(conflict = %c, "another writer changed the same paths; checkpoint saved to the conflict location");
                }
                self.update_status(|s| {
                    s.checkpoints_pushed += 1;
                    s.files_pushed += receipt.files_uploaded;
                    s.bytes_pushed += receipt.bytes_uploaded;
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                    s.failing_since = None;
                    s.last_push_duration = Some(elapsed);
                    if receipt.head.is_some() {
                        s.remote_head = receipt.head.clone();
                    }
                    if let Some(c) = receipt.conflict {
                        s.conflicts += 1;
                        s.last_conflict = Some(c);
                    }
                });
                if self.pending.is_empty() {
                    self.answer_flush(Ok(()));
                }
            }
            Err(BackendError::SourceChanged { path }) => {
                tracing::debug!(%path, "file changed during push; re-examining it");
                self.pending.merge(batch);
                self.watcher.mark([path]);
                self.retry_at =
                    Some(Instant::now() + self.policy.quiet.min(Duration::from_millis(200)));
            }
            Err(e) => {
                self.pending.merge(batch);
                let delay = self
                    .backoff
                    .get_or_insert_with(|| self.backoff_builder.build())
                    .next()
                    .unwrap_or(Duration::from_secs(60));
                self.retry_at = Some(Instant::now() + delay);
                let msg = e.to_string();
                tracing::warn!(remote = %self.backend.describe(), error = %msg, retry_in_ms = delay.as_millis() as u64, "push failed; will retry");
                self.update_status(|s| {
                    s.push_failures += 1;
                    s.last_error = Some(msg.clone());
                    s.failing_since.get_or_insert_with(SystemTime::now);
                });
                self.answer_flush(Err(msg));
            }
        }
    }

    /// Rebuilds the ignore rules when the ignore file changed: when the
    /// dirty set names it (or asks for a rescan) and its text differs from
    /// the one the rules were built from. Returns true when the rules
    /// changed; the caller then rescans, so paths no longer ignored are
    /// found and paths now ignored stop being synced. Rules that do not
    /// compile are reported and the previous ones kept.
    fn reload_rules_if_changed(&mut self, dirty: &DirtySet) -> bool {
        let Some(file) = &self.ignore_file else {
            return false;
        };
        if !dirty.rescan && !dirty.paths.contains(file) {
            return false;
        }
        let file = file.clone();
        let text = match crate::rules::read_ignore_file(&file.to_path(&self.root)) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "cannot read the ignore file; keeping the previous rules");
                return false;
            }
        };
        if text == self.ignore_text {
            return false;
        }
        let rules = IgnoreRules::build(&self.root, &self.ignore, text.as_deref());
        self.ignore_text = text;
        match rules {
            Ok(rules) => {
                tracing::info!(file = %file, "ignore file changed; rules rebuilt, rescanning");
                self.watcher.set_rules(rules.clone());
                self.rules = rules;
                true
            }
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "ignore file changed but cannot be used; keeping the previous rules");
                false
            }
        }
    }

    async fn detect(&mut self, mut dirty: DirtySet) {
        if self.reload_rules_if_changed(&dirty) {
            dirty.rescan = true;
        }
        let index = Arc::clone(&self.index);
        let watcher = Arc::clone(&self.watcher);
        let rules = self.rules.clone();
        let root = self.root.clone();
        let pending = std::mem::take(&mut self.pending);
        let rescan = dirty.rescan;
        let joined = tokio::task::spawn_blocking(move || {
            let index = lock(&index);
            let found = detect::detect(&root, &rules, &index, &pending, &dirty, &mut |d: &Path| {
                watcher.add_dir(d)
            });
            (pending, found)
        })
        .await;
        let (pending, found) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "change detection failed; rescanning");
                self.watcher.mark_rescan();
                return;
            }
        };
        self.pending = pending;
        self.watcher.mark(found.unstable);
        if !found.refreshed.is_empty() {
            let index = Arc::clone(&self.index);
            let refreshed = found.refreshed;
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || lock(&index).refresh(refreshed)).await
            {
                tracing::warn!(error = %e, "could not refresh index entries");
            }
        }
        self.pending.merge(found.checkpoint);
        self.in_flight = 0;
        self.update_status(|s| {
            s.scanned = true;
            s.rescans += u64::from(rescan);
        });
    }

    fn answer_flush(&mut self, result: Result<(), String>) {
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut Status)) {
        let mut s = lock(&self.status);
        f(&mut s);
        s.pending_paths = self.pending.len() + self.in_flight;
    }

    fn finish_shutdown(&mut self, flushed: bool) {
        let Some((_, reply)) = self.shutdown.take() else {
            return;
        };
        let mut unsaved: Vec<RelPath> = self.pending.paths().cloned().collect();
        unsaved.extend(self.watcher.take_dirty().paths);
        unsaved.sort();
        unsaved.dedup();
        let last_error = lock(&self.status).last_error.clone();
        let flushed = flushed && unsaved.is_empty();
        let _ = reply.send(ShutdownReport {
            flushed,
            unsaved,
            last_error,
        });
    }
}
