//! Client-side encryption of snapshots format v2 (FORMAT.md, "sync-s3
//! snapshots, format v2" → "Stored units: framing, compression,
//! encryption", "Ids", "Encryption keys", and "Repository marker" for its
//! `mac`).
//!
//! What lives here, and nothing else (no I/O, no key names beyond the `ad`
//! they bind):
//!
//! * key material: the repository's [`MasterSecret`] `S` and its subkeys
//!   ([`Subkeys`]: data key, id key, page-boundary key, config mac key),
//!   each `blake3::derive_key(dated context, S ‖ repo_id)`; all zeroed on
//!   drop, none printable;
//! * stored units: [`seal`] a plaintext frame ([`super::frame`]) into
//!   `nonce(24) ‖ XChaCha20-Poly1305 ciphertext ‖ tag(16)` and [`open`] it
//!   again, with the associated data built only by [`Ad`]'s constructors
//!   (object kind + key relative to `P/`, or a blob's plaintext hash);
//! * the user's key: [`UserKey`] from a key file's bytes (`tether-key-1:` +
//!   a 256-bit key, or a passphrase), [`generate_key_file_contents`];
//! * key slots (`P/keys/<key-id>`): [`KeySlot::create`] wraps `S` with a
//!   key-encryption key (KEK) derived from the user's key (BLAKE3 for raw
//!   keys, Argon2id for passphrases); [`open_master`] bounds every slot's
//!   KDF parameters, then tries the slots that fit the key;
//! * the repository marker's `mac` ([`marker_with_mac`],
//!   [`verify_marker_mac`]).
//!
//! Data flow on push: frame → [`seal`]`(data_key, frame, Ad::node(..))` →
//! PUT. On restore: bounded GET → [`open`]`(data_key, unit, Ad::…, limit)` →
//! [`super::frame::decode`]. Opening a repository: GET `P/config`, LIST and
//! GET `P/keys/`, [`KeySlot::from_json`] each, [`open_master`] with the
//! user's key, [`MasterSecret::subkeys`], then [`verify_marker_mac`].
//!
//! Argon2id with the written parameters takes 64 MiB and a fraction of a
//! second of CPU: callers on an async runtime run [`KeySlot::create`] and
//! [`open_master`] under `spawn_blocking`.
//!
//! All primitives come from maintained crates (RustCrypto
//! `chacha20poly1305` and `argon2`, `blake3`); random bytes from the
//! operating system (`rand`'s `OsRng`).

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::node::NodeId;
use super::pages::BoundaryKey;

/// Bytes of a sealed unit's nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Bytes of a sealed unit's Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// What sealing adds to a frame.
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A repository id (`config.id`, 32 lower-hex in the marker).
pub(crate) type RepoId = [u8; 16];

const DATA_KEY_CONTEXT: &str = "tether 2026-11-30 v2 data key";
const ID_KEY_CONTEXT: &str = "tether 2026-11-30 v2 id key";
const BOUNDARY_KEY_CONTEXT: &str = "tether 2026-11-30 v2 page boundary key";
const CONFIG_MAC_KEY_CONTEXT: &str = "tether 2026-11-30 v2 config mac key";
const KEK_CONTEXT: &str = "tether 2026-11-30 v2 key-encryption key";

/// `ad` prefix of every stored unit.
const AD_PREFIX: &[u8] = b"tether-v2\0";
/// `ad` prefix of a key slot's wrapped master secret.
const KEY_SLOT_AD_PREFIX: &[u8] = b"tether-v2-key\0";

/// A generated key file: this prefix, then 43 base64url characters.
const RAW_KEY_PREFIX: &str = "tether-key-1:";
/// Base64url (no padding) characters of a 32-byte key.
const RAW_KEY_B64_LEN: usize = 43;

/// A key slot's `format`.
const SLOT_FORMAT: &str = "tether-key-2";
/// Random bytes of a key slot's id (16 lower-hex).
const SLOT_ID_BYTES: usize = 8;
/// Bytes of a key slot's salt.
const SALT_LEN: usize = 16;
/// Bytes of a slot's `wrapped`: nonce ‖ sealed 32-byte secret ‖ tag.
const WRAPPED_LEN: usize = 32 + SEAL_OVERHEAD;
/// Largest key slot object (FORMAT.md "Reader checks and limits").
pub(crate) const MAX_SLOT_BYTES: usize = 16 * 1024;
/// Most key slots an open considers.
pub(crate) const MAX_SLOTS: usize = 32;

/// Argon2id parameters written into new passphrase slots.
const ARGON2_WRITE: Kdf = Kdf::Argon2id {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};
/// Readers refuse Argon2id parameters above these before running it.
const ARGON2_MAX_M_KIB: u64 = 256 * 1024;
const ARGON2_MAX_T: u64 = 10;
const ARGON2_MAX_P: u64 = 4;

/// The marker's mac field as serde_json writes it.
const MAC_FIELD: &[u8] = b"\"mac\":\"";
/// Hex digits of the marker's mac.
const MAC_HEX_LEN: usize = 64;
/// What a writer puts in the marker's `mac` before [`marker_with_mac`].
pub(crate) const MARKER_MAC_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// A 32-byte secret: zeroed on drop, printed as its type name only.
macro_rules! secret32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub(crate) struct $name(Zeroizing<[u8; 32]>);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(…)"))
            }
        }
    };
}

secret32!(
    /// The repository's master secret `S` (32 random bytes, made once at
    /// creation, stored only wrapped in key slots).
    MasterSecret
);
secret32!(
    /// Seals and opens stored units (`data_key`).
    DataKey
);
secret32!(
    /// Keys node ids in an encrypted repository (`id_key`).
    IdKey
);
secret32!(
    /// Keys the repository marker's `mac` (`config_mac_key`).
    ConfigMacKey
);
secret32!(
    /// Wraps the master secret in one key slot.
    Kek
);

impl MasterSecret {
    /// 32 fresh random bytes from the operating system.
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        let mut s = Zeroizing::new([0u8; 32]);
        fill_random(s.as_mut_slice())?;
        Ok(MasterSecret(s))
    }

    /// A fixed secret (tests only).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterSecret(Zeroizing::new(bytes))
    }

    /// `blake3::derive_key(context, S ‖ repo_id)`.
    fn derive(&self, context: &str, repo_id: &RepoId) -> Zeroizing<[u8; 32]> {
        let mut material = Zeroizing::new([0u8; 32 + 16]);
        material[..32].copy_from_slice(self.0.as_slice());
        material[32..].copy_from_slice(repo_id);
        Zeroizing::new(blake3::derive_key(context, material.as_slice()))
    }

    /// Every subkey of this repository (FORMAT.md "Encryption keys").
    pub(crate) fn subkeys(&self, repo_id: &RepoId) -> Subkeys {
        Subkeys {
            data: DataKey(self.derive(DATA_KEY_CONTEXT, repo_id)),
            id: IdKey(self.derive(ID_KEY_CONTEXT, repo_id)),
            boundary: BoundaryKey::from_subkey(*self.derive(BOUNDARY_KEY_CONTEXT, repo_id)),
            config_mac: ConfigMacKey(self.derive(CONFIG_MAC_KEY_CONTEXT, repo_id)),
        }
    }
}

impl IdKey {
    /// The key in the form [`super::node::node_id`] and
    /// [`super::pages::build_dir`] take it.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The subkeys of an encrypted repository, each in the form its user takes.
#[derive(Debug)]
pub(crate) struct Subkeys {
    /// For [`seal`] and [`open`].
    pub(crate) data: DataKey,
    /// For `node_id(bytes, Some(id.as_bytes()))`.
    pub(crate) id: IdKey,
    /// `Hb`'s key for [`super::pages::build_dir`].
    pub(crate) boundary: BoundaryKey,
    /// For [`marker_with_mac`] and [`verify_marker_mac`].
    pub(crate) config_mac: ConfigMacKey,
}

/// Why sealing or opening a stored unit failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CryptoError {
    /// Shorter than a nonce and a tag: truncated.
    #[error(
        "sealed unit of {len} bytes is shorter than its nonce and tag ({min} bytes): truncated"
    )]
    TooShort {
        /// Bytes found.
        len: usize,
        /// Nonce + tag.
        min: usize,
    },
    /// Longer than the caller's limit for this kind of unit.
    #[error("sealed unit of {len} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        /// Bytes found.
        len: usize,
        /// The caller's limit.
        limit: usize,
    },
    /// Wrong key, wrong `ad`, or any changed byte: indistinguishable.
    #[error("does not authenticate (tampered, swapped or replayed)")]
    NotAuthentic,
    /// XChaCha20-Poly1305 refused the input (longer than it can seal).
    #[error("XChaCha20-Poly1305 cannot seal {len} bytes")]
    Seal {
        /// Bytes offered.
        len: usize,
    },
    /// The OS random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] rand::rand_core::OsError),
}

