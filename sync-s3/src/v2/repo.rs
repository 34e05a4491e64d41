//! Opening and creating a format v2 repository, and every stored unit's
//! way in and out (FORMAT.md "Repository marker", "Encryption keys",
//! "Stored units").
//!
//! [`open`] turns a checked marker ([`crate::marker::Info`]) and the user's
//! key (if any) into a [`Repo`]: plaintext, or encrypted with the master
//! secret unwrapped from a key slot and the marker's mac verified.
//! [`create`] makes a new one (key slot first, then the marker with
//! create-if-absent; a writer that loses the race opens the winner's).
//!
//! A [`Repo`] is then the only code that turns plaintext into stored bytes
//! and back: nodes ([`Repo::node_unit`], [`Repo::get_node`]), records
//! (snapshots, heads) and content blobs. Each reader bounds what it
//! fetches, opens (AEAD with the unit's `ad`), unframes with the kind's
//! plain-length limit, then verifies what the unit claims (node ids,
//! record names, blob hashes) — so the rest of v2 never sees unchecked
//! bytes.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::PutMode;
use object_store::path::Path;
use sync_core::BackendError;

use super::crypto::{self, Ad, KeySlot, SlotInfo, Subkeys, UserKey};
use super::format::{
    self, HeadRecord, LeaseRecord, MAX_HEAD_BYTES, MAX_LEASE_BYTES, MAX_SLOT_BYTES, MAX_SLOTS,
    MAX_SNAPSHOT_BYTES, SEAL_OVERHEAD, SnapshotRecord,
};
use super::frame::{self, Compression};
use super::node::{self, Limits, Node, NodeId};
use super::pages::{BoundaryKey, StoredNode};
use crate::config::Layout;
use crate::marker::{self, Extra, Info};
use crate::store::{Remote, remote_err};

/// An open v2 repository.
#[derive(Debug)]
pub(crate) struct Repo {
    /// Where it is.
    pub(crate) remote: Remote,
    /// The marker's id (bound into every `ad` and the plaintext boundary key).
    pub(crate) id: [u8; 16],
    /// `Some` when encrypted.
    keys: Option<Subkeys>,
    /// The plaintext repository's page-boundary key.
    plain_boundary: BoundaryKey,
    /// What readers accept.
    pub(crate) limits: Limits,
    /// How content blobs are compressed.
    pub(crate) compression: Compression,
    /// The key slot that opened it (encrypted only).
    pub(crate) slot_id: Option<String>,
    /// The master secret (encrypted only; zeroed on drop): what
    /// `keys::add` wraps into a new key slot.
    pub(crate) master: Option<crypto::MasterSecret>,
    /// Most entries one walk of a snapshot reads (FORMAT.md: 10,000,000).
    pub(crate) max_total_entries: u64,
    /// Bytes a walk may hold for directories still to visit (64 MiB).
    pub(crate) max_tree_memory: u64,
}

/// Default of [`Repo::max_total_entries`].
pub(crate) const MAX_TOTAL_ENTRIES: u64 = 10_000_000;
/// Default of [`Repo::max_tree_memory`].
pub(crate) const MAX_TREE_MEMORY: u64 = 64 << 20;

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

fn key_error(remote: &Remote, e: crypto::KeyError) -> BackendError {
    match e {
        crypto::KeyError::WrongKey { .. }
        | crypto::KeyError::EmptyKeyFile
        | crypto::KeyError::MalformedRawKey => {
            BackendError::Config(format!("{}: {e}", remote.describe))
        }
        other => invalid(format!("{}/keys", remote.prefix), other.to_string()),
    }
}

/// Opens the repository whose marker `open` found.
pub(crate) async fn open(
    remote: &Remote,
    info: &Info,
    key: Option<&Arc<UserKey>>,
    limits: Limits,
    compression: Compression,
) -> Result<Repo, BackendError> {
    let mut repo = Repo {
        remote: remote.clone(),
        id: info.id,
        keys: None,
        plain_boundary: BoundaryKey::plaintext(&info.id),
        limits,
        compression,
        slot_id: None,
        master: None,
        max_total_entries: MAX_TOTAL_ENTRIES,
        max_tree_memory: MAX_TREE_MEMORY,
    };
    match (&info.encryption, key) {
        (None, None) => Ok(repo),
        (None, Some(_)) => Err(BackendError::Config(format!(
            "{}: an encryption key was given, but this repository is not encrypted (its marker says so): drop the key, or use a new prefix for an encrypted repository",
            remote.describe
        ))),
        (Some(_), None) => Err(BackendError::Config(format!(
            "{}: the repository is encrypted; give its key with --encryption-key-file (or TETHER_ENCRYPTION_KEY_FILE)",
            remote.describe
        ))),
        (Some(_), Some(user_key)) => {
            let slots = read_slots(remote).await?;
            // Argon2id (passphrase slots) is seconds of CPU and 64 MiB:
            // never on an async worker thread.
            let (user_key, id) = (Arc::clone(user_key), info.id);
            let opened =
                tokio::task::spawn_blocking(move || crypto::open_master(&slots, &id, &user_key))
                    .await
                    .map_err(|e| BackendError::transient("open", remote.describe.clone(), e))?
                    .map_err(|e| key_error(remote, e))?;
            let keys = opened.master.subkeys(&info.id);
            crypto::verify_marker_mac(&keys.config_mac, &info.bytes).map_err(|e| {
                invalid(
                    remote
                        .key("config")
                        .map_or_else(|_| "config".into(), |k| k.to_string()),
                    format!("{e}: refusing to use it"),
                )
            })?;
            repo.keys = Some(keys);
            repo.slot_id = Some(opened.slot_id);
            repo.master = Some(opened.master);
            Ok(repo)
        }
    }
}

