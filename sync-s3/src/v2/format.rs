//! Keys and records of snapshots format v2 (FORMAT.md, "sync-s3 snapshots,
//! format v2" → "Keys (objects)", "Snapshot record", "Head record"): the one
//! place that names an object or parses a record.
//!
//! Every name read back from a listing goes through a parser here before it
//! is used to build another key ([`parse_snapshot_id`], [`parse_node_id`]),
//! so no remote name can steer a request elsewhere. Records are JSON with
//! unknown fields refused (a newer schema is a newer format version).

use serde::{Deserialize, Serialize};

use super::node::{NodeId, PackId};

/// Directory of packs.
pub(crate) const DATA: &str = "data";
/// Directory of tree nodes.
pub(crate) const TREES: &str = "trees";
/// Directory of snapshot records.
pub(crate) const SNAPSHOTS: &str = "snapshots";
/// Directory of key slots.
pub(crate) const KEYS: &str = "keys";

/// `format` of a snapshot record.
pub(crate) const SNAPSHOT_FORMAT: &str = "tether-snapshot-2";
/// `format` of a head record.
pub(crate) const HEAD_FORMAT: &str = "tether-head-2";
/// `format` of a lease record.
pub(crate) const LEASE_FORMAT: &str = "tether-lease-2";

/// Largest snapshot record (stored and plain).
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 1 << 20;
/// Largest head record (stored and plain).
pub(crate) const MAX_HEAD_BYTES: u64 = 64 << 10;
/// Largest lease record (stored and plain).
pub(crate) const MAX_LEASE_BYTES: u64 = 64 << 10;
/// Longest lease a record may ask for (one hour).
pub(crate) const MAX_LEASE_TTL_MS: u64 = 3_600_000;
/// Largest key slot.
pub(crate) const MAX_SLOT_BYTES: u64 = 16 << 10;
/// Most key slots read.
pub(crate) const MAX_SLOTS: usize = 32;
/// What sealing adds to a unit (nonce + tag).
pub(crate) const SEAL_OVERHEAD: u64 = 40;

/// `data/<xx>/<pack-id>`.
pub(crate) fn pack_rel(id: &PackId) -> String {
    let hex = id.to_string();
    format!("{DATA}/{}/{hex}", &hex[..2])
}

/// `trees/<xx>/<node-id>`.
pub(crate) fn node_rel(id: &NodeId) -> String {
    let hex = id.to_string();
    format!("{TREES}/{}/{hex}", &hex[..2])
}

/// `snapshots/<snap-id>` (the id must have passed [`parse_snapshot_id`]
/// or come from [`new_snapshot_id`]).
pub(crate) fn snapshot_rel(id: &str) -> String {
    format!("{SNAPSHOTS}/{id}")
}

/// A new snapshot id: 13 digits of milliseconds (so names sort by time),
/// `-`, 16 random lower-hex digits.
pub(crate) fn new_snapshot_id(time_ms: u64) -> String {
    format!(
        "{:013}-{:016x}",
        time_ms.min(9_999_999_999_999),
        rand::random::<u64>()
    )
}

/// `Some(id)` for a well-formed snapshot id, else `None`.
pub(crate) fn parse_snapshot_id(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let ok = b.len() == 30
        && b[..13].iter().all(u8::is_ascii_digit)
        && b[13] == b'-'
        && b[14..]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(s)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

/// A node id from 64 lower-hex digits.
pub(crate) fn parse_node_id(s: &str) -> Option<NodeId> {
    parse_hex32(s).map(NodeId)
}

/// A pack id from 64 lower-hex digits.
pub(crate) fn parse_pack_id(s: &str) -> Option<PackId> {
    parse_hex32(s).map(PackId)
}

/// A fresh random pack id.
pub(crate) fn new_pack_id() -> PackId {
    PackId(rand::random())
}

/// Totals of a snapshot, for display only (never used to size anything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Totals {
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    pub(crate) symlinks: u64,
    pub(crate) bytes: u64,
}

/// What one push changed, for `history`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeSummary {
    pub(crate) upserts: u64,
    pub(crate) deletes: u64,
    pub(crate) bytes_uploaded: u64,
}

/// `snapshots/<snap-id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotRecord {
    pub(crate) format: String,
    pub(crate) id: String,
    pub(crate) parent: Option<String>,
    pub(crate) time_ms: u64,
    pub(crate) host: String,
    pub(crate) tether: String,
    pub(crate) root: String,
    pub(crate) totals: Totals,
    pub(crate) change: ChangeSummary,
    pub(crate) rewrites: Option<String>,
}

/// `heads/<20 digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadRecord {
    pub(crate) format: String,
    pub(crate) generation: u64,
    pub(crate) snapshot: String,
    pub(crate) parent_snapshot: Option<String>,
    pub(crate) time_ms: u64,
}

/// `lease/<20 digits>`: who holds the maintenance lease, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseRecord {
    pub(crate) format: String,
    pub(crate) generation: u64,
    /// 16 random lower-hex digits, fresh per maintainer run.
    pub(crate) holder: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    /// Valid this long after the object's `LastModified` (store time);
    /// 0 = released.
    pub(crate) ttl_ms: u64,
}