/// Fills `buf` from the operating system's random number generator.
fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    OsRng.try_fill_bytes(buf).map_err(CryptoError::Random)
}

/// What a stored unit is bound to (its associated data, never stored).
/// Built only by the constructors below, one per row of FORMAT.md's table.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Ad(Vec<u8>);

impl fmt::Debug for Ad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A blob's ad holds a plaintext hash: not printed.
        write!(f, "Ad({} bytes)", self.0.len())
    }
}

/// The kinds of whole objects that are stored units (`ad`'s kind byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// `trees/<xx>/<node-id>`.
    Node,
    /// `snapshots/<snap-id>`.
    Snapshot,
    /// `heads/<20 digits>`.
    Head,
    /// `lease/<20 digits>`.
    Lease,
    /// `prune/<run-id>`.
    PruneList,
}

impl ObjectKind {
    fn tag(self) -> u8 {
        match self {
            ObjectKind::Node => b'N',
            ObjectKind::Snapshot => b'S',
            ObjectKind::Head => b'H',
            ObjectKind::Lease => b'L',
            ObjectKind::PruneList => b'R',
        }
    }
}

impl Ad {
    /// `"tether-v2\0" ‖ repo_id ‖ kind ‖ key relative to P/`.
    fn object(repo_id: &RepoId, kind: ObjectKind, key: &str) -> Ad {
        let mut ad = Vec::with_capacity(AD_PREFIX.len() + 16 + 1 + key.len());
        ad.extend_from_slice(AD_PREFIX);
        ad.extend_from_slice(repo_id);
        ad.push(kind.tag());
        ad.extend_from_slice(key.as_bytes());
        Ad(ad)
    }

    /// A node: `trees/<xx>/<node-id>`.
    pub(crate) fn node(repo_id: &RepoId, id: &NodeId) -> Ad {
        let hex = id.to_string();
        let (xx, _) = hex.split_at(2);
        Ad::object(repo_id, ObjectKind::Node, &format!("trees/{xx}/{hex}"))
    }

    /// A snapshot record: `snapshots/<snap-id>`.
    pub(crate) fn snapshot(repo_id: &RepoId, snap_id: &str) -> Ad {
        Ad::object(
            repo_id,
            ObjectKind::Snapshot,
            &format!("snapshots/{snap_id}"),
        )
    }

    /// A head record: `heads/<generation, 20 digits>`.
    pub(crate) fn head(repo_id: &RepoId, generation: u64) -> Ad {
        Ad::object(
            repo_id,
            ObjectKind::Head,
            &format!("heads/{generation:020}"),
        )
    }

    /// A lease record: `lease/<generation, 20 digits>`.
    pub(crate) fn lease(repo_id: &RepoId, generation: u64) -> Ad {
        Ad::object(
            repo_id,
            ObjectKind::Lease,
            &format!("lease/{generation:020}"),
        )
    }

    /// A prune candidate list: `prune/<run-id>`.
    pub(crate) fn prune_list(repo_id: &RepoId, run_id: &str) -> Ad {
        Ad::object(repo_id, ObjectKind::PruneList, &format!("prune/{run_id}"))
    }

    /// A content blob inside a pack, bound to its plaintext BLAKE3 (not to
    /// its position, so repack can copy ciphertext verbatim).
    pub(crate) fn blob(repo_id: &RepoId, plaintext_hash: &[u8; 32]) -> Ad {
        let mut ad = Vec::with_capacity(AD_PREFIX.len() + 16 + 1 + 32);
        ad.extend_from_slice(AD_PREFIX);
        ad.extend_from_slice(repo_id);
        ad.push(b'C');
        ad.extend_from_slice(plaintext_hash);
        Ad(ad)
    }

    /// A key slot's wrapped secret: `"tether-v2-key\0" ‖ repo_id ‖ key-id`.
    fn key_slot(repo_id: &RepoId, key_id: &str) -> Ad {
        let mut ad = Vec::with_capacity(KEY_SLOT_AD_PREFIX.len() + 16 + key_id.len());
        ad.extend_from_slice(KEY_SLOT_AD_PREFIX);
        ad.extend_from_slice(repo_id);
        ad.extend_from_slice(key_id.as_bytes());
        Ad(ad)
    }
}

/// `nonce ‖ XChaCha20-Poly1305(key, nonce, plain, ad) ‖ tag`, nonce random.
fn seal_with(key: &[u8; 32], plain: &[u8], ad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    seal_with_nonce(key, nonce, plain, ad)
}

/// [`seal_with`] with a given nonce (never reused: callers pass a fresh
/// random one; tests a fixed one to check the layout against published
/// vectors).
fn seal_with_nonce(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    plain: &[u8],
    ad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plain.len().saturating_add(SEAL_OVERHEAD));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let key: &Key = key.into();
    let cipher = XChaCha20Poly1305::new(key);
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), ad, (&mut out[NONCE_LEN..]).into())
        .map_err(|_| CryptoError::Seal { len: plain.len() })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The inverse of [`seal_with`]; lengths checked before anything is
/// allocated.
fn open_with(
    key: &[u8; 32],
    unit: &[u8],
    ad: &[u8],
    max_unit_len: usize,
) -> Result<Vec<u8>, CryptoError> {
    let too_short = CryptoError::TooShort {
        len: unit.len(),
        min: SEAL_OVERHEAD,
    };
    if unit.len() < SEAL_OVERHEAD {
        return Err(too_short);
    }
    if unit.len() > max_unit_len {
        return Err(CryptoError::TooLong {
            len: unit.len(),
            limit: max_unit_len,
        });
    }
    let (nonce, rest) = unit.split_first_chunk::<NONCE_LEN>().ok_or(too_short)?;
    let (ciphertext, tag) = rest
        .split_last_chunk::<TAG_LEN>()
        .ok_or(CryptoError::TooShort {
            len: unit.len(),
            min: SEAL_OVERHEAD,
        })?;
    let mut plain = ciphertext.to_vec();
    let key: &Key = key.into();
    let cipher = XChaCha20Poly1305::new(key);
    cipher
        .decrypt_inout_detached(
            &XNonce::from(*nonce),
            ad,
            plain.as_mut_slice().into(),
            &Tag::from(*tag),
        )
        .map_err(|_| CryptoError::NotAuthentic)?;
    Ok(plain)
}

/// Seals one stored unit's plaintext frame: `nonce (24, random from the OS)
/// ‖ ciphertext ‖ tag (16)`, bound to `ad`.
pub(crate) fn seal(key: &DataKey, frame: &[u8], ad: &Ad) -> Result<Vec<u8>, CryptoError> {
    seal_with(&key.0, frame, &ad.0)
}

/// Opens one stored unit back into its plaintext frame. `max_unit_len`
/// bounds the *stored* unit (the kind's limit, FORMAT.md "Reader checks
/// and limits"); a unit shorter than nonce + tag or longer than that is
/// refused before anything is allocated; any change to any byte, another
/// key or another `ad` is refused as [`CryptoError::NotAuthentic`].
pub(crate) fn open(
    key: &DataKey,
    unit: &[u8],
    ad: &Ad,
    max_unit_len: usize,
) -> Result<Vec<u8>, CryptoError> {
    open_with(&key.0, unit, &ad.0, max_unit_len)
}