/// Every key slot, at most [`MAX_SLOTS`] (more is refused as hostile).
pub(crate) async fn read_slots(remote: &Remote) -> Result<Vec<KeySlot>, BackendError> {
    let dir = remote.key(format::KEYS)?;
    let listed: Vec<Path> = remote
        .store
        .list(Some(&dir))
        .map_err(|e| remote_err("list", &dir, e))
        .map_ok(|m| m.location)
        .take(MAX_SLOTS + 1)
        .try_collect()
        .await?;
    if listed.len() > MAX_SLOTS {
        return Err(invalid(
            &dir,
            format!("more than {MAX_SLOTS} key slots: refused as hostile"),
        ));
    }
    let mut slots = Vec::with_capacity(listed.len());
    for key in listed {
        let name = key.filename().unwrap_or("").to_owned();
        let Some((bytes, _)) = remote.get_bounded(&key, MAX_SLOT_BYTES).await? else {
            continue;
        };
        slots.push(KeySlot::from_json(&name, &bytes).map_err(|e| invalid(&key, e.to_string()))?);
    }
    Ok(slots)
}

pub(crate) fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Creates a repository at a prefix `marker::open` found fresh or
/// creatable: key slot (encrypted), then the marker. Returns the marker
/// as stored — another writer's if it won the race.
pub(crate) async fn create(
    remote: &Remote,
    single_writer: bool,
    key: Option<&Arc<UserKey>>,
) -> Result<Info, BackendError> {
    let id: [u8; 16] = rand::random();
    let mut slot_key = None;
    let master = match key {
        None => None,
        Some(user_key) => {
            let master = crypto::MasterSecret::generate()
                .map_err(|e| BackendError::Config(format!("creating the master secret: {e}")))?;
            let info = SlotInfo {
                created_ms: now_ms(),
                host: host(),
                label: "created with the repository".into(),
            };
            let uk = Arc::clone(user_key);
            let (master, slot) = tokio::task::spawn_blocking(move || {
                let slot = KeySlot::create(&master, &id, &uk, info);
                (master, slot)
            })
            .await
            .map_err(|e| BackendError::transient("create", remote.describe.clone(), e))?;
            let slot = slot.map_err(|e| key_error(remote, e))?;
            let k = remote.key(&format!("{}/{}", format::KEYS, slot.id()))?;
            let json = slot.to_json().map_err(|e| key_error(remote, e))?;
            remote
                .put(&k, json, PutMode::Create)
                .await
                .map_err(|e| remote_err("put", &k, e))?;
            slot_key = Some(k);
            Some(master.subkeys(&id))
        }
    };
    let opened = marker::create(
        remote,
        Layout::Snapshots,
        single_writer,
        Extra {
            id,
            chunk_size: Some(node::CHUNK_SIZE),
            encryption: master.as_ref().map(|k| &k.config_mac),
        },
    )
    .await?;
    let marker::Opened::Marked(info) = opened else {
        return Err(BackendError::transient(
            "create",
            remote.describe.clone(),
            "the repository marker was not readable right after it was created",
        ));
    };
    if info.id != id
        && let Some(k) = slot_key
    {
        // Another writer's marker won: our slot wraps nothing of theirs.
        let _ = remote.delete(&k).await;
    }
    Ok(info)
}

impl Repo {
    /// The key node ids are made with (encrypted only).
    pub(crate) fn id_key(&self) -> Option<&[u8; 32]> {
        self.keys.as_ref().map(|k| k.id.as_bytes())
    }

    /// The page-boundary key.
    pub(crate) fn boundary(&self) -> &BoundaryKey {
        self.keys
            .as_ref()
            .map_or(&self.plain_boundary, |k| &k.boundary)
    }

