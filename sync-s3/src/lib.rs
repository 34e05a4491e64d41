//! `sync-s3`: tether's backend for any object store — S3 and S3-compatible
//! servers (MinIO, Ceph, SeaweedFS), Google Cloud Storage, Azure Blob
//! Storage, a local directory, or memory — through the `object_store`
//! crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sync_s3::{BackendOptions, ObjectStoreBackend};
//! // Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or IRSA).
//! let backend = ObjectStoreBackend::from_url(
//!     "s3://work/pods/alice?endpoint=http://127.0.0.1:8333&allow_http=true",
//!     BackendOptions::default(),
//! )?;
//! # Ok(()) }
//! ```
//!
//! # What it does
//!
//! It implements sync-core's [`Backend`] (and, for the snapshots layout,
//! `forget`, `prune`, `maintain` and `check`: [`maintenance`]): `push` applies
//! a checkpoint to the store, `restore` writes the newest (or a named)
//! state into a directory, `history` lists snapshots and `list` a stored
//! state's entries. Two layouts,
//! chosen per remote with `?layout=`:
//!
//! * **snapshots** (the default; format v2, FORMAT.md) — file content
//!   (zstd where it pays; files over 4 MiB in 4 MiB chunks) packed into pack
//!   objects, one content-addressed tree node per directory page, a small
//!   snapshot record per checkpoint and a head written last with
//!   create-if-absent; optionally everything but the repository marker
//!   sealed with XChaCha20-Poly1305 under the user's key
//!   ([`BackendOptions::encryption_key`]). Default because it is the one
//!   that keeps tether's promise after a failure: a reader always sees a
//!   complete checkpoint, two writers never overwrite each other silently,
//!   history and `at` work, 10,000 small files cost a few `PUT`s instead of
//!   10,000, and a one-file edit stores the pages on its path, not the tree.
//! * **mirror** — each file at `prefix/<path>` with its hash, mode and mtime
//!   as object metadata, browsable with any S3 tool, deletes propagate, plus
//!   an index under `prefix/.tether/` for what objects cannot hold
//!   (directories, symlinks, metadata on stores without it). No history.
//!
//! # What it does not do
//!
//! No watching, no change detection, no retry loop of its own beyond
//! object_store's per-request retries (the engine retries whole pushes), no
//! bucket creation, no encryption in the mirror layout (it stays browsable),
//! no content-defined chunking (a changed large file is uploaded whole), no
//! repack (prune deletes whole packs and nodes; unused bytes inside packs
//! that are still referenced stay and are reported), no scheduling of its
//! own (the caller runs [`ObjectStoreBackend::maintain`] when it likes).
//!
//! # How data flows
//!
//! ```text
//! push:    Checkpoint ─► Source (hash-verified reads) ─► blobs (frame, seal) ─► packs ─► changed directory pages ─► snapshot ─► head (create-if-absent) ─► confirm
//! restore: head ─► snapshot ─► depth-first walk of the pages (each verified against its id) ─► ranged GETs ─► open + check each blob ─► RestoreWriter (hash-verified, temp + rename)
//! mirror:  Checkpoint ─► one object per file ─► index generation (create-if-absent) ─► confirm
//! maintain: lease ─► forget (records a policy drops) ─► prune (walk every snapshot; delete what none reaches and the store dates older than the grace)
//! ```
//!
//! # Design choices and trade-offs
//!
//! * **Pack size 8 MiB** (restic uses 16 MiB). Small enough that a push of a
//!   few dozen MiB of small files still uploads several packs in parallel
//!   and a restore fetches several at once, and that the packer's memory
//!   (`(parts_in_flight + 1) × pack_size` = 40 MiB by default) stays below
//!   the peers'; large enough that 10,000 × 4 KiB files are 5 pack `PUT`s
//!   plus 5 index `PUT`s. Files of 8 MiB and more get a pack of their own
//!   (uploaded multipart, restored as a stream), so they are never copied
//!   into a pack buffer.
//! * **Heads are numbered objects created only if absent**
//!   (`heads/00000000000000000042`), not one object updated with
//!   `If-Match`: create-if-absent is the conditional write every
//!   object_store backend offers (S3 `If-None-Match: *`, GCS, Azure, the
//!   local filesystem, memory), while `PutMode::Update` is missing on the
//!   local filesystem. The newest number wins; the loser of a race re-bases
//!   and tries the next number. A push is reported only after the new head
//!   is confirmed part of the newest state, and old heads are deleted only
//!   behind a floor marker, so a retired number cannot silently come back
//!   (`heads` module: the protocol, shared by both layouts).
//! * **Trees, not manifests** (snapshots format v2): a directory is a
//!   tree of pages cut at content-defined name boundaries, each page a node
//!   named by the (keyed) hash of its bytes and holding its entries' content
//!   locations. A one-file edit stores the edited file's blob, its page, the
//!   branch path above it and the ancestors' pages (measured: 6 `PUT`s,
//!   10 KB in a 10,000-file tree; v1's manifest was 2.8 MB), and a restore
//!   needs no index. Directories are read whole (memory per directory),
//!   and a walk holds only the directories still to visit (bounded).
//! * **Bounded memory, by configuration.** File content in memory is
//!   bounded by `max_buffered_bytes` (32 MiB) whatever `concurrency` allows:
//!   small files read for upload, a large file's chunks, ranges downloaded
//!   for a restore, each taken before it is read; packs being filled and
//!   uploaded, `(parts_in_flight + 1) × pack_size`, come on top. Tree pages
//!   are refused above 4 MiB, directories above `max_entries` (500,000,
//!   from the branch's count before any page is read), a snapshot walk
//!   above 10,000,000 entries or 512 levels, so hostile metadata stays
//!   within the init container's 512 MiB. The mirror's index is refused
//!   above `max_manifest_bytes` (64 MiB) or `max_entries` paths.
//! * **One request budget per backend**: the store is wrapped in
//!   object_store's `LimitStore` with `concurrency` permits, so every
//!   request — both layouts, the head protocol, a push and a restore at
//!   once — shares one limit; streams of requests are as wide as the
//!   budget, and narrower only where that bounds memory (pack read-ahead,
//!   pack indexes, large files' parts), as the code says where it does.
//!   Nothing waits for a request while it holds a listing or an unread
//!   `GET` body, so even a budget of 1 cannot deadlock.
//! * **Concurrency 32 by default**, measured against SeaweedFS on this
//!   project's 2-core machines (`BENCH_SWEEP=1 benches/s3-vs-peers.sh`):
//!   restores of small files stop improving past 32, pushes still gain a
//!   little up to 64; 32 keeps one pod's load on a shared server moderate
//!   (see [`BackendOptions::concurrency`] for the figures).
//! * **TLS without aws-lc-rs.** object_store's `aws` feature pulls aws-lc-rs
//!   (a long C build); this crate enables `aws-base`, `gcp-base`,
//!   `azure-base` with `ring` instead and installs ring as rustls' process
//!   default provider when it builds a cloud store (if the program has not
//!   installed one).
//! * **Credentials** come from the standard environment (`AWS_*`, including
//!   web identity / IRSA, `GOOGLE_*`, `AZURE_*`) or
//!   [`BackendOptions::store_options`]; never from the URL, and they never
//!   appear in [`Backend::describe`], errors
//!   or logs.

