//! [`GitBackend`]: the [`Backend`] implementation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::EntryKind;
use gix::refs::transaction::PreviousValue;
use sync_core::restore::{FileSpec, PlanKind, RestorePlan, RestoreWriter, WriterSettings};
use sync_core::{
    Backend, BackendError, Capabilities, Checkpoint, HistoryEntry, PushReceipt, RemoteHead,
    RestoreOptions, RestoreReport, Source,
};

use crate::command::{GitRunner, TokenSource, classify};
use crate::options::GitOptions;
use crate::remote::{ConfigError, GitRemote, RemoteKind, validate_branch};
use crate::tree::{
    Changes, Leaf, MODES_PATH, Modes, TreeReader, apply_changes, apply_checkpoint, commit_message,
    file_mode, is_reserved, local_error, merge_modes, overlapping, write_modes,
};

/// The remote head as last confirmed by a push or adopted from a fetch:
/// the parent of the next commit.
const BASE_REF: &str = "refs/tether/base";
/// Where `git fetch` puts the remote branch.
const FETCHED_REF: &str = "refs/tether/fetched";
/// How often a push is rebased onto a branch that keeps moving before the
/// push fails (and the engine retries later).
const MAX_REBASES: u32 = 5;
/// Blobs larger than this are restored through `git cat-file`, streaming,
/// instead of being loaded whole.
const STREAM_BLOB_ABOVE: u64 = 32 << 20;
/// Packs in the local repository above which a push is followed by
/// `git gc --auto` (git's own `gc.autoPackLimit`).
const GC_PACK_LIMIT: usize = 50;
/// After a failed gc (a full disk or a memory limit would fail it again at
/// once), or one that left too many loose objects, the next waits this long.
const GC_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Paths listed in one commit message at most.
const MESSAGE_LINES: usize = 200;
/// Conflicts of one writer less than this apart are one episode: they
/// update one conflict branch instead of creating one each.
pub(crate) const CONFLICT_EPISODE_GAP: Duration = Duration::from_secs(600);

/// A [`Backend`] that makes every checkpoint a git commit and pushes it.
///
/// See the [crate documentation](crate) for the design. Construct with
/// [`GitBackend::from_url`].
pub struct GitBackend {
    remote: GitRemote,
    runner: GitRunner,
    author: (String, String),
    host: String,
    /// See [`GitOptions::gc_loose_objects`].
    gc_loose_objects: usize,
    /// See [`GitOptions::max_entries`].
    max_entries: u64,
    /// The background `git gc` (at most one at a time).
    maintenance: Arc<Maintenance>,
    /// Serialises pushes, fetches and restores on the local repository.
    state: tokio::sync::Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    /// The remote branch was fetched at least once by this instance.
    fetched_once: bool,
    /// The conflict branch this writer updates while conflicts keep coming.
    episode: Option<Episode>,
}

/// One writer's run of conflicts: its branch, the branch's tip and when
/// the last conflict happened (seconds since the epoch). Kept in
/// [`EPISODE_FILE`] in the state directory so it outlives the process
/// (`--once` runs, restarts).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Episode {
    branch: String,
    tip: String,
    last_s: u64,
}

/// Where the current conflict episode is kept, in the state directory.
const EPISODE_FILE: &str = "conflict-episode.json";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Episode {
    /// The episode recorded in `state_dir`, if it is recent and valid.
    async fn load(state_dir: &Path) -> Option<Episode> {
        let bytes = tokio::fs::read(state_dir.join(EPISODE_FILE)).await.ok()?;
        let ep: Episode = serde_json::from_slice(&bytes).ok()?;
        let recent = now_s().saturating_sub(ep.last_s) < CONFLICT_EPISODE_GAP.as_secs();
        (recent
            && validate_branch(&ep.branch).is_ok()
            && ObjectId::from_hex(ep.tip.as_bytes()).is_ok())
        .then_some(ep)
    }

    /// Records this episode (best effort: without it the next conflict
    /// starts a new branch, nothing is lost).
    async fn save(&self, state_dir: &Path) {
        let Ok(bytes) = serde_json::to_vec(self) else {
            return;
        };
        if let Err(e) = tokio::fs::write(state_dir.join(EPISODE_FILE), bytes).await {
            tracing::debug!(error = %e, "cannot record the conflict episode");
        }
    }
}

impl std::fmt::Debug for GitBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitBackend")
            .field("remote", &self.remote.to_string())
            .field("state_dir", &self.runner.state_dir)
            .finish_non_exhaustive()
    }
}

/// A commit to be: the tree, its parent and what it changes.
#[derive(Debug, Clone)]
struct Proposal {
    base: Option<ObjectId>,
    base_tree: ObjectId,
    tree: ObjectId,
    /// Every changed path: (existed in the base, entry afterwards).
    ours: BTreeMap<BString, (bool, Option<Leaf>)>,
}

impl Proposal {
    fn changes(&self) -> Changes {
        self.ours
            .iter()
            .map(|(p, (_, l))| (p.clone(), *l))
            .collect()
    }
}

enum PushOutcome {
    Pushed,
    /// The remote branch is not where we thought (another writer pushed).
    Moved,
}

enum Resolution {
    Rebased(Proposal),
    Conflict(Proposal, Vec<BString>),
}

/// Opens the local bare repository, ignoring system and user configuration
/// (gix's handles are not `Send` without its `parallel` feature, so each
/// blocking task opens its own; that costs a config read).
fn open_repo(dir: &Path) -> Result<gix::Repository, gix::Error> {
    gix::open_opts(dir, gix::open::Options::isolated())
}

fn empty_tree() -> ObjectId {
    ObjectId::empty_tree(gix::hash::Kind::Sha1)
}