    /// The largest stored unit of a kind whose frames hold `plain` bytes.
    fn stored_limit(&self, plain: u64) -> u64 {
        // Writers keep a zstd payload only if it is smaller than the raw
        // one, so a frame is at most flag + varint + plain.
        plain.saturating_add(16).saturating_add(SEAL_OVERHEAD)
    }

    fn seal(&self, frame: Vec<u8>, ad: impl FnOnce() -> Ad) -> Result<Vec<u8>, BackendError> {
        match &self.keys {
            None => Ok(frame),
            Some(k) => crypto::seal(&k.data, &frame, &ad()).map_err(|e| {
                BackendError::permanent("seal", self.remote.describe.clone(), e.to_string())
            }),
        }
    }

    /// Unit bytes → plaintext: open (encrypted), then unframe with the
    /// plain-length limit.
    fn unseal(
        &self,
        unit: &[u8],
        ad: impl FnOnce() -> Ad,
        max_plain: u64,
        object: &dyn std::fmt::Display,
    ) -> Result<Vec<u8>, BackendError> {
        let opened;
        let frame = match &self.keys {
            None => unit,
            Some(k) => {
                let limit = usize::try_from(self.stored_limit(max_plain)).unwrap_or(usize::MAX);
                opened = crypto::open(&k.data, unit, &ad(), limit)
                    .map_err(|e| invalid(object, e.to_string()))?;
                &opened[..]
            }
        };
        frame::decode(frame, max_plain).map_err(|e| invalid(object, e.to_string()))
    }

    /// A node as stored: its key and bytes.
    pub(crate) fn node_unit(&self, n: &StoredNode) -> Result<(Path, Bytes), BackendError> {
        let key = self.remote.key(&format::node_rel(&n.id))?;
        let unit = self.seal(frame::encode_record(&n.bytes), || Ad::node(&self.id, &n.id))?;
        Ok((key, Bytes::from(unit)))
    }

    /// Reads and verifies node `id`. A missing node is an error naming it
    /// (whoever named it promised it exists).
    pub(crate) async fn get_node(&self, id: &NodeId) -> Result<Node, BackendError> {
        let key = self.remote.key(&format::node_rel(id))?;
        let max_plain = self.limits.max_node_bytes as u64;
        let Some((bytes, _)) = self
            .remote
            .get_bounded(&key, self.stored_limit(max_plain))
            .await?
        else {
            return Err(invalid(
                &key,
                "missing, but a tree of this snapshot names it (deleted or never written)",
            ));
        };
        let plain = self.unseal(&bytes, || Ad::node(&self.id, id), max_plain, &key)?;
        node::decode_verified(&plain, id, self.id_key(), &self.limits)
            .map_err(|e| invalid(&key, e.to_string()))
    }

    /// A snapshot record as stored.
    pub(crate) fn snapshot_unit(
        &self,
        rec: &SnapshotRecord,
    ) -> Result<(Path, Bytes), BackendError> {
        let key = self.remote.key(&format::snapshot_rel(&rec.id))?;
        let json = serde_json::to_vec(rec)
            .map_err(|e| BackendError::permanent("encode", key.to_string(), e.to_string()))?;
        let unit = self.seal(frame::encode_record(&json), || {
            Ad::snapshot(&self.id, &rec.id)
        })?;
        Ok((key, Bytes::from(unit)))
    }

    /// Reads snapshot `id` (`None` when it does not exist) and checks it;
    /// returns it with its root's id.
    pub(crate) async fn get_snapshot(
        &self,
        id: &str,
    ) -> Result<Option<(SnapshotRecord, NodeId)>, BackendError> {
        let Some(id) = format::parse_snapshot_id(id) else {
            return Ok(None);
        };
        let key = self.remote.key(&format::snapshot_rel(id))?;
        let Some((bytes, _)) = self
            .remote
            .get_bounded(&key, self.stored_limit(MAX_SNAPSHOT_BYTES))
            .await?
        else {
            return Ok(None);
        };
        let plain = self.unseal(
            &bytes,
            || Ad::snapshot(&self.id, id),
            MAX_SNAPSHOT_BYTES,
            &key,
        )?;
        let rec: SnapshotRecord = serde_json::from_slice(&plain)
            .map_err(|e| invalid(&key, format!("not a snapshot record: {e}")))?;
        let root = rec.check(id).map_err(|r| invalid(&key, r))?;
        Ok(Some((rec, root)))
    }

    /// A JSON record as stored: framed, sealed with `ad` when encrypted.
    fn record_unit(
        &self,
        rec: &impl serde::Serialize,
        ad: impl FnOnce() -> Ad,
    ) -> Result<Bytes, BackendError> {
        let json = serde_json::to_vec(rec).map_err(|e| {
            BackendError::permanent("encode", self.remote.describe.clone(), e.to_string())
        })?;
        Ok(Bytes::from(self.seal(frame::encode_record(&json), ad)?))
    }

