//! Flags and environment variables of every subcommand (clap derive).
//!
//! Every option of `sync`, `restore` and `history` has a `TETHER_*`
//! environment fallback. Secrets are never flag values (they would show in
//! `ps`): keys and tokens are named by file (`--ssh-key-file`,
//! `--token-file`), object-store credentials come from `AWS_*`, `GOOGLE_*`
//! and `AZURE_*` variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

/// tether keeps a working directory tethered to durable storage: it
/// restores the directory, watches it, and pushes debounced checkpoints to
/// git or an object store.
#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options, accepted by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors; `auto`
    /// picks text when stderr is a terminal.
    #[arg(long, global = true, env = "TETHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's `EnvFilter` syntax (`info`, `debug`,
    /// `sync_core=debug,info`).
    #[arg(long, global = true, env = "TETHER_LOG", default_value = "info")]
    pub log_level: String,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore DIR if it is empty, then watch it and push checkpoints until
    /// stopped (SIGTERM or SIGINT flush pending changes first).
    Sync(Box<SyncArgs>),
    /// Restore DIR from a remote (for init containers): exits 0 only when
    /// DIR holds the complete state.
    Restore(RestoreArgs),
    /// List the checkpoints a remote keeps (snapshots layout, git).
    History(HistoryArgs),
    /// Write one file of a remote's newest (or `--at`) state to stdout,
    /// verified against its recorded hash first.
    Cat(CatArgs),
    /// List the files of a remote's newest (or `--at`) state.
    Ls(LsArgs),
    /// What changed between two checkpoints (default: the newest and the
    /// one before), notebooks cell by cell.
    Diff(DiffArgs),
    /// Create, publish and show the admission webhook's TLS certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run the admission webhook that injects tether into annotated pods.
    Webhook(WebhookArgs),
    /// Generate Kubernetes manifests offline.
    #[command(subcommand)]
    Manifests(ManifestsCommand),
    /// Keep DIR/current on the newest snapshot of a remote, pull-only:
    /// each new one is restored into its own directory and the link is
    /// swapped atomically (like git-sync's --link).
    Follow(FollowArgs),
    /// Convert a notebook to a Python script: code cells in order, IPython
    /// magics and shell escapes commented out, markdown as comments.
    Convert(ConvertArgs),
    /// Make and manage the keys of encrypted repositories (snapshots
    /// layout): generate a key file, list, add and remove key slots.
    #[command(subcommand)]
    Key(crate::commands::key::KeyCommand),
    /// Remove the snapshots a retention policy does not keep (object
    /// stores, snapshots layout; restic's `forget` rules). Prints every
    /// snapshot with keep or remove and why.
    Forget(ForgetArgs),
    /// Delete what no snapshot references and the store dated before the
    /// grace period (object stores, snapshots layout); safe beside running
    /// writers. Prints what it freed.
    Prune(PruneArgs),
    /// Verify a repository (object stores, snapshots layout): every tree
    /// and pack a snapshot needs, and with --read-data every byte. Exits 0
    /// only when no problem is found.
    Check(CheckArgs),
}

/// The retention rules as separate flags (`tether forget`, `tether sync`);
/// each overrides the same rule of `--policy`/`--retention`. Counts are
/// whole numbers from 1, or `unlimited`.
#[derive(Debug, Clone, Default, Args)]
pub struct KeepArgs {
    /// Keep the N newest snapshots.
    #[arg(long, env = "TETHER_KEEP_LAST", value_name = "N", value_parser = parse_keep_count)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one
    /// (UTC calendar hours).
    #[arg(long, env = "TETHER_KEEP_HOURLY", value_name = "N", value_parser = parse_keep_count)]
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days (UTC).
    #[arg(long, env = "TETHER_KEEP_DAILY", value_name = "N", value_parser = parse_keep_count)]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks (Monday to Sunday, UTC).
    #[arg(long, env = "TETHER_KEEP_WEEKLY", value_name = "N", value_parser = parse_keep_count)]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months (UTC).
    #[arg(long, env = "TETHER_KEEP_MONTHLY", value_name = "N", value_parser = parse_keep_count)]
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years (UTC).
    #[arg(long, env = "TETHER_KEEP_YEARLY", value_name = "N", value_parser = parse_keep_count)]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken less than DURATION before the newest one
    /// (`24h`, `7d`).
    #[arg(long, env = "TETHER_KEEP_WITHIN", value_name = "DURATION", value_parser = parse_keep_within)]
    pub keep_within: Option<Duration>,
}

impl KeepArgs {
    /// True when no `--keep-*` flag is set.
    pub fn is_empty(&self) -> bool {
        self.overlay(sync_core::retention::ForgetPolicy::default())
            .is_empty()
    }

    /// `base` with every rule these flags set replaced.
    pub fn overlay(
        &self,
        mut base: sync_core::retention::ForgetPolicy,
    ) -> sync_core::retention::ForgetPolicy {
        let set = |slot: &mut Option<u32>, v: Option<u32>| {
            if v.is_some() {
                *slot = v;
            }
        };
        set(&mut base.keep_last, self.keep_last);
        set(&mut base.keep_hourly, self.keep_hourly);
        set(&mut base.keep_daily, self.keep_daily);
        set(&mut base.keep_weekly, self.keep_weekly);
        set(&mut base.keep_monthly, self.keep_monthly);
        set(&mut base.keep_yearly, self.keep_yearly);
        if self.keep_within.is_some() {
            base.keep_within = self.keep_within;
        }
        base
    }
}

