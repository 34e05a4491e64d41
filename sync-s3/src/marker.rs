//! The repository marker: what a prefix holds, checked before anything
//! else is read or written there.
//!
//! ```text
//! snapshots layout:  prefix/config           {"format":"tether-repository","version":1,"layout":"snapshots",…}
//! mirror layout:     prefix/.tether/config   the same schema, "layout":"mirror"
//! ```
//!
//! The mirror's marker lives under its reserved `.tether/` name so that a
//! user's own file called `config` at the top of a mirrored directory is
//! never taken for one. FORMAT.md ("Repository marker") is the schema.
//!
//! **Open** (every push, restore, history, head and prune, once per backend
//! until a marker is seen): GET this layout's marker. Present: its format,
//! version and layout must be ones this build writes, else a configuration
//! error naming what was found ("written by a newer tether", "this prefix
//! holds a mirror, not snapshots"). Absent: one listing of the prefix's top
//! level tells a **fresh** location (nothing at all), data an earlier tether
//! wrote before markers existed (**legacy**: accepted, the next push adds
//! the marker), the other layout (refused) and, for the snapshots layout,
//! objects that are not tether's (refused: never "empty, nothing to
//! restore"). The mirror layout accepts other tools' objects by design
//! (mirror.rs): they are files.
//!
//! **Create** (the first push to a fresh or legacy prefix): a probe object
//! is created twice with create-if-absent, and the second create must be
//! refused. A store or gateway that ignores `If-None-Match` would let two
//! writers overwrite each other's heads, so it is refused unless the URL
//! declares `single_writer=true` (recorded as `"writers":"single"`). Then
//! the marker is created with create-if-absent; if another writer created
//! one first, theirs is read and checked instead.

use std::time::{SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode};
use serde::{Deserialize, Serialize};
use sync_core::BackendError;

use crate::config::Layout;
use crate::store::{Remote, remote_err};

/// The `format` string of every marker.
pub(crate) const FORMAT: &str = "tether-repository";
/// The mirror layout's format version (this build reads and writes it).
pub(crate) const MIRROR_VERSION: u64 = 1;
/// The snapshots layout's format version: 2 (FORMAT.md "sync-s3 snapshots,
/// format v2"); version 1 is refused with a message naming it.
pub(crate) const SNAPSHOTS_VERSION: u64 = 2;

fn version_of(layout: Layout) -> u64 {
    match layout {
        Layout::Snapshots => SNAPSHOTS_VERSION,
        Layout::Mirror => MIRROR_VERSION,
    }
}
/// Markers larger than this are refused unread.
const MAX_MARKER_BYTES: u64 = 64 << 10;

/// Top-level names snapshots format v1 wrote (before markers, or with a
/// version 1 marker): such a prefix is refused, naming the version.
const V1_DIRS: &[&str] = &["heads", "heads-floor", "snapshots", "packs", "index"];
/// Top-level names a creation that stopped before its marker leaves.
const CREATION_DIRS: &[&str] = &["probe", "keys"];

/// What a prefix holds, as far as this layout is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Nothing at all: a fresh location.
    Fresh,
    /// Data without a marker that this layout can use (an earlier tether's,
    /// or for the mirror another tool's objects); a push adds the marker.
    Unmarked,
    /// A marker of this layout and version.
    Marked(Info),
}

/// What a marker of this layout and version says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Info {
    /// `"writers":"single"`: the store was not shown to enforce
    /// create-if-absent.
    pub(crate) single_writer: bool,
    /// The repository id (16 bytes).
    pub(crate) id: [u8; 16],
    /// Encryption parameters (snapshots only; `None`: plaintext).
    pub(crate) encryption: Option<Encryption>,
    /// The marker's bytes as stored (the encryption mac covers them).
    pub(crate) bytes: Vec<u8>,
}

/// The marker's `encryption` field (FORMAT.md "Repository marker").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Encryption {
    /// `"xchacha20poly1305"`.
    pub(crate) aead: String,
    /// `"blake3-derive-key"`.
    pub(crate) kdf: String,
    /// 64 lower-hex: the keyed mac over the marker (v2::crypto).
    pub(crate) mac: String,
}

/// The AEAD and subkey derivation every v2 encrypted repository names.
pub(crate) const AEAD: &str = "xchacha20poly1305";
/// See [`AEAD`].
pub(crate) const SUBKEY_KDF: &str = "blake3-derive-key";

/// What the creator of a marker adds beyond the common fields.
#[derive(Debug)]
pub(crate) struct Extra<'a> {
    /// The repository id to write (the key slots are bound to it).
    pub(crate) id: [u8; 16],
    /// `Some` for the snapshots layout.
    pub(crate) chunk_size: Option<u64>,
    /// Encrypted: the parameters and the key the mac is made with.
    pub(crate) encryption: Option<&'a crate::v2::crypto::ConfigMacKey>,
}

