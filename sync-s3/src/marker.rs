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
/// The format version this build reads and writes.
pub(crate) const VERSION: u64 = 1;
/// Markers larger than this are refused unread.
const MAX_MARKER_BYTES: u64 = 64 << 10;

/// Top-level names an earlier tether's snapshots layout wrote before markers.
const SNAPSHOT_DIRS: &[&str] = &[
    "heads",
    "heads-floor",
    "snapshots",
    "packs",
    "index",
    "probe",
];

/// What a prefix holds, as far as this layout is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Nothing at all: a fresh location.
    Fresh,
    /// Data without a marker that this layout can use (an earlier tether's,
    /// or for the mirror another tool's objects); a push adds the marker.
    Unmarked,
    /// A marker of this layout and version.
    Marked {
        /// `"writers":"single"`: the store was not shown to enforce
        /// create-if-absent.
        single_writer: bool,
    },
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
fn check(bytes: &[u8], key: &Path, layout: Layout) -> Result<Writers, BackendError> {
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
    if v.version > VERSION {
        return Err(config(format!(
            "{key} was written by a newer tether (repository format version {}; this tether reads version {VERSION}): upgrade tether",
            v.version
        )));
    }
    if v.version != VERSION {
        return Err(invalid(format!(
            "repository format version {} is not one this tether knows",
            v.version
        )));
    }
    let found = v.layout.as_deref().unwrap_or("");
    if found != layout.to_string() {
        return Err(config(format!(
            "{key} says this prefix holds the {found:?} layout, but the URL asks for {layout}: use ?layout={found} or another prefix"
        )));
    }
    let m: Marker = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("repository marker version {VERSION}: {e}")))?;
    if m.id.len() != 32 || !m.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "repository id {:?} is not 32 hex digits",
            m.id
        )));
    }
    Ok(m.writers)
}

async fn read(remote: &Remote, layout: Layout) -> Result<Option<Writers>, BackendError> {
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
    if let Some(w) = read(remote, layout).await? {
        return Ok(Opened::Marked {
            single_writer: w == Writers::Single,
        });
    }
    let (dirs, files) = top_level(remote).await?;
    if dirs.is_empty() && files.is_empty() {
        return Ok(Opened::Fresh);
    }
    if files.iter().any(|f| f == marker_rel(layout))
        && let Some(w) = read(remote, layout).await?
    {
        // Another writer created the marker between our two requests.
        return Ok(Opened::Marked {
            single_writer: w == Writers::Single,
        });
    }
    let at = &remote.describe;
    match layout {
        Layout::Snapshots => {
            if dirs.iter().any(|d| d == crate::mirror::RESERVED) {
                return Err(config(format!(
                    "{at}: this prefix holds a mirror (it has .tether/), not snapshots: use ?layout=mirror or another prefix"
                )));
            }
            let ours = files.is_empty() && dirs.iter().all(|d| SNAPSHOT_DIRS.contains(&d.as_str()));
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
        version: VERSION,
        layout: layout.to_string(),
        id: format!("{:032x}", rand::random::<u128>()),
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        created_by: format!("tether {}", env!("CARGO_PKG_VERSION")),
        writers,
    };
    let bytes = serde_json::to_vec(&marker).map_err(|e| BackendError::Config(e.to_string()))?;
    let key = remote.key(marker_rel(layout))?;
    match remote.put(&key, bytes, PutMode::Create).await {
        Ok(_) => {
            tracing::info!(remote = %remote.describe, %layout, "created the repository marker");
            Ok(Opened::Marked {
                single_writer: writers == Writers::Single,
            })
        }
        Err(object_store::Error::AlreadyExists { .. }) => match read(remote, layout).await? {
            Some(w) => Ok(Opened::Marked {
                single_writer: w == Writers::Single,
            }),
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
        let m = |v: u64, layout: &str| {
            format!(
                r#"{{"format":"tether-repository","version":{v},"layout":"{layout}","id":"0123456789abcdef0123456789abcdef","created_ms":1,"created_by":"t","writers":"multi"}}"#
            )
        };
        assert!(check(m(1, "snapshots").as_bytes(), &key(), Layout::Snapshots).is_ok());
        let e = check(m(1, "mirror").as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(matches!(e, BackendError::Config(_)), "{e}");
        assert!(e.to_string().contains("?layout=mirror"), "{e}");
        let e = check(m(7, "snapshots").as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(e.to_string().contains("newer tether"), "{e}");
        let e = check(m(0, "snapshots").as_bytes(), &key(), Layout::Snapshots).unwrap_err();
        assert!(matches!(e, BackendError::InvalidRemote { .. }), "{e}");
        let e = check(b"{}", &key(), Layout::Snapshots).unwrap_err();
        assert!(
            e.to_string().contains("not a tether repository marker"),
            "{e}"
        );
        let extra = m(1, "snapshots").replace("}", r#","encryption":null}"#);
        assert!(check(extra.as_bytes(), &key(), Layout::Snapshots).is_err());
        let bad_id = m(1, "snapshots").replace("0123456789abcdef0123456789abcdef", "../x");
        assert!(check(bad_id.as_bytes(), &key(), Layout::Snapshots).is_err());
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