/// `--retention`: a policy spec, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// No maintenance.
    Off,
    /// Keep what this policy keeps.
    Policy(sync_core::retention::ForgetPolicy),
}

/// `--retention SPEC|off`.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Retention::Off);
    }
    s.parse()
        .map(Retention::Policy)
        .map_err(|e: sync_core::retention::ParsePolicyError| e.reason)
}

fn parse_policy(s: &str) -> Result<sync_core::retention::ForgetPolicy, String> {
    s.parse()
        .map_err(|e: sync_core::retention::ParsePolicyError| e.reason)
}

/// A `--keep-*` count: 1 or more, or `unlimited`.
fn parse_keep_count(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(u32::MAX);
    }
    match t.parse::<u32>() {
        Ok(0) => Err("0 keeps nothing; leave the flag out, or give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "{t:?} is not a count (a whole number from 1, or \"unlimited\")"
        )),
    }
}

fn parse_keep_within(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(
            "0 keeps nothing but the newest; leave the flag out, or give a positive duration"
                .into(),
        ),
        d => Ok(d),
    }
}

/// The repository a maintenance command works on.
#[derive(Debug, Clone, Args)]
pub struct MaintenanceRemoteArgs {
    /// Remote URL of the repository (`s3://…`, `gs://…`, `az://…`,
    /// `file:///dir`; the snapshots layout).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// File holding the repository's encryption key or passphrase
    /// (encrypted repositories).
    #[arg(long, env = "TETHER_ENCRYPTION_KEY_FILE", value_name = "PATH")]
    pub encryption_key_file: Option<PathBuf>,
    /// Let S3 remotes run without `AWS_*` credentials (EC2 instance
    /// metadata, public buckets).
    #[arg(long, env = "TETHER_ALLOW_INSTANCE_CREDENTIALS")]
    pub allow_instance_credentials: bool,
    /// Give up on one request to the store after this long.
    #[arg(long, env = "TETHER_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
}

impl MaintenanceRemoteArgs {
    /// The backend options these flags describe.
    pub fn options(&self) -> crate::remote::RemoteOptions {
        crate::remote::RemoteOptions {
            allow_instance_credentials: self.allow_instance_credentials,
            request_timeout: Some(self.request_timeout),
            encryption_key_file: self.encryption_key_file.clone(),
            ..crate::remote::RemoteOptions::default()
        }
    }
}

/// How prune runs (`tether prune`, `tether forget --prune`).
#[derive(Debug, Clone, Args)]
pub struct PruneFlags {
    /// Delete an unreferenced object only once the store dates it older
    /// than this (default 25m: twice the writers' 10-minute reuse window
    /// plus 5 minutes). Lower is safe only when no writer runs.
    #[arg(long, env = "TETHER_PRUNE_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Option<Duration>,
    /// How long the maintenance lease lasts without renewal (tests).
    #[arg(long, env = "TETHER_LEASE_TTL", value_parser = parse_duration, hide = true)]
    pub lease_ttl: Option<Duration>,
}

/// `tether forget`.
#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    /// The repository.
    #[command(flatten)]
    pub remote: MaintenanceRemoteArgs,
    /// The whole policy in one spec, as `tether sync --retention` takes it:
    /// `within=24h,hourly=48,daily=14,weekly=8,monthly=6,yearly=2,last=10`
    /// (any subset); the --keep-last … --keep-within flags override its
    /// rules.
    #[arg(long, value_name = "SPEC", value_parser = parse_policy)]
    pub policy: Option<sync_core::retention::ForgetPolicy>,
    /// The rules.
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Print what would be kept and removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune as well, under the same lease (what the sidecar runs).
    #[arg(long)]
    pub prune: bool,
    /// Prune settings (with --prune).
    #[command(flatten)]
    pub prune_flags: PruneFlags,
}

/// `tether prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The repository.
    #[command(flatten)]
    pub remote: MaintenanceRemoteArgs,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune settings.
    #[command(flatten)]
    pub prune_flags: PruneFlags,
}

/// `tether check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The repository.
    #[command(flatten)]
    pub remote: MaintenanceRemoteArgs,
    /// Also read every blob a snapshot references and verify its length
    /// and hash (reads the whole repository).
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify the blobs of a random sample of the packs: `5%`
    /// (1–100).
    #[arg(long, value_name = "N%", value_parser = parse_percent)]
    pub read_data_subset: Option<u8>,
}

/// `5%` or `5` → 5 (1–100).
fn parse_percent(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    match n.parse::<u8>() {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        _ => Err(format!("{t:?} is not a percentage from 1% to 100%")),
    }
}