/// Why a user key, key slot or marker mac was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// Nothing in the key file (after one trailing `\n`).
    #[error("the encryption key file is empty")]
    EmptyKeyFile,
    /// `tether-key-1:` followed by something other than a 256-bit key.
    #[error(
        "the encryption key file starts with \"tether-key-1:\" but is not followed by exactly \
         43 base64url characters (a key from `tether key generate`, damaged?)"
    )]
    MalformedRawKey,
    /// A key slot is larger than any tether writes.
    #[error("key slot {slot}: {len} bytes exceed the limit of {limit} bytes")]
    SlotTooLarge {
        /// The slot's key id (from its object name).
        slot: String,
        /// Bytes found.
        len: usize,
        /// [`MAX_SLOT_BYTES`].
        limit: usize,
    },
    /// A key slot that is not valid JSON of the v2 schema.
    #[error("key slot {slot}: {source}")]
    SlotJson {
        /// The slot's key id (from its object name).
        slot: String,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// A key slot whose fields are out of shape.
    #[error("key slot {slot}: {reason}")]
    SlotMalformed {
        /// The slot's key id.
        slot: String,
        /// What is wrong.
        reason: String,
    },
    /// KDF parameters above the bounds: refused before running the KDF.
    #[error(
        "key slot {slot}: Argon2id parameters m_kib={m_kib}, t={t}, p={p} exceed the bounds \
         (m_kib ≤ 262144, t ≤ 10, p ≤ 4): refused as hostile"
    )]
    HostileKdf {
        /// The slot's key id.
        slot: String,
        /// Memory in KiB.
        m_kib: u64,
        /// Passes.
        t: u64,
        /// Lanes.
        p: u64,
    },
    /// More slots than any repository needs.
    #[error("{count} key slots listed, more than the limit of {limit}: refused as hostile")]
    TooManySlots {
        /// Slots offered.
        count: usize,
        /// [`MAX_SLOTS`].
        limit: usize,
    },
    /// No slot unwrapped with this key (wrong key or tampered slot: the same).
    #[error(
        "the key does not open this repository ({tried} key slots tried{})",
        if *.skipped > 0 { format!(", {} passphrase slots skipped: the key file holds a generated key", .skipped) } else { String::new() }
    )]
    WrongKey {
        /// Slots whose kind fits the key and were tried.
        tried: usize,
        /// Passphrase slots skipped because the key is a generated one.
        skipped: usize,
    },
    /// Argon2id refused its parameters or failed.
    #[error("Argon2id: {0}")]
    Argon2(#[source] argon2::Error),
    /// Randomness or sealing failed while making a slot.
    #[error("key slot: {0}")]
    Crypto(#[source] CryptoError),
    /// A slot could not be serialized (never expected).
    #[error("key slot {slot}: cannot serialize: {source}")]
    SlotSerialize {
        /// The slot's key id.
        slot: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// The marker's `"mac":"` does not occur exactly once.
    #[error("the repository marker has {found} `\"mac\":\"` fields; exactly one is required")]
    MarkerMacField {
        /// How many were found.
        found: usize,
    },
    /// The marker's mac is not 64 lower-hex digits followed by `"`.
    #[error("the repository marker's mac is not 64 lower-hex digits")]
    MarkerMacSyntax,
    /// The marker's mac does not verify with this key's config mac key.
    #[error("the repository marker was altered (its mac does not verify)")]
    MarkerAltered,
}

/// The user's key, from `--encryption-key-file` / `TETHER_ENCRYPTION_KEY_FILE`.
pub(crate) enum UserKey {
    /// A generated 256-bit key (`tether-key-1:` + 43 base64url).
    Raw(Zeroizing<[u8; 32]>),
    /// Anything else: a passphrase, as bytes.
    Passphrase(Zeroizing<Vec<u8>>),
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserKey::Raw(_) => f.write_str("UserKey::Raw(…)"),
            UserKey::Passphrase(_) => f.write_str("UserKey::Passphrase(…)"),
        }
    }
}

impl UserKey {
    /// Reads a key file's bytes: one trailing `\n` removed; empty refused;
    /// `tether-key-1:` + exactly 43 base64url characters (canonical, no
    /// padding) is a raw key, any other `tether-key-1:` line is refused as
    /// damaged; anything else is a passphrase.
    pub(crate) fn from_key_file_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if bytes.is_empty() {
            return Err(KeyError::EmptyKeyFile);
        }
        let Some(b64) = bytes.strip_prefix(RAW_KEY_PREFIX.as_bytes()) else {
            return Ok(UserKey::Passphrase(Zeroizing::new(bytes.to_vec())));
        };
        if b64.len() != RAW_KEY_B64_LEN {
            return Err(KeyError::MalformedRawKey);
        }
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| KeyError::MalformedRawKey)?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if decoded.len() != key.len() {
            return Err(KeyError::MalformedRawKey);
        }
        key.copy_from_slice(&decoded);
        Ok(UserKey::Raw(key))
    }

    /// The KEK for `slot` if this kind of key can open that kind of slot
    /// (raw ↔ raw, passphrase ↔ argon2id), else `None`. Argon2id runs only
    /// after its parameters passed [`Kdf::check`].
    fn kek(&self, kdf: &Kdf, salt: &[u8; SALT_LEN], slot: &str) -> Result<Option<Kek>, KeyError> {
        match (self, kdf) {
            (UserKey::Raw(key), Kdf::Raw {}) => {
                let mut material = Zeroizing::new([0u8; 32 + SALT_LEN]);
                material[..32].copy_from_slice(key.as_slice());
                material[32..].copy_from_slice(salt);
                Ok(Some(Kek(Zeroizing::new(blake3::derive_key(
                    KEK_CONTEXT,
                    material.as_slice(),
                )))))
            }
            (UserKey::Passphrase(pass), Kdf::Argon2id { .. }) => {
                let Some(params) = kdf.check(slot)? else {
                    return Ok(None);
                };
                let mut out = Zeroizing::new([0u8; 32]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(pass, salt, out.as_mut_slice())
                    .map_err(KeyError::Argon2)?;
                Ok(Some(Kek(out)))
            }
            _ => Ok(None),
        }
    }
}

/// The contents of a new key file (`tether key generate`):
/// `tether-key-1:` + 32 random bytes as base64url without padding, and a
/// newline. The text *is* the secret (its `Debug` prints it): write it to
/// the key file and nowhere else.
pub(crate) fn generate_key_file_contents() -> Result<Zeroizing<String>, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    fill_random(key.as_mut_slice())?;
    let mut out = Zeroizing::new(String::with_capacity(
        RAW_KEY_PREFIX.len() + RAW_KEY_B64_LEN + 1,
    ));
    out.push_str(RAW_KEY_PREFIX);
    URL_SAFE_NO_PAD.encode_string(key.as_slice(), &mut out);
    out.push('\n');
    Ok(out)
}

/// A key slot's key-derivation function (`kdf` in `P/keys/<key-id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alg", deny_unknown_fields)]
pub(crate) enum Kdf {
    /// Argon2id over a passphrase.
    #[serde(rename = "argon2id")]
    Argon2id {
        /// Memory in KiB.
        m_kib: u64,
        /// Passes.
        t: u64,
        /// Lanes.
        p: u64,
    },
    /// `derive_key` over a generated 256-bit key. A struct variant (not a
    /// unit one) so that serde refuses unknown fields beside `"alg":"raw"`.
    #[serde(rename = "raw")]
    Raw {},
}

impl Kdf {
    /// Argon2id's parameters as Argon2 takes them (`None` for `Raw`),
    /// refused as hostile above the bounds (so an open never allocates more
    /// than 256 MiB or runs more than 10 passes) and as malformed below
    /// Argon2's minimums. Allocates nothing, runs nothing.
    fn check(&self, slot: &str) -> Result<Option<Params>, KeyError> {
        match *self {
            Kdf::Raw {} => Ok(None),
            Kdf::Argon2id { m_kib, t, p } => {
                let hostile = || KeyError::HostileKdf {
                    slot: slot.to_owned(),
                    m_kib,
                    t,
                    p,
                };
                if m_kib > ARGON2_MAX_M_KIB || t > ARGON2_MAX_T || p > ARGON2_MAX_P {
                    return Err(hostile());
                }
                let params = Params::new(
                    u32::try_from(m_kib).map_err(|_| hostile())?,
                    u32::try_from(t).map_err(|_| hostile())?,
                    u32::try_from(p).map_err(|_| hostile())?,
                    Some(32),
                )
                .map_err(|e| KeyError::SlotMalformed {
                    slot: slot.to_owned(),
                    reason: format!("Argon2id parameters: {e}"),
                })?;
                Ok(Some(params))
            }
        }
    }
}

/// One key slot, `P/keys/<key-id>` (FORMAT.md "Encryption keys"):
/// plaintext JSON holding the master secret wrapped by one user key.
/// Built only by [`KeySlot::create`] and [`KeySlot::from_json`], which
/// validate every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySlot {
    format: String,
    id: String,
    created_ms: u64,
    host: String,
    label: String,
    kdf: Kdf,
    /// Standard base64 (padded) of 16 bytes.
    salt: String,
    /// Standard base64 (padded) of `nonce ‖ sealed S ‖ tag` (72 bytes).
    wrapped: String,
}

/// Who made a key slot, for `tether key list` (not secret).
#[derive(Debug, Clone)]
pub(crate) struct SlotInfo {
    /// Milliseconds since the epoch.
    pub(crate) created_ms: u64,
    /// The host that made it.
    pub(crate) host: String,
    /// The user's label.
    pub(crate) label: String,
}

/// What [`open_master`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The repository's master secret.
    pub(crate) master: MasterSecret,
    /// The id of the slot that unwrapped it (`key remove` refuses it
    /// without `--force`).
    pub(crate) slot_id: String,
}

