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
//!   backoff and jitter (capped at [`RetryConfig::max_delay`]). While a long
//!   backoff runs, the remote is probed ([`Backend::head`]) every
//!   [`PROBE_INTERVAL`]; once it answers, the push is retried at once, so
//!   catching up after an outage takes seconds, not a backoff period.
//!   Status shows the error meanwhile. If the push succeeded but the index
//!   could not be written (state directory full), the batch is treated as
//!   not confirmed: it stays pending, is counted
//!   ([`Status::index_write_failures`]) and is pushed again later, which is
//!   safe because checkpoints are deltas.
//! * **Files that change during a push**: the backend fails with
//!   [`BackendError::SourceChanged`] naming the file. Only that file is
//!   taken out of the batch (counted in [`Status::source_changed`]); the
//!   rest is pushed again at once, and the file is looked at again after
//!   that push. A file that changes during [`SETTLE_AFTER`] consecutive
//!   pushes is pushed from a *settled copy* (see
//!   `source::copy_settled`): one consistent
//!   read of it, copied into the state directory, so it is saved even if it
//!   never stops changing.
//! * **Health**: [`Status::oldest_unsaved_change`] is when the oldest change
//!   not yet confirmed by the remote was noticed; with
//!   [`Status::last_success`] it tells how long changes have waited without
//!   any push succeeding, which is what readiness should judge (a hanging
//!   remote completes no push and fails none).
//! * **Mass deletes**: a checkpoint that would delete more of the remote's
//!   files than [`EngineConfig::delete_guard`] allows (default: more than
//!   100 and more than half) has its deletes held back; everything else is
//!   pushed. They stay held ([`Status::withheld_deletes`], one ERROR line
//!   when the number changes, [`FlushError::MassDelete`] for a flush) until
//!   the files come back (each held path is looked at again at every
//!   checkpoint) or the engine runs without the guard.
//! * **Shutdown**: [`EngineHandle::shutdown`] pushes everything pending until a
//!   deadline. The deadline covers whatever is in flight when it passes: a
//!   push (its future is dropped, which aborts its requests), change
//!   detection or a probe. The report lists every path not confirmed.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendError};
use crate::checkpoint::{Change, Checkpoint};
use crate::detect::{self, DirtySet};
use crate::entry::Meta;
use crate::index::{Index, IndexError};
use crate::path::RelPath;
use crate::policy::{Decision, DeleteGuard, Pending, Policy};
use crate::rules::{IgnoreConfig, IgnoreRules, RulesError};
use crate::source::Source;
use crate::state::{StateDir, StateError};
use crate::watcher::{WatchMode, Watcher};

/// Retry timing for failed pushes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// First delay (default 1 s).
    pub min_delay: Duration,
    /// Largest delay (default 30 s). While waiting longer than
    /// [`PROBE_INTERVAL`], the remote is probed and the push retried as soon
    /// as it answers.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// During a backoff longer than this, the remote is probed this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The same push error is logged again (above DEBUG) at most this often.
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(600);

/// A file that changed during this many consecutive pushes is pushed from a
/// settled copy.
pub const SETTLE_AFTER: u32 = 2;

/// Files larger than this are never copied to settle them; they are looked
/// at again until they hold still.
pub const SETTLE_MAX_BYTES: u64 = 128 << 20;