#![forbid(unsafe_code)]

pub mod config;
mod decode;
#[doc(hidden)]
pub mod fuzzing;
mod heads;
pub mod maintenance;
mod marker;
mod mirror;
mod snapshots;
mod store;
#[doc(hidden)]
pub mod testing;
mod transfer;
mod v2;

use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::path::Path;
use sync_core::{
    Backend, BackendError, Capabilities, Checkpoint, HistoryEntry, PushReceipt, RemoteHead,
    RestoreOptions, RestoreReport, Source,
};

pub use config::{BackendOptions, Compression, ConfigError, EncryptionKey, Layout};
pub use maintenance::{
    CheckOptions, CheckReport, ForgetPolicy, ForgetReport, MaintenanceReport, PruneOptions,
    PruneReport, ReadData,
};
pub use snapshots::REUSE_WINDOW;
pub use v2::keys::{KeyInfo, KeyKdf};

use crate::store::Remote;

#[derive(Debug)]
enum LayoutImpl {
    Mirror(mirror::Mirror),
    Snapshots(snapshots::Snapshots),
}

/// A [`Backend`] over any object store, in the mirror or snapshots layout.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    remote: Remote,
    layout: Layout,
    inner: LayoutImpl,
    /// The URL's `single_writer`, for creating the marker.
    single_writer: bool,
    /// An encryption key was given ([`BackendOptions::encryption_key`]).
    key_given: bool,
    /// The repository marker once it has been seen (`marker` module); until
    /// then every operation checks the prefix first.
    opened: tokio::sync::Mutex<Option<marker::Opened>>,
}

