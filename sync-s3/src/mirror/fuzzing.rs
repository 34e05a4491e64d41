//! The mirror index decoder, for [`crate::fuzzing`]: the same types and
//! checks as `Mirror::load_index`.

use sync_core::{BackendError, Meta};

use super::{INDEX_FORMAT, MirrorIndex};

/// Parses and checks a mirror index; returns its entries.
pub(crate) fn decode_index(
    bytes: &[u8],
) -> Result<Vec<(String, Meta, Option<String>)>, BackendError> {
    let object = ".tether/mirror/(fuzz)";
    let index: MirrorIndex =
        serde_json::from_slice(bytes).map_err(|e| BackendError::InvalidRemote {
            object: object.into(),
            reason: format!("not a valid mirror index (truncated or corrupt): {e}"),
        })?;
    if index.format != INDEX_FORMAT {
        return Err(BackendError::InvalidRemote {
            object: object.into(),
            reason: format!("unknown mirror index format {:?}", index.format),
        });
    }
    Ok(index
        .entries
        .into_iter()
        .map(|(name, e)| (name, e.meta, e.etag))
        .collect())
}
