//! The plaintext frame of every stored unit, and the compression policy
//! (FORMAT.md, "sync-s3 snapshots, format v2" → "Stored units: framing,
//! compression, encryption").
//!
//! ```text
//! frame = flags:u8  [ plain_len:uvarint  if flags & 1 ]  payload
//! flags = bit 0: payload is one zstd frame of plain_len bytes; bits 1–7: 0
//! ```
//!
//! Data flow: a writer hands plaintext (a record's JSON, a node's canonical
//! bytes, a content blob) to [`encode_record`] or [`encode_blob`] and gets the
//! frame; a reader hands a frame and the kind's plain-length limit to
//! [`decode`] and gets the plaintext back. Encryption is not done here: in
//! an encrypted repository a later module seals the *frame* (so the flag and
//! lengths are hidden too) and opens it before [`decode`]; both sides of that
//! seam are plain byte slices.
//!
//! Decoding never trusts a remote number: `plain_len` is checked against the
//! caller's limit before anything is allocated, zstd decompresses in one
//! call into a buffer of exactly `plain_len` bytes (never a streaming
//! decoder without a cap), the payload must be exactly one zstd frame, and
//! output of any other length is refused.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe;

use super::varint::{self, VarintError};

/// Flag bit 0: the payload is zstd-compressed.
const FLAG_ZSTD: u8 = 0x01;
/// zstd level for records, nodes and `compression=auto` content.
const LEVEL_DEFAULT: i32 = 3;
/// zstd level of `compression=max`.
const LEVEL_MAX: i32 = 19;
/// zstd level of the `auto` sample.
const LEVEL_SAMPLE: i32 = 1;
/// `auto` judges a blob at least this large on its first this-many bytes.
const SAMPLE_LEN: usize = 64 * 1024;

/// How content blobs are compressed (`compression=` on the URL). Records
/// and nodes always use [`encode_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Compression {
    /// Level 3 where it saves ≥ 1/16, with a 64 KiB level-1 sample deciding
    /// for blobs ≥ 64 KiB (the default).
    #[default]
    Auto,
    /// Content is never compressed.
    Off,
    /// Level 19, kept iff smaller.
    Max,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// Not even a flag byte.
    #[error("empty frame (no flag byte)")]
    Empty,
    /// Flag bits this version does not know.
    #[error("unknown frame flags {0:#04x}: written by a newer tether?")]
    UnknownFlags(u8),
    /// `plain_len` is not a valid varint.
    #[error("frame plain_len: {0}")]
    PlainLen(#[source] VarintError),
    /// The declared or raw plaintext is larger than the caller allows.
    #[error("frame plaintext of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared `plain_len`, or the raw payload's length.
        len: u64,
        /// The caller's limit for this kind of unit.
        limit: u64,
    },
    /// The payload is not exactly one zstd frame.
    #[error("frame payload is not exactly one zstd frame ({reason})")]
    NotOneZstdFrame {
        /// What was found instead.
        reason: String,
    },
    /// zstd refused the payload (corrupt, or longer than `plain_len`).
    #[error("frame payload does not decompress to its plain_len of {plain_len} bytes")]
    Decompress {
        /// Declared plaintext length.
        plain_len: u64,
        /// zstd's reason.
        #[source]
        source: std::io::Error,
    },
    /// zstd produced fewer bytes than declared.
    #[error("frame payload decompressed to {actual} bytes, its plain_len says {plain_len}")]
    LengthMismatch {
        /// Declared plaintext length.
        plain_len: u64,
        /// What came out.
        actual: usize,
    },
    /// zstd could not even allocate its context (out of memory).
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
}

/// Frames a record or a node: zstd level 3, kept only if the frame gets
/// smaller (flag 0 otherwise).
pub(crate) fn encode_record(plain: &[u8]) -> Vec<u8> {
    compressed_if(plain, LEVEL_DEFAULT, |framed| framed < plain.len())
}

/// Frames a content blob (a whole small file or one chunk) by the
/// `compression=` policy.
pub(crate) fn encode_blob(plain: &[u8], policy: Compression) -> Vec<u8> {
    match policy {
        Compression::Off => raw(plain),
        Compression::Max => compressed_if(plain, LEVEL_MAX, |framed| framed < plain.len()),
        Compression::Auto => {
            if plain.len() >= SAMPLE_LEN && !sample_shrinks(&plain[..SAMPLE_LEN]) {
                return raw(plain);
            }
            compressed_if(plain, LEVEL_DEFAULT, |framed| {
                saves_a_sixteenth(plain.len(), framed)
            })
        }
    }
}

