//! The snapshots layout: format v2 (FORMAT.md "sync-s3 snapshots, format
//! v2") behind sync-core's `Backend` operations.
//!
//! This is the glue: it opens (or, on the first push, creates) the
//! repository once per backend, holds what a writer keeps between pushes
//! (the node cache, the content it stored within the reuse window, the
//! last generation it confirmed) and hands each operation to the `v2`
//! module that does it: `push`, `restore` (restore, list, history).

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use sync_core::{
    BackendError, Checkpoint, HistoryEntry, PushReceipt, RemoteHead, RestoreOptions, RestoreReport,
    Source,
};

use crate::config::{BackendOptions, Layout};
use crate::maintenance::{
    CheckOptions, CheckReport, ForgetPolicy, ForgetReport, MaintenanceReport, PruneOptions,
    PruneReport,
};
use crate::marker;
use crate::store::Remote;
use crate::transfer;
use crate::v2::crypto::UserKey;
use crate::v2::maintain;
use crate::v2::node::Limits;
use crate::v2::push::{self, Ctx, WriterState};
use crate::v2::read::NodeCache;
use crate::v2::repo::{self, Repo};
use crate::v2::restore as read_side;

/// Content and nodes a writer stored or read are reused (not stored
/// again) only within this window of its head; a prune never deletes
/// anything younger than twice it plus five minutes, and forget keeps a
/// snapshot superseded less than twice it ago (FORMAT.md "Maintenance as
/// built").
pub const REUSE_WINDOW: Duration = Duration::from_secs(10 * 60);

#[derive(Debug)]
pub(crate) struct Snapshots {
    remote: Remote,
    options: BackendOptions,
    repo: tokio::sync::Mutex<Option<Arc<Repo>>>,
    state: tokio::sync::Mutex<WriterState>,
    /// Nodes of the snapshots pushes build on: being here within the reuse
    /// window lets a push skip storing a node again (FORMAT.md rule W1).
    cache: NodeCache,
    /// Nodes restore, list and conflict notes read (any snapshot, maybe
    /// one forget removes): never a reason to skip a store.
    read_cache: NodeCache,
    pub(crate) budget: transfer::ByteBudget,
}

impl Snapshots {
    pub fn new(remote: Remote, options: BackendOptions) -> Self {
        let budget = transfer::ByteBudget::new(options.max_buffered_bytes);
        Snapshots {
            remote,
            options,
            repo: tokio::sync::Mutex::new(None),
            state: tokio::sync::Mutex::new(WriterState::default()),
            cache: NodeCache::default(),
            read_cache: NodeCache::default(),
            budget,
        }
    }

    fn user_key(&self) -> Result<Option<Arc<UserKey>>, BackendError> {
        match &self.options.encryption_key {
            None => Ok(None),
            Some(k) => UserKey::from_key_file_bytes(k.expose())
                .map(|k| Some(Arc::new(k)))
                .map_err(|e| BackendError::Config(format!("the encryption key: {e}"))),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_dir_entries: self.options.max_entries,
            ..Limits::default()
        }
    }

    /// The open repository; `None` for a fresh location unless `write`
    /// (which creates it).
    pub(crate) async fn repo(&self, write: bool) -> Result<Option<Arc<Repo>>, BackendError> {
        let mut known = self.repo.lock().await;
        if let Some(r) = &*known {
            return Ok(Some(Arc::clone(r)));
        }
        let key = self.user_key()?;
        let info = match marker::open(&self.remote, Layout::Snapshots).await? {
            marker::Opened::Marked(info) => info,
            marker::Opened::Fresh | marker::Opened::Unmarked if write => {
                repo::create(&self.remote, self.options.single_writer, key.as_ref()).await?
            }
            marker::Opened::Fresh | marker::Opened::Unmarked => return Ok(None),
        };
        if info.single_writer {
            tracing::warn!(remote = %self.remote.describe, "this repository was created with single_writer=true (its store does not enforce create-if-absent): a second writer on it can lose checkpoints");
        }
        let opened = repo::open(
            &self.remote,
            &info,
            key.as_ref(),
            self.limits(),
            self.options.compression.into(),
        )
        .await?;
        let opened = Arc::new(opened);
        *known = Some(Arc::clone(&opened));
        Ok(Some(opened))
    }

    pub async fn head(&self) -> Result<Option<RemoteHead>, BackendError> {
        let Some(repo) = self.repo(false).await? else {
            return Ok(None);
        };
        Ok(push::read_base(&repo).await?.map(|b| RemoteHead {
            id: b.snapshot.id,
            time: std::time::UNIX_EPOCH.checked_add(Duration::from_millis(b.snapshot.time_ms)),
        }))
    }

