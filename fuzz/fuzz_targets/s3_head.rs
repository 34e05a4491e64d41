//! A head generation of the snapshots layout: it may only name a snapshot id
//! this crate could have made (so it cannot steer a key elsewhere).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_s3::manifest::{HeadRecord, is_snapshot_id};

fuzz_target!(|data: &[u8]| {
    let decoded = HeadRecord::decode(data, "p/heads/00000000000000000001");
    tether_fuzz::result(&decoded);
    if let Ok(h) = decoded {
        assert!(is_snapshot_id(&h.snapshot));
        assert!(!h.snapshot.contains('/') && !h.snapshot.contains('.'));
        let again = HeadRecord::decode(&h.encode(), "again").expect("re-encodes");
        assert_eq!(again, h);
    }
});