/// Decodes a frame whose plaintext may be at most `max_plain_len` bytes.
pub(crate) fn decode(frame: &[u8], max_plain_len: u64) -> Result<Vec<u8>, FrameError> {
    let (&flags, rest) = frame.split_first().ok_or(FrameError::Empty)?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    if flags & FLAG_ZSTD == 0 {
        let len = rest.len() as u64;
        if len > max_plain_len {
            return Err(FrameError::TooLarge {
                len,
                limit: max_plain_len,
            });
        }
        return Ok(rest.to_vec());
    }
    let (plain_len, used) = varint::get(rest).map_err(FrameError::PlainLen)?;
    if plain_len > max_plain_len {
        return Err(FrameError::TooLarge {
            len: plain_len,
            limit: max_plain_len,
        });
    }
    let capacity = usize::try_from(plain_len).map_err(|_| FrameError::TooLarge {
        len: plain_len,
        limit: max_plain_len,
    })?;
    let payload = rest.get(used..).unwrap_or_default();
    let frame_len = zstd_safe::find_frame_compressed_size(payload).map_err(|code| {
        FrameError::NotOneZstdFrame {
            reason: zstd_safe::get_error_name(code).to_owned(),
        }
    })?;
    if frame_len != payload.len() {
        return Err(FrameError::NotOneZstdFrame {
            reason: format!(
                "{} bytes follow the first frame",
                payload.len().saturating_sub(frame_len)
            ),
        });
    }
    let plain = with_decompressor(|d| d.decompress(payload, capacity))
        .map_err(FrameError::Zstd)?
        .map_err(|source| FrameError::Decompress { plain_len, source })?;
    if plain.len() != capacity {
        return Err(FrameError::LengthMismatch {
            plain_len,
            actual: plain.len(),
        });
    }
    Ok(plain)
}

/// Inputs at most this large are compressed with the thread's cached
/// context; larger ones (which amortise a fresh context) get their own, so
/// no thread keeps a workspace sized for a 4 MiB chunk.
const CACHED_CONTEXT_MAX: usize = 64 * 1024;

thread_local! {
    /// A compression context per level, reused by this thread (measured:
    /// creating one per 4 KiB blob was 18 % of a push's CPU time).
    static COMPRESSORS: RefCell<Vec<(i32, Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    /// A decompression context reused by this thread.
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd at `level`: one frame, with the content size recorded.
fn compress(plain: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    if plain.len() > CACHED_CONTEXT_MAX {
        return zstd::bulk::compress(plain, level);
    }
    COMPRESSORS.with(|cell| {
        let Ok(mut cached) = cell.try_borrow_mut() else {
            return zstd::bulk::compress(plain, level);
        };
        let at = match cached.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                cached.push((level, Compressor::new(level)?));
                cached.len() - 1
            }
        };
        cached[at].1.compress(plain)
    })
}

/// Runs `f` with this thread's decompression context (a fresh one if it
/// is in use).
fn with_decompressor<T>(f: impl FnOnce(&mut Decompressor<'static>) -> T) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let Ok(mut cached) = cell.try_borrow_mut() else {
            return Ok(f(&mut Decompressor::new()?));
        };
        let d = match cached.as_mut() {
            Some(d) => d,
            None => cached.insert(Decompressor::new()?),
        };
        Ok(f(d))
    })
}

fn raw(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + 1);
    out.push(0);
    out.extend_from_slice(plain);
    out
}

/// Compresses at `level` and keeps the result iff `keep(framed_len)`, where
/// `framed_len` counts what flag 1 adds (the `plain_len` varint) plus the
/// zstd frame. A zstd failure (out of memory) falls back to raw: a raw
/// frame is always valid.
fn compressed_if(plain: &[u8], level: i32, keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let Ok(packed) = compress(plain, level) else {
        return raw(plain);
    };
    let framed = varint::len(plain.len() as u64) + packed.len();
    if !keep(framed) {
        return raw(plain);
    }
    let mut out = Vec::with_capacity(1 + framed);
    out.push(FLAG_ZSTD);
    varint::put(&mut out, plain.len() as u64);
    out.extend_from_slice(&packed);
    out
}

/// `compressed ≤ plain − plain/16`: compression saves at least 6.25 %.
fn saves_a_sixteenth(plain: usize, compressed: usize) -> bool {
    compressed <= plain - plain / 16
}