/// `tether follow`.
#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// The root: holds the link (`current`) and `.releases/` (created if
    /// missing; its parent must exist).
    pub dir: PathBuf,
    /// Remote URL (see `tether sync --help`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// Follow only this folder (or file) of the remote; repeat for more.
    #[arg(long = "path", value_name = "PATH", value_parser = parse_rel_path)]
    pub paths: Vec<sync_core::RelPath>,
    /// Convert this notebook (a path inside the remote) to `STEM.py` next
    /// to it in every release, before the swap.
    #[arg(long, value_name = "NOTEBOOK", value_parser = parse_rel_path)]
    pub convert: Option<sync_core::RelPath>,
    /// Name of the link inside DIR.
    #[arg(long, env = "TETHER_FOLLOW_LINK", default_value = "current")]
    pub link: String,
    /// Time between polls.
    #[arg(long, env = "TETHER_FOLLOW_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Upper bound of the wait after failures (doubling from --interval).
    #[arg(long, env = "TETHER_FOLLOW_MAX_BACKOFF", value_parser = parse_duration, default_value = "5m")]
    pub max_backoff: Duration,
    /// Sync once and exit (0 once the link is on the newest snapshot).
    #[arg(long)]
    pub once: bool,
    /// Serve /healthz, /readyz (200 once the first sync is in place) and
    /// /metrics on this address, e.g. `0.0.0.0:9478`.
    #[arg(long, env = "TETHER_HTTP_BIND", value_name = "ADDR")]
    pub http_bind: Option<SocketAddr>,
    /// After each swap, run this command with `sh -c` (env
    /// TETHER_FOLLOW_ID and TETHER_FOLLOW_LINK say what is current).
    #[arg(long, env = "TETHER_FOLLOW_ON_CHANGE", value_name = "COMMAND")]
    pub on_change: Option<String>,
    /// After each swap, send --signal to the process whose id is in this
    /// file (the app writes it).
    #[arg(long, env = "TETHER_FOLLOW_PID_FILE", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// The signal --pid-file's process gets: HUP, TERM, INT, USR1 or USR2.
    #[arg(long, default_value = "HUP", requires = "pid_file")]
    pub signal: String,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether convert`.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// The notebook (`.ipynb`, nbformat 4).
    pub notebook: PathBuf,
    /// Write the script here (via a temporary file and a rename) instead
    /// of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options about the remote, shared by `sync`, `restore` and `history`.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Directory for tether's own state (the index, git's repository);
    /// must be outside DIR and shared by the init container and the
    /// sidecar. Default: `$XDG_STATE_HOME/tether/<dir>-<hash>`.
    #[arg(long, env = "TETHER_STATE_DIR", value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// Private key file for `ssh://` git remotes (copied to a 0600 file
    /// before use).
    #[arg(long, env = "TETHER_SSH_KEY_FILE", value_name = "PATH")]
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts file for `ssh://` git remotes. Default: `known_hosts`
    /// next to the key file.
    #[arg(long, env = "TETHER_SSH_KNOWN_HOSTS_FILE", value_name = "PATH")]
    pub ssh_known_hosts_file: Option<PathBuf>,
    /// File holding the token for `https://` git remotes; re-read before
    /// every push, so rotated tokens apply.
    #[arg(long, env = "TETHER_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Let S3 remotes run without `AWS_*` credentials (EC2 instance
    /// metadata, public buckets).
    #[arg(long, env = "TETHER_ALLOW_INSTANCE_CREDENTIALS")]
    pub allow_instance_credentials: bool,
    /// Give up on one request to an object store after this long (the
    /// whole request, body included: raise it on slow links with large
    /// files); for git, how long a transfer may stall.
    #[arg(long, env = "TETHER_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
    /// Object stores (snapshots layout): file holding the repository's
    /// encryption key (`tether key generate`) or a passphrase. The first
    /// push with it creates an encrypted repository; an encrypted one
    /// cannot be read without it.
    #[arg(long, env = "TETHER_ENCRYPTION_KEY_FILE", value_name = "PATH")]
    pub encryption_key_file: Option<PathBuf>,
}

/// Who git commits are by (only `sync` writes commits).
#[derive(Debug, Clone, Args)]
pub struct GitAuthorArgs {
    /// Author name of git commits.
    #[arg(long, env = "TETHER_GIT_AUTHOR_NAME", default_value = "tether")]
    pub git_author_name: String,
    /// Author email of git commits.
    #[arg(
        long,
        env = "TETHER_GIT_AUTHOR_EMAIL",
        default_value = "tether@localhost"
    )]
    pub git_author_email: String,
}

impl RemoteArgs {
    /// The backend options these flags describe, with `author` for git
    /// commits (the defaults when `None`: reading commands write none).
    pub fn options(&self, author: Option<&GitAuthorArgs>) -> crate::remote::RemoteOptions {
        crate::remote::RemoteOptions {
            ssh_key_file: self.ssh_key_file.clone(),
            ssh_known_hosts_file: self.ssh_known_hosts_file.clone(),
            token_file: self.token_file.clone(),
            git_author_name: author.map_or_else(|| "tether".into(), |a| a.git_author_name.clone()),
            git_author_email: author
                .map_or_else(|| "tether@localhost".into(), |a| a.git_author_email.clone()),
            allow_instance_credentials: self.allow_instance_credentials,
            request_timeout: Some(self.request_timeout),
            encryption_key_file: self.encryption_key_file.clone(),
            concurrency: None,
        }
    }
}

/// When `sync` restores before watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreWhen {
    /// When DIR is missing or empty (`lost+found` aside).
    IfEmpty,
    /// Never: push DIR as it is.
    Never,
}