/// The marker's schema (FORMAT.md "Repository marker").
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    format: String,
    version: u64,
    layout: String,
    id: String,
    created_ms: u64,
    created_by: String,
    writers: Writers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<Encryption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Writers {
    Multi,
    Single,
}

/// The fields every version keeps, read first so that a newer marker gets
/// "upgrade" rather than a schema complaint.
#[derive(Debug, Deserialize)]
struct Versioned {
    format: String,
    version: u64,
    layout: Option<String>,
}

fn marker_rel(layout: Layout) -> &'static str {
    match layout {
        Layout::Snapshots => "config",
        Layout::Mirror => ".tether/config",
    }
}

fn probe_rel(layout: Layout, token: &str) -> String {
    match layout {
        Layout::Snapshots => format!("probe/{token}"),
        Layout::Mirror => format!(".tether/probe/{token}"),
    }
}

fn other(layout: Layout) -> Layout {
    match layout {
        Layout::Snapshots => Layout::Mirror,
        Layout::Mirror => Layout::Snapshots,
    }
}

fn config(message: String) -> BackendError {
    BackendError::Config(message)
}

/// Checks the marker `bytes` read at `key` for `layout`.
fn check(bytes: &[u8], key: &Path, layout: Layout) -> Result<Info, BackendError> {
    let invalid = |reason: String| BackendError::InvalidRemote {
        object: key.to_string(),
        reason,
    };
    let v: Versioned = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("not a tether repository marker: {e}")))?;
    if v.format != FORMAT {
        return Err(invalid(format!(
            "format {:?} is not {FORMAT:?}: not a tether repository marker",
            v.format
        )));
    }
    let found = v.layout.as_deref().unwrap_or("");
    if found != layout.to_string() {
        return Err(config(format!(
            "{key} says this prefix holds the {found:?} layout, but the URL asks for {layout}: use ?layout={found} or another prefix"
        )));
    }
    let version = version_of(layout);
    if v.version > version {
        return Err(config(format!(
            "{key} was written by a newer tether (repository format version {}; this tether reads version {version}): upgrade tether",
            v.version
        )));
    }
    if layout == Layout::Snapshots && v.version == 1 {
        return Err(v1_refused(key.as_ref()));
    }
    if v.version != version {
        return Err(invalid(format!(
            "repository format version {} is not one this tether knows",
            v.version
        )));
    }
    let m: Marker = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("repository marker version {version}: {e}")))?;
    let id = parse_repo_id(&m.id).ok_or_else(|| {
        invalid(format!(
            "repository id {:?} is not 32 lower-hex digits",
            m.id
        ))
    })?;
    match layout {
        Layout::Snapshots => {
            if m.chunk_size != Some(crate::v2::node::CHUNK_SIZE) {
                return Err(invalid(format!(
                    "chunk_size {:?} is not {} (the only one format version 2 has)",
                    m.chunk_size,
                    crate::v2::node::CHUNK_SIZE
                )));
            }
            if let Some(e) = &m.encryption
                && (e.aead != AEAD || e.kdf != SUBKEY_KDF)
            {
                return Err(invalid(format!(
                    "encryption {:?}/{:?} is not {AEAD}/{SUBKEY_KDF} (written by a newer tether?)",
                    e.aead, e.kdf
                )));
            }
        }
        Layout::Mirror => {
            if m.chunk_size.is_some() || m.encryption.is_some() {
                return Err(invalid(
                    "a mirror marker with chunk_size or encryption (the mirror layout has neither)"
                        .into(),
                ));
            }
        }
    }
    Ok(Info {
        single_writer: m.writers == Writers::Single,
        id,
        encryption: m.encryption,
        bytes: bytes.to_vec(),
    })
}

fn parse_repo_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(u128::to_be_bytes)
}

fn v1_refused(at: &str) -> BackendError {
    config(format!(
        "{at}: this prefix holds snapshots format v1 (written by an earlier tether); this tether reads format 2 only: restore it with the tether that wrote it, or use a new prefix"
    ))
}

async fn read(remote: &Remote, layout: Layout) -> Result<Option<Info>, BackendError> {
    let key = remote.key(marker_rel(layout))?;
    match remote.get_bounded(&key, MAX_MARKER_BYTES).await? {
        Some((bytes, _)) => check(&bytes, &key, layout).map(Some),
        None => Ok(None),
    }
}