fn read_ref(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, BackendError> {
    match repo.try_find_reference(name) {
        Ok(Some(r)) => Ok(r.target().try_id().map(ToOwned::to_owned)),
        Ok(None) => Ok(None),
        Err(e) => Err(local_error(name, e)),
    }
}

fn write_ref(repo: &gix::Repository, name: &str, id: ObjectId) -> Result<(), BackendError> {
    repo.reference(name, id, PreviousValue::Any, "tether")
        .map(|_| ())
        .map_err(|e| local_error(name, e))
}

fn commit_tree(repo: &gix::Repository, commit: ObjectId) -> Result<ObjectId, BackendError> {
    let c = repo
        .find_commit(commit)
        .map_err(|e| BackendError::InvalidRemote {
            object: format!("commit {commit}"),
            reason: e.to_string(),
        })?;
    c.tree_id()
        .map(gix::Id::detach)
        .map_err(|e| BackendError::InvalidRemote {
            object: format!("commit {commit}"),
            reason: e.to_string(),
        })
}

/// Our changes: what the tree `tree` changes relative to `base_tree`.
fn diff_with_origin(
    reader: &mut TreeReader<'_>,
    base_tree: ObjectId,
    tree: ObjectId,
) -> Result<BTreeMap<BString, (bool, Option<Leaf>)>, BackendError> {
    let changes = reader.diff(Some(base_tree), Some(tree))?;
    let mut out = BTreeMap::new();
    for (path, leaf) in changes {
        let existed = reader
            .lookup(base_tree, path.as_bstr())?
            .is_some_and(|e| e.kind != EntryKind::Tree);
        out.insert(path, (existed, leaf));
    }
    Ok(out)
}

/// Keeps a branch-name component to the characters git and humans like.
pub(crate) fn sanitize_component(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_matches(|c| c == '.' || c == '-')
        .replace("..", "-");
    if cleaned.is_empty() || cleaned.ends_with(".lock") {
        "unknown".into()
    } else {
        cleaned.chars().take(63).collect()
    }
}

/// `tether/conflict/<host>/<UTC time>-<short commit id>`.
pub(crate) fn conflict_branch(host: &str, seconds: i64, commit: &ObjectId) -> String {
    let time = gix::date::Time::new(seconds, 0)
        .format(gix::date::time::CustomFormat::new("%Y%m%dT%H%M%SZ"))
        .unwrap_or_else(|_| seconds.to_string());
    let hex = commit.to_hex().to_string();
    format!(
        "tether/conflict/{host}/{time}-{}",
        &hex[..hex.len().min(10)]
    )
}

fn default_host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map_err(|e| ConfigError::File {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(ConfigError::File {
                    what,
                    path: path.display().to_string(),
                    reason: "not a regular file".into(),
                })
            }
        })
}

impl GitBackend {
    /// A backend for the git remote at `url` (see [`crate::remote`] for the
    /// accepted forms), keeping its bare repository in
    /// `options.state_dir`. Checks the options and creates (or opens) the
    /// local repository; it does not contact the remote.
    pub fn from_url(url: &str, options: GitOptions) -> Result<Self, ConfigError> {
        let remote = GitRemote::parse(url)?;
        for s in [&options.author_name, &options.author_email] {
            if s.is_empty() || s.contains(['<', '>', '\n', '\r', '\0']) {
                return Err(ConfigError::InvalidAuthor(s.clone()));
            }
        }
        if remote.kind() == RemoteKind::Ssh {
            let kh = options.known_hosts_file.as_deref().ok_or_else(|| {
                ConfigError::MissingKnownHosts {
                    url: remote.url().to_owned(),
                }
            })?;
            check_file("known_hosts file", kh)?;
            if let Some(key) = &options.ssh_key_file {
                check_file("ssh key file", key)?;
            }
        }
        let token = match (&options.token_file, &options.token_env) {
            (Some(f), _) => {
                check_file("token file", f)?;
                TokenSource::File(f.clone())
            }
            (None, Some(name)) => {
                if std::env::var(name).map_or(true, |v| v.trim().is_empty()) {
                    return Err(ConfigError::MissingTokenEnv { name: name.clone() });
                }
                TokenSource::Env(name.clone())
            }
            (None, None) => TokenSource::None,
        };
        let state_err = |e: &dyn std::fmt::Display| ConfigError::File {
            what: "state directory",
            path: options.state_dir.display().to_string(),
            reason: e.to_string(),
        };
        // 0700 whatever the umask: it holds credentials and the tree's history.
        sync_core::state::create_state_dir(&options.state_dir).map_err(|e| state_err(&e))?;
        let repo_dir = options.state_dir.join("repo.git");
        if repo_dir.join("HEAD").is_file() {
            open_repo(&repo_dir).map_err(|e| state_err(&e))?;
        } else {
            gix::init_bare(&repo_dir).map_err(|e| state_err(&e))?;
        }
        let host = sanitize_component(&options.host_name.clone().unwrap_or_else(default_host));
        let http_user = options
            .http_user
            .clone()
            .or_else(|| remote.user().map(str::to_owned))
            .unwrap_or_else(|| "tether".into());
        let runner = GitRunner {
            git: options.git_program.clone(),
            ssh: options.ssh_program.clone(),
            repo_dir,
            state_dir: options.state_dir.clone(),
            remote: remote.clone(),
            ssh_key: options.ssh_key_file.clone(),
            known_hosts: options.known_hosts_file.clone(),
            token,
            http_user,
            nss_wrapper: options.nss_wrapper_library.clone(),
            timeout: options.command_timeout,
            stall_timeout: options.request_timeout,
        };
        Ok(GitBackend {
            remote,
            runner,
            author: (options.author_name, options.author_email),
            host,
            gc_loose_objects: options.gc_loose_objects,
            max_entries: options.max_entries,
            maintenance: Arc::default(),
            state: tokio::sync::Mutex::new(LocalState::default()),
        })
    }

