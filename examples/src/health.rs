//! Readiness, metrics and the HTTP endpoint of `tether sync`.
//!
//! The sync loop samples [`sync_core::Status`] and hands it to
//! [`Monitor::observe`]; `/readyz` asks the pure [`readiness`] function and
//! `/metrics` encodes the prometheus-client registry that `observe` keeps
//! current.
//!
//! The health signal is *how long changes have waited without any push
//! succeeding* ([`unsaved_for`]), not the count of failed pushes: a remote
//! that hangs completes no push and fails none, and a state directory that
//! is full fails after the remote said yes.
//! `tether_oldest_unsaved_change_seconds` shows the age of the oldest
//! change not yet confirmed. The background maintenance
//! ([`crate::maintenance`]) reports its runs through
//! [`Monitor::maintenance_done`] and friends (`tether_maintenance_*`); it
//! never affects readiness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sync_core::Status;

use crate::error::CliError;

/// Where the sync command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Restoring DIR before watching.
    Restoring,
    /// The engine runs.
    Syncing,
    /// A signal arrived; pending changes are being flushed.
    Stopping,
}

/// What readiness is judged on.
#[derive(Debug, Clone)]
pub struct Health {
    /// The phase.
    pub phase: Phase,
    /// The engine's last status, once it runs.
    pub status: Option<Status>,
    /// Whether the first push succeeded (or there was nothing to push);
    /// stays true afterwards.
    pub initialized: bool,
}

/// Whether a status shows a successful push. The other way to finish the
/// first round, "nothing to push", is known only from the answer to the
/// engine's first `flush()` (see [`Monitor::mark_initialized`]): a status
/// sample alone cannot tell "nothing pending" from "pending not counted
/// yet".
pub fn first_round_done(status: &Status) -> bool {
    status.last_success.is_some()
}

/// How long changes have waited without any push succeeding: the time
/// since the oldest unsaved change was noticed, or since the last
/// successful push if that is later (a large backlog that is being pushed
/// batch by batch is progressing). Zero when nothing is unsaved.
pub fn unsaved_for(status: &Status, now: SystemTime) -> Duration {
    let Some(oldest) = status.oldest_unsaved_change else {
        return Duration::ZERO;
    };
    let since = status.last_success.map_or(oldest, |s| s.max(oldest));
    now.duration_since(since).unwrap_or_default()
}

