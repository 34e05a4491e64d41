//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`); not an API.
//!
//! The snapshots layout's decoders ([`Manifest::decode`](crate::manifest::Manifest::decode),
//! [`HeadRecord::decode`](crate::manifest::HeadRecord::decode),
//! [`PackIndex::decode`](crate::manifest::PackIndex::decode)) are public
//! already; this module reaches the mirror layout's private ones, each
//! called exactly as a restore calls it.

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