    /// The remote this backend pushes to.
    pub fn remote(&self) -> &GitRemote {
        &self.remote
    }

    /// The bare repository kept in the state directory.
    pub fn local_repository(&self) -> &Path {
        &self.runner.repo_dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&gix::Repository) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let dir = self.runner.repo_dir.clone();
        let state_dir = self.runner.state_dir.clone();
        tokio::task::spawn_blocking(move || {
            let repo = open_repo(&dir)
                .map_err(|e| local_error(&format!("opening {}", dir.display()), e))?;
            f(&repo)
        })
        .await
        .map_err(|e| local_error("background task", e))?
        .map_err(|e| match e {
            // Say where the disk is full: the state directory.
            BackendError::Remote {
                operation,
                location,
                message,
                transient,
            } if message.starts_with(crate::tree::DISK_FULL) => BackendError::Remote {
                operation,
                location,
                message: message.replacen(
                    crate::tree::DISK_FULL,
                    &format!(
                        "disk full in state directory {} (free space there)",
                        state_dir.display()
                    ),
                    1,
                ),
                transient,
            },
            other => other,
        })
    }

    /// Runs `git fetch` of one refspec from the remote; `Ok(false)` when the
    /// remote has no such ref (a new repository), an error naming the remote
    /// for anything else that fails.
    async fn fetch_refspec(&self, refspec: &str) -> Result<bool, BackendError> {
        let args = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            self.remote.url(),
            refspec,
        ];
        let out = self.runner.run("fetch", &args, true).await?;
        if out.success {
            return Ok(true);
        }
        if out.stderr.contains("couldn't find remote ref") {
            return Ok(false);
        }
        Err(classify(
            "fetch",
            &self.remote,
            self.runner.known_hosts.as_deref(),
            &out.stderr,
        ))
    }

    /// The commit `at` names (a full or abbreviated id, fetching every
    /// branch if it is not known yet), or the branch's newest; `None` for
    /// an empty remote. Call with the state lock held.
    async fn resolve(&self, at: Option<&str>) -> Result<Option<ObjectId>, BackendError> {
        Ok(match at {
            None => self.fetch_branch().await?,
            Some(at) => {
                let at = at.trim().to_ascii_lowercase();
                if !(7..=40).contains(&at.len()) || !at.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(BackendError::NotFound {
                        what: format!(
                            "commit {at:?} (give a commit id: 7 to 40 hexadecimal characters)"
                        ),
                    });
                }
                let find = |at: String| {
                    move |repo: &gix::Repository| -> Result<Result<ObjectId, String>, BackendError> {
                        Ok(find_commit_by_prefix(repo, &at))
                    }
                };
                let found = match self.blocking(find(at.clone())).await? {
                    Ok(id) => id,
                    Err(_) => {
                        self.fetch_all_branches().await?;
                        self.blocking(find(at.clone())).await?.map_err(|why| {
                            BackendError::NotFound {
                                what: format!("commit {at} in {} ({why})", self.remote.url()),
                            }
                        })?
                    }
                };
                Some(found)
            }
        })
    }

    /// Fetches the branch into [`FETCHED_REF`]; `None` if the remote has no
    /// such branch (a new repository).
    async fn fetch_branch(&self) -> Result<Option<ObjectId>, BackendError> {
        let refspec = format!("+{}:{FETCHED_REF}", self.remote.branch_ref());
        if !self.fetch_refspec(&refspec).await? {
            return Ok(None);
        }
        self.blocking(|repo| read_ref(repo, FETCHED_REF)).await
    }

    /// Fetches every branch (for restoring a commit that is not on ours,
    /// for example one on a conflict branch).
    async fn fetch_all_branches(&self) -> Result<(), BackendError> {
        self.fetch_refspec("+refs/heads/*:refs/tether/all/*")
            .await
            .map(|_| ())
    }

    /// Pushes `commit` to `dest` without force: the server only accepts it
    /// if it descends from the branch's current head.
    async fn push_commit(&self, commit: ObjectId, dest: &str) -> Result<PushOutcome, BackendError> {
        let refspec = format!("{commit}:{dest}");
        let out = self
            .runner
            .run(
                "push",
                &[
                    "push",
                    "--porcelain",
                    "--no-verify",
                    self.remote.url(),
                    &refspec,
                ],
                true,
            )
            .await?;
        let status = out
            .stdout
            .lines()
            .find(|l| l.split('\t').nth(1).is_some_and(|r| r.ends_with(dest)));
        if out.success {
            return Ok(PushOutcome::Pushed);
        }
        if let Some(line) = status
            && line.starts_with('!')
        {
            let summary = line.split('\t').nth(2).unwrap_or("").to_owned();
            let moved = [
                "fetch first",
                "non-fast-forward",
                "stale info",
                "failed to update ref",
                "cannot lock ref",
                "failed to lock",
                "incorrect old value",
            ]
            .iter()
            .any(|m| summary.contains(m));
            if moved {
                return Ok(PushOutcome::Moved);
            }
            return Err(BackendError::permanent(
                "push",
                self.remote.to_string(),
                format!("the server refused {dest}: {summary} {}", out.stderr),
            ));
        }
        Err(classify(
            "push",
            &self.remote,
            self.runner.known_hosts.as_deref(),
            &out.stderr,
        ))
    }

    /// Starts the background housekeeping of the local repository after a
    /// confirmed push, unless it is off, already running, or paused for
    /// [`GC_RETRY_AFTER`] after a failure. It runs outside the push (and
    /// without the push lock), so a gc never delays a push's receipt or a
    /// shutdown's last push.
    fn start_maintenance(&self) {
        if self.gc_loose_objects == 0 {
            return;
        }
        let quiet = self
            .maintenance
            .quiet_until
            .lock()
            .is_some_and(|t| Instant::now() < t);
        if quiet
            || self
                .maintenance
                .running
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let running = RunningGuard(Arc::clone(&self.maintenance));
        let runner = self.runner.clone();
        let threshold = self.gc_loose_objects;
        let task = tokio::spawn(async move {
            let _running = running;
            maintain(&runner, threshold, &_running.0).await;
        });
        *self.maintenance.task.lock() = Some(task);
    }

    async fn write_commit(&self, p: &Proposal, title: String) -> Result<ObjectId, BackendError> {
        let (name, email) = self.author.clone();
        let (tree, parent) = (p.tree, p.base);
        let message = commit_message(&title, &p.ours, MESSAGE_LINES);
        self.blocking(move |repo| {
            let sig = gix::actor::Signature {
                name: name.into(),
                email: email.into(),
                time: gix::date::Time::now_utc(),
            };
            let commit = gix::objs::Commit {
                tree,
                parents: parent.into_iter().collect(),
                author: sig.clone(),
                committer: sig,
                encoding: None,
                message: message.into(),
                extra_headers: Vec::new(),
            };
            repo.write_object(&commit)
                .map(gix::Id::detach)
                .map_err(|e| local_error("writing commit", e))
        })
        .await
    }

    /// Keeps the conflicting version `commit` (of `proposal`) on this
    /// writer's conflict branch and returns the branch's name. Within an
    /// episode ([`CONFLICT_EPISODE_GAP`]) the episode's branch is moved
    /// forward by a commit with the new conflicting tree on top of its tip,
    /// so racing edits make one branch per writer per episode whose history
    /// holds every conflicting version; otherwise (or if someone else moved
    /// that branch) a new branch `tether/conflict/<host>/<time>-<id>` starts
    /// an episode.
    async fn push_conflict(
        &self,
        state: &mut LocalState,
        proposal: &Proposal,
        commit: ObjectId,
    ) -> Result<String, BackendError> {
        if state.episode.is_none() {
            state.episode = Episode::load(&self.runner.state_dir).await;
        }
        let current = state
            .episode
            .clone()
            .filter(|ep| now_s().saturating_sub(ep.last_s) < CONFLICT_EPISODE_GAP.as_secs());
        if let Some(ep) = current
            && let Ok(tip) = ObjectId::from_hex(ep.tip.as_bytes())
        {
            let on_tip = Proposal {
                base: Some(tip),
                ..proposal.clone()
            };
            let title = format!("tether on {} (conflicting version)", self.host);
            let update = self.write_commit(&on_tip, title).await?;
            match self
                .push_commit(update, &format!("refs/heads/{}", ep.branch))
                .await?
            {
                PushOutcome::Pushed => {
                    let next = Episode {
                        branch: ep.branch.clone(),
                        tip: update.to_string(),
                        last_s: now_s(),
                    };
                    next.save(&self.runner.state_dir).await;
                    state.episode = Some(next);
                    return Ok(ep.branch);
                }
                PushOutcome::Moved => {
                    tracing::info!(branch = %ep.branch, "the conflict branch moved; starting a new one");
                }
            }
        }
        let branch = conflict_branch(&self.host, gix::date::Time::now_utc().seconds, &commit);
        validate_branch(&branch).map_err(|e| BackendError::Config(e.to_string()))?;
        match self
            .push_commit(commit, &format!("refs/heads/{branch}"))
            .await?
        {
            PushOutcome::Pushed => {}
            PushOutcome::Moved => {
                return Err(BackendError::transient(
                    "push",
                    self.remote.to_string(),
                    format!("conflict branch {branch} already exists"),
                ));
            }
        }
        let next = Episode {
            branch: branch.clone(),
            tip: commit.to_string(),
            last_s: now_s(),
        };
        next.save(&self.runner.state_dir).await;
        state.episode = Some(next);
        Ok(branch)
    }

    fn receipt(
        repo: &gix::Repository,
        p: &Proposal,
        head: Option<ObjectId>,
    ) -> Result<PushReceipt, BackendError> {
        let mut receipt = PushReceipt {
            head: head.map(|h| h.to_string()),
            ..PushReceipt::default()
        };
        for (path, (_, leaf)) in &p.ours {
            if path == MODES_PATH {
                continue;
            }
            if let Some(l) = leaf
                && matches!(l.kind, EntryKind::Blob | EntryKind::BlobExecutable)
            {
                receipt.files_uploaded += 1;
                receipt.bytes_uploaded += repo
                    .find_header(l.id)
                    .map_err(|e| local_error(&format!("blob {}", l.id), e))?
                    .size();
            }
        }
        Ok(receipt)
    }
}

