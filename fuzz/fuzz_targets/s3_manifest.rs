//! The snapshots layout's manifest, as a restore reads it: decode (with its
//! checks), then the pure steps of restore planning.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sync_core::Meta;
use sync_core::restore::{PlanKind, RestorePlan};
use sync_s3::BackendOptions;
use sync_s3::manifest::{Manifest, batch_ranges, is_pack_id};

/// A small entry limit, so inputs of a few kilobytes reach both sides of
/// the count that runs before a manifest is built.
const MAX_ENTRIES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let decoded = Manifest::decode(data, "p/snapshots/fuzz", MAX_ENTRIES);
    tether_fuzz::result(&decoded);
    let Ok(m) = decoded else {
        return;
    };
    assert!(m.entries.len() as u64 <= MAX_ENTRIES);
    // What a decoded manifest promises: true totals, pack ids that are
    // names of ours, blob ranges that fit.
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in &m.entries {
        match (&e.meta, &e.blob) {
            (Meta::File(f), Some(loc)) => {
                assert!(is_pack_id(&loc.pack));
                assert_eq!(loc.length, f.size);
                assert!(loc.offset.checked_add(loc.length).is_some());
                files += 1;
                bytes = bytes
                    .checked_add(f.size)
                    .expect("the files' sizes add up to the manifest's byte total");
            }
            (Meta::File(_), None) => panic!("a file without content passed the checks"),
            (_, Some(_)) => panic!("a non-file with content passed the checks"),
            (_, None) => {}
        }
    }
    assert_eq!((files, bytes), (m.files, m.bytes));
    let again = Manifest::decode(&m.encode(), "again", MAX_ENTRIES)
        .expect("an accepted manifest re-encodes");
    assert_eq!(again, m);

    // The restore's next steps.
    let _ = m.by_path();
    let plan = RestorePlan::validate(
        m.entries.iter().map(|e| {
            let kind = match e.meta {
                Meta::File(_) => PlanKind::File,
                Meta::Dir { .. } => PlanKind::Dir,
                Meta::Symlink { .. } => PlanKind::Symlink,
            };
            (e.path.as_str(), kind)
        }),
        "p/snapshots/fuzz",
    );
    let Ok(plan) = plan else {
        return;
    };
    assert_eq!(plan.paths.len(), m.entries.len());
    let options = BackendOptions::default();
    let mut by_pack: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (_, loc) in m.blob_locations() {
        if loc.length < options.large_file_threshold {
            by_pack
                .entry(loc.pack.as_str())
                .or_default()
                .push((loc.offset, loc.length));
        }
    }
    for ranges in by_pack.into_values() {
        let n = ranges.len();
        let batches = batch_ranges(ranges, options.pack_size as u64);
        assert!(batches.iter().map(Vec::len).sum::<usize>() <= n);
    }
});