impl ObjectStoreBackend {
    /// Builds a backend from a URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `file:///absolute/dir`, `memory://name/prefix`,
    /// with optional query parameters `layout=mirror|snapshots`,
    /// `endpoint=…`, `region=…`, `allow_http=true`,
    /// `virtual_hosted_style=true|false`, `skip_signature=true`,
    /// `concurrency=N`, `pack_size=8MiB`, `max_buffered_bytes=32MiB`, `max_entries=N`,
    /// `max_manifest_bytes=64MiB`. The URL's settings win over
    /// `options`. S3 stores use path-style requests unless
    /// `virtual_hosted_style=true`, so S3-compatible servers work with just
    /// an endpoint.
    pub fn from_url(url: &str, mut options: BackendOptions) -> Result<Self, ConfigError> {
        let parsed = config::RemoteUrl::parse(url)?;
        if let Some(l) = parsed.layout {
            options.layout = l;
        }
        if let Some(c) = parsed.concurrency {
            options.concurrency = c;
        }
        if let Some(p) = parsed.pack_size {
            options.pack_size = p;
        }
        if let Some(n) = parsed.max_buffered_bytes {
            options.max_buffered_bytes = n;
        }
        if let Some(n) = parsed.max_entries {
            options.max_entries = n;
        }
        if let Some(n) = parsed.max_manifest_bytes {
            options.max_manifest_bytes = n;
        }
        if let Some(b) = parsed.single_writer {
            options.single_writer = b;
        }
        if let Some(c) = parsed.compression {
            options.compression = c;
        }
        options.validate()?;
        refuse_key_for_mirror(&options)?;
        let mut remote = store::build(&parsed, &options)?;
        remote.describe = format!("{} ({} layout)", remote.describe, options.layout);
        Ok(Self::assemble(remote, options))
    }