/// The directory, inside the state directory, holding settled copies.
const COPIES_DIR: &str = "settled";

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
    /// Hash every file in the start-up comparison, not only those whose
    /// size, mtime or mode differ from the index (default false). Finds
    /// content changed behind tether's back with size and mtime restored
    /// while nothing ran; costs reading the whole tree at every start.
    pub verify_hashes: bool,
    /// How the remote is named in the state directory's owner file (see
    /// [`state`](crate::state)); default: [`Backend::describe`].
    pub remote: Option<String>,
    /// The mass-delete guard (default on, [`DeleteGuard::default`]);
    /// `None` pushes every delete.
    pub delete_guard: Option<DeleteGuard>,
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
            verify_hashes: false,
            remote: None,
            delete_guard: Some(DeleteGuard::default()),
        }
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The synced directory is missing or not a directory.
    #[error("synced directory {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: std::io::Error,
    },
    /// The state directory is inside the synced directory.
    #[error("state directory {state} must be outside the synced directory {root}")]
    StateInsideRoot {
        /// The state directory.
        state: PathBuf,
        /// The synced directory.
        root: PathBuf,
    },
    /// The state directory belongs to another directory or remote, or is
    /// in use by another engine.
    #[error(transparent)]
    State(#[from] StateError),
    /// [`Engine::start_with`] was given a state directory other than the
    /// configured one, or one claimed for another directory.
    #[error(
        "state directory {given} (for {given_dir}) is not the configured {configured} (for {root})"
    )]
    StateMismatch {
        /// The configured state directory.
        configured: PathBuf,
        /// The synced directory, canonical.
        root: PathBuf,
        /// The state directory given.
        given: PathBuf,
        /// The directory it was claimed for.
        given_dir: PathBuf,
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

/// Why [`EngineHandle::flush`] did not save everything: the error of the
/// last push attempt (it is retried; see [`Status`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The engine task is gone.
    #[error("the engine has stopped")]
    Stopped,
    /// The backend failed the push.
    #[error(transparent)]
    Push(Arc<BackendError>),
    /// The backend took the push but the index could not record it (a
    /// full or read-only state directory); it is pushed again.
    #[error("pushed, but the index could not be written: {0}")]
    Index(#[source] Arc<IndexError>),
    /// Everything else was pushed, but deletes are held back by the
    /// mass-delete guard ([`EngineConfig::delete_guard`]).
    #[error(
        "{deletes} deletes held back: they would remove {files_deleted} of the {files} files on the remote, more than the mass-delete guard allows"
    )]
    MassDelete {
        /// Paths whose deletes are held back.
        deletes: usize,
        /// Files among them.
        files_deleted: u64,
        /// Files the remote holds (as this writer knows it).
        files: u64,
    },
}

impl FlushError {
    /// True when retrying alone will not help ([`BackendError::is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, FlushError::Push(e) if e.is_permanent())
    }
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
    /// The last push error will not go away by retrying alone
    /// ([`BackendError::is_permanent`]: credentials, a missing bucket or
    /// repository); cleared by a success.
    pub last_error_permanent: bool,
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
    /// When the oldest change not yet confirmed by the remote was noticed
    /// (`None` when everything noticed is saved).
    pub oldest_unsaved_change: Option<SystemTime>,
    /// Pushes interrupted because a file changed while it was read (that
    /// file is retried on its own; the rest is pushed again at once).
    pub source_changed: u64,
    /// Pushes that succeeded but whose record in the index could not be
    /// written (state directory full or read-only); they are pushed again.
    pub index_write_failures: u64,
    /// Deletes held back by the mass-delete guard (also counted in
    /// `pending_paths`); 0 when none are.
    pub withheld_deletes: usize,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            watch_mode: WatchMode::Inotify,
            pending_paths: 0,
            scanned: false,
            last_success: None,
            last_error: None,
            last_error_permanent: false,
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
            oldest_unsaved_change: None,
            source_changed: 0,
            index_write_failures: 0,
            withheld_deletes: 0,
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
    Flush(oneshot::Sender<Result<(), FlushError>>),
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