/// `Ok(())` when ready, else why not. Ready after the restore and the first
/// successful push (or when there was nothing to push); not ready while
/// stopping, while pushes have failed for longer than `unready_after`, or
/// while changes have waited longer than that without any push succeeding
/// (see [`unsaved_for`]).
pub fn readiness(health: &Health, now: SystemTime, unready_after: Duration) -> Result<(), String> {
    match health.phase {
        Phase::Restoring => return Err("restoring".into()),
        Phase::Stopping => return Err("stopping".into()),
        Phase::Syncing => {}
    }
    let Some(status) = &health.status else {
        return Err("starting".into());
    };
    if !health.initialized {
        return Err(match &status.last_error {
            Some(e) => format!("first push not done yet: {e}"),
            None => "first push not done yet".into(),
        });
    }
    if status.withheld_deletes > 0 {
        return Err(format!(
            "{} deletes held back by the mass-delete guard: restore the files, or confirm with --allow-mass-delete",
            status.withheld_deletes
        ));
    }
    if let Some(since) = status.failing_since {
        let failing = now.duration_since(since).unwrap_or_default();
        if failing > unready_after {
            return Err(format!(
                "pushes failing for {}s: {}",
                failing.as_secs(),
                status.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    let waiting = unsaved_for(status, now);
    if waiting > unready_after {
        return Err(format!(
            "changes unsaved for {}s with no push succeeding: {}",
            waiting.as_secs(),
            status
                .last_error
                .as_deref()
                .unwrap_or("a push is in progress and has not finished")
        ));
    }
    Ok(())
}

/// The metrics `/metrics` serves.
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    pending: Gauge,
    checkpoints: Counter,
    files: Counter,
    bytes: Counter,
    failures: Counter,
    conflicts: Counter,
    rescans: Counter,
    source_changed: Counter,
    index_write_failures: Counter,
    oldest_unsaved: Gauge<f64, AtomicU64>,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    ready: Gauge,
    permanent_error: Gauge,
    withheld_deletes: Gauge,
    maintenance: MaintenanceMetrics,
}

/// The background maintenance's metrics (`tether_maintenance_*`).
#[derive(Debug, Default)]
struct MaintenanceMetrics {
    runs: Counter,
    failures: Counter,
    skipped: Counter,
    last_success: Gauge<f64, AtomicU64>,
    kept: Gauge,
    removed: Counter,
    objects_deleted: Counter,
    bytes_freed: Counter,
    unused_bytes: Gauge,
}

impl MaintenanceMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "maintenance_runs",
            "Background maintenance runs (forget + prune) started: succeeded, failed or skipped",
            self.runs.clone(),
        );
        registry.register(
            "maintenance_failures",
            "Background maintenance runs that failed (retried next interval; see the log)",
            self.failures.clone(),
        );
        registry.register(
            "maintenance_skipped",
            "Background maintenance runs skipped because another maintainer held the repository's lease",
            self.skipped.clone(),
        );
        registry.register(
            "maintenance_last_success_timestamp_seconds",
            "Unix time of the last successful background maintenance run",
            self.last_success.clone(),
        );
        registry.register(
            "maintenance_snapshots_kept",
            "Snapshots the last successful maintenance run kept",
            self.kept.clone(),
        );
        registry.register(
            "maintenance_snapshots_removed",
            "Snapshots removed by background maintenance",
            self.removed.clone(),
        );
        registry.register(
            "maintenance_objects_deleted",
            "Objects (packs, tree nodes) deleted by background maintenance",
            self.objects_deleted.clone(),
        );
        registry.register(
            "maintenance_bytes_freed",
            "Bytes deleted from the remote by background maintenance",
            self.bytes_freed.clone(),
        );
        registry.register(
            "maintenance_unused_bytes_in_live_packs",
            "Bytes inside still-referenced packs that no snapshot uses, as the last run measured (prune does not repack)",
            self.unused_bytes.clone(),
        );
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let m = Metrics {
            registry: Registry::default(),
            pending: Gauge::default(),
            checkpoints: Counter::default(),
            files: Counter::default(),
            bytes: Counter::default(),
            failures: Counter::default(),
            conflicts: Counter::default(),
            rescans: Counter::default(),
            source_changed: Counter::default(),
            index_write_failures: Counter::default(),
            oldest_unsaved: Gauge::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            last_success: Gauge::default(),
            ready: Gauge::default(),
            permanent_error: Gauge::default(),
            withheld_deletes: Gauge::default(),
            maintenance: MaintenanceMetrics::default(),
        };
        registry.register(
            "pending_paths",
            "Paths changed but not yet pushed",
            m.pending.clone(),
        );
        registry.register(
            "checkpoints_pushed",
            "Checkpoint batches pushed",
            m.checkpoints.clone(),
        );
        registry.register("files_pushed", "Files uploaded", m.files.clone());
        registry.register("bytes_pushed", "Content bytes uploaded", m.bytes.clone());
        registry.register("push_failures", "Failed pushes", m.failures.clone());
        registry.register(
            "conflicts",
            "Pushes diverted because another writer changed the same paths",
            m.conflicts.clone(),
        );
        registry.register("rescans", "Full-tree comparisons", m.rescans.clone());
        registry.register(
            "source_changed",
            "Pushes interrupted because a file changed while it was read (that file is retried alone)",
            m.source_changed.clone(),
        );
        registry.register(
            "index_write_failures",
            "Pushes whose record could not be written to the index in the state directory (pushed again later)",
            m.index_write_failures.clone(),
        );
        registry.register(
            "oldest_unsaved_change_seconds",
            "Age of the oldest change not yet confirmed by the remote (0 when all is saved)",
            m.oldest_unsaved.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Duration of every push attempt",
            m.duration.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful push",
            m.last_success.clone(),
        );
        registry.register("ready", "1 when /readyz answers 200", m.ready.clone());
        registry.register(
            "remote_error_permanent",
            "1 while pushes fail with an error retrying will not fix (credentials, a missing bucket or repository): see the log",
            m.permanent_error.clone(),
        );
        registry.register(
            "deletes_withheld",
            "Deletes held back by the mass-delete guard (--max-delete): restore the files or confirm with --allow-mass-delete",
            m.withheld_deletes.clone(),
        );
        m.maintenance.register(&mut registry);
        Metrics { registry, ..m }
    }
}

