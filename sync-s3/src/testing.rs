//! Planting remote states for tests (hostile ones included); not an API.
//!
//! Tests of the snapshots layout need states no tether writer produces:
//! duplicate names, `..` components, heads out of order. These helpers
//! write them with the repository's own sealing (so an encrypted
//! repository's plants authenticate) but none of a writer's checks.

use bytes::Bytes;
use object_store::PutMode;
use sync_core::{BackendError, Meta};

use crate::ObjectStoreBackend;
use crate::store::remote_err;
use crate::v2::format::{self, HeadRecord, SnapshotRecord, Totals};
use crate::v2::node::{self, Content, Entry, EntryKind, FileEntry, Leaf, Node, NodeId};
use crate::v2::pages::StoredNode;
use crate::v2::repo::Repo;

enum Planted {
    File(FileEntry),
    Symlink(String),
    Dir(u32, Vec<(String, Planted)>),
}

fn insert(dir: &mut Vec<(String, Planted)>, parts: &[&str], leaf: Planted) {
    match parts {
        [] => {}
        [name] => {
            // A directory already planted by a deeper path takes the mode.
            if let Planted::Dir(mode, _) = &leaf
                && let Some((_, Planted::Dir(m, _))) = dir
                    .iter_mut()
                    .find(|(n, p)| n == name && matches!(p, Planted::Dir(..)))
            {
                *m = *mode;
                return;
            }
            dir.push(((*name).to_owned(), leaf));
        }
        [name, rest @ ..] => {
            let at = dir
                .iter()
                .position(|(n, p)| n == name && matches!(p, Planted::Dir(..)));
            let at = match at {
                Some(i) => i,
                None => {
                    dir.push(((*name).to_owned(), Planted::Dir(0o755, Vec::new())));
                    dir.len() - 1
                }
            };
            if let (_, Planted::Dir(_, children)) = &mut dir[at] {
                insert(children, rest, leaf);
            }
        }
    }
}

async fn put_node(repo: &Repo, node: &Node) -> Result<NodeId, BackendError> {
    let bytes = node::encode(node);
    let id = node::node_id(&bytes, repo.id_key());
    let (key, unit) = repo.node_unit(&StoredNode { id, bytes })?;
    repo.remote
        .put(&key, unit, PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    Ok(id)
}

fn store_dir<'a>(
    repo: &'a Repo,
    entries: Vec<(String, Planted)>,
) -> futures::future::BoxFuture<'a, Result<NodeId, BackendError>> {
    Box::pin(async move {
        let mut entries = entries;
        // Sorted as a writer sorts (stable: duplicates stay, adjacent).
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out = Vec::new();
        for (name, p) in entries {
            let kind = match p {
                Planted::File(f) => EntryKind::File(f),
                Planted::Symlink(target) => EntryKind::Symlink { target },
                Planted::Dir(mode, children) => EntryKind::Dir {
                    mode,
                    subtree: store_dir(repo, children).await?,
                },
            };
            out.push(Entry { name, kind });
        }
        put_node(repo, &Node::Leaf(Leaf { entries: out })).await
    })
}