impl EngineHandle {
    /// The current status.
    pub fn status(&self) -> Status {
        let mut s = self.status.lock().clone();
        let timing = self.watcher.timing();
        s.pending_paths += timing.count;
        if let Some(first) = timing.first {
            let noticed = system_time_of(first);
            s.oldest_unsaved_change =
                Some(s.oldest_unsaved_change.map_or(noticed, |t| t.min(noticed)));
        }
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
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .await
            .map_err(|_| FlushError::Stopped)?;
        rx.await.map_err(|_| FlushError::Stopped)?
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

/// The wall-clock time of an earlier `Instant`.
fn system_time_of(t: Instant) -> SystemTime {
    SystemTime::now()
        .checked_sub(t.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Starts engines.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// Claims and locks the state directory (see [`state`](crate::state):
    /// one belonging to another directory or remote, or in use by another
    /// engine, is refused with [`EngineError::State`]), loads the index,
    /// compares the tree with it, starts watching, and runs the engine in a
    /// background task of the current tokio runtime. The lock is held until
    /// the engine has stopped.
    pub async fn start(
        config: EngineConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<EngineHandle, EngineError> {
        Self::start_in(config, backend, None).await
    }

    /// [`start`](Self::start) with a state directory already claimed and
    /// locked by the caller (who restored into the directory first, see
    /// [`restore_and_seed`](crate::state::restore_and_seed)), so no other
    /// process can take it in between. It must be `config.state_dir`,
    /// claimed for `config.root`.
    pub async fn start_with(
        config: EngineConfig,
        backend: Arc<dyn Backend>,
        state: StateDir,
    ) -> Result<EngineHandle, EngineError> {
        Self::start_in(config, backend, Some(state)).await
    }

    async fn start_in(
        config: EngineConfig,
        backend: Arc<dyn Backend>,
        state: Option<StateDir>,
    ) -> Result<EngineHandle, EngineError> {
        // Canonicalizing, locking the state directory, reading the ignore
        // file and replaying the index journal (phase 1) and resetting the
        // index, removing old copies and setting up inotify watches
        // (phase 2) are blocking file system work: they run off the async
        // workers.
        let prepared = {
            let config = config.clone();
            let remote = config.remote.clone().unwrap_or_else(|| backend.describe());
            blocking(move || prepare(&config, state, &remote)).await??
        };
        let Prepared {
            root,
            state_dir,
            state,
            rules,
            ignore_file,
            ignore_text,
            mut index,
        } = prepared;
        let status = Arc::new(Mutex::new(Status {
            remote_head: index.remote_head().map(str::to_owned),
            ..Status::default()
        }));

        // A remote that lost everything we pushed gets everything again.
        let mut reset = false;
        if index.remote_head().is_some() {
            match backend.head().await {
                Ok(None) => {
                    tracing::warn!(remote = %backend.describe(), "remote is empty but the index says it was pushed to; pushing everything again");
                    reset = true;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(remote = %backend.describe(), error = %e, "cannot read the remote head; continuing")
                }
            }
        }

        let (index, copies, watcher) = {
            let (root, rules, use_inotify) = (root.clone(), rules.clone(), config.use_inotify);
            blocking(move || -> Result<_, EngineError> {
                if reset {
                    index.replace_all(std::iter::empty(), None)?;
                }
                // Settled copies left by a crash are stale: nothing refers
                // to them.
                let copies = state_dir.join(COPIES_DIR);
                match std::fs::remove_dir_all(&copies) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dir = %copies.display(), error = %e, "cannot remove old settled copies")
                    }
                }
                let watcher = Arc::new(Watcher::new(&root, rules, use_inotify));
                watcher.mark_rescan();
                Ok((Locked { index, _state: state }, copies, watcher))
            })
            .await??
        };
        let (tx, rx) = mpsc::channel(16);
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let retry = config.retry;
        let runner = Runner {
            commands: rx,
            copies,
            verify_next_rescan: config.verify_hashes,
            held: BTreeSet::new(),
            streaks: HashMap::new(),
            unsaved_since: None,
            probe_at: None,
            local_failure: false,
            delete_guard: config.delete_guard,
            withheld: Checkpoint::new(),
            withheld_logged: 0,
            policy: config.policy,
            poll_interval: config.poll_interval,
            retry_max: retry.max_delay,
            last_logged_error: None,
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
        let task = tokio::spawn(runner.run());
        Ok(EngineHandle {
            commands: tx,
            status,
            watcher,
            events,
            task: Some(task),
        })
    }
}

/// The index and the lock on its state directory: the lock is released
/// when the runner and every blocking task using the index are done.
struct Locked {
    index: Index,
    _state: StateDir,
}

impl std::ops::Deref for Locked {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.index
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.index
    }
}

/// What [`prepare`] finds on disk.
struct Prepared {
    root: PathBuf,
    state_dir: PathBuf,
    state: StateDir,
    rules: IgnoreRules,
    ignore_file: Option<RelPath>,
    ignore_text: Option<String>,
    index: Index,
}

/// The blocking first half of [`Engine::start`]: checks the directories,
/// claims and locks the state directory (unless `state` is one already),
/// builds the ignore rules and opens the index.
fn prepare(
    config: &EngineConfig,
    state: Option<StateDir>,
    remote: &str,
) -> Result<Prepared, EngineError> {
    let root = std::fs::canonicalize(&config.root).map_err(|source| EngineError::Root {
        path: config.root.clone(),
        source,
    })?;
    if !root.is_dir() {
        return Err(EngineError::Root {
            path: root,
            source: std::io::ErrorKind::NotADirectory.into(),
        });
    }
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        EngineError::Index(IndexError::Io {
            op: "create state directory",
            path: config.state_dir.clone(),
            source: e,
        })
    })?;
    let state_dir = std::fs::canonicalize(&config.state_dir).unwrap_or(config.state_dir.clone());
    if state_dir.starts_with(&root) {
        return Err(EngineError::StateInsideRoot {
            state: state_dir,
            root,
        });
    }
    let state = match state {
        None => StateDir::open(&state_dir, &root, remote)?,
        Some(s) => {
            let given = std::fs::canonicalize(s.path()).unwrap_or_else(|_| s.path().to_owned());
            if given != state_dir || s.dir() != root {
                return Err(EngineError::StateMismatch {
                    configured: state_dir,
                    root,
                    given,
                    given_dir: s.dir().to_owned(),
                });
            }
            s
        }
    };
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
    let index = Index::open(&state_dir)?;
    Ok(Prepared {
        root,
        state_dir,
        state,
        rules,
        ignore_file,
        ignore_text,
        index,
    })
}

