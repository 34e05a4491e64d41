//! Maintenance of a v2 repository (FORMAT.md "Maintenance: forget, prune,
//! check, the lease"): the lease that keeps two maintainers apart, forget
//! (snapshot records a policy does not keep), prune (packs and nodes no
//! snapshot references) and check.
//!
//! ```text
//! lease:  LIST lease/ ─► GET newest ─► expired (store clock)? ─► create n+1 (create-if-absent) ─► confirm
//! forget: LIST snapshots/ ─► GET each (parent links) ─► policy ─► protect the recently superseded ─► DELETE records
//! prune:  store time t ─► LIST snapshots/ ─► walk every tree (node ids, blob ranges) ─► LIST trees/ data/
//!         ─► DELETE what nothing reaches and the store dated before t − grace (nodes, then packs)
//! check:  LIST snapshots/ ─► walk every tree (each node verified) ─► LIST data/ (exists, long enough)
//!         ─► [read-data: ranged GETs, each blob opened and hashed]
//! ```
//!
//! Why prune is safe beside writers that take no lock: an object is
//! deleted only if no snapshot record present when the walk began reaches
//! it, and the store's own clock dates it before that moment minus the
//! grace (default 25 minutes = twice the writers' reuse window plus five).
//! A writer names an old object only by copying it from the snapshot it
//! builds on — which was the newest when it read it, so present and
//! walked, or built after the walk began on one that was — or by reusing
//! something it read or wrote within its reuse window, which is younger
//! than the grace or was reached from a snapshot that forget protects
//! (forget keeps any snapshot that stopped being the newest less than twice
//! the reuse window ago). FORMAT.md gives the whole
//! argument. Any read that fails while the live set is built stops prune
//! before it deletes anything: an incomplete live set is never used.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode};
use sync_core::BackendError;
use sync_core::retention::{self, Candidate, Reason};

use super::format::{self, LeaseRecord, MAX_LEASE_TTL_MS};
use super::node::{Content, EntryKind, Loc, Node, NodeId, PackId};
use super::push::read_base;
use super::repo::Repo;
use crate::heads::{Confirmation, CreateOutcome, Generations};
use crate::maintenance::{
    CheckOptions, CheckReport, ForgetPolicy, ForgetReport, PruneOptions, PruneReport, ReadData,
    SnapshotVerdict,
};
use crate::store::remote_err;

/// The lease's generations (same protocol as heads).
pub(crate) const LEASES: Generations = Generations {
    dir: "lease",
    floor_dir: "lease-floor",
    keep: 4,
    batch: 16,
};
/// Where a maintainer writes the probe object whose `LastModified` is the
/// store's "now".
const PROBE_DIR: &str = "lease-probe";
/// Deletes between two checks that the lease is still ours.
const DELETE_ROUND: usize = 500;
/// Nodes read at once by a walk.
const NODE_READS: usize = 16;
/// Snapshot records read at once.
const RECORD_READS: usize = 16;
// Memory bounds: a maintainer runs inside the sync sidecar (512 MiB limit
// by default), so what it holds per repository is capped, each cap well
// below that limit, and a repository past one is refused with a message
// rather than the sidecar killed (which would stop its pushes too).
/// Most snapshot records a maintainer reads (≈ 400 bytes each while forget
/// judges them; a 10 s checkpoint rate without retention reaches this in
/// 29 days, with the default policy a few hundred are kept).
const MAX_RECORDS: usize = 250_000;
/// Most distinct nodes one walk holds, and most it has waiting (≈ 50
/// bytes each).
const MAX_NODES: usize = 2_000_000;
/// Most distinct blobs one walk holds (≈ 60 bytes each).
const MAX_BLOBS: usize = 3_000_000;
/// Most objects one listing of `trees/` or `data/` holds (≈ 50 bytes
/// each).
const MAX_OBJECTS: usize = 2_000_000;
/// Bytes of one pack read at once by `check --read-data`.
const READ_BATCH: u64 = 32 << 20;

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms_of_meta(meta: &object_store::ObjectMeta) -> u64 {
    u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One repository's maintainer.
pub(crate) struct Maintainer<'a> {
    pub(crate) repo: &'a Arc<Repo>,
    /// The writers' reuse window (FORMAT.md rule W1).
    pub(crate) reuse_window: Duration,
    /// Largest pack a writer makes (bounds a `check --read-data` read).
    pub(crate) pack_limit: u64,
}