/// State of the background housekeeping.
#[derive(Debug, Default)]
struct Maintenance {
    /// A gc task is running.
    running: AtomicBool,
    /// No gc before this (after a failure, or a gc that left too many
    /// loose objects behind).
    quiet_until: parking_lot::Mutex<Option<Instant>>,
    /// The running task, for [`Backend::wait_background`].
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Clears [`Maintenance::running`] when the task ends or is dropped (at
/// runtime shutdown, which also kills the git child).
struct RunningGuard(Arc<Maintenance>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// Packs the local repository when git would: more loose objects than
/// `threshold`, estimated the way git does (more than `threshold / 256`
/// in the one fan-out directory `objects/17`), or more than
/// [`GC_PACK_LIMIT`] packs (each fetch adds one). Runs `git gc --auto`,
/// which checks again and packs the reachable loose objects (and, past the
/// pack limit, repacks everything, unreachable objects into a cruft pack).
/// Nothing is ever pruned (`gc.pruneExpire=never`), so gc deletes no
/// object that this backend or another process on the same state
/// directory (`tether history`, `restore`) is about to reference; the few
/// unreachable objects of failed attempts stay as they are. `--force` skips git's `gc.pid` check, which a gc killed at
/// process exit would otherwise leave behind for 12 hours (one task at a
/// time is ensured here). Refs stay unpacked, so gc never holds a lock the
/// backend's ref updates need; one pack thread and a 64 MiB delta window
/// keep memory bounded in a small sidecar. After a failure, or when loose
/// objects stay above the threshold, the next gc waits [`GC_RETRY_AFTER`].
async fn maintain(runner: &GitRunner, threshold: usize, state: &Maintenance) {
    let objects = runner.repo_dir.join("objects");
    let Some((in_17, packs)) = count_objects(&objects).await else {
        return;
    };
    if in_17 <= threshold.div_ceil(256) && packs <= GC_PACK_LIMIT {
        return;
    }
    let started = Instant::now();
    let gc_auto = format!("gc.auto={threshold}");
    let pack_limit = format!("gc.autoPackLimit={GC_PACK_LIMIT}");
    let args = [
        "-c",
        &gc_auto,
        "-c",
        &pack_limit,
        "-c",
        "gc.autoDetach=false",
        "-c",
        "gc.pruneExpire=never",
        "-c",
        "gc.cruftPacks=true",
        "-c",
        "gc.packRefs=false",
        "-c",
        "pack.threads=1",
        "-c",
        "pack.windowMemory=64m",
        "gc",
        "--auto",
        "--force",
        "--quiet",
    ];
    let failure = match runner.run("gc", &args, false).await {
        Ok(out) if out.success => None,
        Ok(out) => Some(out.stderr.trim().to_owned()),
        Err(e) => Some(e.to_string()),
    };
    let pause = || *state.quiet_until.lock() = Some(Instant::now() + GC_RETRY_AFTER);
    if let Some(error) = failure {
        pause();
        tracing::warn!(%error, retry_in_s = GC_RETRY_AFTER.as_secs(), "git gc of the local repository failed");
        return;
    }
    // gc removes the emptied fan-out directories; recreate them so the
    // next checkpoints do not each pay for a mkdir (about 1 ms apiece on a
    // slow volume).
    let dir = objects.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for byte in 0..=255u8 {
            let _ = std::fs::create_dir(dir.join(format!("{byte:02x}")));
        }
    })
    .await;
    let after = count_objects(&objects).await;
    if after.is_none_or(|(in_17, _)| in_17 > threshold.div_ceil(256)) {
        pause();
    }
    tracing::info!(
        loose_estimate_before = in_17 * 256,
        loose_estimate_after = after.map(|(n, _)| n * 256),
        packs_before = packs,
        seconds = started.elapsed().as_secs_f64(),
        "housekeeping of the local repository (git gc --auto) done"
    );
}

/// Loose objects in `objects/17` and packs in `objects/pack`.
async fn count_objects(objects: &Path) -> Option<(usize, usize)> {
    let dir = objects.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let count = |dir: PathBuf, keep: fn(&str) -> bool| {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(keep))
                    .count()
            })
        };
        (
            count(dir.join("17"), |n| n.len() == 38),
            count(dir.join("pack"), |n| n.ends_with(".pack")),
        )
    })
    .await
    .ok()
}