/// Runs blocking `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| EngineError::Stopped)
}

struct Runner {
    commands: mpsc::Receiver<Command>,
    policy: Policy,
    poll_interval: Duration,
    backoff_builder: backon::ExponentialBuilder,
    backoff: Option<backon::ExponentialBackoff>,
    /// The longest backoff (used at once for permanent errors).
    retry_max: Duration,
    /// The push error last logged above DEBUG, and when.
    last_logged_error: Option<(String, Instant)>,
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
    index: Arc<Mutex<Locked>>,
    watcher: Arc<Watcher>,
    backend: Arc<dyn Backend>,
    pending: Checkpoint,
    retry_at: Option<Instant>,
    status: Arc<Mutex<Status>>,
    flush_waiters: Vec<oneshot::Sender<Result<(), FlushError>>>,
    shutdown: Option<(Instant, oneshot::Sender<ShutdownReport>)>,
    next_poll: Option<Instant>,
    startup: bool,
    /// Paths taken out of the dirty set or the pending checkpoint and not
    /// yet back or confirmed (being detected or pushed): still pending.
    in_flight: usize,
    events: tokio::sync::broadcast::Sender<PushEvent>,
    /// Where settled copies are written.
    copies: PathBuf,
    /// The next full rescan hashes every file (`--verify-hashes`).
    verify_next_rescan: bool,
    /// Files that changed during the last push: left out of the retry of
    /// the rest, looked at again once it is done.
    held: BTreeSet<RelPath>,
    /// Consecutive pushes each file changed during.
    streaks: HashMap<RelPath, u32>,
    /// When the oldest unconfirmed change taken from the watcher was noticed.
    unsaved_since: Option<SystemTime>,
    /// When to probe the remote during a long backoff.
    probe_at: Option<Instant>,
    /// The last failure was local (the index), so probing the remote says
    /// nothing.
    local_failure: bool,
    /// See [`EngineConfig::delete_guard`].
    delete_guard: Option<DeleteGuard>,
    /// Deletes held back by the guard.
    withheld: Checkpoint,
    /// How many were held back when that was last logged.
    withheld_logged: usize,
}

/// What a push attempt came to.
enum Pushed {
    Ok(crate::backend::PushReceipt),
    Failed(BackendError),
    /// The shutdown deadline passed while it ran; it was dropped.
    Deadline,
}