/// The maintenance lease, held until [`Lease::release`] (or dropped: a
/// run stopped midway releases it in the background, best effort, so the
/// next maintainer need not wait for it to expire).
pub(crate) struct Lease {
    repo: Arc<Repo>,
    released: bool,
    holder: String,
    generation: u64,
    renewed: Instant,
    ttl: Duration,
}

/// The store's clock: `LastModified` of an object just written.
async fn store_now(repo: &Repo, holder: &str) -> Result<u64, BackendError> {
    let key = repo.remote.key(&format!("{PROBE_DIR}/{holder}"))?;
    repo.remote
        .put(&key, Bytes::new(), PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    let meta = repo
        .remote
        .store
        .head(&key)
        .await
        .map_err(|e| remote_err("head", &key, e))?;
    Ok(ms_of_meta(&meta))
}

/// The store's clock for a lease holder; a dry run (no lease, nothing
/// written) makes do with this machine's.
async fn now_for(repo: &Repo, lease: Option<&Lease>) -> Result<u64, BackendError> {
    match lease {
        Some(l) => store_now(repo, &l.holder).await,
        None => Ok(ms_of(SystemTime::now())),
    }
}

fn new_holder() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn lease_record(holder: &str, generation: u64, ttl: Duration) -> LeaseRecord {
    LeaseRecord {
        format: format::LEASE_FORMAT.into(),
        generation,
        holder: holder.to_owned(),
        host: super::repo::host(),
        pid: std::process::id(),
        ttl_ms: duration_ms(ttl).min(MAX_LEASE_TTL_MS),
    }
}

impl<'a> Maintainer<'a> {
    /// Takes the maintenance lease: refused (transient) while another
    /// maintainer's lease is valid by the store's clock; an expired one is
    /// taken over.
    pub(crate) async fn lease(&self, ttl: Duration) -> Result<Lease, BackendError> {
        let repo = self.repo;
        let remote = &repo.remote;
        if ttl.is_zero() || duration_ms(ttl) > MAX_LEASE_TTL_MS {
            return Err(BackendError::Config(format!(
                "a lease time to live of {} ms is outside 1 ms to 1 h",
                ttl.as_millis()
            )));
        }
        let holder = new_holder();
        for _attempt in 0..8 {
            let base = match LEASES.latest(remote, repo.lease_limit()).await? {
                None => None,
                Some((n, bytes)) => {
                    let key = LEASES.key(remote, n)?;
                    let rec = repo.decode_lease(n, &bytes, &key)?;
                    let meta = remote
                        .store
                        .head(&key)
                        .await
                        .map_err(|e| remote_err("head", &key, e))?;
                    let since = ms_of_meta(&meta);
                    let now = store_now(repo, &holder).await?;
                    let until = since.saturating_add(rec.ttl_ms);
                    if until > now {
                        return Err(BackendError::transient(
                            "lease",
                            key.to_string(),
                            format!(
                                "another maintainer holds the maintenance lease (host {:?}, pid {}) for {} s more; try again later",
                                rec.host,
                                rec.pid,
                                (until - now).div_ceil(1000)
                            ),
                        ));
                    }
                    if rec.ttl_ms > 0 {
                        tracing::warn!(lease = %key, host = %rec.host, pid = rec.pid, "taking over an expired maintenance lease (its holder stopped without releasing it)");
                    }
                    Some(n)
                }
            };
            let m = LEASES.next(remote, base)?;
            let unit = repo.lease_unit(&lease_record(&holder, m, ttl))?;
            match LEASES.create(remote, m, unit).await? {
                CreateOutcome::Taken => continue,
                CreateOutcome::Created(w) => match LEASES.confirm(remote, &w).await? {
                    Confirmation::Confirmed { newest, floor } if newest == m => {
                        LEASES.retire(remote, newest, floor, false).await;
                        return Ok(Lease {
                            repo: Arc::clone(repo),
                            released: false,
                            holder,
                            generation: m,
                            renewed: Instant::now(),
                            ttl,
                        });
                    }
                    Confirmation::Confirmed { .. } => continue,
                    Confirmation::Orphaned(why) => {
                        tracing::debug!(%why, "lease generation orphaned; trying again");
                        LEASES.remove_orphan(remote, &w).await;
                    }
                },
            }
        }
        Err(BackendError::transient(
            "lease",
            remote.describe.clone(),
            "the maintenance lease kept changing hands; try again later",
        ))
    }
}

impl Lease {
    /// Before a delete: the lease is still this maintainer's, renewed when
    /// a third of its time has passed. Lost (another maintainer took it
    /// over) → an error, and the caller deletes nothing more.
    pub(crate) async fn ensure(&mut self) -> Result<(), BackendError> {
        let remote = &self.repo.remote;
        let newest = LEASES.newest(remote).await?;
        let lost = || {
            BackendError::transient(
                "lease",
                remote.describe.clone(),
                "the maintenance lease was taken over by another maintainer (this one was too slow to renew it); stopped before deleting more",
            )
        };
        if newest != Some(self.generation) || self.renewed.elapsed() >= self.ttl {
            return Err(lost());
        }
        if self.renewed.elapsed() < self.ttl / 3 {
            return Ok(());
        }
        let m = LEASES.next(remote, Some(self.generation))?;
        let unit = self
            .repo
            .lease_unit(&lease_record(&self.holder, m, self.ttl))?;
        match LEASES.create(remote, m, unit).await? {
            CreateOutcome::Taken => Err(lost()),
            CreateOutcome::Created(w) => match LEASES.confirm(remote, &w).await? {
                Confirmation::Confirmed { newest, floor } if newest == m => {
                    self.generation = m;
                    self.renewed = Instant::now();
                    LEASES.retire(remote, newest, floor, false).await;
                    Ok(())
                }
                _ => Err(lost()),
            },
        }
    }

    /// Gives the lease up (a generation with no time to live), best effort:
    /// a maintainer that cannot release it leaves it to expire.
    pub(crate) async fn release(mut self) {
        self.released = true;
        release(&self.repo, &self.holder, self.generation).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (repo, holder, generation) =
                (Arc::clone(&self.repo), self.holder.clone(), self.generation);
            rt.spawn(async move { release(&repo, &holder, generation).await });
        }
    }
}