    /// Builds a backend on a store you configured yourself; everything lives
    /// under `prefix` (`""` for the store's root). `description` is what
    /// [`Backend::describe`] shows: keep credentials out of it.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        description: impl Into<String>,
        options: BackendOptions,
    ) -> Result<Self, ConfigError> {
        options.validate()?;
        refuse_key_for_mirror(&options)?;
        let prefix =
            Path::parse(prefix.trim_matches('/')).map_err(|e| ConfigError::InvalidValue {
                name: "prefix".into(),
                reason: e.to_string(),
            })?;
        let remote = Remote {
            store,
            prefix,
            describe: format!("{} ({} layout)", description.into(), options.layout),
            attributes: Arc::new(true.into()),
            requests: options.concurrency,
        };
        Ok(Self::assemble(remote, options))
    }

    fn assemble(remote: Remote, options: BackendOptions) -> Self {
        // One request budget for everything this backend sends: both
        // layouts, the head protocol and any tool given `store()`.
        let remote = remote.with_request_budget(options.concurrency);
        let layout = options.layout;
        let single_writer = options.single_writer;
        let key_given = options.encryption_key.is_some();
        let inner = match layout {
            Layout::Mirror => LayoutImpl::Mirror(mirror::Mirror::new(remote.clone(), options)),
            Layout::Snapshots => {
                LayoutImpl::Snapshots(snapshots::Snapshots::new(remote.clone(), options))
            }
        };
        ObjectStoreBackend {
            remote,
            layout,
            inner,
            single_writer,
            key_given,
            opened: tokio::sync::Mutex::new(None),
        }
    }

    /// The mirror layout: checks what the prefix holds before the first
    /// operation on it (the `marker` module): a fresh location, a mirror
    /// of this version, or an error naming what is there instead. With
    /// `write`, a prefix without a marker gets one (after checking that the
    /// store enforces create-if-absent). Once a marker is seen it is not
    /// read again by this backend. (The snapshots layout opens its
    /// repository itself: `snapshots::Snapshots::repo`.)
    async fn open_mirror(&self, write: bool) -> Result<marker::Opened, BackendError> {
        let mut known = self.opened.lock().await;
        if let Some(opened) = &*known {
            return Ok(opened.clone());
        }
        let mut opened = marker::open(&self.remote, self.layout).await?;
        if write && !matches!(opened, marker::Opened::Marked(_)) {
            let extra = marker::Extra {
                id: rand::random(),
                chunk_size: None,
                encryption: None,
            };
            opened = marker::create(&self.remote, self.layout, self.single_writer, extra).await?;
        }
        if let marker::Opened::Marked(info) = &opened {
            if info.single_writer {
                tracing::warn!(remote = %self.remote.describe, "this repository was created with single_writer=true (its store does not enforce create-if-absent): a second writer on it can lose checkpoints");
            }
            *known = Some(opened.clone());
        }
        Ok(opened)
    }

    /// The most file content transfers held in memory at once since this
    /// backend was built: at most [`BackendOptions::max_buffered_bytes`]
    /// (packs being filled and uploaded not counted).
    pub fn buffered_peak(&self) -> u64 {
        match &self.inner {
            LayoutImpl::Mirror(m) => m.budget.peak(),
            LayoutImpl::Snapshots(s) => s.budget.peak(),
        }
    }

    /// The open snapshots repository (created if fresh), for `testing`.
    pub(crate) async fn snapshots_repo(&self) -> Result<Arc<v2::repo::Repo>, BackendError> {
        match &self.inner {
            LayoutImpl::Snapshots(s) => s
                .repo(true)
                .await?
                .ok_or_else(|| BackendError::Config("the repository could not be created".into())),
            LayoutImpl::Mirror(_) => Err(BackendError::Config(
                "not a snapshots layout backend".into(),
            )),
        }
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The underlying store (for tools that inspect or repair it), behind
    /// this backend's request budget (`concurrency` requests at once).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.remote.store
    }

    /// The prefix everything lives under.
    pub fn prefix(&self) -> &Path {
        &self.remote.prefix
    }
}

/// A key for the mirror layout would be silently unused: refused.
fn refuse_key_for_mirror(options: &BackendOptions) -> Result<(), ConfigError> {
    if options.layout == Layout::Mirror && options.encryption_key.is_some() {
        return Err(ConfigError::InvalidValue {
            name: "encryption key".into(),
            reason: "the mirror layout stores files as plain objects (browsable with any S3 tool) and is never encrypted: use the snapshots layout for an encrypted repository".into(),
        });
    }
    Ok(())
}

/// Key management of encrypted snapshots repositories (FORMAT.md
/// "Encryption keys"; `tether key …`). Every slot wraps the same master
/// secret, so adding or removing one re-encrypts nothing: a removed key
/// that was used to read the master secret can still read the repository.
impl ObjectStoreBackend {
    /// The contents of a new key file for [`EncryptionKey`]:
    /// `tether-key-1:` and 43 base64url characters (256 bits from the
    /// operating system's RNG), then a newline. The text is the secret:
    /// write it to the key file (mode 0600) and nowhere else; it is zeroed
    /// when dropped.
    pub fn generate_key() -> Result<zeroize::Zeroizing<String>, BackendError> {
        v2::keys::generate()
    }