fn is_slot_id(id: &str) -> bool {
    id.len() == 2 * SLOT_ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl KeySlot {
    /// A new slot wrapping `master` with `user_key`: a fresh random id and
    /// salt; Argon2id at m = 64 MiB, t = 3, p = 1 for a passphrase.
    pub(crate) fn create(
        master: &MasterSecret,
        repo_id: &RepoId,
        user_key: &UserKey,
        info: SlotInfo,
    ) -> Result<KeySlot, KeyError> {
        KeySlot::create_with(master, repo_id, user_key, info, ARGON2_WRITE)
    }

    /// As [`KeySlot::create`], but passphrase slots use cheap Argon2id
    /// parameters (m = 64 KiB, t = 1) so tests do not spend 64 MiB × 3
    /// passes each.
    #[cfg(test)]
    pub(crate) fn create_cheap(
        master: &MasterSecret,
        repo_id: &RepoId,
        user_key: &UserKey,
        info: SlotInfo,
    ) -> Result<KeySlot, KeyError> {
        let cheap = Kdf::Argon2id {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        KeySlot::create_with(master, repo_id, user_key, info, cheap)
    }

    fn create_with(
        master: &MasterSecret,
        repo_id: &RepoId,
        user_key: &UserKey,
        info: SlotInfo,
        passphrase_kdf: Kdf,
    ) -> Result<KeySlot, KeyError> {
        let kdf = match user_key {
            UserKey::Raw(_) => Kdf::Raw {},
            UserKey::Passphrase(_) => passphrase_kdf,
        };
        let mut id = [0u8; SLOT_ID_BYTES];
        fill_random(&mut id).map_err(KeyError::Crypto)?;
        let id = lower_hex(&id);
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt).map_err(KeyError::Crypto)?;
        let kek = user_key
            .kek(&kdf, &salt, &id)?
            .ok_or_else(|| KeyError::SlotMalformed {
                slot: id.clone(),
                reason: "the key's kind does not fit the slot's kdf".to_owned(),
            })?;
        let wrapped = seal_with(&kek.0, master.0.as_slice(), &Ad::key_slot(repo_id, &id).0)
            .map_err(KeyError::Crypto)?;
        Ok(KeySlot {
            format: SLOT_FORMAT.to_owned(),
            id,
            created_ms: info.created_ms,
            host: info.host,
            label: info.label,
            kdf,
            salt: STANDARD.encode(salt),
            wrapped: STANDARD.encode(wrapped),
        })
    }

    /// The slot's id (its object is `P/keys/<id>`).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Its KDF (for `tether key list`).
    pub(crate) fn kdf(&self) -> Kdf {
        self.kdf
    }

    /// Who made it, when (for `tether key list`).
    pub(crate) fn info(&self) -> SlotInfo {
        SlotInfo {
            created_ms: self.created_ms,
            host: self.host.clone(),
            label: self.label.clone(),
        }
    }

    /// The slot's JSON, as stored.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, KeyError> {
        serde_json::to_vec(self).map_err(|source| KeyError::SlotSerialize {
            slot: self.id.clone(),
            source,
        })
    }

    /// Parses and validates `P/keys/<name>`: size ≤ 16 KiB, no unknown
    /// field, `format`, `id` = `name` (16 lower-hex), salt of 16 bytes,
    /// wrapped of 72, KDF parameters within the bounds.
    pub(crate) fn from_json(name: &str, bytes: &[u8]) -> Result<KeySlot, KeyError> {
        // The name comes from a listing: printed only once it is known to be hex.
        let shown = if is_slot_id(name) {
            name.to_owned()
        } else {
            "(invalid name)".to_owned()
        };
        let malformed = |reason: &str| KeyError::SlotMalformed {
            slot: shown.clone(),
            reason: reason.to_owned(),
        };
        if !is_slot_id(name) {
            return Err(malformed("the object name is not 16 lower-hex digits"));
        }
        if bytes.len() > MAX_SLOT_BYTES {
            return Err(KeyError::SlotTooLarge {
                slot: shown,
                len: bytes.len(),
                limit: MAX_SLOT_BYTES,
            });
        }
        let slot: KeySlot = serde_json::from_slice(bytes).map_err(|source| KeyError::SlotJson {
            slot: shown.clone(),
            source,
        })?;
        if slot.format != SLOT_FORMAT {
            return Err(malformed(
                "unknown format (expected \"tether-key-2\"): written by a newer tether?",
            ));
        }
        if slot.id != name {
            return Err(malformed("its id differs from its object name"));
        }
        slot.salt_bytes()?;
        slot.wrapped_bytes()?;
        slot.kdf.check(&slot.id)?;
        Ok(slot)
    }

    fn salt_bytes(&self) -> Result<[u8; SALT_LEN], KeyError> {
        STANDARD
            .decode(&self.salt)
            .ok()
            .and_then(|v| <[u8; SALT_LEN]>::try_from(v).ok())
            .ok_or_else(|| KeyError::SlotMalformed {
                slot: self.id.clone(),
                reason: "salt is not base64 of 16 bytes".to_owned(),
            })
    }

    fn wrapped_bytes(&self) -> Result<[u8; WRAPPED_LEN], KeyError> {
        STANDARD
            .decode(&self.wrapped)
            .ok()
            .and_then(|v| <[u8; WRAPPED_LEN]>::try_from(v).ok())
            .ok_or_else(|| KeyError::SlotMalformed {
                slot: self.id.clone(),
                reason: "wrapped is not base64 of 72 bytes".to_owned(),
            })
    }

    /// `Some(S)` if `user_key` unwraps this slot; `None` if the key's kind
    /// does not fit the slot or it does not authenticate.
    fn unwrap_master(
        &self,
        repo_id: &RepoId,
        user_key: &UserKey,
    ) -> Result<Option<MasterSecret>, KeyError> {
        let salt = self.salt_bytes()?;
        let wrapped = self.wrapped_bytes()?;
        let Some(kek) = user_key.kek(&self.kdf, &salt, &self.id)? else {
            return Ok(None);
        };
        let ad = Ad::key_slot(repo_id, &self.id);
        let Ok(plain) = open_with(&kek.0, &wrapped, &ad.0, WRAPPED_LEN) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let mut s = Zeroizing::new([0u8; 32]);
        if plain.len() != s.len() {
            return Ok(None);
        }
        s.copy_from_slice(&plain);
        Ok(Some(MasterSecret(s)))
    }
}

/// Unlocks the repository: at most [`MAX_SLOTS`] slots; with a raw key
/// only raw slots are tried (passphrase slots skipped), with a passphrase
/// only Argon2id slots, after every one of those has passed the KDF
/// bounds; the first that unwraps wins. None → [`KeyError::WrongKey`]
/// (a wrong key and a tampered slot look the same).
pub(crate) fn open_master(
    slots: &[KeySlot],
    repo_id: &RepoId,
    user_key: &UserKey,
) -> Result<Opened, KeyError> {
    if slots.len() > MAX_SLOTS {
        return Err(KeyError::TooManySlots {
            count: slots.len(),
            limit: MAX_SLOTS,
        });
    }
    let fits = |slot: &&KeySlot| {
        matches!(
            (user_key, slot.kdf),
            (UserKey::Raw(_), Kdf::Raw {}) | (UserKey::Passphrase(_), Kdf::Argon2id { .. })
        )
    };
    let candidates: Vec<&KeySlot> = slots.iter().filter(fits).collect();
    // Bound every KDF before running any: a hostile slot is refused
    // wherever it is in the list.
    for slot in &candidates {
        slot.kdf.check(&slot.id)?;
    }
    let skipped = match user_key {
        UserKey::Raw(_) => slots.len() - candidates.len(),
        UserKey::Passphrase(_) => 0,
    };
    for slot in &candidates {
        if let Some(master) = slot.unwrap_master(repo_id, user_key)? {
            return Ok(Opened {
                master,
                slot_id: slot.id.clone(),
            });
        }
    }
    Err(KeyError::WrongKey {
        tried: candidates.len(),
        skipped,
    })
}

/// Where the marker's 64 mac digits start: after the only `"mac":"`, and
/// followed by `"`.
fn mac_digits_at(marker: &[u8]) -> Result<usize, KeyError> {
    let mut found = marker
        .windows(MAC_FIELD.len())
        .enumerate()
        .filter(|(_, w)| *w == MAC_FIELD)
        .map(|(i, _)| i);
    let first = found.next();
    let more = found.count();
    let start = match first {
        Some(i) if more == 0 => i + MAC_FIELD.len(),
        _ => {
            return Err(KeyError::MarkerMacField {
                found: usize::from(first.is_some()) + more,
            });
        }
    };
    let digits = marker
        .get(start..start + MAC_HEX_LEN)
        .ok_or(KeyError::MarkerMacSyntax)?;
    if marker.get(start + MAC_HEX_LEN) != Some(&b'"')
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(KeyError::MarkerMacSyntax);
    }
    Ok(start)
}

/// `blake3::keyed_hash(config_mac_key, marker with the mac digits zeroed)`.
fn marker_mac(key: &ConfigMacKey, marker: &[u8], start: usize) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    hasher.update(&marker[..start]);
    hasher.update(MARKER_MAC_PLACEHOLDER.as_bytes());
    hasher.update(&marker[start + MAC_HEX_LEN..]);
    hasher.finalize()
}

/// The marker as stored: `marker` (serialized with `"mac":"` once, its
/// value [`MARKER_MAC_PLACEHOLDER`] or any 64 lower-hex) with the mac
/// filled in.
pub(crate) fn marker_with_mac(key: &ConfigMacKey, marker: &[u8]) -> Result<Vec<u8>, KeyError> {
    let start = mac_digits_at(marker)?;
    let mac = marker_mac(key, marker, start);
    let mut out = marker.to_vec();
    out[start..start + MAC_HEX_LEN].copy_from_slice(mac.to_hex().as_bytes());
    Ok(out)
}

