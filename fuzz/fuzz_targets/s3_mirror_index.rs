//! The mirror layout's index, as a mirror restore reads it, then the
//! restore plan over its names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::Meta;
use sync_core::restore::{PlanKind, RestorePlan};

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = sync_s3::fuzzing::mirror_index(data) else {
        return;
    };
    let plan = RestorePlan::validate(
        entries.iter().map(|(name, meta, _)| {
            let kind = match meta {
                Meta::File(_) => PlanKind::File,
                Meta::Dir => PlanKind::Dir,
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
