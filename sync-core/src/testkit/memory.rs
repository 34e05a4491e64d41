//! [`MemoryBackend`]: a recording backend for engine tests and for proving
//! the conformance suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Capabilities, HistoryEntry, PushReceipt, RemoteHead};
use crate::checkpoint::{Change, Checkpoint};
use crate::entry::{ContentHash, Meta};
use crate::path::RelPath;
use crate::restore::{
    FileSpec, PlanKind, RestoreOptions, RestorePlan, RestoreReport, RestoreWriter,
};
use crate::source::Source;

/// One confirmed push, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    /// Sequence number (1-based), also the head id.
    pub seq: u64,
    /// Upserted paths with their content hash (`None` for dirs and symlinks).
    pub upserts: Vec<(RelPath, Option<ContentHash>)>,
    /// Deleted paths.
    pub deletes: Vec<RelPath>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Persisted {
    /// State after each push, index 0 = after push 1.
    states: Vec<BTreeMap<String, Meta>>,
    /// When each state was pushed.
    #[serde(default)]
    times: Vec<SystemTime>,
    log: Vec<PushRecord>,
}

#[derive(Debug, Default)]
struct Inner {
    persisted: Persisted,
    blobs: BTreeMap<ContentHash, Bytes>,
    fail_next: u32,
    /// Every push waits this long before reading anything.
    push_delay: Duration,
    /// Pushes never return (a hung remote).
    push_hangs: bool,
    /// Push calls started, including failed and hung ones.
    pushes_started: u64,
    /// Raw, unvalidated entries planted to test hostile state.
    hostile: Option<Vec<(String, Meta, Bytes)>>,
}

/// A backend that keeps every state and every push in memory.
///
/// With [`MemoryBackend::persistent`] it also saves itself to a directory
/// after each push (written atomically), so a test can kill the process
/// running the engine and inspect or reuse the backend afterwards.
/// [`fail_next`](Self::fail_next) makes the next pushes fail, to exercise
/// retries.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Mutex<Inner>>,
    dir: Option<PathBuf>,
}

