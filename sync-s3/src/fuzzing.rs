//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`); not an API.
//!
//! This module reaches the layouts' private decoders, each called exactly
//! as a restore calls it: the mirror's index and object metadata, and the
//! snapshots format v2 frame, tree node and record decoders.

use object_store::{Attribute, AttributeValue, Attributes};
use sync_core::restore::FileSpec;
use sync_core::{BackendError, Meta};

/// Parses and checks a mirror index as a mirror restore reads it (with at
/// most `max_entries` paths): every path with its metadata and recorded
/// ETag.
#[allow(clippy::type_complexity)]
pub fn mirror_index(
    bytes: &[u8],
    max_entries: u64,
) -> Result<Vec<(String, Meta, Option<String>)>, BackendError> {
    crate::mirror::decode_index_entries(bytes, ".tether/mirror/(fuzz)", max_entries)
}

/// Reads a file's mode, time and hash from an object's metadata
/// (the current names `tetherblake3`, `tethermode`, `tethermtimens`;
/// `None` leaves the key out) as a mirror restore does for objects the index does not describe.
pub fn mirror_object_metadata(
    hash: Option<&str>,
    mode: Option<&str>,
    mtime_ns: Option<&str>,
    size: u64,
) -> Option<FileSpec> {
    let mut attributes = Attributes::new();
    for (key, value) in [
        (crate::transfer::ATTR_NAMES.hash, hash),
        (crate::transfer::ATTR_NAMES.mode, mode),
        (crate::transfer::ATTR_NAMES.mtime_ns, mtime_ns),
    ] {
        if let Some(v) = value {
            attributes.insert(
                Attribute::Metadata(key.into()),
                AttributeValue::from(v.to_owned()),
            );
        }
    }
    crate::transfer::spec_from_attributes(&attributes, size)
}

/// Decodes a stored unit of snapshots format v2 as a plaintext
/// repository's reader does: the frame (bounded by the node limit), then
/// the node decoder. Returns whether both accepted it; an accepted node
/// re-encodes to the same bytes (one encoding per node).
pub fn v2_node(frame: &[u8]) -> bool {
    let limits = crate::v2::node::Limits::default();
    let Ok(plain) = crate::v2::frame::decode(frame, limits.max_node_bytes as u64) else {
        return false;
    };
    match crate::v2::node::decode(&plain, &limits) {
        Ok(node) => {
            assert_eq!(
                crate::v2::node::encode(&node),
                plain,
                "one encoding per node"
            );
            true
        }
        Err(_) => false,
    }
}

/// Parses and checks a snapshots format v2 head record and lease record
/// (as generation 1) and snapshot record (as snapshot
/// `1700000000000-0123456789abcdef`). Returns whether any was accepted.
pub fn v2_records(json: &[u8]) -> bool {
    let head = serde_json::from_slice::<crate::v2::format::HeadRecord>(json)
        .ok()
        .is_some_and(|h| h.check(1).is_ok());
    let snap = serde_json::from_slice::<crate::v2::format::SnapshotRecord>(json)
        .ok()
        .is_some_and(|s| s.check("1700000000000-0123456789abcdef").is_ok());
    let lease = serde_json::from_slice::<crate::v2::format::LeaseRecord>(json)
        .ok()
        .is_some_and(|l| l.check(1).is_ok());
    head || snap || lease
}

/// Valid and nearly valid inputs for [`v2_node`]: framed nodes of a small
/// directory (with a subdirectory and a symlink), then damaged copies.
pub fn v2_node_seeds() -> Vec<Vec<u8>> {
    use crate::v2::node::{Content, Entry, EntryKind, FileEntry, Limits, Loc, PackId};
    let entries: Vec<Entry> = (0..40)
        .map(|i| Entry {
            name: format!("file-{i:02}.txt"),
            kind: EntryKind::File(FileEntry {
                mode: 0o644,
                size: 10,
                mtime_ns: 1_700_000_000_000_000_000,
                hash: [i as u8; 32],
                content: Content::Blob(Loc {
                    pack: PackId([7; 32]),
                    offset: u64::from(i as u8) * 20,
                    stored_len: 11,
                }),
            }),
        })
        .chain([Entry {
            name: "link".into(),
            kind: EntryKind::Symlink {
                target: "../x".into(),
            },
        }])
        .collect();
    let key = crate::v2::pages::BoundaryKey::plaintext(&[1; 16]);
    let Ok(tree) = crate::v2::pages::build_dir(&entries, &key, None, &Limits::default()) else {
        return Vec::new();
    };
    let mut seeds = Vec::new();
    for n in &tree.nodes {
        let framed = crate::v2::frame::encode_record(&n.bytes);
        let mut raw = vec![0u8];
        raw.extend_from_slice(&n.bytes);
        seeds.push(raw.clone());
        seeds.push(framed.clone());
        seeds.push(raw[..raw.len() / 2].to_vec());
        let mut flipped = raw.clone();
        if let Some(b) = flipped.get_mut(3) {
            *b ^= 0x40;
        }
        seeds.push(flipped);
    }
    seeds
}

/// Valid and damaged inputs for [`v2_records`].
pub fn v2_record_seeds() -> Vec<Vec<u8>> {
    let head = r#"{"format":"tether-head-2","generation":1,"snapshot":"1700000000000-0123456789abcdef","parent_snapshot":null,"time_ms":1700000000000}"#;
    let snap = format!(
        r#"{{"format":"tether-snapshot-2","id":"1700000000000-0123456789abcdef","parent":null,"time_ms":1700000000000,"host":"h","tether":"0.1","root":"{}","totals":{{"files":1,"dirs":0,"symlinks":0,"bytes":2}},"change":{{"upserts":1,"deletes":0,"bytes_uploaded":2}},"rewrites":null}}"#,
        "ab".repeat(32)
    );
    let lease = r#"{"format":"tether-lease-2","generation":1,"holder":"0123456789abcdef","host":"h","pid":1,"ttl_ms":900000}"#;
    vec![
        lease.as_bytes().to_vec(),
        lease.replace("900000", "99999999999").into_bytes(),
        head.as_bytes().to_vec(),
        head.replace("\"generation\":1", "\"generation\":18446744073709551615")
            .into_bytes(),
        head.replace("1700000000000-0123456789abcdef", "../../x")
            .into_bytes(),
        snap.clone().into_bytes(),
        snap.replace("\"parent\":null", "\"parent\":\"../x\"")
            .into_bytes(),
        snap.as_bytes()[..snap.len() / 2].to_vec(),
    ]
}