/// Verifies a stored marker's `mac` (constant-time comparison); refused as
/// altered if it does not match.
pub(crate) fn verify_marker_mac(key: &ConfigMacKey, marker: &[u8]) -> Result<(), KeyError> {
    let start = mac_digits_at(marker)?;
    let stored = blake3::Hash::from_hex(&marker[start..start + MAC_HEX_LEN])
        .map_err(|_| KeyError::MarkerMacSyntax)?;
    // `blake3::Hash`'s `==` is constant-time.
    if marker_mac(key, marker, start) == stored {
        Ok(())
    } else {
        Err(KeyError::MarkerAltered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::node::{self, Entry, EntryKind, Limits};
    use crate::v2::pages;

    const REPO: RepoId = [0x11; 16];
    const SECRET: [u8; 32] = [0xA7; 32];
    const PASSPHRASE: &[u8] = b"correct horse battery staple";

    fn master() -> MasterSecret {
        MasterSecret::from_bytes(SECRET)
    }

    fn data_key() -> DataKey {
        master().subkeys(&REPO).data
    }

    fn info(label: &str) -> SlotInfo {
        SlotInfo {
            created_ms: 1_764_500_000_123,
            host: "jupyter-alice".to_owned(),
            label: label.to_owned(),
        }
    }

    fn raw_key() -> UserKey {
        let contents = generate_key_file_contents().unwrap();
        UserKey::from_key_file_bytes(contents.as_bytes()).unwrap()
    }

    fn passphrase(p: &[u8]) -> UserKey {
        UserKey::from_key_file_bytes(p).unwrap()
    }

    fn not_authentic(r: Result<Vec<u8>, CryptoError>) -> bool {
        matches!(r, Err(CryptoError::NotAuthentic))
    }

    #[test]
    fn subkeys_are_derive_key_of_secret_and_repo_id() {
        let mut material = SECRET.to_vec();
        material.extend_from_slice(&REPO);
        let k = master().subkeys(&REPO);
        let expect = |ctx: &str| blake3::derive_key(ctx, &material);
        assert_eq!(*k.data.0, expect("tether 2026-11-30 v2 data key"));
        assert_eq!(*k.id.0, expect("tether 2026-11-30 v2 id key"));
        assert_eq!(
            *k.config_mac.0,
            expect("tether 2026-11-30 v2 config mac key")
        );
        // The boundary key is private to pages: it must equal a BoundaryKey
        // made from the expected bytes (compare the pages they cut).
        let entries: Vec<Entry> = (0..300)
            .map(|i| Entry {
                name: format!("f{i:04}"),
                kind: EntryKind::Symlink {
                    target: "t".to_owned(),
                },
            })
            .collect();
        let limits = Limits::default();
        let ours = pages::build_dir(&entries, &k.boundary, None, &limits).unwrap();
        let expected_key =
            BoundaryKey::from_subkey(expect("tether 2026-11-30 v2 page boundary key"));
        let theirs = pages::build_dir(&entries, &expected_key, None, &limits).unwrap();
        assert_eq!(ours.root, theirs.root);
        let plain = pages::build_dir(&entries, &BoundaryKey::plaintext(&REPO), None, &limits);
        assert_ne!(plain.unwrap().root, ours.root, "the keyed boundary differs");
        // All distinct, and per repository.
        let all = [*k.data.0, *k.id.0, *k.config_mac.0];
        assert!(all[0] != all[1] && all[1] != all[2] && all[0] != all[2]);
        assert_ne!(*master().subkeys(&[0x12; 16]).data.0, *k.data.0);
        // The id key is what node ids are keyed with.
        let bytes = [node::TAG_LEAF, 0, 0];
        assert_eq!(
            node::node_id(&bytes, Some(k.id.as_bytes())).0,
            *blake3::keyed_hash(&expect("tether 2026-11-30 v2 id key"), &bytes).as_bytes()
        );
    }

    #[test]
    fn seal_open_round_trip() {
        let key = data_key();
        let ad = Ad::head(&REPO, 42);
        for len in [0usize, 1, 1000, 70_000] {
            let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let unit = seal(&key, &frame, &ad).unwrap();
            assert_eq!(unit.len(), len + SEAL_OVERHEAD);
            if len > 16 {
                assert!(
                    !unit.windows(16).any(|w| w == &frame[..16]),
                    "not plaintext"
                );
            }
            assert_eq!(open(&key, &unit, &ad, unit.len()).unwrap(), frame);
            // Random nonces: sealing twice differs.
            assert_ne!(seal(&key, &frame, &ad).unwrap(), unit);
        }
    }

    /// The unit is standard XChaCha20-Poly1305, `nonce ‖ ciphertext ‖ tag`:
    /// draft-irtf-cfrg-xchacha, appendix A.3.1.
    #[test]
    fn unit_layout_matches_the_xchacha_draft_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let ad = hex("50515253c0c1c2c3c4c5c6c7");
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one \
                      tip for the future, sunscreen would be it.";
        let mut unit = nonce.to_vec();
        unit.extend(hex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644\
             0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e\
             3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e",
        ));
        unit.extend(hex("c0875924c1c7987947deafd8780acf49"));
        assert_eq!(seal_with_nonce(&key, nonce, plain, &ad).unwrap(), unit);
        assert_eq!(open_with(&key, &unit, &ad, unit.len()).unwrap(), plain);
    }

    #[test]
    fn every_tamper_is_refused() {
        let key = data_key();
        let id = node::node_id(b"some node", None);
        let ad = Ad::node(&REPO, &id);
        let unit = seal(&key, b"a node's frame, compressed or not", &ad).unwrap();
        let max = 4 << 20;
        assert!(open(&key, &unit, &ad, max).is_ok());

        let flipped = |at: usize| {
            let mut u = unit.clone();
            u[at] ^= 0x01;
            u
        };
        // A bit flipped in the nonce, the ciphertext, the tag.
        for at in [
            0,
            NONCE_LEN - 1,
            NONCE_LEN,
            unit.len() - TAG_LEN - 1,
            unit.len() - 1,
        ] {
            assert!(
                not_authentic(open(&key, &flipped(at), &ad, max)),
                "flip at {at}"
            );
        }
        // Truncated by one byte, or below nonce + tag.
        assert!(not_authentic(open(&key, &unit[..unit.len() - 1], &ad, max)));
        for short in [0, 1, SEAL_OVERHEAD - 1] {
            assert!(matches!(
                open(&key, &unit[..short], &ad, max),
                Err(CryptoError::TooShort {
                    min: SEAL_OVERHEAD,
                    ..
                })
            ));
        }
        // Appended to.
        let mut longer = unit.clone();
        longer.push(0);
        assert!(not_authentic(open(&key, &longer, &ad, max)));
        // Longer than the caller's limit: refused before decrypting.
        assert!(matches!(
            open(&key, &unit, &ad, unit.len() - 1),
            Err(CryptoError::TooLong { .. })
        ));
        // The same bytes under another node's name.
        let other = node::node_id(b"another node", None);
        assert!(not_authentic(open(
            &key,
            &unit,
            &Ad::node(&REPO, &other),
            max
        )));
        // ... under another kind with the same key text, or another repository.
        let rel = format!("trees/{}/{}", &id.to_string()[..2], id);
        assert!(not_authentic(open(
            &key,
            &unit,
            &Ad::snapshot(&REPO, &rel),
            max
        )));
        assert!(not_authentic(open(
            &key,
            &unit,
            &Ad::node(&[0x22; 16], &id),
            max
        )));
        // A head from generation 5 presented as generation 42.
        let head5 = seal(&key, b"{\"generation\":5}", &Ad::head(&REPO, 5)).unwrap();
        assert!(open(&key, &head5, &Ad::head(&REPO, 5), max).is_ok());
        assert!(not_authentic(open(&key, &head5, &Ad::head(&REPO, 42), max)));
        assert!(not_authentic(open(&key, &head5, &Ad::lease(&REPO, 5), max)));
        // A blob moved to an entry naming another hash.
        let h1 = *blake3::hash(b"blob one").as_bytes();
        let h2 = *blake3::hash(b"blob two").as_bytes();
        let blob = seal(&key, b"blob one", &Ad::blob(&REPO, &h1)).unwrap();
        assert!(open(&key, &blob, &Ad::blob(&REPO, &h1), max).is_ok());
        assert!(not_authentic(open(&key, &blob, &Ad::blob(&REPO, &h2), max)));
        // A prune list and a snapshot under another run / snapshot id.
        let p = seal(&key, b"[]", &Ad::prune_list(&REPO, "1-a")).unwrap();
        assert!(not_authentic(open(
            &key,
            &p,
            &Ad::prune_list(&REPO, "1-b"),
            max
        )));
        // Another key (another master secret; or the same secret, another repository).
        let other_key = MasterSecret::from_bytes([0xA8; 32]).subkeys(&REPO).data;
        assert!(not_authentic(open(&other_key, &unit, &ad, max)));
        let other_repo_key = master().subkeys(&[0x22; 16]).data;
        assert!(not_authentic(open(&other_repo_key, &unit, &ad, max)));
        // The message says what happened.
        let err = open(&key, &flipped(30), &ad, max).unwrap_err().to_string();
        assert!(
            err.contains("does not authenticate (tampered, swapped or replayed)"),
            "{err}"
        );
    }

    #[test]
    fn ad_layout_is_formats() {
        let id = node::node_id(b"x", None);
        let hex = id.to_string();
        let mut want = b"tether-v2\0".to_vec();
        want.extend_from_slice(&REPO);
        want.push(b'N');
        want.extend_from_slice(format!("trees/{}/{hex}", &hex[..2]).as_bytes());
        assert_eq!(Ad::node(&REPO, &id).0, want);
        let head = Ad::head(&REPO, 42).0;
        assert!(head.ends_with(b"Hheads/00000000000000000042"));
        let lease = Ad::lease(&REPO, 7).0;
        assert!(lease.ends_with(b"Llease/00000000000000000007"));
        assert!(Ad::snapshot(&REPO, "1-ab").0.ends_with(b"Ssnapshots/1-ab"));
        assert!(Ad::prune_list(&REPO, "1-ab").0.ends_with(b"Rprune/1-ab"));
        let h = [9u8; 32];
        let blob = Ad::blob(&REPO, &h).0;
        assert_eq!(blob.len(), 10 + 16 + 1 + 32);
        assert_eq!(blob[26], b'C');
        assert!(blob.ends_with(&h));
    }

    #[test]
    fn key_files() {
        // Generated: prefix, 43 base64url, newline; parses as a raw key with or without it.
        let contents = generate_key_file_contents().unwrap();
        assert!(contents.starts_with("tether-key-1:") && contents.ends_with('\n'));
        assert_eq!(contents.len(), 13 + 43 + 1);
        assert_ne!(*contents, *generate_key_file_contents().unwrap());
        let with = UserKey::from_key_file_bytes(contents.as_bytes()).unwrap();
        let without = UserKey::from_key_file_bytes(contents.trim_end().as_bytes()).unwrap();
        match (&with, &without) {
            (UserKey::Raw(a), UserKey::Raw(b)) => assert_eq!(**a, **b),
            _ => panic!("not raw: {with:?} {without:?}"),
        }
        // Passphrases: one trailing newline removed, only one.
        match passphrase(b"pass\n\n") {
            UserKey::Passphrase(p) => assert_eq!(p.as_slice(), b"pass\n"),
            k => panic!("{k:?}"),
        }
        match passphrase(b"tether-key-2:whatever") {
            UserKey::Passphrase(p) => assert_eq!(p.as_slice(), b"tether-key-2:whatever"),
            k => panic!("{k:?}"),
        }
        // Empty refused.
        for empty in [&b""[..], b"\n"] {
            assert!(matches!(
                UserKey::from_key_file_bytes(empty),
                Err(KeyError::EmptyKeyFile)
            ));
        }
        // A damaged generated key is refused, not taken as a passphrase.
        let good = contents.trim_end();
        let damaged = [
            good[..good.len() - 1].to_owned(),
            format!("{good}A"),
            format!("{}*", &good[..good.len() - 1]),
            format!("{good}\r"),
            // Non-canonical base64: the last character's 2 unused bits set.
            format!("tether-key-1:{}B", "A".repeat(42)),
        ];
        for d in &damaged {
            assert!(
                matches!(
                    UserKey::from_key_file_bytes(d.as_bytes()),
                    Err(KeyError::MalformedRawKey)
                ),
                "{d:?}"
            );
        }
        let canonical = format!("tether-key-1:{}", "A".repeat(43));
        assert!(matches!(
            UserKey::from_key_file_bytes(canonical.as_bytes()),
            Ok(UserKey::Raw(_))
        ));
    }

    fn slot_json(slot: &KeySlot) -> serde_json::Value {
        serde_json::from_slice(&slot.to_json().unwrap()).unwrap()
    }

    fn reparse(v: &serde_json::Value) -> Result<KeySlot, KeyError> {
        let name = v["id"].as_str().unwrap().to_owned();
        KeySlot::from_json(&name, &serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn raw_and_passphrase_slots_open_and_wrong_keys_do_not() {
        let raw = raw_key();
        let pass = passphrase(PASSPHRASE);
        let raw_slot = KeySlot::create(&master(), &REPO, &raw, info("laptop")).unwrap();
        let pass_slot = KeySlot::create_cheap(&master(), &REPO, &pass, info("pw")).unwrap();
        assert_eq!(raw_slot.kdf(), Kdf::Raw {});
        assert!(matches!(pass_slot.kdf(), Kdf::Argon2id { .. }));
        // Stored and read back.
        let raw_slot = reparse(&slot_json(&raw_slot)).unwrap();
        let pass_slot = reparse(&slot_json(&pass_slot)).unwrap();
        let v = slot_json(&pass_slot);
        assert_eq!(v["format"], "tether-key-2");
        assert_eq!(
            STANDARD.decode(v["salt"].as_str().unwrap()).unwrap().len(),
            16
        );
        assert_eq!(
            STANDARD
                .decode(v["wrapped"].as_str().unwrap())
                .unwrap()
                .len(),
            72
        );

        let opened = open_master(std::slice::from_ref(&raw_slot), &REPO, &raw).unwrap();
        assert_eq!(*opened.master.0, SECRET);
        assert_eq!(opened.slot_id, raw_slot.id());
        let opened = open_master(std::slice::from_ref(&pass_slot), &REPO, &pass).unwrap();
        assert_eq!(*opened.master.0, SECRET);

        // Wrong raw key, wrong passphrase.
        let wrong = open_master(std::slice::from_ref(&raw_slot), &REPO, &raw_key());
        assert!(matches!(
            wrong,
            Err(KeyError::WrongKey {
                tried: 1,
                skipped: 0
            })
        ));
        let wrong = open_master(
            std::slice::from_ref(&pass_slot),
            &REPO,
            &passphrase(b"incorrect horse"),
        );
        assert!(matches!(wrong, Err(KeyError::WrongKey { tried: 1, .. })));
        // A raw key skips passphrase slots; a passphrase never tries raw slots.
        let both = [pass_slot.clone(), raw_slot.clone()];
        let wrong = open_master(std::slice::from_ref(&pass_slot), &REPO, &raw);
        assert!(matches!(
            wrong,
            Err(KeyError::WrongKey {
                tried: 0,
                skipped: 1
            })
        ));
        assert_eq!(
            open_master(&both, &REPO, &raw).unwrap().slot_id,
            raw_slot.id()
        );
        let wrong = open_master(std::slice::from_ref(&raw_slot), &REPO, &passphrase(b"x"));
        assert!(matches!(wrong, Err(KeyError::WrongKey { tried: 0, .. })));
        // The same slot in another repository does not open.
        let wrong = open_master(std::slice::from_ref(&raw_slot), &[0x22; 16], &raw);
        assert!(matches!(wrong, Err(KeyError::WrongKey { .. })));
        let msg = open_master(&both, &REPO, &raw_key())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("does not open this repository (1 key slots tried"),
            "{msg}"
        );
    }

    #[test]
    fn a_tampered_slot_looks_like_a_wrong_key() {
        let raw = raw_key();
        let slot = KeySlot::create(&master(), &REPO, &raw, info("x")).unwrap();
        let v = slot_json(&slot);
        let wrapped = STANDARD.decode(v["wrapped"].as_str().unwrap()).unwrap();
        let salt = STANDARD.decode(v["salt"].as_str().unwrap()).unwrap();
        let mut cases = Vec::new();
        for at in [0, 30, 71] {
            let mut w = wrapped.clone();
            w[at] ^= 0x80;
            let mut t = v.clone();
            t["wrapped"] = STANDARD.encode(&w).into();
            cases.push(t);
        }
        let mut s = salt.clone();
        s[0] ^= 1;
        let mut t = v.clone();
        t["salt"] = STANDARD.encode(&s).into();
        cases.push(t);
        // The slot copied under another id (its ad names the id).
        let mut t = v.clone();
        t["id"] = "0123456789abcdef".into();
        cases.push(t);
        for case in &cases {
            let parsed = reparse(case).unwrap();
            let r = open_master(&[parsed], &REPO, &raw);
            assert!(
                matches!(r, Err(KeyError::WrongKey { tried: 1, .. })),
                "{case}"
            );
        }
    }

    #[test]
    fn two_slots_open_with_either_key() {
        let old = raw_key();
        let first = KeySlot::create(&master(), &REPO, &old, info("first")).unwrap();
        // `key add`: open with the old key, wrap the same S for the new one.
        let opened = open_master(std::slice::from_ref(&first), &REPO, &old).unwrap();
        let new = passphrase(b"a new passphrase");
        let second = KeySlot::create_cheap(&opened.master, &REPO, &new, info("second")).unwrap();
        assert_ne!(first.id(), second.id());
        let slots = [first.clone(), second.clone()];
        let a = open_master(&slots, &REPO, &old).unwrap();
        let b = open_master(&slots, &REPO, &new).unwrap();
        assert_eq!((a.slot_id.as_str(), *a.master.0), (first.id(), SECRET));
        assert_eq!((b.slot_id.as_str(), *b.master.0), (second.id(), SECRET));
        // Both derive the same subkeys.
        assert_eq!(
            *a.master.subkeys(&REPO).data.0,
            *b.master.subkeys(&REPO).data.0
        );
        // `key remove` of the first: the second still opens.
        assert!(open_master(&[second], &REPO, &new).is_ok());
    }

    #[test]
    fn slot_json_is_strict() {
        let slot = KeySlot::create(&master(), &REPO, &raw_key(), info("x")).unwrap();
        let v = slot_json(&slot);
        let id = slot.id().to_owned();
        let refused =
            |v: &serde_json::Value| KeySlot::from_json(&id, &serde_json::to_vec(v).unwrap());
        assert!(refused(&v).is_ok());
        assert_eq!(v["kdf"], serde_json::json!({"alg": "raw"}));
        let mut t = v.clone();
        t["extra"] = 1.into();
        assert!(matches!(refused(&t), Err(KeyError::SlotJson { .. })));
        let mut t = v.clone();
        t["kdf"] = serde_json::json!({"alg": "raw", "m_kib": 1});
        assert!(matches!(refused(&t), Err(KeyError::SlotJson { .. })));
        let mut t = v.clone();
        t["kdf"] = serde_json::json!({"alg": "scrypt"});
        assert!(matches!(refused(&t), Err(KeyError::SlotJson { .. })));
        let mut t = v.clone();
        t["format"] = "tether-key-3".into();
        assert!(matches!(refused(&t), Err(KeyError::SlotMalformed { .. })));
        let mut t = v.clone();
        t["salt"] = STANDARD.encode([0u8; 15]).into();
        assert!(matches!(refused(&t), Err(KeyError::SlotMalformed { .. })));
        let mut t = v.clone();
        t["wrapped"] = "not base64!".into();
        assert!(matches!(refused(&t), Err(KeyError::SlotMalformed { .. })));
        // The id must be the object's name, which must be 16 lower-hex.
        assert!(matches!(
            KeySlot::from_json("0123456789abcdef", &slot.to_json().unwrap()),
            Err(KeyError::SlotMalformed { .. })
        ));
        assert!(matches!(
            KeySlot::from_json("../config", &slot.to_json().unwrap()),
            Err(KeyError::SlotMalformed { .. })
        ));
        let huge = vec![b' '; MAX_SLOT_BYTES + 1];
        assert!(matches!(
            KeySlot::from_json(&id, &huge),
            Err(KeyError::SlotTooLarge { .. })
        ));
    }

    #[test]
    fn hostile_kdf_parameters_are_refused_before_argon2_runs() {
        let pass = passphrase(PASSPHRASE);
        let slot = KeySlot::create_cheap(&master(), &REPO, &pass, info("x")).unwrap();
        let v = slot_json(&slot);
        for (m_kib, t, p) in [
            (4_000_000u64, 3u64, 1u64),
            (65536, 11, 1),
            (65536, 3, 5),
            (u64::MAX, 1, 1),
        ] {
            let mut h = v.clone();
            h["kdf"] = serde_json::json!({"alg": "argon2id", "m_kib": m_kib, "t": t, "p": p});
            // Parsing refuses it ...
            assert!(
                matches!(reparse(&h), Err(KeyError::HostileKdf { .. })),
                "{h}"
            );
            // ... and so does opening a slot that got past parsing.
            let hostile = KeySlot {
                kdf: Kdf::Argon2id { m_kib, t, p },
                ..slot.clone()
            };
            let r = open_master(&[slot.clone(), hostile], &REPO, &pass);
            assert!(matches!(r, Err(KeyError::HostileKdf { m_kib: m, .. }) if m == m_kib));
        }
        // Below Argon2's minimums: malformed, refused by the parser too.
        for (m_kib, t, p) in [(7u64, 1u64, 1u64), (64, 0, 1), (64, 1, 0)] {
            let mut h = v.clone();
            h["kdf"] = serde_json::json!({"alg": "argon2id", "m_kib": m_kib, "t": t, "p": p});
            assert!(
                matches!(reparse(&h), Err(KeyError::SlotMalformed { .. })),
                "{h}"
            );
        }
        // At the bounds: accepted by the parser (not run here: 256 MiB × 10).
        let mut h = v.clone();
        h["kdf"] = serde_json::json!({"alg": "argon2id", "m_kib": 262_144, "t": 10, "p": 4});
        assert!(reparse(&h).is_ok());
        // Too many slots.
        let many = vec![slot.clone(); MAX_SLOTS + 1];
        assert!(matches!(
            open_master(&many, &REPO, &pass),
            Err(KeyError::TooManySlots { count: 33, .. })
        ));
    }

    /// The written parameters, once: 64 MiB, 3 passes.
    #[test]
    fn passphrase_slot_at_the_real_parameters() {
        let pass = passphrase(PASSPHRASE);
        let slot = KeySlot::create(&master(), &REPO, &pass, info("real")).unwrap();
        assert_eq!(
            slot.kdf(),
            Kdf::Argon2id {
                m_kib: 65_536,
                t: 3,
                p: 1
            }
        );
        let slot = reparse(&slot_json(&slot)).unwrap();
        assert_eq!(
            *open_master(&[slot], &REPO, &pass).unwrap().master.0,
            SECRET
        );
    }

    fn marker() -> Vec<u8> {
        format!(
            "{{\"format\":\"tether-repository\",\"version\":2,\"layout\":\"snapshots\",\
             \"id\":\"11111111111111111111111111111111\",\"created_ms\":1,\"created_by\":\"tether 0.9.0\",\
             \"chunk_size\":4194304,\"writers\":\"multi\",\"encryption\":{{\"aead\":\"xchacha20poly1305\",\
             \"kdf\":\"blake3-derive-key\",\"mac\":\"{MARKER_MAC_PLACEHOLDER}\"}}}}"
        )
        .into_bytes()
    }

    #[test]
    fn marker_mac_verifies_and_refuses_alterations() {
        let key = master().subkeys(&REPO).config_mac;
        let stored = marker_with_mac(&key, &marker()).unwrap();
        assert_ne!(stored, marker());
        assert_eq!(stored.len(), marker().len());
        verify_marker_mac(&key, &stored).unwrap();
        // Recomputing from the placeholder form gives the same mac.
        assert_eq!(marker_with_mac(&key, &stored).unwrap(), stored);
        // The mac is keyed_hash(config_mac_key, bytes with 64 '0').
        let text = String::from_utf8(stored.clone()).unwrap();
        let want = blake3::keyed_hash(&key.0, &marker()).to_hex();
        assert!(text.contains(&format!("\"mac\":\"{want}\"")));

        let altered = |from: &str, to: &str| text.replacen(from, to, 1).into_bytes();
        for bad in [
            altered("\"multi\"", "\"single\""),
            altered("\"version\":2", "\"version\":3"),
            altered("\"created_ms\":1", "\"created_ms\":2"),
        ] {
            assert!(matches!(
                verify_marker_mac(&key, &bad),
                Err(KeyError::MarkerAltered)
            ));
        }
        // An unsigned marker (placeholder) and a flipped digit.
        assert!(matches!(
            verify_marker_mac(&key, &marker()),
            Err(KeyError::MarkerAltered)
        ));
        let flip = if &want[..1] == "0" { "1" } else { "0" };
        let bad = altered(
            &format!("\"mac\":\"{}", &want[..1]),
            &format!("\"mac\":\"{flip}"),
        );
        assert!(matches!(
            verify_marker_mac(&key, &bad),
            Err(KeyError::MarkerAltered)
        ));
        // Another key.
        let other = MasterSecret::from_bytes([1; 32]).subkeys(&REPO).config_mac;
        assert!(matches!(
            verify_marker_mac(&other, &stored),
            Err(KeyError::MarkerAltered)
        ));
        // "mac":" exactly once; 64 lower-hex then '"'.
        let twice = altered("\"layout\"", &format!("\"mac\":\"{want}\",\"layout\""));
        assert!(matches!(
            verify_marker_mac(&key, &twice),
            Err(KeyError::MarkerMacField { found: 2 })
        ));
        assert!(matches!(
            marker_with_mac(&key, &twice),
            Err(KeyError::MarkerMacField { found: 2 })
        ));
        let none = altered("\"mac\":\"", "\"mac\": \"");
        assert!(matches!(
            verify_marker_mac(&key, &none),
            Err(KeyError::MarkerMacField { found: 0 })
        ));
        let upper = altered(want.as_str(), &want.to_uppercase());
        if upper != stored {
            assert!(matches!(
                verify_marker_mac(&key, &upper),
                Err(KeyError::MarkerMacSyntax)
            ));
        }
        let short = altered(&format!("{want}\""), &format!("{}\"", &want[..63]));
        assert!(matches!(
            verify_marker_mac(&key, &short),
            Err(KeyError::MarkerMacSyntax)
        ));
        let cut = &stored[..stored.len() - 60];
        assert!(verify_marker_mac(&key, cut).is_err());
    }

    /// Every key type and every error, with {:?} and (errors) {}: no
    /// secret byte shows, as hex or as (lossy) text.
    #[test]
    fn secrets_never_print() {
        let pass_text = b"hunter2-passphrase-SECRET-TEXT";
        let pass = passphrase(pass_text);
        let key_file = generate_key_file_contents().unwrap();
        let raw = UserKey::from_key_file_bytes(key_file.as_bytes()).unwrap();
        let raw_bytes = match &raw {
            UserKey::Raw(k) => **k,
            UserKey::Passphrase(_) => unreachable!(),
        };
        let m = master();
        let subkeys = m.subkeys(&REPO);
        let mut secrets: Vec<Vec<u8>> = vec![
            SECRET.to_vec(),
            raw_bytes.to_vec(),
            pass_text.to_vec(),
            subkeys.data.0.to_vec(),
            subkeys.id.0.to_vec(),
            subkeys.config_mac.0.to_vec(),
        ];
        let mut salt = [0u8; 16];
        salt[0] = 1;
        let kek = raw
            .kek(&Kdf::Raw {}, &salt, "0123456789abcdef")
            .unwrap()
            .unwrap();
        secrets.push(kek.0.to_vec());
        let mut material = SECRET.to_vec();
        material.extend_from_slice(&REPO);
        secrets
            .push(blake3::derive_key("tether 2026-11-30 v2 page boundary key", &material).to_vec());

        let raw_slot = KeySlot::create(&m, &REPO, &raw, info("l")).unwrap();
        let pass_slot = KeySlot::create_cheap(&m, &REPO, &pass, info("l")).unwrap();
        let opened = open_master(std::slice::from_ref(&raw_slot), &REPO, &raw).unwrap();

        let mut debug_only: Vec<String> = vec![
            format!("{m:?}"),
            format!("{subkeys:?}"),
            format!("{:?}", subkeys.data),
            format!("{:?}", subkeys.id),
            format!("{:?}", subkeys.boundary),
            format!("{:?}", subkeys.config_mac),
            format!("{kek:?}"),
            format!("{raw:?}"),
            format!("{pass:?}"),
            format!("{opened:?}"),
            format!("{raw_slot:?}"),
            format!("{pass_slot:?}"),
            format!("{:?}", Ad::blob(&REPO, &SECRET)),
        ];
        let mut errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(CryptoError::TooShort { len: 1, min: 40 }),
            Box::new(CryptoError::TooLong { len: 2, limit: 1 }),
            Box::new(CryptoError::NotAuthentic),
            Box::new(CryptoError::Seal { len: 3 }),
        ];
        // Errors produced from secret-bearing inputs.
        let mut bad_key_file = key_file.trim_end().to_owned();
        bad_key_file.push('A');
        for bytes in [&b""[..], bad_key_file.as_bytes()] {
            errors.push(Box::new(UserKey::from_key_file_bytes(bytes).unwrap_err()));
        }
        errors.push(Box::new(
            open_master(std::slice::from_ref(&raw_slot), &REPO, &pass).unwrap_err(),
        ));
        errors.push(Box::new(
            open_master(std::slice::from_ref(&pass_slot), &REPO, &raw).unwrap_err(),
        ));
        let hostile = KeySlot {
            kdf: Kdf::Argon2id {
                m_kib: 1 << 30,
                t: 1,
                p: 1,
            },
            ..pass_slot.clone()
        };
        errors.push(Box::new(open_master(&[hostile], &REPO, &pass).unwrap_err()));
        errors.push(Box::new(
            open_master(&vec![raw_slot.clone(); 40], &REPO, &raw).unwrap_err(),
        ));
        let bad_argon = KeySlot {
            kdf: Kdf::Argon2id {
                m_kib: 1,
                t: 1,
                p: 1,
            },
            ..pass_slot.clone()
        };
        errors.push(Box::new(
            open_master(&[bad_argon], &REPO, &pass).unwrap_err(),
        ));
        let mut v = slot_json(&raw_slot);
        v["unknown"] = 1.into();
        errors.push(Box::new(reparse(&v).unwrap_err()));
        errors.push(Box::new(KeySlot::from_json("zz", b"{}").unwrap_err()));
        errors.push(Box::new(
            KeySlot::from_json(raw_slot.id(), &vec![0; MAX_SLOT_BYTES + 1]).unwrap_err(),
        ));
        let stored = marker_with_mac(&subkeys.config_mac, &marker()).unwrap();
        errors.push(Box::new(
            verify_marker_mac(&subkeys.config_mac, &marker()).unwrap_err(),
        ));
        errors.push(Box::new(
            verify_marker_mac(&subkeys.config_mac, b"{}").unwrap_err(),
        ));
        errors.push(Box::new(
            verify_marker_mac(&subkeys.config_mac, &stored[..stored.len() - 40]).unwrap_err(),
        ));
        errors.push(Box::new(
            open(&subkeys.data, &[0; 64], &Ad::blob(&REPO, &SECRET), 64).unwrap_err(),
        ));
        let sealed = seal(&subkeys.data, &SECRET, &Ad::head(&REPO, 1)).unwrap();
        errors.push(Box::new(
            open(&subkeys.data, &sealed, &Ad::head(&REPO, 2), 1000).unwrap_err(),
        ));
        errors.push(Box::new(KeyError::Crypto(CryptoError::NotAuthentic)));
        let kinds: Vec<String> = errors.iter().map(|e| format!("{e:?}")).collect();
        for e in &errors {
            debug_only.push(e.to_string());
            let mut source = e.source();
            while let Some(s) = source {
                debug_only.push(s.to_string());
                source = s.source();
            }
        }
        debug_only.extend(kinds);
        // What is stored in the bucket: slots and sealed units.
        for slot in [&raw_slot, &pass_slot] {
            debug_only.push(String::from_utf8(slot.to_json().unwrap()).unwrap());
        }
        debug_only.push(String::from_utf8_lossy(&sealed).into_owned());
        for text in &debug_only {
            for secret in &secrets {
                let hex = lower_hex(secret);
                assert!(!text.contains(&hex), "hex of a secret in {text}");
                assert!(
                    !text.to_lowercase().contains(&hex),
                    "hex of a secret in {text}"
                );
                let lossy = String::from_utf8_lossy(secret);
                assert!(!text.contains(lossy.as_ref()), "a secret as text in {text}");
                // Byte arrays as Debug prints them ([167, 167, …]).
                let list = format!("{:?}", &secret[..8]);
                assert!(
                    !text.contains(list.trim_end_matches(']')),
                    "secret bytes in {text}"
                );
            }
            assert!(
                !text.contains(key_file.trim_end()),
                "the key file in {text}"
            );
        }
    }

    proptest::proptest! {
        /// Remote bytes never panic anything here, and a unit that was not
        /// sealed under this key and `ad` never opens.
        #[test]
        fn remote_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            max in 0usize..700,
        ) {
            let key = data_key();
            proptest::prop_assert!(open(&key, &bytes, &Ad::head(&REPO, 1), max).is_err());
            let _ = KeySlot::from_json("0123456789abcdef", &bytes);
            let _ = verify_marker_mac(&master().subkeys(&REPO).config_mac, &bytes);
            let _ = marker_with_mac(&master().subkeys(&REPO).config_mac, &bytes);
            let _ = UserKey::from_key_file_bytes(&bytes);
        }

        /// Any `"mac":"` + 64 characters anywhere in arbitrary text: a
        /// marker signed once verifies, and any one changed byte does not.
        #[test]
        fn any_changed_marker_byte_is_refused(
            before in "[ -~]{0,80}",
            after in "[ -~]{0,80}",
            at in 0usize..1000,
        ) {
            proptest::prop_assume!(!before.contains("\"mac\":\"") && !after.contains("\"mac\":\""));
            let key = master().subkeys(&REPO).config_mac;
            let text = format!("{before}\"mac\":\"{MARKER_MAC_PLACEHOLDER}\"{after}");
            // (A field split across `before` and ours makes two: refused, skipped.)
            let stored = marker_with_mac(&key, text.as_bytes());
            proptest::prop_assume!(stored.is_ok());
            let stored = stored.unwrap();
            proptest::prop_assert!(verify_marker_mac(&key, &stored).is_ok());
            let mut changed = stored.clone();
            let i = at % changed.len();
            changed[i] ^= 0x01;
            proptest::prop_assert!(verify_marker_mac(&key, &changed).is_err());
        }
    }
}