fn grow(counter: &Counter, old: u64, new: u64) {
    if new > old {
        counter.inc_by(new - old);
    }
}

/// Shared between the sync loop and the HTTP endpoint.
#[derive(Debug)]
pub struct Monitor {
    health: Mutex<Health>,
    metrics: Metrics,
    unready_after: Duration,
}

impl Monitor {
    /// A monitor in the `Restoring` phase.
    pub fn new(unready_after: Duration) -> Arc<Self> {
        Arc::new(Monitor {
            health: Mutex::new(Health {
                phase: Phase::Restoring,
                status: None,
                initialized: false,
            }),
            metrics: Metrics::new(),
            unready_after,
        })
    }

    /// Sets the phase.
    pub fn set_phase(&self, phase: Phase) {
        self.health.lock().phase = phase;
        self.refresh_ready();
    }

    /// Records a new status sample; returns the previous one.
    pub fn observe(&self, status: Status) -> Option<Status> {
        let mut h = self.health.lock();
        let old = h.status.take().unwrap_or_default();
        let m = &self.metrics;
        m.pending.set(status.pending_paths as i64);
        m.withheld_deletes
            .set(i64::try_from(status.withheld_deletes).unwrap_or(i64::MAX));
        m.permanent_error
            .set(i64::from(status.last_error_permanent));
        grow(
            &m.checkpoints,
            old.checkpoints_pushed,
            status.checkpoints_pushed,
        );
        grow(&m.files, old.files_pushed, status.files_pushed);
        grow(&m.bytes, old.bytes_pushed, status.bytes_pushed);
        grow(&m.failures, old.push_failures, status.push_failures);
        grow(&m.conflicts, old.conflicts, status.conflicts);
        grow(&m.rescans, old.rescans, status.rescans);
        grow(&m.source_changed, old.source_changed, status.source_changed);
        grow(
            &m.index_write_failures,
            old.index_write_failures,
            status.index_write_failures,
        );
        if let Some(since) = status
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            m.last_success.set(since.as_secs_f64());
        }
        if first_round_done(&status) {
            h.initialized = true;
        }
        h.status = Some(status);
        drop(h);
        self.refresh_ready();
        Some(old)
    }

    /// Records one push attempt's duration (every attempt, from the
    /// engine's push events).
    pub fn observe_push(&self, duration: Duration) {
        self.metrics.duration.observe(duration.as_secs_f64());
    }

    /// Records a successful background maintenance run at `now`.
    pub fn maintenance_done(&self, report: &sync_s3::MaintenanceReport, now: SystemTime) {
        let m = &self.metrics.maintenance;
        m.runs.inc();
        m.kept
            .set(i64::try_from(report.forget.kept()).unwrap_or(i64::MAX));
        m.removed.inc_by(report.forget.removed() as u64);
        m.objects_deleted.inc_by(report.prune.objects_deleted);
        m.bytes_freed.inc_by(report.prune.bytes_freed);
        m.unused_bytes
            .set(i64::try_from(report.prune.bytes_unused_in_live_packs).unwrap_or(i64::MAX));
        if let Ok(since) = now.duration_since(SystemTime::UNIX_EPOCH) {
            m.last_success.set(since.as_secs_f64());
        }
    }

    /// Records a failed background maintenance run.
    pub fn maintenance_failed(&self) {
        self.metrics.maintenance.runs.inc();
        self.metrics.maintenance.failures.inc();
    }

    /// Records a run skipped because another maintainer held the lease.
    pub fn maintenance_skipped(&self) {
        self.metrics.maintenance.runs.inc();
        self.metrics.maintenance.skipped.inc();
    }

    /// Records that the first round finished: the first flush succeeded
    /// (possibly with nothing to push).
    pub fn mark_initialized(&self) {
        self.health.lock().initialized = true;
        self.refresh_ready();
    }

    /// Whether the first round is done.
    pub fn initialized(&self) -> bool {
        self.health.lock().initialized
    }

    /// The readiness verdict now.
    pub fn ready(&self) -> Result<(), String> {
        readiness(&self.health.lock(), SystemTime::now(), self.unready_after)
    }

    fn refresh_ready(&self) {
        self.metrics.ready.set(i64::from(self.ready().is_ok()));
    }

    /// The metrics in Prometheus/OpenMetrics text format.
    pub fn encode_metrics(&self) -> String {
        self.refresh_ready();
        let age = self
            .health
            .lock()
            .status
            .as_ref()
            .and_then(|s| s.oldest_unsaved_change)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        self.metrics.oldest_unsaved.set(age.as_secs_f64());
        let mut text = String::new();
        if encode(&mut text, &self.metrics.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// What the HTTP endpoint asks of a process (the sync sidecar's
/// [`Monitor`], `tether follow`'s monitor): one implementation of
/// `/healthz`, `/readyz` and `/metrics` for both.
pub trait Probe: Send + Sync + 'static {
    /// `Ok` when ready; otherwise why not (the 503 body).
    fn ready(&self) -> Result<(), String>;
    /// The metrics in OpenMetrics text format.
    fn encode_metrics(&self) -> String;
}

impl Probe for Monitor {
    fn ready(&self) -> Result<(), String> {
        Monitor::ready(self)
    }
    fn encode_metrics(&self) -> String {
        Monitor::encode_metrics(self)
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<P: Probe>(State(probe): State<Arc<P>>) -> Response {
    match probe.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics<P: Probe>(State(probe): State<Arc<P>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.encode_metrics(),
    )
        .into_response()
}

/// `/healthz` (the process answers), `/readyz` and `/metrics` of `probe`.
pub fn router<P: Probe>(probe: Arc<P>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<P>))
        .route("/metrics", get(metrics::<P>))
        .with_state(probe)
}

/// Binds `addr` and serves [`router`] in a background task until the
/// returned sender is dropped or fired.
pub async fn serve(
    addr: SocketAddr,
    monitor: Arc<Monitor>,
) -> Result<tokio::sync::oneshot::Sender<()>, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on --http-bind {addr}: {e}")))?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(listener, router(monitor))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syncing(status: Status, initialized: bool) -> Health {
        Health {
            phase: Phase::Syncing,
            status: Some(status),
            initialized,
        }
    }

    #[test]
    fn not_ready_before_the_first_round() {
        let now = SystemTime::now();
        let t = Duration::from_secs(60);
        let restoring = Health {
            phase: Phase::Restoring,
            status: None,
            initialized: false,
        };
        assert!(readiness(&restoring, now, t).is_err());
        let pending = Status {
            scanned: true,
            pending_paths: 3,
            ..Status::default()
        };
        assert!(!first_round_done(&pending));
        assert!(readiness(&syncing(pending, false), now, t).is_err());
        let clean = Status {
            scanned: true,
            ..Status::default()
        };
        assert!(!first_round_done(&clean), "a sample alone is not proof");
        assert_eq!(readiness(&syncing(clean, true), now, t), Ok(()));
        let pushed = Status {
            last_success: Some(now),
            ..Status::default()
        };
        assert!(first_round_done(&pushed));
    }

    #[test]
    fn unready_only_after_failing_longer_than_the_threshold() {
        let now = SystemTime::now();
        let t = Duration::from_secs(60);
        let failing = |secs| Status {
            scanned: true,
            pending_paths: 1,
            last_error: Some("put: connection refused".into()),
            failing_since: Some(now - Duration::from_secs(secs)),
            ..Status::default()
        };
        assert_eq!(readiness(&syncing(failing(10), true), now, t), Ok(()));
        let why = readiness(&syncing(failing(120), true), now, t).unwrap_err();
        assert!(why.contains("connection refused"), "{why}");
        let stopping = Health {
            phase: Phase::Stopping,
            ..syncing(Status::default(), true)
        };
        assert!(readiness(&stopping, now, t).is_err());
    }

    #[test]
    fn held_back_deletes_make_the_sidecar_unready_at_once() {
        let now = SystemTime::now();
        let held = Status {
            scanned: true,
            pending_paths: 300,
            withheld_deletes: 300,
            last_success: Some(now),
            oldest_unsaved_change: Some(now),
            ..Status::default()
        };
        let why = readiness(&syncing(held, true), now, Duration::from_secs(60)).unwrap_err();
        assert!(why.contains("300 deletes held back"), "{why}");
        assert!(why.contains("--allow-mass-delete"), "{why}");
    }

    #[test]
    fn a_hang_is_unready_without_any_failure_counted() {
        let now = SystemTime::now();
        let t = Duration::from_secs(15);
        let ago = |s| now - Duration::from_secs(s);
        // A push has hung for 60 s: nothing failed, nothing succeeded.
        let hung = Status {
            scanned: true,
            pending_paths: 20,
            last_success: Some(ago(100)),
            oldest_unsaved_change: Some(ago(60)),
            ..Status::default()
        };
        let why = readiness(&syncing(hung.clone(), true), now, t).unwrap_err();
        assert!(why.contains("60s"), "{why}");
        // A backlog pushed batch by batch is progressing.
        let progressing = Status {
            last_success: Some(ago(2)),
            ..hung.clone()
        };
        assert_eq!(readiness(&syncing(progressing, true), now, t), Ok(()));
        let fresh = Status {
            oldest_unsaved_change: Some(ago(5)),
            ..hung
        };
        assert_eq!(readiness(&syncing(fresh, true), now, t), Ok(()));
        assert_eq!(unsaved_for(&Status::default(), now), Duration::ZERO);
    }

    #[test]
    fn counters_follow_status_totals() {
        let m = Monitor::new(Duration::from_secs(60));
        m.set_phase(Phase::Syncing);
        m.observe(Status {
            scanned: true,
            checkpoints_pushed: 2,
            files_pushed: 5,
            bytes_pushed: 100,
            last_success: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..Status::default()
        });
        // Two pushes within one status sample are both counted.
        m.observe_push(Duration::from_millis(20));
        m.observe_push(Duration::from_millis(30));
        m.observe(Status {
            scanned: true,
            checkpoints_pushed: 3,
            files_pushed: 7,
            bytes_pushed: 150,
            ..Status::default()
        });
        let text = m.encode_metrics();
        assert!(text.contains("tether_files_pushed_total 7"), "{text}");
        assert!(text.contains("tether_bytes_pushed_total 150"), "{text}");
        assert!(text.contains("tether_checkpoints_pushed_total 3"), "{text}");
        assert!(
            text.contains("tether_push_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("tether_last_success_timestamp_seconds 1700000000"),
            "{text}"
        );
        assert!(text.contains("tether_ready 1"), "{text}");
    }

    #[test]
    fn maintenance_runs_are_counted() {
        let m = Monitor::new(Duration::from_secs(60));
        let text = m.encode_metrics();
        assert!(text.contains("tether_maintenance_runs_total 0"), "{text}");
        let mut report = sync_s3::MaintenanceReport::default();
        report.prune.bytes_freed = 4096;
        report.prune.objects_deleted = 3;
        m.maintenance_done(
            &report,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        m.maintenance_failed();
        m.maintenance_skipped();
        let text = m.encode_metrics();
        for line in [
            "tether_maintenance_runs_total 3",
            "tether_maintenance_failures_total 1",
            "tether_maintenance_skipped_total 1",
            "tether_maintenance_bytes_freed_total 4096",
            "tether_maintenance_objects_deleted_total 3",
            "tether_maintenance_snapshots_removed_total 0",
            "tether_maintenance_snapshots_kept 0",
            "tether_maintenance_last_success_timestamp_seconds 1800000000",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
