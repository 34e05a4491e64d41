//! Retention for the CLI: which policy the flags describe, how `forget`,
//! `prune` and `check` reports read, and the sidecar's background
//! maintenance task.
//!
//! ```text
//! --policy/--retention SPEC ⊕ --keep-* ─► forget_policy / sidecar_policy ─► ForgetPolicy
//! tether forget|prune|check ─► open (object store, snapshots layout) ─► sync_s3 forget/maintain/prune/check ─► *_text
//! tether sync ─► Sidecar::start ─► (min(1 min, interval), then every interval) ObjectStoreBackend::maintain
//!                                   └► health::Monitor::maintenance_* (/metrics), one log line per run
//! ```
//!
//! The work — the lease, what may be deleted, the grace period — is all in
//! `sync-s3`; this module only composes it. The sidecar's task runs on its
//! own backend (same URL and options, a smaller request budget), so a run
//! never holds a push's requests; it is aborted on shutdown, which is safe
//! (a run stopped mid-way leaves nothing a reader needs missing, and the
//! next run redoes what was left).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sync_core::BackendError;
use sync_core::retention::{DEFAULT_SIDECAR_POLICY, ForgetPolicy};
use sync_s3::maintenance::{CheckReport, DEFAULT_GRACE, ForgetReport, PruneReport};

use crate::cli::{KeepArgs, PruneFlags, Retention};
use crate::commands::human_bytes;
use crate::error::CliError;
use crate::health::Monitor;
use crate::remote::{RemoteOptions, open_object_store};

/// Requests a background maintenance run sends at once (the pushes keep
/// their own budget of the URL's `concurrency`).
pub const MAINTENANCE_CONCURRENCY: usize = 8;

/// The longest the sidecar waits for its first maintenance run: a pod that
/// lives less than one interval (a culled notebook server) still keeps its
/// remote bounded.
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

/// Why the maintenance commands refuse a git remote.
pub const GIT_REFUSAL: &str = "tether forget, prune and check work on object-store remotes (snapshots layout); a git remote keeps every checkpoint as a commit and git deduplicates their objects, so there is nothing to forget or prune (README: \"History on a git remote\")";

/// The policy of `tether forget`: `--policy` with the `--keep-*` flags
/// laid over it; no rule at all is a usage error.
pub fn forget_policy(
    policy: Option<ForgetPolicy>,
    keep: &KeepArgs,
) -> Result<ForgetPolicy, CliError> {
    let policy = keep.overlay(policy.unwrap_or_default());
    if policy.is_empty() {
        return Err(CliError::usage(
            "no retention rule: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, or --policy SPEC (tether forget never removes snapshots without a rule)",
        ));
    }
    Ok(policy)
}

/// The policy of `tether sync` (`None`: retention off): `--retention SPEC`
/// with the `--keep-*` flags laid over it; without `--retention`, the flags
/// alone when any is given, else [`DEFAULT_SIDECAR_POLICY`].
pub fn sidecar_policy(
    retention: Option<Retention>,
    keep: &KeepArgs,
) -> Result<Option<ForgetPolicy>, CliError> {
    match retention {
        Some(Retention::Off) if !keep.is_empty() => Err(CliError::usage(
            "--retention off contradicts the --keep-* flags (TETHER_RETENTION, TETHER_KEEP_*): give one or the other",
        )),
        Some(Retention::Off) => Ok(None),
        Some(Retention::Policy(p)) => Ok(Some(keep.overlay(p))),
        None if keep.is_empty() => Ok(Some(DEFAULT_SIDECAR_POLICY)),
        None => Ok(Some(keep.overlay(ForgetPolicy::default()))),
    }
}

/// The prune options the flags describe (warning when the grace period is
/// below the default).
pub fn prune_options(flags: &PruneFlags, dry_run: bool) -> sync_s3::PruneOptions {
    let mut options = sync_s3::PruneOptions::default();
    if let Some(grace) = flags.grace {
        options.grace = grace;
        if grace < DEFAULT_GRACE {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                default = %humantime::format_duration(DEFAULT_GRACE),
                "a prune grace period below the default is safe only while no writer pushes to this repository (or every writer's reuse window is below half of it, minus the time a push takes): a running push may be about to name an object it deletes"
            );
        }
    }
    if let Some(ttl) = flags.lease_ttl {
        options.lease_ttl = ttl;
    }
    options.dry_run = dry_run;
    options
}

/// The object-store backend of a maintenance command (git refused).
pub fn open(url: &str, options: &RemoteOptions) -> Result<sync_s3::ObjectStoreBackend, CliError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(CliError::usage("--from URL is empty"));
    }
    open_object_store(url, options, GIT_REFUSAL)
}

