//! Head and snapshot records of the snapshots layout (format v2): parsed
//! and checked without panicking; only well-formed ids are accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let accepted = sync_s3::fuzzing::v2_records(data);
    tether_fuzz::result(&if accepted { Ok(()) } else { Err("refused") });
});