/// `tether sync`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// The directory to keep in sync (created if missing; its parent must exist).
    pub dir: PathBuf,
    /// Remote URL: `file:///dir`, `s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `memory://`, or a git remote (`ssh://`, `https://host/repo.git`, `git://`,
    /// `file:///….git`, with `?branch=`). Default: a local store under
    /// `$XDG_DATA_HOME/tether/store/`.
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub to: Option<String>,
    /// Push the current state once and exit (CronJobs, preStop hooks).
    #[arg(long, env = "TETHER_ONCE")]
    pub once: bool,
    /// When to restore DIR from the remote before watching.
    #[arg(long, env = "TETHER_RESTORE", value_enum, default_value_t = RestoreWhen::IfEmpty)]
    pub restore: RestoreWhen,
    /// On SIGTERM/SIGINT (and with --once), keep pushing pending changes
    /// for at most this long (below Kubernetes' 30 s grace period).
    #[arg(long, env = "TETHER_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub grace: Duration,
    /// Serve /healthz, /readyz and /metrics on this address (off unless
    /// set), e.g. `0.0.0.0:9477`.
    #[arg(long, env = "TETHER_HTTP_BIND", value_name = "ADDR")]
    pub http_bind: Option<SocketAddr>,
    /// Serve the history page (timeline, files, diffs, "restore a copy")
    /// on this address, e.g. `127.0.0.1:9478` (a bare port means
    /// 127.0.0.1); off unless set. Keep it on loopback: in a pod,
    /// jupyter-server-proxy reaches it behind JupyterHub's login. Never
    /// the --http-bind port.
    #[arg(long, env = "TETHER_UI_BIND", value_name = "ADDR", value_parser = parse_ui_bind)]
    pub ui_bind: Option<SocketAddr>,
    /// /readyz fails once a change has waited this long without any push
    /// succeeding (a failing or hanging remote, a full state directory).
    #[arg(long, env = "TETHER_UNREADY_AFTER", value_parser = parse_duration, default_value = "2m")]
    pub unready_after: Duration,
    /// Wait this long after the last change before pushing.
    #[arg(long, env = "TETHER_DEBOUNCE", value_parser = parse_duration, default_value = "1s")]
    pub debounce: Duration,
    /// Never wait longer than this after the first change.
    #[arg(long, env = "TETHER_MAX_LATENCY", value_parser = parse_duration, default_value = "10s")]
    pub max_latency: Duration,
    /// Ignore file in gitignore syntax; relative paths are inside DIR.
    #[arg(
        long,
        env = "TETHER_IGNORE_FILE",
        value_name = "PATH",
        default_value = ".tetherignore"
    )]
    pub ignore_file: PathBuf,
    /// Extra ignore pattern (gitignore syntax); repeat, or comma-separate
    /// in the environment variable.
    #[arg(
        long = "ignore",
        env = "TETHER_IGNORE",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub ignore: Vec<String>,
    /// Do not apply the built-in ignore patterns (editor swap files,
    /// .ipynb_checkpoints, .DS_Store).
    #[arg(long, env = "TETHER_NO_DEFAULT_IGNORES")]
    pub no_default_ignores: bool,
    /// Rescan the whole tree at this interval instead of using inotify
    /// (network filesystems, where inotify sees nothing).
    #[arg(long, env = "TETHER_POLL_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Option<Duration>,
    /// Hash every file at start-up instead of trusting size and mtime:
    /// finds content changed while tether was not running by a tool that
    /// restored size and mtime. Reads the whole tree at every start.
    #[arg(long, env = "TETHER_VERIFY_HASHES")]
    pub verify_hashes: bool,
    /// The mass-delete guard: when one checkpoint would delete more than
    /// this of the remote's files — a share (`50%`, and always more than
    /// 100 files) or a count (`1000`) — its deletes are held back (logged,
    /// in /metrics and /readyz) while everything else is still pushed,
    /// until the files come back or --allow-mass-delete confirms them.
    #[arg(long, env = "TETHER_MAX_DELETE", value_parser = parse_max_delete, default_value = "50%", value_name = "N|P%")]
    pub max_delete: sync_core::DeleteGuard,
    /// Push deletes however many files they remove (confirms a mass
    /// delete the guard held back; see --max-delete).
    #[arg(long, env = "TETHER_ALLOW_MASS_DELETE")]
    pub allow_mass_delete: bool,
    /// Retention of an object store's snapshots (snapshots layout): a
    /// policy spec (`within=1h,hourly=48,daily=14,weekly=8`, the default;
    /// rules `within`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`,
    /// `last`) or `off`. The sidecar runs forget + prune with it in the
    /// background every --maintenance-interval. Without --retention, the
    /// --keep-last … --keep-within flags alone form the policy when any is
    /// given.
    #[arg(long, env = "TETHER_RETENTION", value_name = "SPEC|off", value_parser = parse_retention)]
    pub retention: Option<Retention>,
    /// Retention rules (override --retention's).
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Time between two background maintenance runs (forget + prune under
    /// the repository's lease); the first runs one minute after start (or
    /// after one interval, if shorter).
    #[arg(long, env = "TETHER_MAINTENANCE_INTERVAL", value_parser = parse_duration, default_value = "1h", value_name = "DURATION")]
    pub maintenance_interval: Duration,
    /// The grace period of the background prune (see `tether prune --grace`).
    #[arg(long, env = "TETHER_PRUNE_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    pub prune_grace: Option<Duration>,
    /// Git commit author.
    #[command(flatten)]
    pub author: GitAuthorArgs,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The directory to restore into (created if missing; its parent must exist).
    pub dir: PathBuf,
    /// Remote URL (see `tether sync --help`). Default: the local store
    /// `tether sync DIR` uses.
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: Option<String>,
    /// Restore this snapshot or commit (see `tether history`) instead of
    /// the newest.
    #[arg(long, env = "TETHER_RESTORE_AT", value_name = "ID")]
    pub at: Option<String>,
    /// What to do with files already in DIR: `keep-newer` keeps local
    /// files newer than the remote's (a pod restarting on its volume),
    /// `overwrite` replaces them, `fail` refuses a non-empty DIR.
    #[arg(long, env = "TETHER_EXISTING", value_name = "POLICY", default_value = "keep-newer",
          value_parser = parse_existing)]
    pub existing: sync_core::ExistingPolicy,
    /// Restore only this file or directory (a path inside DIR, as
    /// `tether history`'s remote holds it); repeat for more. Nothing else
    /// in DIR is touched, and the index is left as it is.
    #[arg(long = "path", value_name = "PATH", value_parser = parse_rel_path)]
    pub paths: Vec<sync_core::RelPath>,
    /// With --path: write each as `name (tether YYYY-MM-DD HH:MM).ext`
    /// beside the original (the checkpoint's time, UTC) instead of
    /// replacing it; never overwrites anything. Works while `tether sync`
    /// runs on DIR.
    #[arg(long, requires = "paths")]
    pub as_copy: bool,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether cat`.
#[derive(Debug, Clone, Args)]
pub struct CatArgs {
    /// The file, as a path inside the synced directory (`notebooks/a.ipynb`).
    #[arg(value_parser = parse_rel_path)]
    pub path: sync_core::RelPath,
    /// Remote URL (see `tether sync --help`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// Read it from this snapshot or commit (see `tether history`) instead
    /// of the newest.
    #[arg(long, env = "TETHER_RESTORE_AT", value_name = "ID")]
    pub at: Option<String>,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// A folder (or file) inside the synced directory; default: the top.
    #[arg(value_parser = parse_rel_path)]
    pub path: Option<sync_core::RelPath>,
    /// Remote URL (see `tether sync --help`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// List this snapshot or commit (see `tether history`) instead of the
    /// newest.
    #[arg(long, env = "TETHER_RESTORE_AT", value_name = "ID")]
    pub at: Option<String>,
    /// Modes, sizes and modification times too.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// Everything below, not only the folder's own entries.
    #[arg(long, short = 'R')]
    pub recursive: bool,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The older checkpoint (default: the one before NEW in `tether
    /// history`).
    pub old: Option<String>,
    /// The newer checkpoint (default: the newest).
    pub new: Option<String>,
    /// Remote URL (see `tether sync --help`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: String,
    /// Only this file or folder.
    #[arg(long, value_parser = parse_rel_path)]
    pub path: Option<sync_core::RelPath>,
    /// Only the list of added, modified and deleted paths with sizes, no
    /// content diffs.
    #[arg(long)]
    pub stat: bool,
    /// Also report execution counts and cell metadata of notebooks.
    #[arg(long)]
    pub notebook_metadata: bool,
    /// Compare one checkpoint (OLD, default the newest) with this local
    /// directory as `tether sync` reads it (ignore rules applied).
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tether history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The synced directory whose local store to list (when `--from` is
    /// not given), as `tether sync DIR` without `--to` uses it.
    pub dir: Option<PathBuf>,
    /// Remote URL (see `tether sync --help`).
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub from: Option<String>,
    /// Show at most this many checkpoints, newest first.
    #[arg(long, env = "TETHER_HISTORY_LIMIT", default_value_t = 20)]
    pub limit: usize,
    /// Remote options.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Where the webhook certificates are kept.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct CertStoreArgs {
    /// Keep the certificates in this directory (ca.crt, ca.key, tls.crt,
    /// tls.key).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Keep the certificates in this Kubernetes Secret (in --namespace).
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
}