/// The top level of the prefix: its "directories" and its objects' names
/// (one listing request).
async fn top_level(remote: &Remote) -> Result<(Vec<String>, Vec<String>), BackendError> {
    let prefix = (!remote.prefix.as_ref().is_empty()).then_some(&remote.prefix);
    let listing = remote
        .store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| remote_err("list", &remote.prefix, e))?;
    let name = |p: &Path| -> String {
        remote
            .relative(p)
            .unwrap_or(p.as_ref())
            .trim_end_matches('/')
            .to_owned()
    };
    let dirs = listing.common_prefixes.iter().map(name).collect();
    let files = listing.objects.iter().map(|o| name(&o.location)).collect();
    Ok((dirs, files))
}

fn first_keys(dirs: &[String], files: &[String]) -> String {
    let mut names: Vec<String> = dirs
        .iter()
        .map(|d| format!("{d}/"))
        .chain(files.iter().cloned())
        .collect();
    names.sort();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// What the prefix holds for `layout` (see the module doc).
pub(crate) async fn open(remote: &Remote, layout: Layout) -> Result<Opened, BackendError> {
    if let Some(info) = read(remote, layout).await? {
        return Ok(Opened::Marked(info));
    }
    let (dirs, files) = top_level(remote).await?;
    if dirs.is_empty() && files.is_empty() {
        return Ok(Opened::Fresh);
    }
    if files.iter().any(|f| f == marker_rel(layout))
        && let Some(info) = read(remote, layout).await?
    {
        // Another writer created the marker between our two requests.
        return Ok(Opened::Marked(info));
    }
    let at = &remote.describe;
    match layout {
        Layout::Snapshots => {
            if dirs.iter().any(|d| d == crate::mirror::RESERVED) {
                return Err(config(format!(
                    "{at}: this prefix holds a mirror (it has .tether/), not snapshots: use ?layout=mirror or another prefix"
                )));
            }
            if files.is_empty()
                && dirs
                    .iter()
                    .all(|d| V1_DIRS.contains(&d.as_str()) || CREATION_DIRS.contains(&d.as_str()))
                && dirs.iter().any(|d| V1_DIRS.contains(&d.as_str()))
            {
                return Err(v1_refused(at));
            }
            let ours = files.is_empty() && dirs.iter().all(|d| CREATION_DIRS.contains(&d.as_str()));
            if !ours {
                return Err(config(format!(
                    "{at}: the prefix holds objects but no tether repository marker (first keys: {}); refusing to use it as a snapshots repository: point the URL at an empty prefix or at one tether created",
                    first_keys(&dirs, &files)
                )));
            }
        }
        Layout::Mirror => {
            if files.iter().any(|f| f == marker_rel(other(layout))) {
                let key = remote.key(marker_rel(other(layout)))?;
                if let Some((bytes, _)) = remote.get_bounded(&key, MAX_MARKER_BYTES).await?
                    && serde_json::from_slice::<Versioned>(&bytes).is_ok_and(|v| v.format == FORMAT)
                {
                    return Err(config(format!(
                        "{at}: {key} marks this prefix as a tether repository in the snapshots layout, not a mirror: use ?layout=snapshots or another prefix"
                    )));
                }
            }
            let has = |n: &str| dirs.iter().any(|d| d == n);
            if !has(crate::mirror::RESERVED) && has("heads") && has("snapshots") {
                return Err(config(format!(
                    "{at}: this prefix holds snapshots written by an earlier tether (heads/, snapshots/), not a mirror: use ?layout=snapshots or another prefix"
                )));
            }
        }
    }
    Ok(Opened::Unmarked)
}

/// Writes the marker of a prefix `open` found fresh or unmarked (see the
/// module doc); returns what the prefix now holds.
pub(crate) async fn create(
    remote: &Remote,
    layout: Layout,
    single_writer: bool,
    extra: Extra<'_>,
) -> Result<Opened, BackendError> {
    let enforced = probe(remote, layout).await?;
    if !enforced && !single_writer {
        return Err(config(format!(
            "{}: this store does not enforce create-if-absent (If-None-Match): a second conditional create of a probe object succeeded. Two writers could overwrite each other's {}. If only one writer ever uses this prefix, add ?single_writer=true to the URL",
            remote.describe,
            match layout {
                Layout::Snapshots => "heads",
                Layout::Mirror => "indexes",
            }
        )));
    }
    let writers = if enforced {
        Writers::Multi
    } else {
        tracing::warn!(remote = %remote.describe, "this store does not enforce create-if-absent; single_writer=true: a second writer on this prefix can lose checkpoints");
        Writers::Single
    };
    let marker = Marker {
        format: FORMAT.into(),
        version: version_of(layout),
        layout: layout.to_string(),
        id: format!("{:032x}", u128::from_be_bytes(extra.id)),
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        created_by: format!("tether {}", env!("CARGO_PKG_VERSION")),
        writers,
        chunk_size: extra.chunk_size,
        encryption: extra.encryption.map(|_| Encryption {
            aead: AEAD.into(),
            kdf: SUBKEY_KDF.into(),
            mac: crate::v2::crypto::MARKER_MAC_PLACEHOLDER.into(),
        }),
    };
    let mut bytes = serde_json::to_vec(&marker).map_err(|e| BackendError::Config(e.to_string()))?;
    if let Some(mac_key) = extra.encryption {
        bytes = crate::v2::crypto::marker_with_mac(mac_key, &bytes)
            .map_err(|e| BackendError::Config(format!("sealing the repository marker: {e}")))?;
    }
    let key = remote.key(marker_rel(layout))?;
    match remote.put(&key, bytes.clone(), PutMode::Create).await {
        Ok(_) => {
            tracing::info!(remote = %remote.describe, %layout, "created the repository marker");
            check(&bytes, &key, layout).map(Opened::Marked)
        }
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => match read(remote, layout).await? {
            Some(info) => Ok(Opened::Marked(info)),
            None => Err(BackendError::Remote {
                operation: "put",
                location: key.to_string(),
                message: "the store said the marker exists, then that it does not".into(),
                transient: true,
            }),
        },
        Err(e) => Err(remote_err("put", &key, e)),
    }
}

/// Whether the store refuses a second create-if-absent of one key.
async fn probe(remote: &Remote, layout: Layout) -> Result<bool, BackendError> {
    let key = remote.key(&probe_rel(
        layout,
        &format!("{:032x}", rand::random::<u128>()),
    ))?;
    remote
        .put(&key, Vec::<u8>::new(), PutMode::Create)
        .await
        .map_err(|e| remote_err("put", &key, e))?;
    let second = remote.put(&key, Vec::<u8>::new(), PutMode::Create).await;
    let deleted = remote.store.delete(&key).await;
    if let Err(e) = deleted {
        tracing::debug!(key = %key, error = %e, "could not delete the probe object");
    }
    match second {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(remote_err("put", &key, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Path {
        Path::from("p/config")
    }

    #[test]
    fn a_marker_of_another_layout_or_version_is_named() {
        let m = |v: u64, layout: &str, extra: &str| {
            format!(
                r#"{{"format":"tether-repository","version":{v},"layout":"{layout}","id":"0123456789abcdef0123456789abcdef","created_ms":1,"created_by":"t","writers":"multi"{extra}}}"#
            )
        };
        let v2 = r#","chunk_size":4194304"#;
        assert!(check(m(2, "snapshots", v2).as_bytes(), &key(), Layout::Snapshots).is_ok());
        assert!(check(m(1, "mirror", "").as_bytes(), &key(), Layout::Mirror).is_ok());
        let e = check(m(1, "mirror", "").as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(matches!(e, BackendError::Config(_)), "{e}");
        assert!(e.to_string().contains("?layout=mirror"), "{e}");
        // Format v1 of the snapshots layout is named, not misread.
        let e = check(m(1, "snapshots", "").as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(matches!(e, BackendError::Config(_)), "{e}");
        assert!(e.to_string().contains("format v1"), "{e}");
        let e = check(m(7, "snapshots", v2).as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(e.to_string().contains("newer tether"), "{e}");
        let e = check(m(2, "mirror", "").as_bytes(), &key(), Layout::Mirror).unwrap_err();
        assert!(e.to_string().contains("newer tether"), "{e}");
        let e = check(m(0, "snapshots", v2).as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(matches!(e, BackendError::InvalidRemote { .. }), "{e}");
        let e = check(b"{}", &key(), Layout::Snapshots).unwrap_err();
        assert!(
            e.to_string().contains("not a tether repository marker"),
            "{e}"
        );
        // A snapshots marker needs v2's chunk size; a mirror has none.
        assert!(check(m(2, "snapshots", "").as_bytes(), &key(), Layout::Snapshots).is_err());
        assert!(check(m(1, "mirror", v2).as_bytes(), &key(), Layout::Mirror).is_err());
        let extra = m(2, "snapshots", v2).replace("}", r#","unknown":null}"#);
        assert!(check(extra.as_bytes(), &key(), Layout::Snapshots).is_err());
        let bad_id = m(2, "snapshots", v2).replace("0123456789abcdef0123456789abcdef", "../x");
        assert!(check(bad_id.as_bytes(), &key(), Layout::Snapshots).is_err());
        let foreign = m(
            2,
            "snapshots",
            &format!(r#"{v2},"encryption":{{"aead":"aes","kdf":"blake3-derive-key","mac":"00"}}"#),
        );
        assert!(check(foreign.as_bytes(), &key(), Layout::Snapshots).is_err());
    }

    #[test]
    fn first_keys_are_sorted_and_counted() {
        let s = first_keys(
            &["b".into(), "a".into()],
            &["z".into(), "c".into(), "d".into()],
        );
        assert_eq!(s, "a/, b/, c and 2 more");
    }
}
