//! `RelPath::new`, the one check every remote name passes before it becomes
//! a path: an accepted path, joined onto a directory, stays inside it.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use sync_core::RelPath;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let json = serde_json::to_string(s).expect("a string serialises");
    let checked = RelPath::new(s);
    tether_fuzz::result(&checked);
    match checked {
        Ok(p) => {
            assert_eq!(p.as_str(), s);
            let comps: Vec<Component<'_>> = Path::new(p.as_str()).components().collect();
            assert!(
                comps.iter().all(|c| matches!(c, Component::Normal(_))),
                "{s:?}"
            );
            assert_eq!(comps.len(), s.split('/').count(), "{s:?}");
            assert!(p.to_path(Path::new("/dest")).starts_with("/dest"));
            assert!(!s.contains('\0') && !s.contains('\\'));
            // Derived paths are valid paths too.
            for anc in p.ancestors() {
                assert!(RelPath::new(anc.as_str()).is_ok() && p.starts_with(&anc));
            }
            if let Some(parent) = p.parent() {
                assert_eq!(RelPath::new(parent.as_str()), Ok(parent.clone()));
                assert_eq!(parent.join(p.file_name()), Ok(p.clone()));
            }
            // serde goes through the same check.
            let back: RelPath = serde_json::from_str(&json).expect("an accepted path deserialises");
            assert_eq!(back, p);
        }
        Err(_) => {
            assert!(serde_json::from_str::<RelPath>(&json).is_err(), "{s:?}");
        }
    }
});