    pub async fn push(
        &self,
        checkpoint: &Checkpoint,
        source: &Source,
    ) -> Result<PushReceipt, BackendError> {
        let repo = self
            .repo(true)
            .await?
            .ok_or_else(|| BackendError::Config("the repository could not be created".into()))?;
        let mut state = self.state.lock().await;
        let ctx = Ctx {
            repo: &repo,
            cache: &self.cache,
            read_cache: &self.read_cache,
            budget: &self.budget,
            pack_size: self.options.pack_size,
            parts_in_flight: self.options.parts_in_flight,
            reuse_window_ms: u64::try_from(self.options.reuse_window.as_millis())
                .unwrap_or(u64::MAX),
        };
        push::push(&ctx, &mut state, checkpoint, source).await
    }

    pub async fn restore(
        &self,
        dest: &FsPath,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackendError> {
        match self.repo(false).await? {
            Some(repo) => {
                read_side::restore(
                    &repo,
                    &self.read_cache,
                    &self.budget,
                    self.options.pack_size as u64,
                    dest,
                    options,
                )
                .await
            }
            None => {
                if let Some(at) = &options.at {
                    return Err(BackendError::NotFound {
                        what: format!(
                            "snapshot {at:?} in {} (nothing was pushed there yet)",
                            self.remote.describe
                        ),
                    });
                }
                options.check_selected([], &self.remote.describe)?;
                let writer = sync_core::restore::RestoreWriter::open(dest, options)?;
                Ok(writer.finish(None)?)
            }
        }
    }

    pub async fn list(&self, at: Option<&str>) -> Result<sync_core::Listing, BackendError> {
        match self.repo(false).await? {
            Some(repo) => read_side::list(&repo, &self.read_cache, at).await,
            None => match at {
                Some(at) => Err(BackendError::NotFound {
                    what: format!(
                        "snapshot {at:?} in {} (nothing was pushed there yet)",
                        self.remote.describe
                    ),
                }),
                None => Ok(sync_core::Listing::default()),
            },
        }
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, BackendError> {
        match self.repo(false).await? {
            Some(repo) => read_side::history(&repo, limit).await,
            None => Ok(Vec::new()),
        }
    }
}

impl Snapshots {
    async fn existing(&self) -> Result<Arc<Repo>, BackendError> {
        self.repo(false)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                what: format!(
                    "a repository in {} (nothing was pushed there yet)",
                    self.remote.describe
                ),
            })
    }

    fn maintainer<'a>(&'a self, repo: &'a Arc<Repo>) -> maintain::Maintainer<'a> {
        maintain::Maintainer {
            repo,
            reuse_window: self.options.reuse_window,
            pack_limit: self.options.pack_size as u64,
        }
    }

    pub async fn forget(
        &self,
        policy: &ForgetPolicy,
        dry_run: bool,
    ) -> Result<ForgetReport, BackendError> {
        let repo = self.existing().await?;
        let m = self.maintainer(&repo);
        if dry_run {
            return m.forget(policy, None).await;
        }
        let mut lease = m.lease(crate::maintenance::DEFAULT_LEASE_TTL).await?;
        let r = m.forget(policy, Some(&mut lease)).await;
        lease.release().await;
        r
    }

    pub async fn prune(&self, options: &PruneOptions) -> Result<PruneReport, BackendError> {
        let repo = self.existing().await?;
        let m = self.maintainer(&repo);
        if options.dry_run {
            return m.prune(options, None).await;
        }
        let mut lease = m.lease(options.lease_ttl).await?;
        let r = m.prune(options, Some(&mut lease)).await;
        lease.release().await;
        r
    }

    pub async fn maintain(
        &self,
        policy: &ForgetPolicy,
        options: &PruneOptions,
    ) -> Result<MaintenanceReport, BackendError> {
        let repo = self.existing().await?;
        let m = self.maintainer(&repo);
        if options.dry_run {
            return Ok(MaintenanceReport {
                forget: m.forget(policy, None).await?,
                prune: m.prune(options, None).await?,
            });
        }
        let mut lease = m.lease(options.lease_ttl).await?;
        let r = async {
            let forget = m.forget(policy, Some(&mut lease)).await?;
            let prune = m.prune(options, Some(&mut lease)).await?;
            Ok(MaintenanceReport { forget, prune })
        }
        .await;
        lease.release().await;
        r
    }

    pub async fn check(&self, options: &CheckOptions) -> Result<CheckReport, BackendError> {
        let repo = self.existing().await?;
        self.maintainer(&repo).check(options).await
    }
}