    /// A stored JSON record back: opened with `ad`, at most `max` plain
    /// bytes, parsed (`what` names the kind in errors).
    fn decode_record<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        ad: impl FnOnce() -> Ad,
        max: u64,
        object: &Path,
        what: &str,
    ) -> Result<T, BackendError> {
        let plain = self.unseal(bytes, ad, max, object)?;
        serde_json::from_slice(&plain).map_err(|e| invalid(object, format!("not a {what}: {e}")))
    }

    /// A head record as stored (bytes for the head protocol).
    pub(crate) fn head_unit(&self, rec: &HeadRecord) -> Result<Bytes, BackendError> {
        self.record_unit(rec, || Ad::head(&self.id, rec.generation))
    }

    /// Decodes and checks head `n`'s stored bytes.
    pub(crate) fn decode_head(
        &self,
        n: u64,
        bytes: &[u8],
        object: &Path,
    ) -> Result<HeadRecord, BackendError> {
        let rec: HeadRecord = self.decode_record(
            bytes,
            || Ad::head(&self.id, n),
            MAX_HEAD_BYTES,
            object,
            "head record",
        )?;
        rec.check(n).map_err(|r| invalid(object, r))?;
        Ok(rec)
    }

    /// A lease record as stored (bytes for the head protocol).
    pub(crate) fn lease_unit(&self, rec: &LeaseRecord) -> Result<Bytes, BackendError> {
        self.record_unit(rec, || Ad::lease(&self.id, rec.generation))
    }

    /// Decodes and checks lease `n`'s stored bytes.
    pub(crate) fn decode_lease(
        &self,
        n: u64,
        bytes: &[u8],
        object: &Path,
    ) -> Result<LeaseRecord, BackendError> {
        let rec: LeaseRecord = self.decode_record(
            bytes,
            || Ad::lease(&self.id, n),
            MAX_LEASE_BYTES,
            object,
            "lease record",
        )?;
        rec.check(n).map_err(|r| invalid(object, r))?;
        Ok(rec)
    }

    /// Upper bound of a lease unit's stored size.
    pub(crate) fn lease_limit(&self) -> u64 {
        self.stored_limit(MAX_LEASE_BYTES)
    }

    /// Upper bound of a head unit's stored size.
    pub(crate) fn head_limit(&self) -> u64 {
        self.stored_limit(MAX_HEAD_BYTES)
    }

    /// A content blob (one file or chunk) as stored in a pack.
    pub(crate) fn blob_unit(&self, plain: &[u8], hash: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        self.seal(frame::encode_blob(plain, self.compression), || {
            Ad::blob(&self.id, hash)
        })
    }

    /// A blob's frame (made by `frame::encode_blob`) sealed for storage.
    pub(crate) fn seal_frame_as_blob(
        &self,
        frame: Vec<u8>,
        hash: &[u8; 32],
    ) -> Result<Vec<u8>, BackendError> {
        self.seal(frame, || Ad::blob(&self.id, hash))
    }

    /// A stored blob back to plaintext, checked against its length and hash.
    pub(crate) fn open_blob(
        &self,
        stored: &[u8],
        hash: &[u8; 32],
        plain_len: u64,
        object: &dyn std::fmt::Display,
    ) -> Result<Vec<u8>, BackendError> {
        let plain = self.unseal(stored, || Ad::blob(&self.id, hash), plain_len, object)?;
        if plain.len() as u64 != plain_len || blake3::hash(&plain).as_bytes() != hash {
            return Err(invalid(
                object,
                "a blob's bytes do not match the length and hash its tree entry records",
            ));
        }
        Ok(plain)
    }

    /// A stored blob that is a whole file back to plaintext, checked
    /// against its length only: the restore writer hashes the same bytes
    /// as it writes them and refuses the file (no final name) unless the
    /// hash is the entry's, so a second hash here would only cost time
    /// (measured: 9 % of a small-file restore's CPU samples were BLAKE3).
    /// Encrypted blobs are authenticated with the hash in their `ad`
    /// anyway.
    pub(crate) fn open_whole_file_blob(
        &self,
        stored: &[u8],
        hash: &[u8; 32],
        plain_len: u64,
        object: &dyn std::fmt::Display,
    ) -> Result<Vec<u8>, BackendError> {
        let plain = self.unseal(stored, || Ad::blob(&self.id, hash), plain_len, object)?;
        if plain.len() as u64 != plain_len {
            return Err(invalid(
                object,
                "a blob's bytes do not match the length its tree entry records",
            ));
        }
        Ok(plain)
    }

    /// The most stored bytes a blob of `plain_len` can take.
    pub(crate) fn blob_limit(&self, plain_len: u64) -> u64 {
        self.stored_limit(plain_len)
    }
}