/// Re-applies our changes on top of the remote's new head: all of them when
/// nothing overlaps, otherwise only the ones that do not.
fn resolve(
    repo: &gix::Repository,
    p: &Proposal,
    remote: Option<ObjectId>,
    max_entries: u64,
) -> Result<Resolution, BackendError> {
    let remote_tree = match remote {
        Some(c) => commit_tree(repo, c)?,
        None => empty_tree(),
    };
    let mut reader = TreeReader::new(repo, max_entries);
    let mut theirs = reader.diff(Some(p.base_tree), Some(remote_tree))?;
    let mut ours = p.changes();
    // The modes file is merged path by path below, never compared whole
    // (two writers changing different files' modes do not conflict).
    theirs.remove(MODES_PATH.as_bytes().as_bstr());
    ours.remove(MODES_PATH.as_bytes().as_bstr());
    let mut overlap = overlapping(&ours, &theirs);
    let modes = merge_modes(
        &Modes::read(repo, &mut reader, p.base_tree)?,
        &Modes::read(repo, &mut reader, p.tree)?,
        &Modes::read(repo, &mut reader, remote_tree)?,
        &mut overlap,
    );
    let keep: Changes = ours
        .into_iter()
        .filter(|(path, _)| !overlap.contains(path))
        .collect();
    let tree = apply_changes(repo, remote_tree, keep.iter())?;
    let tree = if modes == Modes::read(repo, &mut reader, tree)? {
        tree
    } else {
        write_modes(repo, tree, &modes)?
    };
    let next = Proposal {
        base: remote,
        base_tree: remote_tree,
        tree,
        ours: diff_with_origin(&mut reader, remote_tree, tree)?,
    };
    Ok(if overlap.is_empty() {
        Resolution::Rebased(next)
    } else {
        Resolution::Conflict(next, overlap)
    })
}