impl Runner {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            if let Some((deadline, _)) = &self.shutdown
                && now >= *deadline
            {
                self.finish_shutdown(false);
                return;
            }
            self.schedule_poll(now);
            if self.probe_at.is_some_and(|t| now >= t) {
                if !self.probe().await {
                    self.finish_shutdown(false);
                    return;
                }
                continue;
            }
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
                    if !self.cycle().await {
                        self.finish_shutdown(false);
                        return;
                    }
                    if self.shutdown.is_some()
                        && self.pending.is_empty()
                        && self.held.is_empty()
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
            let wake_at = [
                wake_at,
                self.next_poll,
                self.probe_at,
                self.shutdown.as_ref().map(|s| s.0),
            ]
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
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Flush(reply) => self.flush_waiters.push(reply),
            Command::Shutdown(deadline, reply) => {
                self.shutdown = Some((deadline, reply));
                // One more try at once rather than after a long backoff.
                self.retry_at = None;
                self.probe_at = None;
            }
        }
    }

    /// Runs `work` while answering commands; `None` when the shutdown
    /// deadline passed first (`work` is then dropped, which cancels it).
    async fn race<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        let mut open = true;
        loop {
            let deadline = self.shutdown.as_ref().map(|s| s.0);
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                out = &mut work => return Some(out),
                () = sleep => return None,
                cmd = self.commands.recv(), if open => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => open = false,
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

    /// Asks the remote for its head during a long backoff; if it answers,
    /// retries the push at once. False when the shutdown deadline passed.
    async fn probe(&mut self) -> bool {
        self.probe_at = None;
        let backend = Arc::clone(&self.backend);
        let Some(answer) = self.race(async move { backend.head().await }).await else {
            return false;
        };
        let now = Instant::now();
        match answer {
            Ok(_) => {
                tracing::info!(remote = %self.backend.describe(), "the remote answers again; retrying now");
                self.retry_at = Some(now);
                self.backoff = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "probe failed");
                if self.retry_at.is_some_and(|t| t > now + PROBE_INTERVAL) {
                    self.probe_at = Some(now + PROBE_INTERVAL);
                }
            }
        }
        true
    }

    /// Detects changes, then pushes one batch of the pending checkpoint.
    /// False when the shutdown deadline passed meanwhile.
    async fn cycle(&mut self) -> bool {
        let first = self.watcher.timing().first;
        let mut dirty = self.watcher.take_dirty();
        if let Some(first) = first {
            let noticed = system_time_of(first);
            self.unsaved_since = Some(self.unsaved_since.map_or(noticed, |t| t.min(noticed)));
        }
        // Files held out of this round changed during the last push; they
        // are looked at once it is done.
        for p in &self.held {
            dirty.paths.remove(p);
        }
        if !dirty.is_empty() {
            let hash_all = dirty.rescan && self.verify_next_rescan;
            if hash_all {
                self.verify_next_rescan = false;
            }
            self.in_flight = dirty.len();
            self.update_status(|_| {});
            if !self.detect(dirty, hash_all).await {
                return false;
            }
            self.in_flight = 0;
        }
        self.guard_deletes().await;
        self.startup = false;
        if self.pending.is_empty() {
            self.retry_at = None;
            let had_held = !self.held.is_empty();
            self.release_held(true);
            if !had_held {
                let answer = match self.withheld_error() {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
                self.answer_flush(answer);
            }
            self.update_status(|_| {});
            return true;
        }
        let mut batch = self.policy.take_batch(&mut self.pending);
        batch.set_base(self.index.lock().remote_head().map(str::to_owned));
        self.in_flight = batch.len();
        self.update_status(|_| {});
        self.probe_at = None;
        let started = Instant::now();
        let backend = Arc::clone(&self.backend);
        let source = self.source.clone();
        let outcome = match self.race(backend.push(&batch, &source)).await {
            Some(Ok(r)) => Pushed::Ok(r),
            Some(Err(e)) => Pushed::Failed(e),
            None => Pushed::Deadline,
        };
        self.in_flight = 0;
        let paths = batch.len();
        let event = |files, bytes, error| PushEvent {
            duration: started.elapsed(),
            paths,
            files,
            bytes,
            error,
        };
        let _ = self.events.send(match &outcome {
            Pushed::Ok(r) => event(r.files_uploaded, r.bytes_uploaded, None),
            Pushed::Failed(e) => event(0, 0, Some(e.to_string())),
            Pushed::Deadline => event(0, 0, Some("shutdown deadline reached".into())),
        });
        match outcome {
            Pushed::Deadline => {
                let msg = format!(
                    "the shutdown deadline passed while pushing {paths} path(s) to {}; the push was cancelled",
                    self.backend.describe()
                );
                tracing::warn!("{msg}");
                self.pending.merge(batch);
                self.update_status(|s| s.last_error = Some(msg));
                false
            }
            Pushed::Ok(receipt) => {
                self.pushed(batch, receipt, started.elapsed()).await;
                true
            }
            Pushed::Failed(BackendError::SourceChanged { path }) => {
                self.source_changed(batch, path).await
            }
            Pushed::Failed(e) => {
                self.pending.merge(batch);
                self.local_failure = false;
                let permanent = e.is_permanent();
                self.failed(FlushError::Push(Arc::new(e)), permanent);
                true
            }
        }
    }

    /// After a push failed (or its index record could not be written):
    /// backoff, status, probing.
    ///
    /// A `permanent` error (credentials, a missing bucket or repository)
    /// is retried at the slowest backoff, without probes. Each distinct
    /// error is logged once when it first appears (ERROR if permanent,
    /// WARN otherwise); the same error again is logged at DEBUG, with a
    /// reminder every [`REPEAT_LOG_EVERY`].
    fn failed(&mut self, err: FlushError, permanent: bool) {
        let msg = err.to_string();
        let backoff = self
            .backoff
            .get_or_insert_with(|| self.backoff_builder.build());
        let delay = if permanent {
            self.retry_max
        } else {
            backoff.next().unwrap_or(self.retry_max)
        };
        let now = Instant::now();
        self.retry_at = Some(now + delay);
        self.probe_at = (delay > PROBE_INTERVAL && !self.local_failure && !permanent)
            .then(|| now + PROBE_INTERVAL);
        let retry_in_ms = delay.as_millis() as u64;
        let remote = self.backend.describe();
        let repeat = self
            .last_logged_error
            .as_ref()
            .is_some_and(|(m, at)| *m == msg && at.elapsed() < REPEAT_LOG_EVERY);
        if repeat {
            tracing::debug!(%remote, error = %msg, retry_in_ms, "push failed again; will retry");
        } else {
            self.last_logged_error = Some((msg.clone(), now));
            if permanent {
                tracing::error!(%remote, error = %msg, retry_in_ms, "push failed and will keep failing until this is fixed; retrying slowly");
            } else {
                tracing::warn!(%remote, error = %msg, retry_in_ms, "push failed; will retry");
            }
        }
        self.release_held(false);
        self.update_status(|s| {
            s.push_failures += 1;
            s.last_error = Some(msg.clone());
            s.last_error_permanent = permanent;
            s.failing_since.get_or_insert_with(SystemTime::now);
        });
        self.answer_flush(Err(err));
    }

    /// Marks the files held out of the last push dirty again, so they are
    /// looked at: `soon` (shortly after the push they changed in, for a
    /// second try), or when the debounce policy says.
    fn release_held(&mut self, soon: bool) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.watcher.mark(held);
        if soon && self.retry_at.is_none() {
            self.retry_at =
                Some(Instant::now() + self.policy.quiet.min(Duration::from_millis(200)));
        }
    }

    /// Stops serving a settled copy of `path` and deletes it (in the
    /// background). True when there was one.
    fn discard_copy(&self, path: &RelPath) -> bool {
        match self.source.drop_copy(path) {
            Some(copy) => {
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = std::fs::remove_file(&copy)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(file = %copy.display(), error = %e, "cannot remove a settled copy");
                    }
                });
                true
            }
            None => false,
        }
    }

    /// A file changed while the backend read it: push the rest now, and
    /// that file later (from a settled copy if it keeps doing this).
    async fn source_changed(&mut self, mut batch: Checkpoint, path: RelPath) -> bool {
        let streak = {
            let s = self.streaks.entry(path.clone()).or_insert(0);
            *s = s.saturating_add(1);
            *s
        };
        tracing::info!(%path, consecutive = streak, "file changed while it was pushed; pushing the rest without it");
        self.update_status(|s| s.source_changed += 1);
        let change = batch.remove(&path);
        self.pending.merge(batch);
        // (A settled copy never changes; this one is stale, if any.)
        self.discard_copy(&path);
        let settle = matches!(change, Some(Change::Upsert(Meta::File(f)))
                if streak >= SETTLE_AFTER && f.size <= SETTLE_MAX_BYTES);
        if settle {
            let full = path.to_path(&self.root);
            let dir = self.copies.clone();
            let name = blake3::hash(path.as_str().as_bytes()).to_hex().to_string();
            let dest = dir.join(&name[..32]);
            let dest2 = dest.clone();
            let copied = self
                .race(tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    crate::source::copy_settled(&full, &dest2)
                }))
                .await;
            match copied {
                None => {
                    self.held.insert(path);
                    return false;
                }
                Some(Ok(Ok(Some(meta)))) => {
                    tracing::info!(%path, bytes = meta.size, "file never held still; pushing a settled copy of it");
                    self.source.use_copy(path.clone(), dest);
                    self.pending.upsert(path.clone(), Meta::File(meta));
                    // Not looked at again until the copy is pushed.
                    self.held.insert(path);
                }
                Some(Ok(Ok(None))) => {
                    // Gone, not a file, or never still long enough to copy:
                    // look again.
                    self.held.insert(path);
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!(%path, error = %e, dir = %self.copies.display(), "cannot copy a file that keeps changing into the state directory");
                    self.held.insert(path);
                }
                Some(Err(e)) => {
                    tracing::warn!(%path, error = %e, "settled copy failed");
                    self.held.insert(path);
                }
            }
        } else {
            self.held.insert(path);
        }
        if self.pending.is_empty() {
            // Only that file was in the batch: a second look shortly.
            self.release_held(true);
        } else {
            self.retry_at = None;
        }
        self.update_status(|_| {});
        true
    }

    /// The backend confirmed `batch`: record it in the index, then in the
    /// status.
    async fn pushed(
        &mut self,
        batch: Checkpoint,
        receipt: crate::backend::PushReceipt,
        elapsed: Duration,
    ) {
        let index = Arc::clone(&self.index);
        let head = receipt.head.clone();
        let (batch, applied) = match tokio::task::spawn_blocking(move || {
            let r = index.lock().apply(&batch, head);
            (batch, r)
        })
        .await
        {
            Ok((batch, r)) => (Some(batch), r),
            Err(e) => (
                None,
                Err(IndexError::Io {
                    op: "record a push in",
                    path: self.copies.parent().unwrap_or(&self.copies).to_owned(),
                    source: std::io::Error::other(e),
                }),
            ),
        };
        if let Err(e) = applied {
            // The remote has it but our record does not: the batch is not
            // confirmed. Keep it pending and push it again later (deltas
            // make that safe) instead of silently losing track of it.
            tracing::error!(error = %e, "pushed, but the index could not be written; will push again");
            if let Some(batch) = batch {
                self.pending.merge(batch);
            }
            self.local_failure = true;
            self.update_status(|s| s.index_write_failures += 1);
            self.failed(FlushError::Index(Arc::new(e)), false);
            return;
        }
        if let Some(batch) = &batch {
            for p in batch.paths() {
                // A file saved from a settled copy keeps its streak: if it
                // changes during the next push too, it is copied at once.
                if !self.discard_copy(p) {
                    self.streaks.remove(p);
                }
            }
        }
        self.retry_at = None;
        self.probe_at = None;
        self.backoff = None;
        self.local_failure = false;
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
        self.release_held(false);
        self.update_status(|s| {
            s.checkpoints_pushed += 1;
            s.files_pushed += receipt.files_uploaded;
            s.bytes_pushed += receipt.bytes_uploaded;
            s.last_success = Some(SystemTime::now());
            s.last_error = None;
            s.last_error_permanent = false;
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
        if self.pending.is_empty() && self.held.is_empty() {
            let answer = match self.withheld_error() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            self.answer_flush(answer);
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

    /// Compares the dirty paths with the index. False when the shutdown
    /// deadline passed first (the dirty paths are then reported unsaved).
    async fn detect(&mut self, mut dirty: DirtySet, hash_all: bool) -> bool {
        if self.reload_rules_if_changed(&dirty) {
            dirty.rescan = true;
        }
        let index = Arc::clone(&self.index);
        let watcher = Arc::clone(&self.watcher);
        let rules = self.rules.clone();
        let root = self.root.clone();
        let pending = Arc::new(std::mem::take(&mut self.pending));
        let dirty = Arc::new(dirty);
        let rescan = dirty.rescan;
        let (p, d) = (Arc::clone(&pending), Arc::clone(&dirty));
        let joined = self
            .race(tokio::task::spawn_blocking(move || {
                let index = index.lock();
                detect::detect_with(
                    &root,
                    &rules,
                    &index,
                    &p,
                    &d,
                    hash_all,
                    &mut |dir: &Path| watcher.add_dir(dir),
                )
            }))
            .await;
        // The blocking task has dropped its references once it finished.
        self.pending = Arc::unwrap_or_clone(pending);
        let found = match joined {
            None => {
                // Reported unsaved by finish_shutdown.
                self.watcher.mark(dirty.paths.iter().cloned());
                if dirty.rescan {
                    self.watcher.mark_rescan();
                }
                return false;
            }
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                tracing::error!(error = %e, "change detection failed; rescanning");
                self.watcher.mark_rescan();
                return true;
            }
        };
        self.watcher.mark(found.unstable);
        if !found.refreshed.is_empty() {
            let index = Arc::clone(&self.index);
            let refreshed = found.refreshed;
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || index.lock().refresh(refreshed)).await
            {
                tracing::warn!(error = %e, "could not refresh index entries");
            }
        }
        // A fresh look at a file replaces any settled copy of it.
        for p in self.source.copied_paths() {
            if found.checkpoint.get(&p).is_some() {
                self.discard_copy(&p);
            }
        }
        self.pending.merge(found.checkpoint);
        self.in_flight = 0;
        self.update_status(|s| {
            s.scanned = true;
            s.rescans += u64::from(rescan);
        });
        true
    }

    fn answer_flush(&mut self, result: Result<(), FlushError>) {
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }

    /// Applies the mass-delete guard to the pending checkpoint: held-back
    /// deletes whose path exists again are dropped (the file came back;
    /// change detection has seen it), the rest rejoin the pending deletes,
    /// and if together they trip the guard they are all held back again.
    async fn guard_deletes(&mut self) {
        let Some(guard) = self.delete_guard else {
            return;
        };
        if !self.withheld.is_empty() {
            let withheld = std::mem::take(&mut self.withheld);
            let root = self.root.clone();
            // Stat the held-back paths off the async workers.
            let still_gone = blocking(move || {
                let mut gone = Checkpoint::new();
                for p in withheld.deletes() {
                    if std::fs::symlink_metadata(p.to_path(&root)).is_err() {
                        gone.delete(p.clone());
                    }
                }
                gone
            })
            .await
            .unwrap_or_default();
            // Older than anything pending: a newer change to a path wins.
            let newer = std::mem::replace(&mut self.pending, still_gone);
            self.pending.merge(newer);
        }
        let (files_deleted, files) = {
            let index = self.index.lock();
            let deleted = self
                .pending
                .deletes()
                .filter(|p| index.get(p).is_some_and(|m| m.as_file().is_some()))
                .count() as u64;
            let files = if deleted > guard.min_files {
                index.iter().filter(|(_, m)| m.as_file().is_some()).count() as u64
            } else {
                0
            };
            (deleted, files)
        };
        if guard.trips(files_deleted, files) {
            let held: Vec<RelPath> = self.pending.deletes().cloned().collect();
            for p in held {
                self.pending.remove(&p);
                self.withheld.delete(p);
            }
        }
        let n = self.withheld.len();
        if n != self.withheld_logged {
            if n > 0 {
                tracing::error!(
                    remote = %self.backend.describe(),
                    deletes = n,
                    files_deleted,
                    files,
                    "mass-delete guard: holding back {n} deletes ({files_deleted} of the {files} files on the remote); everything else is still pushed. Restore the files, or confirm the deletes by running without the guard"
                );
            } else {
                tracing::info!(remote = %self.backend.describe(), "mass-delete guard: no deletes held back any more");
            }
            self.withheld_logged = n;
        }
        self.update_status(|_| {});
    }

    /// The flush answer while deletes are held back.
    fn withheld_error(&self) -> Option<FlushError> {
        if self.withheld.is_empty() {
            return None;
        }
        let index = self.index.lock();
        let files_deleted = self
            .withheld
            .deletes()
            .filter(|p| index.get(p).is_some_and(|m| m.as_file().is_some()))
            .count() as u64;
        let files = index.iter().filter(|(_, m)| m.as_file().is_some()).count() as u64;
        Some(FlushError::MassDelete {
            deletes: self.withheld.len(),
            files_deleted,
            files,
        })
    }

    fn update_status(&mut self, f: impl FnOnce(&mut Status)) {
        let unsaved = !self.pending.is_empty()
            || self.in_flight > 0
            || !self.held.is_empty()
            || !self.withheld.is_empty();
        if !unsaved {
            self.unsaved_since = None;
        }
        let mut s = self.status.lock();
        f(&mut s);
        s.withheld_deletes = self.withheld.len();
        s.pending_paths =
            self.pending.len() + self.in_flight + self.held.len() + self.withheld.len();
        s.oldest_unsaved_change = self.unsaved_since;
    }

    fn finish_shutdown(&mut self, flushed: bool) {
        let Some((_, reply)) = self.shutdown.take() else {
            return;
        };
        let mut unsaved: Vec<RelPath> = self.pending.paths().cloned().collect();
        unsaved.extend(self.held.iter().cloned());
        unsaved.extend(self.withheld.paths().cloned());
        let dirty = self.watcher.take_dirty();
        let rescan_pending = dirty.rescan;
        unsaved.extend(dirty.paths);
        unsaved.sort();
        unsaved.dedup();
        let last_error = self.status.lock().last_error.clone();
        let flushed = flushed && unsaved.is_empty() && !rescan_pending;
        let _ = reply.send(ShutdownReport {
            flushed,
            unsaved,
            last_error,
        });
    }
}