/// `tether certs`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make (or renew) the CA and serving certificate for a Service; does
    /// nothing when valid ones for the same names are stored.
    Create {
        /// The webhook's Service name.
        #[arg(long)]
        service: String,
        /// The Service's namespace.
        #[arg(long, env = "TETHER_NAMESPACE")]
        namespace: String,
        /// Where to keep them.
        #[command(flatten)]
        store: CertStoreArgs,
    },
    /// Set caBundle of every webhook in a Mutating/ValidatingWebhookConfiguration
    /// to the stored CA bundle.
    Patch {
        /// Name of the webhook configuration.
        #[arg(long)]
        webhook_config: String,
        /// Namespace of the Secret.
        #[arg(long, env = "TETHER_NAMESPACE", default_value = "default")]
        namespace: String,
        /// Where the certificates are.
        #[command(flatten)]
        store: CertStoreArgs,
    },
    /// Print the stored certificates' names and expiry.
    Show {
        /// Namespace of the Secret.
        #[arg(long, env = "TETHER_NAMESPACE", default_value = "default")]
        namespace: String,
        /// Where the certificates are.
        #[command(flatten)]
        store: CertStoreArgs,
    },
}

/// Sidecar settings the injector writes into pods.
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// Image of the injected tether containers.
    #[arg(long, env = "TETHER_SIDECAR_IMAGE", default_value = kube_deploy::inject::DEFAULT_IMAGE)]
    pub sidecar_image: String,
    /// `native` (an init container with restartPolicy Always, Kubernetes ≥
    /// 1.29) or `container` (older clusters).
    #[arg(long, env = "TETHER_SIDECAR_MODE", value_enum, default_value_t = SidecarModeArg::Native)]
    pub sidecar_mode: SidecarModeArg,
    /// Flush deadline of the sidecar on termination, seconds.
    #[arg(long, env = "TETHER_GRACE_SECONDS", default_value_t = kube_deploy::inject::DEFAULT_GRACE_SECONDS)]
    pub grace_seconds: u32,
    /// Port of the sidecar's /healthz, /readyz and /metrics.
    #[arg(long, env = "TETHER_SIDECAR_HTTP_PORT", default_value_t = kube_deploy::inject::DEFAULT_HTTP_PORT)]
    pub sidecar_http_port: u16,
    /// Retention of injected sidecars whose pod has no
    /// `tether.dev/retention` (object stores in the snapshots layout): a
    /// policy spec or `off`.
    #[arg(long, env = "TETHER_SIDECAR_RETENTION", value_name = "SPEC|off",
          default_value = sync_core::retention::DEFAULT_SIDECAR_POLICY_SPEC,
          value_parser = parse_injector_retention)]
    pub retention: kube_deploy::annotations::Retention,
}

