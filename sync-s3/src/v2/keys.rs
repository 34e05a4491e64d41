//! Key management of an encrypted snapshots repository (FORMAT.md
//! "Encryption keys"): what `tether key generate|list|add|remove` do.
//!
//! An encrypted repository has one master secret `S` (made at creation,
//! never stored in the clear) and one or more key slots `P/keys/<key-id>`,
//! each holding `S` wrapped by one user key (a generated key file or a
//! passphrase). Data is sealed with keys derived from `S`, so adding or
//! removing a slot rewrites nothing else:
//!
//! * [`generate`] — a new key file's contents (`tether-key-1:` + 43
//!   base64url), from the operating system's RNG;
//! * [`list`] / [`list_unopened`] — every slot's plaintext fields (id,
//!   label, host, creation time, KDF), never a secret; the slot that opened
//!   the repository is marked when there is one;
//! * [`add`] — needs the repository opened with a working key (it holds
//!   `S`): wraps `S` with the new key in a fresh slot, written with
//!   create-if-absent and read back before the id is reported;
//! * [`remove`] — deletes one slot, refusing the last one (that would lock
//!   everyone out for good) and, unless forced, the one that opened the
//!   repository (the user would lose the key they just proved works).
//!
//! Removing a slot does not re-encrypt anything: whoever held the removed
//! key and kept `S` can still read the repository (as with restic).
//!
//! Secrets (`S`, user keys, key-encryption keys) stay in `zeroize` wrappers
//! inside `crypto`; nothing here formats one into a message or a log line.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::PutMode;
use sync_core::BackendError;
use zeroize::Zeroizing;

use super::crypto::{self, Kdf, KeySlot, SlotInfo, UserKey};
use super::format::{self, MAX_SLOT_BYTES, MAX_SLOTS};
use super::repo::{self, Repo};
use crate::config::{EncryptionKey, Layout};
use crate::marker;
use crate::store::{Remote, remote_err};

/// Longest label [`add`] accepts, in bytes.
pub const MAX_LABEL_BYTES: usize = 200;

/// How a key slot turns its user key into the key that wraps the master
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKdf {
    /// A generated 256-bit key file (`tether key generate`): BLAKE3
    /// `derive_key`, no work factor needed.
    Generated,
    /// A passphrase: Argon2id with these parameters.
    Passphrase {
        /// Memory in KiB.
        m_kib: u64,
        /// Passes.
        t: u64,
        /// Lanes.
        p: u64,
    },
}

impl fmt::Display for KeyKdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKdf::Generated => f.write_str("generated"),
            KeyKdf::Passphrase { m_kib, t, p } => {
                write!(f, "passphrase (argon2id m={m_kib}KiB t={t} p={p})")
            }
        }
    }
}

/// One key slot as `tether key list` shows it: plaintext fields only,
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The slot's id (16 lower-hex digits; `tether key remove ID`).
    pub id: String,
    /// The label given when it was added (untrusted text from the store:
    /// escape it before printing to a terminal).
    pub label: String,
    /// The host that added it (untrusted, like `label`).
    pub host: String,
    /// When it was added, by the adding host's clock.
    pub created: Option<SystemTime>,
    /// What kind of key opens it.
    pub kdf: KeyKdf,
    /// The key this backend was given opened the repository through this
    /// slot.
    pub opened: bool,
}

fn config(message: impl Into<String>) -> BackendError {
    BackendError::Config(message.into())
}

fn is_slot_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn info_of(slot: &KeySlot, opened_by: Option<&str>) -> KeyInfo {
    let SlotInfo {
        created_ms,
        host,
        label,
    } = slot.info();
    KeyInfo {
        id: slot.id().to_owned(),
        label,
        host,
        created: UNIX_EPOCH.checked_add(Duration::from_millis(created_ms)),
        kdf: match slot.kdf() {
            Kdf::Raw {} => KeyKdf::Generated,
            Kdf::Argon2id { m_kib, t, p } => KeyKdf::Passphrase { m_kib, t, p },
        },
        opened: opened_by == Some(slot.id()),
    }
}

/// The contents of a new key file: `tether-key-1:` + 43 base64url
/// characters and a newline. The text is the secret: write it to the key
/// file and nowhere else.
pub(crate) fn generate() -> Result<Zeroizing<String>, BackendError> {
    crypto::generate_key_file_contents().map_err(|e| config(format!("generating a key: {e}")))
}