#[async_trait]
impl Backend for GitBackend {
    fn describe(&self) -> String {
        format!("git {}", self.remote)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            empty_dirs: false,
            // Permission bits beyond the executable bit, and directory
            // modes, travel in `.tether/modes`.
            full_mode: true,
            mtime: false,
            history: true,
        }
    }

    async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        let branch_ref = self.remote.branch_ref();
        let out = self
            .runner
            .run(
                "ls-remote",
                &["ls-remote", self.remote.url(), &branch_ref],
                true,
            )
            .await?;
        if !out.success {
            return Err(classify(
                "ls-remote",
                &self.remote,
                self.runner.known_hosts.as_deref(),
                &out.stderr,
            ));
        }
        let Some(id) = out.stdout.lines().find_map(|l| {
            let (id, name) = l.split_once('\t')?;
            (name == branch_ref).then(|| id.to_owned())
        }) else {
            return Ok(None);
        };
        let parsed = ObjectId::from_hex(id.as_bytes()).ok();
        let time = match parsed {
            Some(oid) => {
                self.blocking(move |repo| {
                    Ok(repo
                        .find_commit(oid)
                        .ok()
                        .and_then(|c| c.time().ok())
                        .and_then(|t| u64::try_from(t.seconds).ok())
                        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)))
                })
                .await?
            }
            None => None,
        };
        Ok(Some(RemoteHead { id, time }))
    }

    async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let mut state = self.state.lock().await;
        let mut base = self.blocking(|repo| read_ref(repo, BASE_REF)).await?;
        if base.is_none() && !state.fetched_once {
            base = self.fetch_branch().await?;
            state.fetched_once = true;
            if let Some(b) = base {
                self.blocking(move |repo| write_ref(repo, BASE_REF, b))
                    .await?;
            }
        }
        let (cp, src) = (checkpoint.clone(), source.clone());
        let max_entries = self.max_entries;
        let mut proposal = self
            .blocking(move |repo| {
                let base_tree = match base {
                    Some(c) => commit_tree(repo, c)?,
                    None => empty_tree(),
                };
                let (tree, skipped) = apply_checkpoint(repo, base_tree, &cp, &src)?;
                for path in skipped {
                    tracing::warn!(%path, "git cannot store this path (a .git name); not committed");
                }
                let mut reader = TreeReader::new(repo, max_entries);
                Ok(Proposal {
                    base,
                    base_tree,
                    tree,
                    ours: diff_with_origin(&mut reader, base_tree, tree)?,
                })
            })
            .await?;
        let mut conflict: Option<String> = None;
        let mut rebases = 0;
        loop {
            if proposal.ours.is_empty() {
                // Nothing (left) to commit: the remote already has it.
                let p = proposal.clone();
                return self
                    .blocking(move |repo| {
                        let mut r = Self::receipt(repo, &p, p.base)?;
                        r.conflict = conflict;
                        Ok(r)
                    })
                    .await;
            }
            let title = if conflict.is_some() {
                format!(
                    "tether on {} (the changes that did not conflict)",
                    self.host
                )
            } else {
                format!("tether on {}", self.host)
            };
            let commit = self.write_commit(&proposal, title).await?;
            match self.push_commit(commit, &self.remote.branch_ref()).await? {
                PushOutcome::Pushed => {
                    let p = proposal.clone();
                    let receipt = self
                        .blocking(move |repo| {
                            write_ref(repo, BASE_REF, commit)?;
                            let mut r = Self::receipt(repo, &p, Some(commit))?;
                            r.conflict = conflict;
                            Ok(r)
                        })
                        .await?;
                    self.start_maintenance();
                    return Ok(receipt);
                }
                PushOutcome::Moved => {
                    rebases += 1;
                    if rebases > MAX_REBASES {
                        return Err(BackendError::transient(
                            "push",
                            self.remote.to_string(),
                            format!(
                                "the branch moved {MAX_REBASES} times while pushing; will retry"
                            ),
                        ));
                    }
                    let remote = self.fetch_branch().await?;
                    let p = proposal.clone();
                    let resolution = self
                        .blocking(move |repo| resolve(repo, &p, remote, max_entries))
                        .await?;
                    match resolution {
                        Resolution::Rebased(next) => {
                            tracing::info!(remote = %self.remote, "another writer pushed; rebased the checkpoint onto it");
                            proposal = next;
                        }
                        Resolution::Conflict(next, paths) => {
                            let branch = self.push_conflict(&mut state, &proposal, commit).await?;
                            let shown: Vec<String> = paths
                                .iter()
                                .take(5)
                                .map(|p| p.to_str_lossy().into_owned())
                                .collect();
                            let more = paths.len().saturating_sub(shown.len());
                            let what = format!(
                                "{branch} ({} path(s) changed on both sides: {}{})",
                                paths.len(),
                                shown.join(", "),
                                if more > 0 {
                                    format!(" and {more} more")
                                } else {
                                    String::new()
                                }
                            );
                            tracing::info!(remote = %self.remote, conflict = %what, "kept this checkpoint's version on a conflict branch");
                            conflict = Some(what);
                            proposal = next;
                        }
                    }
                    if let Some(r) = remote {
                        self.blocking(move |repo| write_ref(repo, BASE_REF, r))
                            .await?;
                    }
                }
            }
        }
    }

    async fn restore(
        &self,
        dest: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        let _state = self.state.lock().await;
        let target = self.resolve(options.at.as_deref()).await?;
        let dest = dest.to_path_buf();
        let settings = WriterSettings::from(options);
        let runner = self.runner.clone();
        let max_entries = self.max_entries;
        let selection = options.clone();
        self.blocking(move |repo| {
            restore_commit(
                repo,
                &runner,
                target,
                &dest,
                settings,
                max_entries,
                &selection,
            )
        })
        .await
    }

    async fn list(&self, at: Option<&str>) -> Result<sync_core::Listing, BackendError> {
        let _state = self.state.lock().await;
        let Some(commit) = self.resolve(at).await? else {
            return Ok(sync_core::Listing::default());
        };
        let max_entries = self.max_entries;
        self.blocking(move |repo| list_commit(repo, commit, max_entries))
            .await
    }

    async fn wait_background(&self, limit: Duration) {
        let task = self.maintenance.task.lock().take();
        if let Some(task) = task {
            if task.is_finished() {
                return;
            }
            tracing::info!("waiting for the local repository's housekeeping (git gc) to finish");
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!(
                    limit_s = limit.as_secs(),
                    "git gc still running; leaving it"
                );
            }
        }
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        let _state = self.state.lock().await;
        let Some(head) = self.fetch_branch().await? else {
            return Ok(Vec::new());
        };
        let max_entries = self.max_entries;
        self.blocking(move |repo| {
            let mut out = Vec::new();
            let mut reader = TreeReader::new(repo, max_entries);
            let mut memo = std::collections::HashMap::new();
            let mut next = Some(head);
            while let Some(id) = next.take() {
                if out.len() >= limit {
                    break;
                }
                let commit = repo
                    .find_commit(id)
                    .map_err(|e| BackendError::InvalidRemote {
                        object: format!("commit {id}"),
                        reason: e.to_string(),
                    })?;
                let time = commit
                    .time()
                    .ok()
                    .and_then(|t| u64::try_from(t.seconds).ok())
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
                let tree = commit_tree(repo, id)?;
                let (files, bytes) = reader.totals(tree, &mut memo)?;
                out.push(HistoryEntry {
                    id: id.to_string(),
                    time,
                    files,
                    bytes,
                });
                next = commit.parent_ids().next().map(gix::Id::detach);
            }
            Ok(out)
        })
        .await
    }
}