fn parse_injector_retention(s: &str) -> Result<kube_deploy::annotations::Retention, String> {
    s.parse()
}

impl InjectorArgs {
    /// The injector configuration.
    pub fn config(&self) -> kube_deploy::InjectorConfig {
        kube_deploy::InjectorConfig {
            image: self.sidecar_image.clone(),
            sidecar_mode: match self.sidecar_mode {
                SidecarModeArg::Native => kube_deploy::SidecarMode::Native,
                SidecarModeArg::Container => kube_deploy::SidecarMode::Container,
            },
            grace_seconds: self.grace_seconds,
            http_port: self.sidecar_http_port,
            retention: self.retention,
            ..kube_deploy::InjectorConfig::default()
        }
    }
}

/// `--sidecar-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarModeArg {
    /// Native sidecar.
    Native,
    /// Regular container.
    Container,
}

/// `tether webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS listener.
    #[arg(long, env = "TETHER_WEBHOOK_BIND", default_value = "0.0.0.0:8443")]
    pub bind: SocketAddr,
    /// The webhook's Service name (the certificate's DNS names).
    #[arg(long, env = "TETHER_WEBHOOK_SERVICE")]
    pub service: String,
    /// Namespace the webhook runs in (from the downward API).
    #[arg(long, env = "TETHER_NAMESPACE")]
    pub namespace: String,
    /// Secret holding the webhook's certificates (created and rotated).
    #[arg(
        long,
        env = "TETHER_WEBHOOK_SECRET",
        conflicts_with = "cert_dir",
        required_unless_present = "cert_dir"
    )]
    pub secret: Option<String>,
    /// Keep the certificates in a directory instead of a Secret (no
    /// Kubernetes API needed; for local runs).
    #[arg(long, value_name = "PATH")]
    pub cert_dir: Option<PathBuf>,
    /// MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long, env = "TETHER_WEBHOOK_CONFIG")]
    pub webhook_config: Option<String>,
    /// How often certificates are checked for renewal.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub check_interval: Duration,
    /// Injector settings.
    #[command(flatten)]
    pub injector: InjectorArgs,
}

/// `tether manifests`.
#[derive(Debug, Subcommand)]
pub enum ManifestsCommand {
    /// Inject tether into the annotated workloads of a YAML stream and
    /// print the result (like `linkerd inject`).
    Inject {
        /// The YAML file (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Injector settings.
        #[command(flatten)]
        injector: InjectorArgs,
    },
    /// Print the webhook's deployment bundle (namespace, RBAC, Deployment,
    /// Service, PDB, MutatingWebhookConfiguration).
    Webhook(Box<WebhookManifestArgs>),
    /// Deploy a folder of a remote as a web app (Deployment, Service,
    /// optional Ingress and NetworkPolicy): its files are restored from the
    /// remote at a pinned snapshot (or followed), a notebook entry is
    /// converted to a script; print the YAML or commit it with --to.
    App(Box<AppManifestArgs>),
}

/// `tether manifests app`.
#[derive(Debug, Clone, Args)]
pub struct AppManifestArgs {
    /// Name of the app's objects.
    #[arg(long)]
    pub name: String,
    /// Namespace of the app's objects (default: none, the one they are
    /// applied in).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The remote that holds the app's folder.
    #[arg(long, env = "TETHER_REMOTE", value_name = "URL")]
    pub remote: String,
    /// Deploy this snapshot or commit (default: the newest at generation
    /// time; either way its id is written into the manifest).
    #[arg(long, value_name = "ID", conflicts_with = "follow")]
    pub at: Option<String>,
    /// Follow the newest snapshot instead (a `tether follow` sidecar).
    #[arg(long)]
    pub follow: bool,
    /// Poll interval of --follow.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// The app's folder inside the remote (default: the top).
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
    /// The entry point, relative to --path: a notebook (converted to a
    /// script) or a Python script.
    #[arg(long, default_value = "app.ipynb")]
    pub entry: String,
    /// The program the script is given to, split like a shell would
    /// (`python`, `streamlit run`, `panel serve --port 8080`); `{script}`
    /// marks where the script goes, else it is appended.
    #[arg(long, default_value = "python")]
    pub command: String,
    /// The port the app listens on (also in $PORT).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// HTTP path of the app's readiness probe.
    #[arg(long, default_value = "/")]
    pub readiness_path: String,
    /// The app's image (Python and the web framework).
    #[arg(long, default_value = "docker.io/library/python:3.12-slim")]
    pub image: String,
    /// The tether image (restore, convert, follow).
    #[arg(long, value_name = "IMAGE", default_value = kube_deploy::inject::DEFAULT_IMAGE)]
    pub tether_image: String,
    /// A requirements file relative to --path, installed by pip from the
    /// app image into an emptyDir at pod start (default: the image has
    /// everything).
    #[arg(long, value_name = "FILE")]
    pub requirements: Option<String>,
    /// Secret with read-only credentials for the remote (same keys as
    /// `tether.dev/credentials-secret`).
    #[arg(long, value_name = "NAME")]
    pub credentials_secret: Option<String>,
    /// CPU request of the app (default 100m).
    #[arg(long)]
    pub cpu_request: Option<String>,
    /// Memory request of the app (default 256Mi).
    #[arg(long)]
    pub memory_request: Option<String>,
    /// CPU limit of the app (default none).
    #[arg(long)]
    pub cpu_limit: Option<String>,
    /// Memory limit of the app (default 1Gi).
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Replicas.
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// UID of the pod's containers (Python images run as root, which the
    /// restricted profile refuses; one UID lets the app read what tether
    /// restored).
    #[arg(long, default_value_t = 1000, conflicts_with = "platform_uid")]
    pub run_as_user: i64,
    /// Set no UID: the platform assigns one (OpenShift).
    #[arg(long)]
    pub platform_uid: bool,
    /// Host name of an Ingress (no Ingress without it).
    #[arg(long)]
    pub host: Option<String>,
    /// ingressClassName of the Ingress.
    #[arg(long, requires = "host")]
    pub ingress_class: Option<String>,
    /// TLS Secret of the Ingress.
    #[arg(long, requires = "host")]
    pub tls_secret: Option<String>,
    /// Add a NetworkPolicy admitting traffic to the app's port only.
    #[arg(long)]
    pub network_policy: bool,
    /// Commit the manifests into this GitOps git repository (for ArgoCD or
    /// Flux) instead of printing them; never force-pushes.
    #[arg(long, value_name = "GIT-URL")]
    pub to: Option<String>,
    /// The file inside --to's repository (default `apps/NAME/NAME.yaml`).
    #[arg(long, value_name = "PATH", requires = "to", value_parser = parse_rel_path)]
    pub to_file: Option<sync_core::RelPath>,
    /// Git commit author (--to).
    #[command(flatten)]
    pub author: GitAuthorArgs,
    /// Remote options (for the remote and --to).
    #[command(flatten)]
    pub remote_options: RemoteArgs,
}

