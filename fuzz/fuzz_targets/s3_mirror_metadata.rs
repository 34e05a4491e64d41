//! A mirror object's own metadata (`tetherblake3`, `tethermode`,
//! `tethermtimens`; the legacy hyphenated names go through the same parser),
//! used for objects the index does not describe.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((hash, mode, mtime, size)) = tether_fuzz::metadata_fields(data) else {
        return;
    };
    let spec = sync_s3::fuzzing::mirror_object_metadata(hash, mode, mtime, size);
    tether_fuzz::outcome(spec.is_some(), &"");
    if let Some(spec) = spec {
        assert_eq!(spec.mode & !0o7777, 0, "mode {:o} from {mode:?}", spec.mode);
        assert_eq!(spec.size, Some(size));
        assert!(spec.hash.is_some() && spec.mtime_ns.is_some());
    }
});