/// A maintenance command's error with what was being done (an
/// unsupported layout already names the remote and the operation).
pub fn context(e: BackendError, what: impl std::fmt::Display) -> CliError {
    match e {
        BackendError::Unsupported { .. } => CliError::from(e),
        e => crate::commands::context(e, what),
    }
}

/// `a, b` of a verdict's reasons.
fn reasons(v: &sync_s3::maintenance::SnapshotVerdict) -> String {
    v.reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What forget decided, one snapshot a line (newest first), then the
/// totals.
pub fn forget_text(report: &ForgetReport) -> String {
    let w = report
        .snapshots
        .iter()
        .map(|v| v.id.len())
        .fold(24, usize::max);
    let mut out = format!(
        "{:<w$} {:<20} {:<8} WHY\n",
        "SNAPSHOT", "TIME (UTC)", "ACTION"
    );
    for v in &report.snapshots {
        let (action, why) = if v.removed {
            (
                if report.dry_run { "remove" } else { "removed" },
                "no rule keeps it".to_owned(),
            )
        } else if v.too_recent {
            (
                "keep",
                "too recent: it stopped being the newest less than twice the writers' reuse window ago, and a writer may still build on it (a later run removes it)".to_owned(),
            )
        } else {
            ("keep", reasons(v))
        };
        out.push_str(&format!(
            "{:<w$} {:<20} {:<8} {}\n",
            crate::logging::escape_controls(&v.id),
            crate::commands::history::utc(v.time),
            action,
            why
        ));
    }
    out.push_str(&format!(
        "{} snapshots: {} kept, {} {}\n",
        report.snapshots.len(),
        report.kept(),
        report.removed(),
        if report.dry_run {
            "would be removed (dry run: nothing removed)"
        } else {
            "removed"
        }
    ));
    out
}

/// What prune did.
pub fn prune_text(report: &PruneReport, grace: Duration) -> String {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut out = format!(
        "before: {} objects, {} ({} snapshots)\n",
        report.objects_before,
        human_bytes(report.bytes_before),
        report.snapshots
    );
    out.push_str(&format!(
        "{verb}: {} objects, {} freed\n",
        report.objects_deleted,
        human_bytes(report.bytes_freed)
    ));
    out.push_str(&format!(
        "waiting: {} unreferenced objects, {} (younger than the grace period of {}; a later prune deletes them if still unreferenced)\n",
        report.objects_waiting,
        human_bytes(report.bytes_waiting),
        humantime::format_duration(grace)
    ));
    out.push_str(&format!(
        "referenced: {} (the tree nodes and content the kept snapshots need)\n",
        human_bytes(report.bytes_referenced)
    ));
    out.push_str(&format!(
        "unused bytes in live packs: {} (prune does not repack)\n",
        human_bytes(report.bytes_unused_in_live_packs)
    ));
    if report.dry_run {
        out.push_str("dry run: nothing deleted\n");
    }
    out
}

/// What check found: the counts, then every problem.
pub fn check_text(report: &CheckReport) -> String {
    let mut out = format!(
        "checked {} snapshots, {} tree nodes, {} packs, {} blobs; read {} blobs ({})\n",
        report.snapshots,
        report.nodes,
        report.packs,
        report.blobs,
        report.blobs_read,
        human_bytes(report.bytes_read)
    );
    if report.is_ok() {
        out.push_str("no problems found\n");
    }
    for p in &report.problems {
        out.push_str(&format!("problem: {}\n", crate::error::one_line(p)));
    }
    out
}

/// The sidecar's maintenance, ready to start.
#[derive(Debug)]
pub struct Sidecar {
    backend: Arc<sync_s3::ObjectStoreBackend>,
    policy: ForgetPolicy,
    options: sync_s3::PruneOptions,
    interval: Duration,
}

/// Stops the maintenance task when dropped (shutdown, or any early return
/// of `tether sync`): the run in progress is dropped, which cancels its
/// requests.
#[derive(Debug)]
pub struct Running {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Sidecar {
    /// The maintenance `tether sync` runs for `url`, or `None` (logged
    /// once at info) when retention is off or does not apply: a git remote
    /// or the mirror layout.
    pub fn new(
        url: &str,
        options: &RemoteOptions,
        policy: Option<ForgetPolicy>,
        interval: Duration,
        grace: Option<Duration>,
    ) -> Result<Option<Self>, CliError> {
        let Some(policy) = policy else {
            tracing::info!("retention is off: no background forget or prune");
            return Ok(None);
        };
        if interval.is_zero() {
            return Err(CliError::usage(
                "--maintenance-interval must be more than 0 (use --retention off to switch maintenance off)",
            ));
        }
        let spec = crate::remote::check(url)?;
        if spec.family() == crate::remote::RemoteFamily::Git {
            tracing::info!(
                "retention does not apply to git remotes: every checkpoint is a commit and git deduplicates objects (README: \"History on a git remote\")"
            );
            return Ok(None);
        }
        let options = RemoteOptions {
            concurrency: Some(MAINTENANCE_CONCURRENCY),
            ..options.clone()
        };
        let backend = open_object_store(url, &options, GIT_REFUSAL)?;
        if backend.layout() != sync_s3::Layout::Snapshots {
            tracing::info!(
                "retention does not apply to the mirror layout: it keeps only the newest state"
            );
            return Ok(None);
        }
        let flags = PruneFlags {
            grace,
            lease_ttl: None,
        };
        Ok(Some(Sidecar {
            backend: Arc::new(backend),
            policy,
            options: prune_options(&flags, false),
            interval,
        }))
    }

    /// Starts the background task: the first run after
    /// `min(FIRST_RUN_AFTER, interval)`, then one every interval (a run
    /// that overruns delays the next; runs never overlap).
    pub fn start(self, monitor: Arc<Monitor>) -> Running {
        tracing::info!(
            policy = %self.policy,
            interval = %humantime::format_duration(self.interval),
            grace = %humantime::format_duration(self.options.grace),
            "background maintenance (forget + prune) enabled"
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                () = self.run_forever(&monitor) => {}
                _ = stopped => tracing::debug!("background maintenance stopped"),
            }
        });
        Running { _stop: stop }
    }

    async fn run_forever(&self, monitor: &Monitor) {
        let first = tokio::time::Instant::now() + self.interval.min(FIRST_RUN_AFTER);
        let mut ticks = tokio::time::interval_at(first, self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.run_once(monitor).await;
        }
    }

    async fn run_once(&self, monitor: &Monitor) {
        let started = std::time::Instant::now();
        match self.backend.maintain(&self.policy, &self.options).await {
            Ok(r) => {
                monitor.maintenance_done(&r, SystemTime::now());
                tracing::info!(
                    kept = r.forget.kept(),
                    removed = r.forget.removed(),
                    objects_deleted = r.prune.objects_deleted,
                    bytes_freed = r.prune.bytes_freed,
                    objects_waiting = r.prune.objects_waiting,
                    unused_bytes_in_live_packs = r.prune.bytes_unused_in_live_packs,
                    ms = started.elapsed().as_millis() as u64,
                    "maintenance done: {} snapshots kept, {} removed, {} freed",
                    r.forget.kept(),
                    r.forget.removed(),
                    human_bytes(r.prune.bytes_freed)
                );
            }
            Err(BackendError::Remote {
                operation: "lease",
                message,
                ..
            }) => {
                monitor.maintenance_skipped();
                tracing::info!(reason = %message, "maintenance skipped: another maintainer has the repository's lease; trying again next interval");
            }
            Err(BackendError::NotFound { .. }) => {
                tracing::debug!("maintenance skipped: nothing pushed yet");
            }
            Err(e) => {
                monitor.maintenance_failed();
                tracing::warn!(error = %e, "maintenance failed; trying again next interval");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(last: Option<u32>, daily: Option<u32>) -> KeepArgs {
        KeepArgs {
            keep_last: last,
            keep_daily: daily,
            ..KeepArgs::default()
        }
    }

    #[test]
    fn forget_needs_a_rule_and_flags_override_the_spec() {
        let e = forget_policy(None, &KeepArgs::default()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--keep-last"), "{e}");
        let spec: ForgetPolicy = "daily=7,weekly=4".parse().unwrap();
        let p = forget_policy(Some(spec), &keep(Some(3), Some(2))).unwrap();
        assert_eq!(p.to_string(), "daily=2,weekly=4,last=3");
        assert_eq!(
            forget_policy(None, &keep(Some(2), None))
                .unwrap()
                .to_string(),
            "last=2"
        );
    }

    #[test]
    fn the_sidecar_default_off_and_flags() {
        let none = KeepArgs::default();
        assert_eq!(
            sidecar_policy(None, &none).unwrap(),
            Some(DEFAULT_SIDECAR_POLICY)
        );
        assert_eq!(sidecar_policy(Some(Retention::Off), &none).unwrap(), None);
        // The flags alone form the policy (no default rules mixed in).
        assert_eq!(
            sidecar_policy(None, &keep(None, Some(5)))
                .unwrap()
                .unwrap()
                .to_string(),
            "daily=5"
        );
        // … or override the spec's rules.
        let spec = Retention::Policy("within=1h,daily=14".parse().unwrap());
        assert_eq!(
            sidecar_policy(Some(spec), &keep(None, Some(5)))
                .unwrap()
                .unwrap()
                .to_string(),
            "within=1h,daily=5"
        );
        let e = sidecar_policy(Some(Retention::Off), &keep(Some(1), None)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
