//! A notebook from the remote (or the user): parsing, converting to a
//! script and diffing never panic, and a notebook never differs from
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notebook::{DiffOptions, Notebook, diff};

fuzz_target!(|data: &[u8]| {
    let parsed = Notebook::parse(data);
    tether_fuzz::result(&parsed);
    if let Ok(nb) = parsed {
        let _ = nb.to_script("fuzz.ipynb");
        let d = diff(&nb, &nb, DiffOptions { metadata: true });
        assert!(d.is_empty(), "a notebook differs from itself: {d}");
        let _ = notebook::diff_or_text(data, b"{}", DiffOptions::default());
    }
});