/// The `auto` sample rule: does the sample shrink by at least 1/16 at
/// level 1?
fn sample_shrinks(sample: &[u8]) -> bool {
    compress(sample, LEVEL_SAMPLE)
        .map(|packed| saves_a_sixteenth(sample.len(), packed.len()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut v);
        v
    }

    fn text(n: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog, again and again; "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    }

    #[test]
    fn records_compress_when_smaller_only() {
        let t = text(4000);
        let f = encode_record(&t);
        assert_eq!(f[0], FLAG_ZSTD);
        assert!(f.len() < t.len() / 4);
        assert_eq!(decode(&f, 4000).unwrap(), t);
        // Too small to shrink: raw, flag 0.
        let f = encode_record(b"{}");
        assert_eq!(f, b"\x00{}");
        assert_eq!(decode(&f, 2).unwrap(), b"{}");
        let f = encode_record(b"");
        assert_eq!(f, b"\x00");
        assert_eq!(decode(&f, 0).unwrap(), b"");
    }

    #[test]
    fn blob_policies() {
        let t = text(10_000);
        let r = random(10_000);
        for p in [Compression::Auto, Compression::Max] {
            assert_eq!(encode_blob(&t, p)[0], FLAG_ZSTD, "{p:?}");
            assert_eq!(encode_blob(&r, p)[0], 0, "{p:?}");
            assert_eq!(decode(&encode_blob(&t, p), 10_000).unwrap(), t);
        }
        assert_eq!(encode_blob(&t, Compression::Off)[0], 0);
        assert_eq!(
            decode(&encode_blob(&t, Compression::Off), 10_000).unwrap(),
            t
        );
    }

    #[test]
    fn auto_samples_the_first_64_kib() {
        // Random first 64 KiB, then 1 MiB of text: `auto` stores it raw
        // without looking further; `max` compresses it.
        let mut b = random(SAMPLE_LEN);
        b.extend(text(1 << 20));
        assert_eq!(encode_blob(&b, Compression::Auto)[0], 0);
        assert_eq!(encode_blob(&b, Compression::Max)[0], FLAG_ZSTD);
        // Text first, random after: sampled as compressible, then kept only
        // if the whole blob saves 1/16 (it does: half is text).
        let mut c = text(SAMPLE_LEN);
        c.extend(random(SAMPLE_LEN));
        assert_eq!(encode_blob(&c, Compression::Auto)[0], FLAG_ZSTD);
    }

    #[test]
    fn auto_wants_a_sixteenth() {
        assert!(saves_a_sixteenth(1600, 1500));
        assert!(!saves_a_sixteenth(1600, 1501));
        // 15/16 random, 1/16 zeros: zstd saves a little under 1/16, so
        // `auto` keeps it raw while `max` (any saving) compresses it.
        let mut b = random(15 * 1024);
        b.extend(vec![0u8; 900]);
        assert_eq!(encode_blob(&b, Compression::Auto)[0], 0);
        assert_eq!(encode_blob(&b, Compression::Max)[0], FLAG_ZSTD);
    }

    #[test]
    fn limit_checked_before_decompressing() {
        let t = text(100_000);
        let f = encode_record(&t);
        assert!(matches!(
            decode(&f, 99_999),
            Err(FrameError::TooLarge {
                len: 100_000,
                limit: 99_999
            })
        ));
        // A frame claiming 2^60 bytes is refused on the number alone.
        let mut huge = vec![FLAG_ZSTD];
        varint::put(&mut huge, 1 << 60);
        huge.extend_from_slice(&f[4..]);
        assert!(matches!(
            decode(&huge, 4 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        // Raw payloads are bounded too.
        assert!(matches!(
            decode(&[0, 1, 2, 3], 2),
            Err(FrameError::TooLarge { len: 3, .. })
        ));
    }

    #[test]
    fn plain_len_must_match() {
        let t = text(5000);
        let packed = zstd::bulk::compress(&t, 3).unwrap();
        for claimed in [4999u64, 5001, 0] {
            let mut f = vec![FLAG_ZSTD];
            varint::put(&mut f, claimed);
            f.extend_from_slice(&packed);
            assert!(decode(&f, 1 << 20).is_err(), "claimed {claimed}");
        }
    }

    #[test]
    fn refuses_bad_headers_and_payloads() {
        assert!(matches!(decode(&[], 10), Err(FrameError::Empty)));
        assert!(matches!(
            decode(&[0x02, 1], 10),
            Err(FrameError::UnknownFlags(0x02))
        ));
        assert!(matches!(
            decode(&[0x81], 10),
            Err(FrameError::UnknownFlags(0x81))
        ));
        assert!(matches!(
            decode(&[0x01, 0x85, 0x00], 10),
            Err(FrameError::PlainLen(VarintError::NotMinimal))
        ));
        assert!(matches!(
            decode(&[0x01, 5, 1, 2, 3], 10),
            Err(FrameError::NotOneZstdFrame { .. })
        ));
        // Two concatenated zstd frames are not "one zstd frame".
        let t = text(3000);
        let one = zstd::bulk::compress(&t, 3).unwrap();
        let mut f = vec![FLAG_ZSTD];
        varint::put(&mut f, 6000);
        f.extend_from_slice(&one);
        f.extend_from_slice(&one);
        assert!(matches!(
            decode(&f, 1 << 20),
            Err(FrameError::NotOneZstdFrame { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), repeat in 1usize..4) {
            let plain: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            for f in [
                encode_record(&plain),
                encode_blob(&plain, Compression::Auto),
                encode_blob(&plain, Compression::Off),
                encode_blob(&plain, Compression::Max),
            ] {
                prop_assert!(f.len() <= plain.len() + 1);
                prop_assert_eq!(decode(&f, plain.len() as u64).unwrap(), plain.clone());
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, 1 << 16);
        }
    }
}
