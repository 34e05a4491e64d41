//! What `forget`, `prune` and `check` take and report (snapshots layout;
//! FORMAT.md "Maintenance: forget, prune, check, the lease").
//!
//! The work is done by `v2::maintain`; this module holds only the public
//! option and report types, so an embedding tool (the `tether` CLI, a
//! CronJob, a sidecar's background task) composes
//! [`ObjectStoreBackend::forget`](crate::ObjectStoreBackend::forget),
//! [`prune`](crate::ObjectStoreBackend::prune),
//! [`maintain`](crate::ObjectStoreBackend::maintain) (both under one
//! lease) and [`check`](crate::ObjectStoreBackend::check) without seeing
//! the format.

use std::time::{Duration, SystemTime};

pub use sync_core::retention::{ForgetPolicy, Reason};

/// The default grace of [`PruneOptions::grace`]: twice the writers' reuse
/// window plus five minutes (25 minutes).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2 * crate::REUSE_WINDOW.as_secs() + 5 * 60);

/// The default lease time to live: a crashed maintainer's lease is taken
/// over this long after its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);

/// How `prune` (and the prune half of `maintain`) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneOptions {
    /// An unreferenced object is deleted only once the store's own clock
    /// says it is older than this (default [`DEFAULT_GRACE`]). It must stay
    /// above twice the writers' [`BackendOptions::reuse_window`](crate::BackendOptions::reuse_window)
    /// plus the time a push takes; lower values are for tests whose writers
    /// use a short window.
    pub grace: Duration,
    /// How long the maintenance lease lasts without renewal (default
    /// [`DEFAULT_LEASE_TTL`], at most one hour).
    pub lease_ttl: Duration,
    /// Report what would be deleted; delete nothing, take no lease.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: DEFAULT_GRACE,
            lease_ttl: DEFAULT_LEASE_TTL,
            dry_run: false,
        }
    }
}

/// What forget decided about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotVerdict {
    /// The snapshot's id.
    pub id: String,
    /// When it was taken (from its id).
    pub time: SystemTime,
    /// Why it is kept (the policy's rules); empty when it is not.
    pub reasons: Vec<Reason>,
    /// Not kept by the policy, but kept anyway because a writer may still
    /// be building on it: it stopped being the newest less than twice the
    /// reuse window ago (it goes on a later run).
    pub too_recent: bool,
    /// Removed (or, in a dry run, would be).
    pub removed: bool,
}

/// What [`forget`](crate::ObjectStoreBackend::forget) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForgetReport {
    /// Every snapshot, newest first.
    pub snapshots: Vec<SnapshotVerdict>,
    /// Nothing was removed (a dry run).
    pub dry_run: bool,
}

impl ForgetReport {
    /// Snapshots kept (by the policy or because they are too recent).
    pub fn kept(&self) -> usize {
        self.snapshots.iter().filter(|s| !s.removed).count()
    }

    /// Snapshots removed (or that a dry run would remove).
    pub fn removed(&self) -> usize {
        self.snapshots.iter().filter(|s| s.removed).count()
    }
}

/// What [`prune`](crate::ObjectStoreBackend::prune) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Snapshots whose trees were walked (every one the store holds).
    pub snapshots: u64,
    /// Objects (packs, tree nodes) and their bytes before.
    pub objects_before: u64,
    /// Bytes before.
    pub bytes_before: u64,
    /// Objects deleted (or that a dry run would delete).
    pub objects_deleted: u64,
    /// Bytes freed (or that a dry run would free).
    pub bytes_freed: u64,
    /// Unreferenced objects left because they are younger than the grace
    /// period (a push in progress may be about to name them; a later run
    /// deletes them if they are still unreferenced).
    pub objects_waiting: u64,
    /// Bytes of those.
    pub bytes_waiting: u64,
    /// Bytes the kept snapshots need: the tree nodes reached and the
    /// stored bytes of every distinct blob reached.
    pub bytes_referenced: u64,
    /// Bytes inside packs that are still referenced but that no snapshot
    /// uses (left in place: prune does not repack; see FORMAT.md).
    pub bytes_unused_in_live_packs: u64,
    /// Nothing was deleted (a dry run).
    pub dry_run: bool,
}

/// What [`maintain`](crate::ObjectStoreBackend::maintain) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// The forget half.
    pub forget: ForgetReport,
    /// The prune half.
    pub prune: PruneReport,
}

/// How much content `check` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadData {
    /// Structure only: every tree node is read and verified, every pack a
    /// tree names must exist and be long enough; no content is read.
    #[default]
    None,
    /// Every referenced blob is read and verified (length and hash).
    All,
    /// The packs whose ids fall in this percentage (1–100) of the id
    /// space, chosen at random per run.
    Subset(u8),
}

/// How `check` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// How much content is read.
    pub read_data: ReadData,
}

impl CheckOptions {
    /// Options that read `read_data`.
    pub fn new(read_data: ReadData) -> Self {
        CheckOptions { read_data }
    }
}

/// What [`check`](crate::ObjectStoreBackend::check) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Snapshot records read.
    pub snapshots: u64,
    /// Distinct tree nodes read and verified.
    pub nodes: u64,
    /// Distinct packs referenced.
    pub packs: u64,
    /// Distinct blobs referenced.
    pub blobs: u64,
    /// Blobs read and verified (with [`ReadData`]).
    pub blobs_read: u64,
    /// Bytes read for them.
    pub bytes_read: u64,
    /// Every problem found, one line each (empty: all is well).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