/// The commit whose id starts with `hex` (7 to 40 lowercase hex digits),
/// or why there is none: not present, ambiguous, or not a commit.
fn find_commit_by_prefix(repo: &gix::Repository, hex: &str) -> Result<ObjectId, String> {
    let prefix = gix::hash::Prefix::from_hex(hex).map_err(|e| e.to_string())?;
    let id = match repo.objects.lookup_prefix(prefix, None) {
        Ok(Some(Ok(id))) => id,
        Ok(Some(Err(()))) => {
            return Err(format!("{hex} is ambiguous: give more characters"));
        }
        Ok(None) => return Err("not found".into()),
        Err(e) => return Err(e.to_string()),
    };
    repo.find_commit(id)
        .map(|c| c.id)
        .map_err(|_| format!("{id} is not a commit"))
}

/// A commit's tree as tether reads it, for restore and `list` alike.
struct CommitTree {
    /// `commit <id>`, for messages.
    object: String,
    /// Entries in tree order with their validated paths: the reserved
    /// `.tether` and submodules left out (with a warning).
    entries: Vec<(sync_core::RelPath, PlanKind, crate::tree::TreeEntry)>,
    /// The commit's modes file.
    modes: Modes,
}

/// Reads and validates `commit`'s tree (see [`CommitTree`]).
fn read_commit_tree(
    repo: &gix::Repository,
    commit: ObjectId,
    max_entries: u64,
) -> Result<CommitTree, BackendError> {
    let object = format!("commit {commit}");
    let tree = commit_tree(repo, commit)?;
    let mut reader = TreeReader::new(repo, max_entries);
    let listing = reader.list(tree)?;
    let modes = Modes::read(repo, &mut reader, tree)?;
    let mut items = Vec::with_capacity(listing.len());
    for (path, entry) in listing {
        // (Entry modes were checked by `list`.)
        if is_reserved(&path) {
            // The modes file (and whatever else is under `.tether`) is
            // tether's metadata, never part of the restored directory.
            if path != MODES_PATH && path != ".tether" {
                tracing::warn!(path = %path, "skipping a path under the reserved name .tether");
            }
            continue;
        }
        let kind = match entry.kind {
            EntryKind::Tree => PlanKind::Dir,
            EntryKind::Blob | EntryKind::BlobExecutable => PlanKind::File,
            EntryKind::Link => PlanKind::Symlink,
            EntryKind::Commit => {
                tracing::warn!(path = %path, "skipping a submodule entry (tether does not restore submodules)");
                continue;
            }
        };
        let name = path
            .to_str()
            .map(str::to_owned)
            .map_err(|_| BackendError::InvalidRemote {
                object: object.clone(),
                reason: format!("path {path:?} is not valid UTF-8"),
            })?;
        items.push((name, kind, entry));
    }
    let plan = RestorePlan::validate(items.iter().map(|(n, k, _)| (n.as_str(), *k)), &object)?;
    let entries = plan
        .paths
        .into_iter()
        .zip(items)
        .map(|(path, (_, kind, entry))| (path, kind, entry))
        .collect();
    Ok(CommitTree {
        object,
        entries,
        modes,
    })
}

/// The entries of `commit`'s tree as tether restores them: the reserved
/// `.tether` and submodules left out, modes from the modes file, sizes from
/// the object headers, contents named by git blob id.
fn list_commit(
    repo: &gix::Repository,
    commit: ObjectId,
    max_entries: u64,
) -> Result<sync_core::Listing, BackendError> {
    let CommitTree {
        object,
        entries: items,
        modes,
    } = read_commit_tree(repo, commit, max_entries)?;
    let mut entries = Vec::with_capacity(items.len());
    for (path, kind, entry) in items {
        let header = |id: ObjectId| {
            repo.find_header(id)
                .map(|h| h.size())
                .map_err(|e| local_error(&format!("blob {id}"), e))
        };
        let mode = modes.get(path.as_str());
        let listed = match kind {
            PlanKind::Dir => sync_core::Listed {
                kind,
                size: None,
                mode: Some(mode.unwrap_or(sync_core::DEFAULT_DIR_MODE)),
                mtime: None,
                target: None,
                content: None,
                path,
            },
            PlanKind::File => sync_core::Listed {
                kind,
                size: Some(header(entry.id)?),
                mode: Some(file_mode(mode, entry.kind == EntryKind::BlobExecutable)),
                mtime: None,
                target: None,
                content: Some(entry.id.to_string()),
                path,
            },
            PlanKind::Symlink => {
                if header(entry.id)? > 4095 {
                    return Err(BackendError::InvalidRemote {
                        object,
                        reason: format!("symlink {path} has a target over 4095 bytes"),
                    });
                }
                let blob = repo
                    .find_object(entry.id)
                    .map_err(|e| local_error(&format!("blob {}", entry.id), e))?;
                sync_core::Listed {
                    kind,
                    size: None,
                    mode: None,
                    mtime: None,
                    target: Some(String::from_utf8_lossy(&blob.data).into_owned()),
                    content: None,
                    path,
                }
            }
        };
        entries.push(listed);
    }
    Ok(sync_core::Listing {
        id: Some(commit.to_string()),
        entries,
    })
}