async fn release(repo: &Repo, holder: &str, generation: u64) {
    let remote = &repo.remote;
    if let Ok(m) = LEASES.next(remote, Some(generation))
        && let Ok(unit) = repo.lease_unit(&lease_record(holder, m, Duration::ZERO))
        && let Err(e) = LEASES.create(remote, m, unit).await
    {
        tracing::debug!(error = %e, "could not release the maintenance lease; it expires on its own");
    }
    if let Ok(key) = remote.key(&format!("{PROBE_DIR}/{holder}")) {
        let _ = remote.delete(&key).await;
    }
}

/// A listed object: `LastModified` (ms) and size (its key is rebuilt
/// from its parsed name, so a listing costs ~50 bytes an object).
struct Listed {
    modified_ms: u64,
    size: u64,
}

/// A snapshot record as listed and read.
struct RecordInfo {
    id: String,
    modified_ms: u64,
    /// Its parent or the record it rewrites (`None`: unreadable or first).
    parent: Option<String>,
    root: Option<NodeId>,
}

impl Maintainer<'_> {
    /// Every object under `dir` whose name `parse` accepts (others are
    /// logged and left alone), at most `max`.
    async fn list<T>(
        &self,
        dir: &str,
        max: usize,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<(T, Listed)>, BackendError> {
        let remote = &self.repo.remote;
        let key = remote.key(dir)?;
        let mut out = Vec::new();
        let mut listing = remote.store.list(Some(&key));
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| remote_err("list", &key, e))?;
            match meta.location.filename().and_then(&parse) {
                Some(t) => {
                    if out.len() >= max {
                        return Err(invalid(
                            &key,
                            format!(
                                "more than {max} objects: refused (maintenance holds each in memory, and must fit in the sync sidecar)"
                            ),
                        ));
                    }
                    out.push((
                        t,
                        Listed {
                            modified_ms: ms_of_meta(&meta),
                            size: meta.size,
                        },
                    ));
                }
                None => {
                    tracing::warn!(object = %meta.location, "ignoring an object that is not part of the format")
                }
            }
        }
        Ok(out)
    }

    /// Every snapshot record, read (parent and root); one that cannot be
    /// read is kept in the list with neither.
    async fn records(&self) -> Result<Vec<RecordInfo>, BackendError> {
        let listed = self
            .list(format::SNAPSHOTS, MAX_RECORDS, |n| {
                format::parse_snapshot_id(n).map(str::to_owned)
            })
            .await?;
        let repo = self.repo;
        stream::iter(listed)
            .map(|(id, l)| async move {
                let read = match repo.get_snapshot(&id).await {
                    Ok(Some((rec, root))) => Some((rec.parent.or(rec.rewrites), root)),
                    Ok(None) => return Ok(None),
                    Err(e @ BackendError::Remote { .. }) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable snapshot record");
                        None
                    }
                };
                Ok(Some(RecordInfo {
                    id,
                    modified_ms: l.modified_ms,
                    parent: read.as_ref().and_then(|r| r.0.clone()),
                    root: read.map(|r| r.1),
                }))
            })
            .buffer_unordered(RECORD_READS)
            .try_filter_map(|r| async move { Ok(r) })
            .try_collect()
            .await
    }

    /// Removes the snapshot records `policy` does not keep (see
    /// [`crate::ObjectStoreBackend::forget`]); `lease: None` is a dry run.
    pub(crate) async fn forget(
        &self,
        policy: &ForgetPolicy,
        lease: Option<&mut Lease>,
    ) -> Result<ForgetReport, BackendError> {
        let repo = self.repo;
        let dry_run = lease.is_none();
        let now = now_for(repo, lease.as_deref()).await?;
        let Some(base) = read_base(repo).await? else {
            return Ok(ForgetReport {
                snapshots: Vec::new(),
                dry_run,
            });
        };
        let records = self.records().await?;
        // When each record stopped being the newest, at the latest: when
        // the last record naming it as parent was stored.
        let mut superseded: HashMap<&str, u64> = HashMap::new();
        for r in &records {
            if let Some(p) = &r.parent {
                let e = superseded.entry(p.as_str()).or_insert(0);
                *e = (*e).max(r.modified_ms);
            }
        }
        // A writer reading it may build on it for one reuse window; the
        // second covers the moment between a child's record and its head.
        let settle = duration_ms(self.reuse_window).saturating_mul(2);
        let candidates: Vec<Candidate> = records
            .iter()
            .map(|r| Candidate {
                id: r.id.clone(),
                time: UNIX_EPOCH + Duration::from_millis(snapshot_time_ms(&r.id)),
            })
            .collect();
        let verdicts =
            retention::apply(policy, &candidates, UNIX_EPOCH + Duration::from_millis(now))
                .map_err(|e| BackendError::Config(e.to_string()))?;
        let modified: HashMap<&str, u64> = records
            .iter()
            .map(|r| (r.id.as_str(), r.modified_ms))
            .collect();
        let mut out = Vec::with_capacity(verdicts.len());
        for v in verdicts {
            let mut reasons = v.reasons;
            let unreadable = records.iter().any(|r| r.id == v.id && r.root.is_none());
            if v.id == base.snapshot.id && !reasons.contains(&Reason::Newest) {
                reasons.push(Reason::Newest);
            }
            // Off the chain (an orphan) or unread: its own age; else when
            // it was superseded.
            let since = superseded
                .get(v.id.as_str())
                .copied()
                .or_else(|| modified.get(v.id.as_str()).copied())
                .unwrap_or(u64::MAX);
            let too_recent =
                reasons.is_empty() && (unreadable || now.saturating_sub(since) < settle);
            let removed = reasons.is_empty() && !too_recent;
            out.push(SnapshotVerdict {
                id: v.id,
                time: v.time,
                reasons,
                too_recent,
                removed,
            });
        }
        if let Some(lease) = lease {
            let doomed: Vec<Path> = out
                .iter()
                .filter(|v| v.removed)
                .map(|v| repo.remote.key(&format::snapshot_rel(&v.id)))
                .collect::<Result<_, _>>()?;
            delete_under(lease, doomed).await?;
        }
        Ok(ForgetReport {
            snapshots: out,
            dry_run,
        })
    }

    /// Deletes what no snapshot reaches and the store dated before the
    /// grace period (see [`crate::ObjectStoreBackend::prune`]); `lease:
    /// None` is a dry run.
    pub(crate) async fn prune(
        &self,
        options: &PruneOptions,
        lease: Option<&mut Lease>,
    ) -> Result<PruneReport, BackendError> {
        let repo = self.repo;
        let dry_run = lease.is_none();
        // The store's "now" first: everything below is judged against it.
        let now = now_for(repo, lease.as_deref()).await?;
        let cutoff = now.saturating_sub(duration_ms(options.grace));
        let records = self.records().await?;
        if let Some(r) = records.iter().find(|r| r.root.is_none()) {
            return Err(invalid(
                repo.remote.key(&format::snapshot_rel(&r.id))?,
                "unreadable; prune deletes nothing while it cannot tell what a snapshot references (run `tether check`)",
            ));
        }
        let mut reach = Reach::default();
        for r in &records {
            if let Some(root) = r.root {
                reach.walk(repo, root, &mut ignore_blob).await?;
            }
        }
        let nodes = self
            .list(format::TREES, MAX_OBJECTS, format::parse_node_id)
            .await?;
        let packs = self
            .list(format::DATA, MAX_OBJECTS, format::parse_pack_id)
            .await?;
        let mut report = PruneReport {
            snapshots: records.len() as u64,
            dry_run,
            ..PruneReport::default()
        };
        let mut doomed_nodes = Vec::new();
        let mut doomed_packs = Vec::new();
        let judge = |live: bool,
                     l: Listed,
                     key: &dyn Fn() -> Result<Path, BackendError>,
                     doomed: &mut Vec<Path>,
                     report: &mut PruneReport|
         -> Result<(), BackendError> {
            report.objects_before += 1;
            report.bytes_before = report.bytes_before.saturating_add(l.size);
            if live {
                return Ok(());
            }
            if l.modified_ms < cutoff {
                report.objects_deleted += 1;
                report.bytes_freed = report.bytes_freed.saturating_add(l.size);
                doomed.push(key()?);
            } else {
                report.objects_waiting += 1;
                report.bytes_waiting = report.bytes_waiting.saturating_add(l.size);
            }
            Ok(())
        };
        for (id, l) in nodes {
            let live = reach.nodes.contains(&id);
            if live {
                report.bytes_referenced = report.bytes_referenced.saturating_add(l.size);
            }
            let key = || repo.remote.key(&format::node_rel(&id));
            judge(live, l, &key, &mut doomed_nodes, &mut report)?;
        }
        for (id, l) in packs {
            let live = reach.live_bytes.get(&id).copied();
            if let Some(used) = live {
                report.bytes_referenced = report.bytes_referenced.saturating_add(used);
                report.bytes_unused_in_live_packs = report
                    .bytes_unused_in_live_packs
                    .saturating_add(l.size.saturating_sub(used));
            }
            let key = || repo.remote.key(&format::pack_rel(&id));
            judge(live.is_some(), l, &key, &mut doomed_packs, &mut report)?;
        }
        if let Some(lease) = lease {
            // Nodes before packs: a crash in between leaves unreferenced
            // nodes naming missing packs, never a reachable one.
            delete_under(lease, doomed_nodes).await?;
            delete_under(lease, doomed_packs).await?;
        }
        Ok(report)
    }

    /// Verifies the repository (see [`crate::ObjectStoreBackend::check`]).
    pub(crate) async fn check(&self, options: &CheckOptions) -> Result<CheckReport, BackendError> {
        let repo = self.repo;
        let mut report = CheckReport::default();
        match read_base(repo).await {
            Ok(_) => {}
            Err(e @ BackendError::Remote { .. }) => return Err(e),
            Err(e) => report.problems.push(format!("the newest head: {e}")),
        }
        let records = self.records().await?;
        report.snapshots = records.len() as u64;
        let mut reach = Reach {
            keep_going: true,
            ..Reach::default()
        };
        let mut blobs: HashMap<PackId, HashMap<u64, BlobRef>> = HashMap::new();
        for r in &records {
            let Some(root) = r.root else {
                report
                    .problems
                    .push(format!("snapshot {}: its record is unreadable", r.id));
                continue;
            };
            let mut on_blob = |loc: &Loc, what: BlobRef| {
                blobs.entry(loc.pack).or_default().insert(loc.offset, what);
            };
            reach.walk(repo, root, &mut on_blob).await?;
        }
        report.problems.append(&mut reach.problems);
        report.nodes = reach.nodes.len() as u64;
        report.packs = blobs.len() as u64;
        report.blobs = blobs.values().map(|b| b.len() as u64).sum();
        let listed: HashMap<PackId, u64> = self
            .list(format::DATA, MAX_OBJECTS, format::parse_pack_id)
            .await?
            .into_iter()
            .map(|(id, l)| (id, l.size))
            .collect();
        let mut to_read = Vec::new();
        let mut packs: Vec<(PackId, HashMap<u64, BlobRef>)> = blobs.into_iter().collect();
        packs.sort_by_key(|(id, _)| id.0);
        for (pack, refs) in packs {
            let key = repo.remote.key(&format::pack_rel(&pack))?;
            let Some(size) = listed.get(&pack).copied() else {
                report.problems.push(format!(
                    "{key}: missing, but {} blob(s) of the trees are in it",
                    refs.len()
                ));
                continue;
            };
            let mut fits = true;
            for (offset, b) in &refs {
                if offset
                    .checked_add(b.stored_len)
                    .is_none_or(|end| end > size)
                {
                    report.problems.push(format!(
                        "{key}: a tree names bytes {offset}..+{} of it, but it holds {size}",
                        b.stored_len
                    ));
                    fits = false;
                }
            }
            let chosen = match options.read_data {
                ReadData::None => false,
                ReadData::All => true,
                ReadData::Subset(p) => rand::random_range(0..100u8) < p.min(100),
            };
            if chosen && fits {
                to_read.push((key, refs));
            }
        }
        let results: Vec<(u64, u64, Vec<String>)> = stream::iter(to_read)
            .map(|(key, refs)| read_pack(Arc::clone(repo), key, refs, self.pack_limit))
            .buffer_unordered(4)
            .try_collect()
            .await?;
        for (n, bytes, mut problems) in results {
            report.blobs_read += n;
            report.bytes_read = report.bytes_read.saturating_add(bytes);
            report.problems.append(&mut problems);
        }
        Ok(report)
    }
}

