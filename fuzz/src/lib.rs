//! Input formats shared by the fuzz targets and the seed generator
//! (`examples/make_corpus.rs`), so seeds and targets agree.
//!
//! The targets themselves are in `fuzz_targets/`; each feeds bytes to one
//! decoder of data tether reads from a remote or a client, exactly as the
//! crate calls it, and asserts what the decoder promises besides "no panic".

use std::collections::BTreeMap;

/// At most this many objects are read from one input.
pub const MAX_OBJECTS: usize = 16;

/// Splits `data` into objects: each is a little-endian `u32` length and
/// that many bytes (fewer at the end of the input).
pub fn split_objects(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 4 && out.len() < MAX_OBJECTS {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        data = &data[4..];
        let take = len.min(data.len());
        out.push(&data[..take]);
        data = &data[take..];
    }
    out
}

/// The inverse of [`split_objects`].
pub fn join_objects(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for o in objects {
        out.extend_from_slice(&u32::try_from(o.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(o);
    }
    out
}

/// Annotations from `key=value` items separated by NUL bytes (values may
/// hold anything else, newlines included); `None` for input that is not
/// UTF-8.
pub fn annotations(data: &[u8]) -> Option<BTreeMap<String, String>> {
    let text = std::str::from_utf8(data).ok()?;
    Some(
        text.split('\0')
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item.to_owned(), String::new()),
            })
            .collect(),
    )
}

/// The inverse of [`annotations`].
pub fn annotation_bytes(map: &BTreeMap<String, String>) -> Vec<u8> {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\0")
        .into_bytes()
}

/// Fields separated by NUL bytes: `(hash, mode, mtime_ns, size)` of a
/// mirror object's metadata, an empty field meaning "key absent".
pub fn metadata_fields(data: &[u8]) -> Option<(Option<&str>, Option<&str>, Option<&str>, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut it = text.split('\0');
    let mut next = || it.next().filter(|s| !s.is_empty());
    let (hash, mode, mtime) = (next(), next(), next());
    let size = next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((hash, mode, mtime, size))
}

/// Reports what a target made of one input, on stderr, when
/// `TETHER_FUZZ_TRACE` is set (scripts/fuzz.sh sets it for one pass over
/// the seeds, to check that each target still accepts some of them: a
/// target that refuses every seed tests nothing past the first check).
pub fn outcome(accepted: bool, detail: &dyn std::fmt::Display) {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *TRACE.get_or_init(|| std::env::var_os("TETHER_FUZZ_TRACE").is_some()) {
        let verdict = if accepted { "accepted" } else { "refused" };
        eprintln!("tether-fuzz: {verdict}: {detail}");
    }
}

/// [`outcome`] of a decoder's result.
pub fn result<T, E: std::fmt::Display>(r: &Result<T, E>) {
    match r {
        Ok(_) => outcome(true, &""),
        Err(e) => outcome(false, e),
    }
}
