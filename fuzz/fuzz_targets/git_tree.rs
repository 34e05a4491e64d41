//! Git tree objects as tether reads them (restore listing, re-base diff),
//! then the restore plan over the names. Input: objects as
//! `tether_fuzz::split_objects` frames them, the first the root tree.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sync_core::restore::RestorePlan;
use sync_git::fuzzing::Trees;

thread_local! {
    static TREES: RefCell<Option<(tempfile::TempDir, Trees)>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let objects = tether_fuzz::split_objects(data);
    TREES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (_, trees) = cell.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let trees = Trees::init(dir.path()).expect("bare repository");
            (dir, trees)
        });
        let listing = trees.list(&objects);
        tether_fuzz::result(&listing);
        let Ok(listing) = listing else {
            return;
        };
        // As restore_commit: submodules skipped, names must be UTF-8.
        let mut items = Vec::new();
        for (path, kind) in listing {
            let Some(kind) = kind else { continue };
            let Ok(name) = String::from_utf8(path) else {
                return;
            };
            items.push((name, kind));
        }
        if let Ok(plan) =
            RestorePlan::validate(items.iter().map(|(n, k)| (n.as_str(), *k)), "commit")
        {
            assert_eq!(plan.paths.len(), items.len());
            for p in &plan.paths {
                assert!(
                    p.to_path(std::path::Path::new("/dest"))
                        .starts_with("/dest")
                );
            }
        }
    });
});