/// Writes the tree of `commit` into `dest` (nothing for an empty remote).
fn restore_commit(
    repo: &gix::Repository,
    runner: &GitRunner,
    commit: Option<ObjectId>,
    dest: &Path,
    settings: WriterSettings,
    max_entries: u64,
    selection: &RestoreOptions,
) -> Result<RestoreReport, BackendError> {
    let Some(commit) = commit else {
        selection.check_selected([], "the remote (nothing pushed yet)")?;
        let writer = RestoreWriter::open(dest, settings)?;
        return Ok(writer.finish(None)?);
    };
    let CommitTree {
        object,
        entries,
        modes,
    } = read_commit_tree(repo, commit, max_entries)?;
    selection.check_selected(entries.iter().map(|(p, _, _)| p), &object)?;
    let writer = RestoreWriter::open(dest, settings)?;
    // Git trees do not record blob sizes; the total counts entries only.
    let selected = entries
        .iter()
        .filter(|(p, _, _)| selection.selects(p))
        .count();
    writer.expect_total(selected as u64, 0);
    for (path, kind, entry) in &entries {
        if !selection.selects(path) {
            continue;
        }
        match kind {
            PlanKind::Dir => writer.create_dir(
                path,
                modes
                    .get(path.as_str())
                    .unwrap_or(sync_core::DEFAULT_DIR_MODE),
            )?,
            PlanKind::Symlink => {
                // A symlink target is at most 4095 bytes: never load a
                // hostile multi-gigabyte "target" into memory.
                let size = repo
                    .find_header(entry.id)
                    .map_err(|e| local_error(&format!("blob {}", entry.id), e))?
                    .size();
                if size > 4095 {
                    return Err(BackendError::InvalidRemote {
                        object: object.clone(),
                        reason: format!(
                            "symlink {path} has a {size}-byte target (the limit is 4095)"
                        ),
                    });
                }
                let blob = repo
                    .find_object(entry.id)
                    .map_err(|e| local_error(&format!("blob {}", entry.id), e))?;
                // Empty, NUL and over-long targets are refused by the
                // writer, naming the path.
                let target =
                    std::str::from_utf8(&blob.data).map_err(|_| BackendError::InvalidRemote {
                        object: object.clone(),
                        reason: format!("symlink {path} has a target that is not UTF-8"),
                    })?;
                writer.create_symlink(path, target)?;
            }
            PlanKind::File => {
                let size = repo
                    .find_header(entry.id)
                    .map_err(|e| local_error(&format!("blob {}", entry.id), e))?
                    .size();
                let spec = FileSpec {
                    mode: file_mode(
                        modes.get(path.as_str()),
                        entry.kind == EntryKind::BlobExecutable,
                    ),
                    mtime_ns: None,
                    size: Some(size),
                    hash: None,
                };
                if !writer.should_write(path, &spec)? {
                    continue;
                }
                if size > STREAM_BLOB_ABOVE {
                    stream_blob(runner, &writer, path, &spec, entry.id)?;
                } else {
                    let blob = repo
                        .find_object(entry.id)
                        .map_err(|e| local_error(&format!("blob {}", entry.id), e))?;
                    writer.write_file(path, &spec, &blob.data[..])?;
                }
            }
        }
    }
    Ok(writer.finish(Some(commit.to_string()))?)
}

/// Writes a large blob through `git cat-file`, which streams it.
fn stream_blob(
    runner: &GitRunner,
    writer: &RestoreWriter,
    path: &sync_core::RelPath,
    spec: &FileSpec,
    id: ObjectId,
) -> Result<(), BackendError> {
    let (mut cmd, _) = runner.command(false)?;
    let hex = id.to_string();
    cmd.args(["cat-file", "blob", &hex])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| BackendError::Config(format!("cannot run {}: {e}", runner.git.display())))?;
    let result = match child.stdout.take() {
        Some(stdout) => writer
            .write_file(path, spec, stdout)
            .map_err(BackendError::from),
        None => Err(local_error("git cat-file", "no output")),
    };
    let status = child.wait().map_err(|e| local_error("git cat-file", e))?;
    result?;
    if !status.success() {
        return Err(local_error(&format!("blob {id}"), "git cat-file failed"));
    }
    Ok(())
}

/// Paths of the state directory, for callers that want to show them.
impl GitBackend {
    /// The state directory given in the options.
    pub fn state_dir(&self) -> &Path {
        &self.runner.state_dir
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn conflict_branches_are_valid_and_unique_names() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let b = conflict_branch("pod-1", 1_700_000_000, &id);
        assert_eq!(b, "tether/conflict/pod-1/20231114T221320Z-0123456789");
        assert!(validate_branch(&b).is_ok());
        for host in ["my pod/äö", "..", "x.lock", "", "-a-"] {
            let h = sanitize_component(host);
            assert!(
                validate_branch(&conflict_branch(&h, 0, &id)).is_ok(),
                "{host:?} -> {h:?}"
            );
        }
        assert_eq!(sanitize_component("my pod/1"), "my-pod-1");
    }
}