/// Every slot of the repository at `remote`, oldest first; `opened_by`
/// is marked.
pub(crate) async fn list(
    remote: &Remote,
    opened_by: Option<&str>,
) -> Result<Vec<KeyInfo>, BackendError> {
    let slots = repo::read_slots(remote).await?;
    let mut out: Vec<KeyInfo> = slots.iter().map(|s| info_of(s, opened_by)).collect();
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

/// [`list`] without a key: the marker is checked (an encrypted snapshots
/// repository must be there), no slot is marked. Key slots are plaintext
/// objects, so this shows nothing a reader of the bucket cannot see.
pub(crate) async fn list_unopened(remote: &Remote) -> Result<Vec<KeyInfo>, BackendError> {
    match marker::open(remote, Layout::Snapshots).await? {
        marker::Opened::Marked(info) if info.encryption.is_some() => list(remote, None).await,
        marker::Opened::Marked(_) => Err(not_encrypted(remote)),
        marker::Opened::Fresh | marker::Opened::Unmarked => Err(no_repository(remote)),
    }
}

/// The error for a plaintext repository asked about keys.
pub(crate) fn not_encrypted(remote: &Remote) -> BackendError {
    config(format!(
        "{}: this repository is not encrypted, so it has no keys (tether cannot encrypt an existing plaintext repository: push to a new prefix with --encryption-key-file)",
        remote.describe
    ))
}

/// The error for a prefix with no repository yet.
pub(crate) fn no_repository(remote: &Remote) -> BackendError {
    config(format!(
        "{}: there is no repository here yet (the first `tether sync` with --encryption-key-file creates an encrypted one)",
        remote.describe
    ))
}

fn check_label(label: &str) -> Result<(), BackendError> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(config(format!(
            "the key label is {} bytes, more than the {MAX_LABEL_BYTES} allowed",
            label.len()
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(config("the key label contains a control character"));
    }
    Ok(())
}

/// Adds a slot wrapping the repository's master secret with `new`; returns
/// its id once the slot is stored and reads back as written.
///
/// Refused: a plaintext repository, a repository already at the slot limit
/// (readers refuse more), a new key that already opens the repository, a
/// label that is too long or holds control characters.
pub(crate) async fn add(
    repo: Arc<Repo>,
    new: &EncryptionKey,
    label: &str,
) -> Result<String, BackendError> {
    if repo.master.is_none() {
        return Err(not_encrypted(&repo.remote));
    }
    check_label(label)?;
    let new_key = UserKey::from_key_file_bytes(new.expose())
        .map_err(|e| config(format!("the new key: {e}")))?;
    let existing = repo::read_slots(&repo.remote).await?;
    if existing.len() >= MAX_SLOTS {
        return Err(config(format!(
            "{}: the repository already has {} key slots, the most a reader accepts: remove one first",
            repo.remote.describe,
            existing.len()
        )));
    }
    let info = SlotInfo {
        created_ms: repo::now_ms(),
        host: repo::host(),
        label: label.to_owned(),
    };
    // Argon2id (a passphrase) takes 64 MiB and a fraction of a second.
    let work = Arc::clone(&repo);
    let slot = tokio::task::spawn_blocking(move || -> Result<KeySlot, BackendError> {
        match crypto::open_master(&existing, &work.id, &new_key) {
            Ok(opened) => {
                return Err(config(format!(
                    "{}: the new key already opens this repository (key slot {}); nothing added",
                    work.remote.describe, opened.slot_id
                )));
            }
            Err(crypto::KeyError::WrongKey { .. }) => {}
            Err(e) => {
                return Err(BackendError::InvalidRemote {
                    object: format!("{}/{}", work.remote.prefix, format::KEYS),
                    reason: e.to_string(),
                });
            }
        }
        let master = work
            .master
            .as_ref()
            .ok_or_else(|| not_encrypted(&work.remote))?;
        KeySlot::create(master, &work.id, &new_key, info)
            .map_err(|e| config(format!("making the key slot: {e}")))
    })
    .await
    .map_err(|e| BackendError::permanent("key add", repo.remote.describe.clone(), e))??;
    let id = slot.id().to_owned();
    let key = repo.remote.key(&format!("{}/{id}", format::KEYS))?;
    let json = slot
        .to_json()
        .map_err(|e| config(format!("making the key slot: {e}")))?;
    repo.remote
        .put(&key, json.clone(), PutMode::Create)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    // Another `key add` may have passed the limit check at the same time:
    // more than MAX_SLOTS slots would make every open refuse the
    // repository, so the later writer takes its slot back.
    if slot_count(&repo.remote).await? > MAX_SLOTS {
        repo.remote.delete(&key).await?;
        return Err(config(format!(
            "{}: another key was added at the same time and the repository would hold more than {MAX_SLOTS} key slots; nothing added (remove one first)",
            repo.remote.describe
        )));
    }
    // Report it only once it is there, as written.
    match repo.remote.get_bounded(&key, MAX_SLOT_BYTES).await? {
        Some((stored, _)) if stored[..] == json[..] => Ok(id),
        _ => Err(BackendError::transient(
            "key add",
            key.to_string(),
            "the new key slot does not read back as written",
        )),
    }
}

/// How many objects `P/keys/` holds (counting stops past the limit).
async fn slot_count(remote: &Remote) -> Result<usize, BackendError> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let dir = remote.key(format::KEYS)?;
    let listed: Vec<_> = remote
        .store
        .list(Some(&dir))
        .map_err(|e| remote_err("list", &dir, e))
        .take(MAX_SLOTS + 2)
        .try_collect()
        .await?;
    Ok(listed.len())
}

/// Deletes key slot `id`. Refused: an id that is not one, a slot that does
/// not exist, the only slot, and (unless `force`) the slot that opened the
/// repository.
pub(crate) async fn remove(repo: &Repo, id: &str, force: bool) -> Result<(), BackendError> {
    if repo.master.is_none() {
        return Err(not_encrypted(&repo.remote));
    }
    if !is_slot_id(id) {
        return Err(config(format!(
            "\"{}\" is not a key id (16 lower-case hex digits, as `tether key list` shows them)",
            id.escape_debug()
        )));
    }
    let slots = repo::read_slots(&repo.remote).await?;
    let Some(removed) = slots.iter().find(|s| s.id() == id) else {
        return Err(config(format!(
            "{}: there is no key slot {id} (see `tether key list`)",
            repo.remote.describe
        )));
    };
    if slots.len() == 1 {
        return Err(config(format!(
            "{}: key slot {id} is the only one: removing it would lock everyone out of the repository for good",
            repo.remote.describe
        )));
    }
    if repo.slot_id.as_deref() == Some(id) && !force {
        return Err(config(format!(
            "{}: key slot {id} is the one your key opened the repository with; check that another key opens it, then use --force to remove it",
            repo.remote.describe
        )));
    }
    let key = repo.remote.key(&format!("{}/{id}", format::KEYS))?;
    let restore = removed
        .to_json()
        .map_err(|e| config(format!("key slot {id}: {e}")))?;
    repo.remote.delete(&key).await?;
    if repo
        .remote
        .get_bounded(&key, MAX_SLOT_BYTES)
        .await?
        .is_some()
    {
        return Err(BackendError::transient(
            "key remove",
            key.to_string(),
            "the key slot is still there after it was deleted",
        ));
    }
    // Another `key remove` may have taken the other remaining slot at the
    // same time: never leave the repository without any.
    if slot_count(&repo.remote).await? == 0 {
        repo.remote
            .put(&key, restore, PutMode::Create)
            .await
            .map_err(|e| remote_err("put", &key, e))?;
        return Err(config(format!(
            "{}: another key was removed at the same time and no key slot was left; key slot {id} was put back",
            repo.remote.describe
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use sync_core::testkit::conformance::Workbench;
    use sync_core::{Backend, BackendError};

    use super::KeyKdf;
    use crate::{BackendOptions, EncryptionKey, Layout, ObjectStoreBackend};

    fn new_key() -> EncryptionKey {
        let text = ObjectStoreBackend::generate_key().unwrap();
        EncryptionKey::from_bytes(text.as_bytes().to_vec())
    }

    fn backend(
        store: &Arc<dyn ObjectStore>,
        key: Option<&EncryptionKey>,
    ) -> Arc<ObjectStoreBackend> {
        let options = BackendOptions {
            encryption_key: key.cloned(),
            ..BackendOptions::default()
        };
        Arc::new(
            ObjectStoreBackend::new(Arc::clone(store), "repo", "memory://keys", options).unwrap(),
        )
    }

    async fn push_one(b: &Arc<ObjectStoreBackend>) {
        let mut w = Workbench::new(b.clone());
        w.write("notes.txt", b"hello");
        let c = w.checkpoint();
        w.push(&c).await;
    }

    fn config_error<T: std::fmt::Debug>(r: Result<T, BackendError>, want: &str) {
        match r {
            Err(BackendError::Config(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("expected a configuration error with {want:?}, got {other:?}"),
        }
    }

    #[test]
    fn generated_keys_are_key_files() {
        let a = ObjectStoreBackend::generate_key().unwrap();
        let b = ObjectStoreBackend::generate_key().unwrap();
        assert_ne!(*a, *b);
        let line = a.strip_suffix('\n').unwrap();
        let b64 = line.strip_prefix("tether-key-1:").unwrap();
        assert_eq!(b64.len(), 43);
        assert!(
            b64.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(matches!(
            super::UserKey::from_key_file_bytes(a.as_bytes()),
            Ok(super::UserKey::Raw(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_adds_a_key_and_removes_the_old_one() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (old, new) = (new_key(), new_key());
        let first = backend(&store, Some(&old));
        push_one(&first).await;

        let listed = first.list_keys().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].opened);
        assert_eq!(listed[0].kdf, KeyKdf::Generated);
        assert_eq!(listed[0].label, "created with the repository");
        let old_id = listed[0].id.clone();

        let new_id = first.add_key(&new, "laptop 2026").await.unwrap();
        assert_ne!(new_id, old_id);
        // The same key twice is refused, not a second slot.
        config_error(first.add_key(&new, "again").await, "already opens");

        let second = backend(&store, Some(&new));
        assert!(second.head().await.unwrap().is_some());
        let listed = second.list_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        let mine = listed.iter().find(|k| k.opened).unwrap();
        assert_eq!(
            (mine.id.as_str(), mine.label.as_str()),
            (new_id.as_str(), "laptop 2026")
        );
        // Without a key the slots are listed, none marked.
        let keyless = backend(&store, None).list_keys().await.unwrap();
        assert_eq!(keyless.len(), 2);
        assert!(keyless.iter().all(|k| !k.opened));

        // The slot that opened the repository needs --force.
        config_error(first.remove_key(&old_id, false).await, "--force");
        second.remove_key(&old_id, false).await.unwrap();
        let listed = second.list_keys().await.unwrap();
        assert_eq!(listed.iter().map(|k| &k.id).collect::<Vec<_>>(), [&new_id]);

        // The old key no longer opens it; the new one still does.
        config_error(backend(&store, Some(&old)).head().await, "does not open");
        let again = backend(&store, Some(&new));
        let mut w = Workbench::new(again.clone());
        w.write("notes.txt", b"hello");
        w.sync().await;
        let dest = w.restore_new("copy").await;
        w.assert_same(&dest);

        // The last slot stays, even forced.
        config_error(again.remove_key(&new_id, true).await, "only one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn force_removes_the_opening_slot_when_another_remains() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (old, new) = (new_key(), new_key());
        let first = backend(&store, Some(&old));
        push_one(&first).await;
        let old_id = first.list_keys().await.unwrap()[0].id.clone();
        first.add_key(&new, "").await.unwrap();
        first.remove_key(&old_id, true).await.unwrap();
        assert!(backend(&store, Some(&new)).head().await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals_name_the_problem() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = new_key();
        // Nothing there yet.
        config_error(
            backend(&store, Some(&key)).list_keys().await,
            "no repository",
        );
        config_error(backend(&store, None).list_keys().await, "no repository");
        config_error(
            backend(&store, Some(&key)).add_key(&new_key(), "").await,
            "no repository",
        );

        let b = backend(&store, Some(&key));
        push_one(&b).await;
        let id = b.list_keys().await.unwrap()[0].id.clone();
        config_error(b.remove_key("ZZ", false).await, "not a key id");
        config_error(b.remove_key("0123456789abcdef", false).await, "no key slot");
        config_error(
            b.add_key(&new_key(), "bad\u{1b}[2J").await,
            "control character",
        );
        config_error(b.add_key(&new_key(), &"x".repeat(201)).await, "200");
        let empty = EncryptionKey::from_bytes(b"\n".to_vec());
        config_error(b.add_key(&empty, "").await, "empty");
        // Without a key: listing works, changing does not.
        config_error(
            backend(&store, None).add_key(&new_key(), "").await,
            "encrypted",
        );
        config_error(
            backend(&store, None).remove_key(&id, false).await,
            "encrypted",
        );

        // A plaintext repository has no keys.
        let plain: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = backend(&plain, None);
        push_one(&p).await;
        config_error(p.list_keys().await, "not encrypted");
        config_error(p.add_key(&new_key(), "").await, "not encrypted");
        config_error(
            backend(&plain, Some(&key)).list_keys().await,
            "not encrypted",
        );

        // The mirror layout is never encrypted.
        let options = BackendOptions {
            layout: Layout::Mirror,
            encryption_key: Some(key.clone()),
            ..BackendOptions::default()
        };
        let e =
            ObjectStoreBackend::new(Arc::clone(&plain), "m", "memory://m", options).unwrap_err();
        assert!(e.to_string().contains("mirror layout"), "{e}");
        let mirror = ObjectStoreBackend::new(
            plain,
            "m",
            "memory://m",
            BackendOptions {
                layout: Layout::Mirror,
                ..BackendOptions::default()
            },
        )
        .unwrap();
        assert!(matches!(
            mirror.list_keys().await,
            Err(BackendError::Unsupported { .. })
        ));
    }

    /// Two adds at once never leave more than 32 slots (every open would
    /// then refuse the repository as hostile).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_adds_never_pass_the_slot_limit() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (a, b) = (new_key(), new_key());
        let first = backend(&store, Some(&a));
        push_one(&first).await;
        first.add_key(&b, "").await.unwrap();
        for _ in 2..super::MAX_SLOTS - 1 {
            first.add_key(&new_key(), "").await.unwrap();
        }
        // 31 slots: both adds pass the limit check before either writes.
        let (k1, k2) = (new_key(), new_key());
        let (x, y) = (backend(&store, Some(&a)), backend(&store, Some(&b)));
        let (rx, ry) = tokio::join!(x.add_key(&k1, ""), y.add_key(&k2, ""));
        assert!(rx.is_err() || ry.is_err());
        let listed = backend(&store, None).list_keys().await.unwrap();
        assert!(listed.len() <= super::MAX_SLOTS);
        assert!(backend(&store, Some(&a)).head().await.unwrap().is_some());
    }

    /// Two removes at once of the last two slots never leave none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_removes_never_leave_no_slot() {
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        // A store slow enough that both removals list the slots before
        // either deletes one.
        let slow = ThrottleConfig {
            wait_list_per_call: std::time::Duration::from_millis(50),
            wait_delete_per_call: std::time::Duration::from_millis(50),
            ..ThrottleConfig::default()
        };
        let store: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(InMemory::new(), slow));
        let (a, b) = (new_key(), new_key());
        let first = backend(&store, Some(&a));
        push_one(&first).await;
        let a_id = first.list_keys().await.unwrap()[0].id.clone();
        let b_id = first.add_key(&b, "").await.unwrap();
        let (x, y) = (backend(&store, Some(&a)), backend(&store, Some(&b)));
        let (rx, ry) = tokio::join!(x.remove_key(&b_id, false), y.remove_key(&a_id, false));
        assert!(rx.is_err() || ry.is_err(), "{rx:?} {ry:?}");
        let left = backend(&store, None).list_keys().await.unwrap();
        assert!(!left.is_empty());
        let opens_a = backend(&store, Some(&a)).head().await.is_ok();
        let opens_b = backend(&store, Some(&b)).head().await.is_ok();
        assert!(opens_a || opens_b);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_32_slots() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = new_key();
        let b = backend(&store, Some(&key));
        push_one(&b).await;
        for _ in 1..super::MAX_SLOTS {
            b.add_key(&new_key(), "").await.unwrap();
        }
        config_error(b.add_key(&new_key(), "").await, "remove one first");
        // Still openable by every key (readers accept 32).
        assert!(backend(&store, Some(&key)).head().await.unwrap().is_some());
    }

    /// A passphrase slot is an Argon2id slot with the written parameters,
    /// and the passphrase opens the repository through it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_passphrase_slot_opens_with_its_passphrase() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = new_key();
        let pass = EncryptionKey::from_bytes(b"correct horse battery staple\n".to_vec());
        let with = |k: &EncryptionKey| {
            let options = BackendOptions {
                encryption_key: Some(k.clone()),
                ..BackendOptions::default()
            };
            Arc::new(
                ObjectStoreBackend::new(Arc::clone(&store), "r", "memory://p", options).unwrap(),
            )
        };
        let b = with(&key);
        let mut w = sync_core::testkit::conformance::Workbench::new(b.clone());
        w.write("a", b"x");
        w.sync().await;
        let id = b.add_key(&pass, "passphrase").await.unwrap();
        let listed = with(&pass).list_keys().await.unwrap();
        let slot = listed.iter().find(|k| k.id == id).unwrap();
        assert!(slot.opened);
        assert_eq!(
            slot.kdf,
            KeyKdf::Passphrase {
                m_kib: 65536,
                t: 3,
                p: 1
            }
        );
        assert!(with(&pass).head().await.unwrap().is_some());
    }
}
