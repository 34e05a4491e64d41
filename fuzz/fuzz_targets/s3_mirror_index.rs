//! The mirror layout's index, as a mirror restore reads it, then the
//! restore plan over its names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::Meta;
use sync_core::restore::{PlanKind, RestorePlan};

/// A small entry limit, so inputs of a few kilobytes reach both sides of
/// the count that runs before an index is built.
const MAX_ENTRIES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let decoded = sync_s3::fuzzing::mirror_index(data, MAX_ENTRIES);
    tether_fuzz::result(&decoded);
    let Ok(entries) = decoded else {
        return;
    };
    assert!(entries.len() as u64 <= MAX_ENTRIES);
    let plan = RestorePlan::validate(
        entries.iter().map(|(name, meta, _)| {
            let kind = match meta {
                Meta::File(_) => PlanKind::File,
                Meta::Dir { .. } => PlanKind::Dir,
                Meta::Symlink { .. } => PlanKind::Symlink,
            };
            (name.as_str(), kind)
        }),
        "fuzz",
    );
    if let Ok(plan) = plan {
        assert_eq!(plan.paths.len(), entries.len());
    }
});