/// `tether manifests webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookManifestArgs {
    /// Namespace of the webhook.
    #[arg(long, default_value = "tether-system")]
    pub namespace: String,
    /// Name of the webhook's objects.
    #[arg(long, default_value = "tether-webhook")]
    pub name: String,
    /// Name of the TLS Secret.
    #[arg(long = "secret-name", default_value = "tether-webhook-tls")]
    pub secret_name: String,
    /// Image of the webhook.
    #[arg(long, default_value = kube_deploy::inject::DEFAULT_IMAGE)]
    pub image: String,
    /// Webhook replicas.
    #[arg(long, default_value_t = 2)]
    pub replicas: i32,
    /// Container port of the HTTPS listener.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// What the API server does when the webhook is unreachable (for
    /// opted-in pods only). Default: `fail` with --ca-file, else `ignore`;
    /// `fail` needs --ca-file.
    #[arg(long, value_enum)]
    pub failure_policy: Option<FailurePolicyArg>,
    /// PEM CA bundle to embed as caBundle: the ca.crt of the certificates
    /// `tether certs create` stored for the webhook.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// priorityClassName of the webhook's pods (default none).
    #[arg(long, value_name = "NAME")]
    pub priority_class: Option<String>,
    /// Seconds the API server waits for the webhook (1–30).
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: i32,
    /// Namespace never sent to the webhook (repeat); kube-system and the
    /// webhook's own are always excluded.
    #[arg(long = "exclude-namespace", value_name = "NAMESPACE")]
    pub exclude_namespace: Vec<String>,
    /// Only namespaces with this label (`key=value`) are sent to the webhook.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub namespace_label: Option<(String, String)>,
    /// Injector settings.
    #[command(flatten)]
    pub injector: InjectorArgs,
}

/// `--failure-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// Refuse pods while the webhook is down.
    Fail,
    /// Admit pods unchanged while the webhook is down.
    Ignore,
}

/// Parses `25s`, `1m30s`, `500ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{e} (expected a duration like 25s, 2m, 500ms)"))
}

/// `--ui-bind`: an address, or a bare port on 127.0.0.1.
fn parse_ui_bind(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse()
        .map_err(|e| format!("{e} (expected an address like 127.0.0.1:9478, or a port)"))
}

/// `--max-delete`: see [`sync_core::DeleteGuard`]'s `FromStr`.
fn parse_max_delete(s: &str) -> Result<sync_core::DeleteGuard, String> {
    s.parse()
}

/// A path inside the synced directory: relative, no `..`, no `//`.
fn parse_rel_path(s: &str) -> Result<sync_core::RelPath, String> {
    sync_core::RelPath::new(s.trim_end_matches('/'))
        .map_err(|e| format!("{s:?} is not a path inside the directory: {e}"))
}

fn parse_existing(s: &str) -> Result<sync_core::ExistingPolicy, String> {
    s.parse()
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

/// Turns a clap error into what the command prints: help and version as
/// clap renders them (exit 0), anything else as one line `tether: …`
/// (exit 2).
pub fn render_clap_error(e: &clap::Error) -> (String, u8) {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => (e.render().to_string(), 0),
        _ => {
            let text = e.render().to_string();
            let head = text.split("\n\nUsage:").next().unwrap_or(&text);
            let head = head.strip_prefix("error: ").unwrap_or(head);
            let mut line = String::new();
            for part in head
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            {
                if !line.is_empty() {
                    line.push_str(if line.ends_with(':') { " " } else { "; " });
                }
                line.push_str(part);
            }
            (format!("tether: {line}\n"), 2)
        }
    }
}

