//! What tether records about one path: [`Entry`], [`Meta`], [`FileMeta`] and
//! the content hash.
//!
//! Hash choice: BLAKE3 (256-bit). It is a cryptographic hash, so a hostile
//! store cannot forge content that matches a recorded hash; it is several times
//! faster than SHA-256 on one core (and faster than SHA-1, which git needs and
//! computes on its own); it streams, so a large file is hashed in fixed memory.

use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde::{Deserialize, Serialize};

use crate::path::RelPath;

/// A BLAKE3 hash of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps a raw 32-byte digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| ContentHash(*h.as_bytes()))
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        ContentHash(*h.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..12])
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid content hash {s:?}")))
    }
}

/// Metadata of a regular file, including the hash of its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits (`0o777` mask), for example `0o644`. Setuid,
    /// setgid and sticky bits are never recorded, and a restore never sets
    /// them whatever the remote says (see [`PERMISSION_BITS`]).
    pub mode: u32,
    /// BLAKE3 hash of the content.
    pub hash: ContentHash,
}

impl FileMeta {
    /// True when any execute bit is set (the only mode bit git keeps).
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// What a path is, as recorded in the index and sent to backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Meta {
    /// A regular file.
    File(FileMeta),
    /// A symbolic link, recorded as its target text and never followed.
    Symlink {
        /// The link's target exactly as `readlink` returns it.
        target: String,
    },
    /// A directory. Backends that cannot keep empty directories (git) drop
    /// it (but keep its mode while it has content).
    Dir {
        /// Permission bits (`0o777` mask). Data written before directory
        /// modes were recorded reads as [`DEFAULT_DIR_MODE`].
        #[serde(default = "default_dir_mode")]
        mode: u32,
    },
}

/// The bits of a mode tether records and restores: read, write and execute
/// for owner, group and others. Setuid, setgid and sticky are dropped on
/// push and masked off on restore, so no remote can make a restored file
/// set-user-ID or set-group-ID.
pub const PERMISSION_BITS: u32 = 0o777;

/// The mode of a directory whose mode was never recorded.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

fn default_dir_mode() -> u32 {
    DEFAULT_DIR_MODE
}

impl Meta {
    /// The file metadata, for regular files.
    pub fn as_file(&self) -> Option<&FileMeta> {
        match self {
            Meta::File(f) => Some(f),
            _ => None,
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self, Meta::Dir { .. })
    }

    /// A directory with permission bits `mode` (masked to [`PERMISSION_BITS`]).
    pub fn dir(mode: u32) -> Self {
        Meta::Dir {
            mode: mode & PERMISSION_BITS,
        }
    }

    /// Content bytes carried by this entry (0 for non-files).
    pub fn size(&self) -> u64 {
        self.as_file().map_or(0, |f| f.size)
    }
}

/// One path and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where, relative to the synced directory.
    pub path: RelPath,
    /// What.
    #[serde(flatten)]
    pub meta: Meta,
}

/// What `lstat` says of a local path, before any content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStat {
    /// The kind of file.
    pub kind: LocalKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits ([`PERMISSION_BITS`] only).
    pub mode: u32,
}

/// The kinds of local file tether distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Socket, FIFO or device: skipped with a warning.
    Special,
}

impl LocalStat {
    /// Reads the fields tether compares from `lstat` metadata.
    pub fn from_metadata(m: &Metadata) -> Self {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            LocalKind::File
        } else if ft.is_dir() {
            LocalKind::Dir
        } else if ft.is_symlink() {
            LocalKind::Symlink
        } else {
            LocalKind::Special
        };
        LocalStat {
            kind,
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            mode: m.permissions().mode() & PERMISSION_BITS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trip() {
        let h = ContentHash::of(b"hello");
        assert_eq!(ContentHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(ContentHash::from_hex("zz"), None);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), h);
    }

    #[test]
    fn entry_json_shape() {
        let e = Entry {
            path: RelPath::new("a/b").unwrap(),
            meta: Meta::Symlink {
                target: "../c".into(),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "symlink");
        assert_eq!(v["path"], "a/b");
        let back: Entry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn directory_mode_is_kept_and_defaults_for_old_data() {
        let e = Entry {
            path: RelPath::new(".ssh").unwrap(),
            meta: Meta::dir(0o700),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
        let old: Entry = serde_json::from_str(r#"{"path":"d","type":"dir"}"#).unwrap();
        assert_eq!(old.meta, Meta::Dir { mode: 0o755 });
        assert_eq!(Meta::dir(0o7755), Meta::Dir { mode: 0o755 });
    }

    #[test]
    fn special_bits_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o1755)).unwrap();
        let st = LocalStat::from_metadata(&std::fs::metadata(&f).unwrap());
        assert_eq!(st.mode, 0o755);
    }

    #[test]
    fn hostile_entry_path_is_refused_when_parsed() {
        let r = serde_json::from_str::<Entry>(r#"{"path":"../x","type":"dir"}"#);
        assert!(r.is_err());
    }
}
