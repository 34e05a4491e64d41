//! The `.tether/modes` file of a fetched commit (path → permission bits),
//! as a restore and a re-base read it: what is accepted re-encodes to a
//! file that decodes to the same modes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = sync_git::fuzzing::modes(data);
    tether_fuzz::result(&decoded);
    if let Ok(encoded) = decoded {
        let again = sync_git::fuzzing::modes(&encoded).expect("an accepted modes file re-encodes");
        assert_eq!(again, encoded);
    }
});
