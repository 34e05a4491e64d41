//! A pack index of the snapshots layout, read by every writer to reuse
//! blobs: its pack id must be a name of ours.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_s3::manifest::{PackIndex, is_pack_id};

fuzz_target!(|data: &[u8]| {
    let decoded = PackIndex::decode(data, "p/index/fuzz");
    tether_fuzz::result(&decoded);
    if let Ok(p) = decoded {
        assert!(is_pack_id(&p.pack));
        let again = PackIndex::decode(&p.encode(), "again").expect("re-encodes");
        assert_eq!(again, p);
    }
});