impl MemoryBackend {
    /// An empty in-memory backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend saved in (and, if present, loaded from) `dir`.
    pub fn persistent(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        let mut inner = Inner::default();
        match std::fs::read(dir.join("state.json")) {
            Ok(bytes) => {
                inner.persisted = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                for ent in std::fs::read_dir(dir.join("blobs"))? {
                    let ent = ent?;
                    if let Some(h) = ent.file_name().to_str().and_then(ContentHash::from_hex) {
                        // A blob cut short by a kill is not that blob.
                        let bytes = std::fs::read(ent.path())?;
                        if ContentHash::of(&bytes) == h {
                            inner.blobs.insert(h, Bytes::from(bytes));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(MemoryBackend {
            inner: Arc::new(Mutex::new(inner)),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// A backend whose only state contains `entries` exactly as given,
    /// unvalidated, each file with its content: for hostile-state tests.
    pub fn with_raw_state(entries: Vec<(String, Meta, Bytes)>) -> Self {
        let b = Self::new();
        b.inner.lock().hostile = Some(entries);
        b
    }

    /// Makes the next `n` pushes fail with a transient error.
    pub fn fail_next(&self, n: u32) {
        self.inner.lock().fail_next = n;
    }

    /// Push calls started so far (including failed and hung ones).
    pub fn pushes_started(&self) -> u64 {
        self.inner.lock().pushes_started
    }

    /// Makes every push wait `delay` before it reads anything (a slow
    /// remote); `None` makes pushes hang forever (a remote that stopped
    /// answering). `Some(Duration::ZERO)` is the default.
    pub fn set_push_delay(&self, delay: Option<Duration>) {
        let mut inner = self.inner.lock();
        inner.push_hangs = delay.is_none();
        inner.push_delay = delay.unwrap_or_default();
    }

    /// Every confirmed push, oldest first.
    pub fn pushes(&self) -> Vec<PushRecord> {
        self.inner.lock().persisted.log.clone()
    }

    /// The newest state: path → meta.
    pub fn state(&self) -> BTreeMap<String, Meta> {
        self.inner
            .lock()
            .persisted
            .states
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// The content stored for a hash.
    pub fn blob(&self, hash: &ContentHash) -> Option<Bytes> {
        self.inner.lock().blobs.get(hash).cloned()
    }

    fn save(&self, inner: &Inner, new_blobs: &[(ContentHash, Bytes)]) -> Result<(), BackendError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let io = |e: std::io::Error| BackendError::transient("save", dir.display().to_string(), e);
        for (h, b) in new_blobs {
            let tmp = dir.join("blobs").join(format!("{}.tmp", h.to_hex()));
            std::fs::write(&tmp, b).map_err(io)?;
            std::fs::rename(&tmp, dir.join("blobs").join(h.to_hex())).map_err(io)?;
        }
        let tmp = dir.join("state.json.tmp");
        let json =
            serde_json::to_vec(&inner.persisted).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, dir.join("state.json")).map_err(io)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        match &self.dir {
            Some(d) => format!("memory backend saved in {}", d.display()),
            None => "memory backend".into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            empty_dirs: true,
            full_mode: true,
            mtime: true,
            history: true,
        }
    }

    async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        let n = self.inner.lock().persisted.states.len();
        Ok((n > 0).then(|| RemoteHead {
            id: n.to_string(),
            time: None,
        }))
    }

    async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let (delay, hangs) = {
            let mut inner = self.inner.lock();
            inner.pushes_started += 1;
            (inner.push_delay, inner.push_hangs)
        };
        if hangs {
            std::future::pending::<()>().await;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        {
            let mut inner = self.inner.lock();
            if inner.fail_next > 0 {
                inner.fail_next -= 1;
                return Err(BackendError::transient(
                    "push",
                    self.describe(),
                    "injected failure",
                ));
            }
        }
        // Read every upserted file first (verified against the checkpoint),
        // then apply all at once: the push is all-or-error.
        let mut new_blobs = Vec::new();
        let mut record = PushRecord {
            seq: 0,
            upserts: Vec::new(),
            deletes: Vec::new(),
        };
        for (path, change) in checkpoint.iter() {
            match change {
                Change::Upsert(Meta::File(f)) => {
                    let mut reader = source.open(path, f).await?;
                    let mut buf = Vec::new();
                    while let Some(chunk) = reader.next_chunk().await? {
                        buf.extend_from_slice(&chunk);
                    }
                    new_blobs.push((f.hash, Bytes::from(buf)));
                    record.upserts.push((path.clone(), Some(f.hash)));
                }
                Change::Upsert(_) => record.upserts.push((path.clone(), None)),
                Change::Delete => record.deletes.push(path.clone()),
            }
        }
        let mut inner = self.inner.lock();
        let mut state = inner.persisted.states.last().cloned().unwrap_or_default();
        for (path, change) in checkpoint.iter() {
            match change {
                Change::Upsert(meta) => {
                    state.insert(path.to_string(), meta.clone());
                }
                Change::Delete => {
                    state.remove(path.as_str());
                }
            }
        }
        let files = new_blobs.len() as u64;
        let bytes = new_blobs.iter().map(|(_, b)| b.len() as u64).sum();
        let mut fresh = Vec::new();
        for (h, b) in new_blobs {
            if let std::collections::btree_map::Entry::Vacant(slot) = inner.blobs.entry(h) {
                slot.insert(b.clone());
                fresh.push((h, b));
            }
        }
        record.seq = inner.persisted.states.len() as u64 + 1;
        inner.persisted.states.push(state);
        inner.persisted.times.push(SystemTime::now());
        inner.persisted.log.push(record);
        self.save(&inner, &fresh)?;
        Ok(PushReceipt {
            head: Some(inner.persisted.states.len().to_string()),
            files_uploaded: files,
            bytes_uploaded: bytes,
            conflict: None,
        })
    }

    async fn restore(
        &self,
        dest: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        let (entries, head): (Vec<(String, Meta, Option<Bytes>)>, Option<String>) = {
            let inner = self.inner.lock();
            if let Some(raw) = &inner.hostile {
                (
                    raw.iter()
                        .map(|(p, m, b)| (p.clone(), m.clone(), Some(b.clone())))
                        .collect(),
                    None,
                )
            } else {
                let n = state_number(inner.persisted.states.len(), options.at.as_deref())?;
                let state = if n == 0 {
                    BTreeMap::new()
                } else {
                    inner.persisted.states[n - 1].clone()
                };
                let entries = state
                    .into_iter()
                    .map(|(p, m)| {
                        let blob = m.as_file().and_then(|f| inner.blobs.get(&f.hash).cloned());
                        (p, m, blob)
                    })
                    .collect();
                (entries, (n > 0).then(|| n.to_string()))
            }
        };
        let plan = RestorePlan::validate(
            entries
                .iter()
                .map(|(p, m, _)| (p.as_str(), PlanKind::of(m))),
            "memory state",
        )?;
        options.check_selected(&plan.paths, "memory state")?;
        let writer = RestoreWriter::open(dest, options)?;
        writer.expect_total(
            entries.len() as u64,
            entries.iter().map(|(_, m, _)| m.size()).sum(),
        );
        for (path, (_, meta, blob)) in plan.paths.iter().zip(&entries) {
            if !options.selects(path) {
                continue;
            }
            match meta {
                Meta::Dir { mode } => writer.create_dir(path, *mode)?,
                Meta::Symlink { target } => writer.create_symlink(path, target)?,
                Meta::File(f) => {
                    let spec = FileSpec::from(f);
                    if writer.should_write(path, &spec)? {
                        let blob = blob.clone().ok_or_else(|| BackendError::InvalidRemote {
                            object: format!("blob {}", f.hash),
                            reason: format!("missing (referenced by {path})"),
                        })?;
                        writer.write_file(path, &spec, &blob[..])?;
                    }
                }
            }
        }
        Ok(writer.finish(head)?)
    }

    async fn list(&self, at: Option<&str>) -> Result<crate::Listing, BackendError> {
        let inner = self.inner.lock();
        let n = state_number(inner.persisted.states.len(), at)?;
        if n == 0 {
            return Ok(crate::Listing::default());
        }
        let state = &inner.persisted.states[n - 1];
        let plan = RestorePlan::validate(
            state.iter().map(|(p, m)| (p.as_str(), PlanKind::of(m))),
            "memory state",
        )?;
        Ok(crate::Listing {
            id: Some(n.to_string()),
            entries: plan
                .paths
                .into_iter()
                .zip(state.values())
                .map(|(p, m)| crate::Listed::from_meta(p, m))
                .collect(),
        })
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        let inner = self.inner.lock();
        Ok(inner
            .persisted
            .states
            .iter()
            .enumerate()
            .rev()
            .take(limit)
            .map(|(i, s)| HistoryEntry {
                id: (i + 1).to_string(),
                time: inner.persisted.times.get(i).copied(),
                files: s.values().filter(|m| m.as_file().is_some()).count() as u64,
                bytes: s.values().map(Meta::size).sum(),
            })
            .collect())
    }
}

/// The 1-based number of the state `at` names among `count` (`0`: none
/// pushed yet), or `NotFound`.
fn state_number(count: usize, at: Option<&str>) -> Result<usize, BackendError> {
    match at {
        Some(id) => id
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=count).contains(n))
            .ok_or_else(|| BackendError::NotFound {
                what: format!("checkpoint {id}"),
            }),
        None => Ok(count),
    }
}