/// Deletes `keys` in rounds, checking the lease before each.
async fn delete_under(lease: &mut Lease, keys: Vec<Path>) -> Result<(), BackendError> {
    let repo = Arc::clone(&lease.repo);
    let remote = &repo.remote;
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        let round: Vec<Path> = keys.by_ref().take(DELETE_ROUND).collect();
        lease.ensure().await?;
        stream::iter(round)
            .map(|k| async move { remote.delete(&k).await })
            .buffer_unordered(remote.requests)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(())
}

/// For walks that need only the reach.
fn ignore_blob(_: &Loc, _: BlobRef) {}

/// The time a snapshot id carries (ms).
fn snapshot_time_ms(id: &str) -> u64 {
    id.get(..13).and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// What a blob's tree entry promises.
#[derive(Debug, Clone, Copy)]
struct BlobRef {
    stored_len: u64,
    plain_len: u64,
    hash: [u8; 32],
}

/// What the walks of every snapshot reached.
#[derive(Default)]
struct Reach {
    nodes: HashSet<NodeId>,
    /// Bytes of each pack some blob reached uses (distinct blobs).
    live_bytes: HashMap<PackId, u64>,
    blobs: HashSet<(PackId, u64)>,
    /// Collect a node that cannot be read as a problem and go on
    /// (check), instead of failing (prune).
    keep_going: bool,
    problems: Vec<String>,
}

impl Reach {
    /// Reads every node under `root` not reached before, calling
    /// `on_blob` for each blob reference (once per distinct blob).
    async fn walk(
        &mut self,
        repo: &Repo,
        root: NodeId,
        on_blob: &mut (dyn FnMut(&Loc, BlobRef) + Send),
    ) -> Result<(), BackendError> {
        let mut stack = vec![root];
        while !stack.is_empty() {
            let mut batch = Vec::new();
            while batch.len() < NODE_READS * 4 {
                let Some(id) = stack.pop() else { break };
                if self.nodes.insert(id) {
                    batch.push(id);
                }
            }
            if self.nodes.len() > MAX_NODES || stack.len() > MAX_NODES {
                return Err(invalid(
                    repo.remote.key(format::TREES)?,
                    format!(
                        "more than {MAX_NODES} distinct tree nodes: refused (maintenance holds each in memory)"
                    ),
                ));
            }
            if self.blobs.len() > MAX_BLOBS {
                return Err(invalid(
                    repo.remote.key(format::DATA)?,
                    format!(
                        "more than {MAX_BLOBS} distinct content blobs: refused (maintenance holds each in memory)"
                    ),
                ));
            }
            let read: Vec<(NodeId, Result<Node, BackendError>)> = stream::iter(batch)
                .map(|id| async move { (id, repo.get_node(&id).await) })
                .buffer_unordered(NODE_READS)
                .collect()
                .await;
            for (id, node) in read {
                let node = match node {
                    Ok(n) => n,
                    Err(e @ BackendError::InvalidRemote { .. }) if self.keep_going => {
                        self.problems.push(format!("node {id}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.visit(&node, &mut stack, on_blob);
            }
        }
        Ok(())
    }

    fn blob(&mut self, loc: &Loc, what: BlobRef, on_blob: &mut (dyn FnMut(&Loc, BlobRef) + Send)) {
        if self.blobs.insert((loc.pack, loc.offset)) {
            let used = self.live_bytes.entry(loc.pack).or_insert(0);
            *used = used.saturating_add(loc.stored_len);
            on_blob(loc, what);
        }
    }

    fn visit(
        &mut self,
        node: &Node,
        stack: &mut Vec<NodeId>,
        on_blob: &mut (dyn FnMut(&Loc, BlobRef) + Send),
    ) {
        match node {
            Node::Branch(b) => stack.extend(b.children.iter().map(|c| c.id)),
            Node::List(l) => {
                for c in &l.chunks {
                    let r = BlobRef {
                        stored_len: c.loc.stored_len,
                        plain_len: c.plain_len,
                        hash: c.hash,
                    };
                    self.blob(&c.loc, r, on_blob);
                }
            }
            Node::Leaf(l) => {
                for e in &l.entries {
                    match &e.kind {
                        EntryKind::Dir { subtree, .. } => stack.push(*subtree),
                        EntryKind::Symlink { .. } => {}
                        EntryKind::File(f) => match &f.content {
                            Content::Empty => {}
                            Content::Blob(loc) => {
                                let r = BlobRef {
                                    stored_len: loc.stored_len,
                                    plain_len: f.size,
                                    hash: f.hash,
                                };
                                self.blob(loc, r, on_blob);
                            }
                            Content::Chunks(chunks) => {
                                for c in chunks {
                                    let r = BlobRef {
                                        stored_len: c.loc.stored_len,
                                        plain_len: c.plain_len,
                                        hash: c.hash,
                                    };
                                    self.blob(&c.loc, r, on_blob);
                                }
                            }
                            Content::Lists(ids) => stack.extend(ids.iter().copied()),
                        },
                    }
                }
            }
        }
    }
}

/// Reads the blobs `refs` names in pack `key` (ranged GETs of at most
/// [`READ_BATCH`] bytes) and verifies each; returns (blobs read, bytes
/// read, problems).
async fn read_pack(
    repo: Arc<Repo>,
    key: Path,
    refs: HashMap<u64, BlobRef>,
    pack_limit: u64,
) -> Result<(u64, u64, Vec<String>), BackendError> {
    let mut refs: Vec<(u64, BlobRef)> = refs.into_iter().collect();
    refs.sort_by_key(|(o, _)| *o);
    let mut problems = Vec::new();
    let mut sane = Vec::with_capacity(refs.len());
    for (offset, b) in refs {
        if b.stored_len > repo.blob_limit(b.plain_len).max(pack_limit) {
            problems.push(format!(
                "{key}: a blob at {offset} claims {} stored bytes for {} plain bytes",
                b.stored_len, b.plain_len
            ));
        } else {
            sane.push((offset, b));
        }
    }
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut rest = &sane[..];
    while !rest.is_empty() {
        // One batch: at least one blob, at most READ_BATCH bytes.
        let mut held = 0u64;
        let mut j = 0;
        while j < rest.len() && (j == 0 || held.saturating_add(rest[j].1.stored_len) <= READ_BATCH)
        {
            held = held.saturating_add(rest[j].1.stored_len);
            j += 1;
        }
        let (batch, after) = rest.split_at(j);
        rest = after;
        let ranges: Vec<std::ops::Range<u64>> = batch
            .iter()
            .map(|(o, b)| *o..o.saturating_add(b.stored_len))
            .collect();
        let fetched = match repo.remote.store.get_ranges(&key, &ranges).await {
            Ok(f) => f,
            Err(object_store::Error::NotFound { .. }) => {
                problems.push(format!("{key}: disappeared while it was read"));
                break;
            }
            Err(e) => return Err(remote_err("get", &key, e)),
        };
        n += batch.len() as u64;
        bytes = bytes.saturating_add(fetched.iter().map(|b| b.len() as u64).sum::<u64>());
        // Opening and hashing is CPU work: off the async workers.
        let (repo2, key2, batch) = (Arc::clone(&repo), key.clone(), batch.to_vec());
        let found = tokio::task::spawn_blocking(move || {
            batch
                .iter()
                .zip(fetched)
                .filter_map(|((offset, b), stored)| {
                    repo2
                        .open_blob(&stored, &b.hash, b.plain_len, &key2)
                        .err()
                        .map(|e| format!("blob at {offset}: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| BackendError::transient("check", key.to_string(), e))?;
        problems.extend(found);
    }
    Ok((n, bytes, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_times_come_from_ids() {
        assert_eq!(
            snapshot_time_ms("1764500000123-0123456789abcdef"),
            1_764_500_000_123
        );
        assert_eq!(snapshot_time_ms("x"), 0);
    }
}