impl LeaseRecord {
    /// Checks one lease record stored as generation `n`.
    pub(crate) fn check(&self, n: u64) -> Result<(), String> {
        if self.format != LEASE_FORMAT {
            return Err(format!(
                "lease format {:?} is not {LEASE_FORMAT:?}",
                self.format
            ));
        }
        if self.generation != n {
            return Err(format!(
                "says generation {}, but is stored as generation {n} (copied or replayed)",
                self.generation
            ));
        }
        if self.ttl_ms > MAX_LEASE_TTL_MS {
            return Err(format!(
                "asks for a lease of {} ms, more than the {MAX_LEASE_TTL_MS} ms allowed",
                self.ttl_ms
            ));
        }
        if self.holder.len() != 16 || self.host.len() > 255 {
            return Err("holder is not 16 characters, or host is longer than 255 bytes".into());
        }
        Ok(())
    }
}

impl SnapshotRecord {
    /// Checks what one record can get wrong on its own; `name` is the id
    /// its key carries. Returns the root node's id.
    pub(crate) fn check(&self, name: &str) -> Result<NodeId, String> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "record format {:?} is not {SNAPSHOT_FORMAT:?} (written by a newer tether?)",
                self.format
            ));
        }
        if self.id != name {
            return Err(format!(
                "names snapshot {:?}, but is stored as {name:?} (moved or replayed)",
                self.id
            ));
        }
        if let Some(p) = &self.parent
            && parse_snapshot_id(p).is_none()
        {
            return Err(format!("parent {p:?} is not a snapshot id"));
        }
        if let Some(p) = &self.rewrites
            && parse_snapshot_id(p).is_none()
        {
            return Err(format!("rewrites {p:?} is not a snapshot id"));
        }
        if self.host.len() > 255 || self.tether.len() > 64 {
            return Err("host or tether version longer than 255 bytes".into());
        }
        parse_node_id(&self.root).ok_or_else(|| format!("root {:?} is not a node id", self.root))
    }
}

impl HeadRecord {
    /// Checks one head record stored as generation `n`.
    pub(crate) fn check(&self, n: u64) -> Result<(), String> {
        if self.format != HEAD_FORMAT {
            return Err(format!(
                "head format {:?} is not {HEAD_FORMAT:?} (an earlier or newer tether?)",
                self.format
            ));
        }
        if self.generation != n {
            return Err(format!(
                "says generation {}, but is stored as generation {n} (copied or replayed)",
                self.generation
            ));
        }
        if parse_snapshot_id(&self.snapshot).is_none() {
            return Err(format!("snapshot {:?} is not a snapshot id", self.snapshot));
        }
        if let Some(p) = &self.parent_snapshot
            && parse_snapshot_id(p).is_none()
        {
            return Err(format!("parent snapshot {p:?} is not a snapshot id"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_round_trip_and_foreign_names_are_refused() {
        let id = new_snapshot_id(1_764_500_000_123);
        assert_eq!(parse_snapshot_id(&id), Some(id.as_str()));
        assert!(id.starts_with("1764500000123-"));
        for bad in [
            "",
            "../../x",
            "1764500000123-0123456789ABCDEF",
            "1764500000123_0123456789abcdef",
            "1764500000123-0123456789abcde",
            "176450000012a-0123456789abcdef",
        ] {
            assert_eq!(parse_snapshot_id(bad), None, "{bad}");
        }
        assert!(parse_node_id(&"ab".repeat(32)).is_some());
        assert!(parse_node_id(&"AB".repeat(32)).is_none());
        assert!(parse_node_id("ab").is_none());
    }

    #[test]
    fn lease_records_bound_their_time_and_generation() {
        let l = LeaseRecord {
            format: LEASE_FORMAT.into(),
            generation: 3,
            holder: "0123456789abcdef".into(),
            host: "h".into(),
            pid: 1,
            ttl_ms: MAX_LEASE_TTL_MS,
        };
        assert!(l.check(3).is_ok());
        assert!(l.check(4).unwrap_err().contains("replayed"));
        let long = LeaseRecord {
            ttl_ms: MAX_LEASE_TTL_MS + 1,
            ..l.clone()
        };
        assert!(long.check(3).unwrap_err().contains("more than"));
        let odd = LeaseRecord {
            holder: "x".into(),
            ..l
        };
        assert!(odd.check(3).is_err());
    }

    #[test]
    fn records_refuse_unknown_fields_and_mismatched_names() {
        let h = HeadRecord {
            format: HEAD_FORMAT.into(),
            generation: 5,
            snapshot: new_snapshot_id(1),
            parent_snapshot: None,
            time_ms: 1,
        };
        assert!(h.check(5).is_ok());
        assert!(h.check(6).unwrap_err().contains("replayed"));
        let json = serde_json::to_string(&h)
            .unwrap()
            .replace('}', r#","x":1}"#);
        assert!(serde_json::from_str::<HeadRecord>(&json).is_err());
    }
}