impl From<clap::Error> for CliError {
    fn from(e: clap::Error) -> Self {
        CliError::usage(
            render_clap_error(&e)
                .0
                .trim_start_matches("tether: ")
                .trim_end(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn kube_deploy_contract_parses() {
        let cli = Cli::try_parse_from([
            "tether",
            "sync",
            "/home/jovyan",
            "--to",
            "s3://b/alice",
            "--grace",
            "25s",
            "--http-bind",
            "0.0.0.0:9477",
        ])
        .unwrap();
        let Command::Sync(s) = cli.command else {
            panic!("not sync")
        };
        assert_eq!(s.grace, Duration::from_secs(25));
        assert_eq!(s.http_bind, Some("0.0.0.0:9477".parse().unwrap()));
        let args = kube_deploy::WebhookManifestConfig::default().container_args();
        let mut argv = vec!["tether".to_owned()];
        argv.extend(args);
        let cli = Cli::try_parse_from(argv.iter().map(String::as_str).chain(["--namespace", "x"]))
            .unwrap();
        assert!(matches!(cli.command, Command::Webhook(_)));
        // A non-default retention reaches the webhook's injector.
        let mut config = kube_deploy::WebhookManifestConfig::default();
        config.injector.retention = kube_deploy::annotations::Retention::Off;
        let mut argv = vec!["tether".to_owned()];
        argv.extend(config.container_args());
        let cli = Cli::try_parse_from(argv.iter().map(String::as_str).chain(["--namespace", "x"]))
            .unwrap();
        let Command::Webhook(w) = cli.command else {
            panic!("not webhook")
        };
        assert_eq!(
            w.injector.config().retention,
            kube_deploy::annotations::Retention::Off
        );
        let d = Cli::try_parse_from(["tether", "manifests", "inject", "-f", "-"]).unwrap();
        let Command::Manifests(ManifestsCommand::Inject { injector, .. }) = d.command else {
            panic!("not inject")
        };
        assert_eq!(
            injector.config().retention,
            kube_deploy::annotations::Retention::DEFAULT
        );
    }

    #[test]
    fn retention_flags() {
        let s = parse(&[]);
        assert_eq!(s.retention, None);
        assert!(s.keep.is_empty());
        assert_eq!(s.maintenance_interval, Duration::from_secs(3600));
        let s = parse(&[
            "--retention",
            "off",
            "--maintenance-interval",
            "10m",
            "--prune-grace",
            "30m",
        ]);
        assert_eq!(s.retention, Some(Retention::Off));
        assert_eq!(s.prune_grace, Some(Duration::from_secs(1800)));
        let s = parse(&[
            "--retention",
            "daily=7",
            "--keep-last",
            "3",
            "--keep-weekly",
            "unlimited",
        ]);
        assert_eq!(
            s.retention,
            Some(Retention::Policy("daily=7".parse().unwrap()))
        );
        assert_eq!(s.keep.keep_last, Some(3));
        assert_eq!(s.keep.keep_weekly, Some(u32::MAX));
        for bad in [
            &["--retention", "daily=0"][..],
            &["--retention", ""],
            &["--keep-last", "0"],
            &["--keep-within", "0s"],
            &["--keep-daily", "many"],
        ] {
            let argv = ["tether", "sync", "/w"].iter().chain(bad).copied();
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(render_clap_error(&e).1, 2, "{bad:?}");
        }
        let e = Cli::try_parse_from([
            "tether",
            "check",
            "--from",
            "file:///s",
            "--read-data-subset",
            "0%",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("1% to 100%"), "{e}");
        let c = Cli::try_parse_from([
            "tether",
            "check",
            "--from",
            "file:///s",
            "--read-data-subset",
            "5%",
        ])
        .unwrap();
        let Command::Check(c) = c.command else {
            panic!("not check")
        };
        assert_eq!(c.read_data_subset, Some(5));
    }

    /// `tether sync /w` with `extra` flags.
    fn parse(extra: &[&str]) -> SyncArgs {
        let argv = ["tether", "sync", "/w"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Sync(s) => *s,
            _ => panic!("not sync"),
        }
    }

    #[test]
    fn max_delete_takes_a_share_or_a_count() {
        let s = parse(&[]);
        assert_eq!(s.max_delete, sync_core::DeleteGuard::default());
        assert!(!s.allow_mass_delete);
        let s = parse(&["--max-delete", "20%", "--allow-mass-delete"]);
        assert_eq!(s.max_delete.max_percent, 20);
        assert_eq!(s.max_delete.min_files, 100);
        assert!(s.allow_mass_delete);
        let s = parse(&["--max-delete", "1000"]);
        assert_eq!(
            (s.max_delete.min_files, s.max_delete.max_percent),
            (1000, 0)
        );
        assert!(Cli::try_parse_from(["tether", "sync", "d", "--max-delete", "101%"]).is_err());
    }

    #[test]
    fn request_timeout_and_verify_hashes() {
        let s = parse(&[]);
        assert_eq!(s.remote.request_timeout, Duration::from_secs(30));
        assert!(!s.verify_hashes);
        let s = parse(&["--request-timeout", "5s", "--verify-hashes"]);
        assert_eq!(s.remote.request_timeout, Duration::from_secs(5));
        assert_eq!(
            s.remote.options(None).request_timeout,
            Some(Duration::from_secs(5))
        );
        assert!(s.verify_hashes);
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = Cli::try_parse_from(["tether", "restore"]).unwrap_err();
        let (text, code) = render_clap_error(&e);
        assert_eq!(code, 2);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("<DIR>"), "{text}");
    }
}