    fn snapshots_for_keys(&self) -> Result<&snapshots::Snapshots, BackendError> {
        match &self.inner {
            LayoutImpl::Snapshots(s) => Ok(s),
            LayoutImpl::Mirror(_) => Err(BackendError::Unsupported {
                backend: self.remote.describe.clone(),
                what: "encryption keys (the mirror layout is never encrypted)",
            }),
        }
    }

    /// The repository opened with this backend's key; a fresh prefix is an
    /// error (there is nothing to manage yet).
    async fn keyed_repo(&self) -> Result<Arc<v2::repo::Repo>, BackendError> {
        self.snapshots_for_keys()?
            .repo(false)
            .await?
            .ok_or_else(|| v2::keys::no_repository(&self.remote))
    }

    /// The key slots of the encrypted repository, oldest first: id, label,
    /// host, creation time and KDF, never a secret. With a key
    /// ([`BackendOptions::encryption_key`]) the repository is opened first
    /// (a wrong key is refused) and the slot that key opened is marked
    /// ([`KeyInfo::opened`]); without one the slots are listed as the store
    /// holds them (they are plaintext objects). A plaintext repository or
    /// an empty prefix is a [`BackendError::Config`] error.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendError> {
        self.snapshots_for_keys()?;
        if !self.key_given {
            return v2::keys::list_unopened(&self.remote).await;
        }
        let repo = self.keyed_repo().await?;
        if repo.master.is_none() {
            return Err(v2::keys::not_encrypted(&self.remote));
        }
        v2::keys::list(&repo.remote, repo.slot_id.as_deref()).await
    }

    /// Adds a key slot that lets `new` open the repository; returns its id.
    /// Needs this backend's key to open the repository first (the new slot
    /// wraps the master secret that key unwraps). The slot is written with
    /// create-if-absent and read back before its id is returned. Refused
    /// ([`BackendError::Config`]): no key or a wrong one, a plaintext
    /// repository, a `new` key that already opens it, 32 slots already, a
    /// label over 200 bytes or with control characters.
    pub async fn add_key(&self, new: &EncryptionKey, label: &str) -> Result<String, BackendError> {
        v2::keys::add(self.keyed_repo().await?, new, label).await
    }

    /// Removes key slot `id` (as [`list_keys`](Self::list_keys) shows it).
    /// Needs this backend's key. Refused ([`BackendError::Config`]): an id
    /// that is not a slot's, the only slot, and — unless `force` — the slot
    /// this backend's key opened. Nothing is re-encrypted.
    pub async fn remove_key(&self, id: &str, force: bool) -> Result<(), BackendError> {
        v2::keys::remove(&*self.keyed_repo().await?, id, force).await
    }

    fn snapshots_for(&self, what: &'static str) -> Result<&snapshots::Snapshots, BackendError> {
        match &self.inner {
            LayoutImpl::Snapshots(s) => Ok(s),
            LayoutImpl::Mirror(_) => Err(BackendError::Unsupported {
                backend: self.remote.describe.clone(),
                what,
            }),
        }
    }

    /// Removes the snapshots `policy` does not keep (restic's `forget`
    /// rules; see [`sync_core::retention`]), under the maintenance lease.
    /// The newest snapshot is always kept, and so is one that stopped being
    /// the newest less than twice the reuse window ago (a writer may still
    /// build on it). Only snapshot records are deleted;
    /// what they alone referenced is left for [`prune`](Self::prune).
    /// `dry_run` reports without deleting or taking the lease. Snapshots
    /// layout only; a fresh prefix is [`BackendError::NotFound`].
    pub async fn forget(
        &self,
        policy: &ForgetPolicy,
        dry_run: bool,
    ) -> Result<ForgetReport, BackendError> {
        let s = self.snapshots_for("forget (the mirror layout keeps only the newest state)")?;
        s.forget(policy, dry_run).await
    }

    /// Deletes packs and tree nodes that no snapshot references and that
    /// are older than [`PruneOptions::grace`] by the store's clock, under
    /// the maintenance lease; safe beside live writers (FORMAT.md
    /// "Maintenance as built"). Does not repack partly used packs (their unused
    /// bytes are reported). Snapshots layout only.
    pub async fn prune(&self, options: &PruneOptions) -> Result<PruneReport, BackendError> {
        let s = self.snapshots_for("prune (the mirror layout deletes as it pushes)")?;
        s.prune(options).await
    }

    /// [`forget`](Self::forget) then [`prune`](Self::prune) under one
    /// lease: what the sidecar runs every maintenance interval.
    pub async fn maintain(
        &self,
        policy: &ForgetPolicy,
        options: &PruneOptions,
    ) -> Result<MaintenanceReport, BackendError> {
        let s =
            self.snapshots_for("maintenance (the mirror layout keeps only the newest state)")?;
        s.maintain(policy, options).await
    }

    /// Verifies the repository: every snapshot record, every tree node it
    /// reaches (read and verified against its id), every pack named (it
    /// exists and is long enough) and, with [`CheckOptions::read_data`],
    /// the content of every (or a sample of) blob. Problems are collected,
    /// not raised: the report lists each. Errors are only for what stops
    /// the check itself (credentials, an unreachable store, a wrong key).
    pub async fn check(&self, options: &CheckOptions) -> Result<CheckReport, BackendError> {
        let s = self.snapshots_for("check (the mirror layout has no trees to verify)")?;
        s.check(options).await
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.remote.describe.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            empty_dirs: true,
            full_mode: true,
            mtime: true,
            history: self.layout == Layout::Snapshots,
        }
    }

    async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        match &self.inner {
            LayoutImpl::Mirror(m) => {
                if self.open_mirror(false).await? == marker::Opened::Fresh {
                    return Ok(None);
                }
                m.head().await
            }
            LayoutImpl::Snapshots(s) => s.head().await,
        }
    }

    async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let started = std::time::Instant::now();
        let r = match &self.inner {
            LayoutImpl::Mirror(m) => match self.open_mirror(true).await {
                Ok(_) => m.push(checkpoint, source).await,
                Err(e) => Err(e),
            },
            LayoutImpl::Snapshots(s) => s.push(checkpoint, source).await,
        };
        match &r {
            Ok(receipt) => tracing::debug!(
                remote = %self.remote.describe,
                files = receipt.files_uploaded,
                bytes = receipt.bytes_uploaded,
                ms = started.elapsed().as_millis() as u64,
                "pushed"
            ),
            Err(e) => tracing::debug!(remote = %self.remote.describe, error = %e, "push failed"),
        }
        r
    }

    async fn restore(
        &self,
        dest: &FsPath,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        match &self.inner {
            LayoutImpl::Mirror(m) => {
                self.open_mirror(false).await?;
                m.restore(dest, options).await
            }
            LayoutImpl::Snapshots(s) => s.restore(dest, options).await,
        }
    }

    async fn list(&self, at: Option<&str>) -> Result<sync_core::Listing, BackendError> {
        match &self.inner {
            LayoutImpl::Mirror(m) => {
                if self.open_mirror(false).await? == marker::Opened::Fresh && at.is_none() {
                    return Ok(sync_core::Listing::default());
                }
                m.list(at).await
            }
            LayoutImpl::Snapshots(s) => s.list(at).await,
        }
    }

    async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        match &self.inner {
            LayoutImpl::Mirror(_) => Err(BackendError::Unsupported {
                backend: self.describe(),
                what: "history (the mirror layout keeps only the newest state)",
            }),
            LayoutImpl::Snapshots(s) => s.history(limit).await,
        }
    }
}
