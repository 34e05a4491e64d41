//! A tree node of the snapshots layout (format v2), framed as stored in a
//! plaintext repository: the frame and node decoders never panic, never
//! allocate beyond their limits, and an accepted node has one encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let accepted = sync_s3::fuzzing::v2_node(data);
    tether_fuzz::result(&if accepted { Ok(()) } else { Err("refused") });
});