/// Stores a snapshot record of the tree at `root` and returns its id.
async fn put_record(
    repo: &Repo,
    root: NodeId,
    parent: Option<&str>,
    time_ms: u64,
) -> Result<String, BackendError> {
    let record = SnapshotRecord {
        format: format::SNAPSHOT_FORMAT.into(),
        id: format::new_snapshot_id(time_ms),
        parent: parent.map(str::to_owned),
        time_ms,
        host: "planted".into(),
        tether: "test".into(),
        root: root.to_string(),
        totals: Totals::default(),
        change: Default::default(),
        rewrites: None,
    };
    let (key, bytes) = repo.snapshot_unit(&record)?;
    repo.remote
        .put(&key, bytes, PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    Ok(record.id)
}

/// Plants a snapshot holding `entries` (paths split at `/`, in the given
/// order, duplicates kept; file modes masked to the permission bits, the
/// only ones the format has) as head generation `generation`. Returns the
/// snapshot id. Creates the repository if the prefix is fresh.
pub async fn plant_snapshot(
    backend: &ObjectStoreBackend,
    entries: Vec<(String, Meta, Option<Bytes>)>,
    generation: u64,
) -> Result<String, BackendError> {
    let repo = backend.snapshots_repo().await?;
    let mut pack = Vec::new();
    let pack_id = format::new_pack_id();
    let mut root: Vec<(String, Planted)> = Vec::new();
    for (path, meta, content) in entries {
        let parts: Vec<&str> = path.split('/').collect();
        let planted = match meta {
            Meta::File(f) => {
                let bytes = content.unwrap_or_default();
                let content = if bytes.is_empty() {
                    Content::Empty
                } else {
                    let unit = repo.blob_unit(&bytes, f.hash.as_bytes())?;
                    let loc = node::Loc {
                        pack: pack_id,
                        offset: pack.len() as u64,
                        stored_len: unit.len() as u64,
                    };
                    pack.extend_from_slice(&unit);
                    Content::Blob(loc)
                };
                Planted::File(FileEntry {
                    mode: f.mode & node::MAX_MODE,
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    hash: *f.hash.as_bytes(),
                    content,
                })
            }
            Meta::Symlink { target } => Planted::Symlink(target),
            Meta::Dir { mode } => Planted::Dir(mode & node::MAX_MODE, Vec::new()),
        };
        insert(&mut root, &parts, planted);
    }
    let key = repo.remote.key(&format::pack_rel(&pack_id))?;
    repo.remote
        .put(&key, Bytes::from(pack), PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    let root = store_dir(&repo, root).await?;
    let id = put_record(&repo, root, None, 1_700_000_000_000).await?;
    plant_head(backend, generation, &id, None).await?;
    Ok(id)
}

/// Plants head generation `n` naming `snapshot` (whose record names
/// `parent` as its parent).
pub async fn plant_head(
    backend: &ObjectStoreBackend,
    n: u64,
    snapshot: &str,
    parent: Option<&str>,
) -> Result<(), BackendError> {
    let repo = backend.snapshots_repo().await?;
    let head = HeadRecord {
        format: format::HEAD_FORMAT.into(),
        generation: n,
        snapshot: snapshot.into(),
        parent_snapshot: parent.map(str::to_owned),
        time_ms: 1_700_000_000_000,
    };
    let key = crate::v2::push::HEADS.key(&repo.remote, n)?;
    repo.remote
        .put(&key, repo.head_unit(&head)?, PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    Ok(())
}

/// Plants a snapshot record of an empty tree whose parent is `parent`
/// (no head names it). Returns its id.
pub async fn plant_record(
    backend: &ObjectStoreBackend,
    parent: Option<&str>,
) -> Result<String, BackendError> {
    let repo = backend.snapshots_repo().await?;
    let root = store_dir(&repo, Vec::new()).await?;
    put_record(&repo, root, parent, 1_700_000_000_001).await
}

/// Reads snapshot `id`'s record, lets `change` edit it, and stores it
/// again under the same name.
async fn rewrite_record(
    repo: &Repo,
    id: &str,
    change: impl FnOnce(&mut SnapshotRecord),
) -> Result<(), BackendError> {
    let (mut record, _) = repo
        .get_snapshot(id)
        .await?
        .ok_or_else(|| BackendError::NotFound { what: id.into() })?;
    change(&mut record);
    let (key, bytes) = repo.snapshot_unit(&record)?;
    repo.remote
        .put(&key, bytes, PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    Ok(())
}

/// Rewrites snapshot `id`'s record with another parent.
pub async fn set_parent(
    backend: &ObjectStoreBackend,
    id: &str,
    parent: Option<&str>,
) -> Result<(), BackendError> {
    let repo = backend.snapshots_repo().await?;
    rewrite_record(&repo, id, |r| r.parent = parent.map(str::to_owned)).await
}

/// Sets the time of snapshot `id`'s record and of the newest head (any
/// value, including ones no clock gives) to `time_ms`.
pub async fn set_times(
    backend: &ObjectStoreBackend,
    id: &str,
    time_ms: u64,
) -> Result<(), BackendError> {
    let repo = backend.snapshots_repo().await?;
    rewrite_record(&repo, id, |r| r.time_ms = time_ms).await?;
    let heads = &crate::v2::push::HEADS;
    if let Some((n, bytes)) = heads.latest(&repo.remote, repo.head_limit()).await? {
        let key = heads.key(&repo.remote, n)?;
        let mut head = repo.decode_head(n, &bytes, &key)?;
        head.time_ms = time_ms;
        repo.remote
            .put(&key, repo.head_unit(&head)?, PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &key, e))?;
    }
    Ok(())
}

/// Plants, as head generation 1, a snapshot whose root directory is a
/// branch of two one-entry leaves that claims `claimed` entries in all
/// (a hostile hint: what a directory of that many entries would say).
pub async fn plant_wide_directory(
    backend: &ObjectStoreBackend,
    claimed: u64,
) -> Result<String, BackendError> {
    use crate::v2::node::{Branch, Child};
    let repo = backend.snapshots_repo().await?;
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let leaf = Node::Leaf(Leaf {
            entries: vec![Entry {
                name: name.into(),
                kind: EntryKind::Symlink { target: "x".into() },
            }],
        });
        children.push(Child {
            id: put_node(&repo, &leaf).await?,
            first_name: name.into(),
            entries_below: claimed / 2,
        });
    }
    let root = put_node(&repo, &Node::Branch(Branch { level: 1, children })).await?;
    let id = put_record(&repo, root, None, 1_700_000_000_000).await?;
    plant_head(backend, 1, &id, None).await?;
    Ok(id)
}

/// Plants the maintenance lease as another maintainer holding it for
/// `ttl_ms` from now (by the store's clock), as generation `n`: what a
/// maintainer that crashed leaves behind.
pub async fn plant_lease(
    backend: &ObjectStoreBackend,
    n: u64,
    ttl_ms: u64,
) -> Result<(), BackendError> {
    let repo = backend.snapshots_repo().await?;
    let rec = format::LeaseRecord {
        format: format::LEASE_FORMAT.into(),
        generation: n,
        holder: "0123456789abcdef".into(),
        host: "crashed-maintainer".into(),
        pid: 4242,
        ttl_ms,
    };
    let leases = &crate::v2::maintain::LEASES;
    let key = leases.key(&repo.remote, n)?;
    repo.remote
        .put(&key, repo.lease_unit(&rec)?, PutMode::Overwrite)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    Ok(())
}
