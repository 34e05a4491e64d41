//! `uvarint`: unsigned LEB128, at most 10 bytes, minimal encoding only
//! (FORMAT.md, "sync-s3 snapshots, format v2" → "Stored units: framing,
//! compression, encryption", last bullet).
//!
//! Every length, count, offset, size and mode in a v2 frame or tree node is
//! a `uvarint`. The decoder refuses three things a lenient LEB128 reader
//! accepts: a value whose last byte is `0x00` after another byte (a
//! non-minimal form such as `80 00` for 0 — two spellings of one node would
//! give two ids), an 11th byte, and a 10th byte above `0x01` (bits past
//! 2^64, which a shift-and-or reader silently drops).
//!
//! Hand-written on purpose (it is not crypto): `leb128` and
//! `integer-encoding` accept non-minimal forms, and `unsigned-varint` 0.8
//! refuses non-minimal forms but wraps a 10th byte above `0x01` into a
//! wrong value instead of refusing it.

/// The longest `uvarint` of a `u64`: ⌈64 / 7⌉ bytes.
pub(crate) const MAX_LEN: usize = 10;

/// Why bytes are not a valid `uvarint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VarintError {
    /// The input ended inside the number.
    #[error("truncated (the input ends inside a varint)")]
    Truncated,
    /// A longer spelling of a value that has a shorter one.
    #[error("not minimally encoded (trailing zero byte)")]
    NotMinimal,
    /// More than 64 bits.
    #[error("larger than 2^64 - 1")]
    Overflow,
}

/// Appends the minimal encoding of `value` to `out`.
pub(crate) fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low 7 bits, with the continuation bit.
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes [`put`] writes for `value` (1..=10).
pub(crate) fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Decodes one `uvarint` from the start of `input`: the value and the
/// number of bytes it took.
pub(crate) fn get(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(MAX_LEN) {
        let low = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 0x01 {
            // Bit 63 is the only one left; anything more is past u64 (and a
            // continuation bit here would make an 11th byte).
            return Err(VarintError::Overflow);
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(VarintError::NotMinimal);
            }
            return Ok((value, i + 1));
        }
    }
    Err(VarintError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, v);
        out
    }

    #[test]
    fn known_values() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(
            enc(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(get(&enc(u64::MAX)), Ok((u64::MAX, 10)));
        assert_eq!(get(&[0xac, 0x02, 0x99]), Ok((300, 2)));
    }

    #[test]
    fn refuses_non_minimal() {
        assert_eq!(get(&[0x80, 0x00]), Err(VarintError::NotMinimal));
        assert_eq!(get(&[0x81, 0x80, 0x00]), Err(VarintError::NotMinimal));
        assert_eq!(
            get(&[0xff; 9].iter().copied().chain([0x00]).collect::<Vec<_>>()),
            Err(VarintError::NotMinimal)
        );
    }

    #[test]
    fn refuses_past_u64() {
        // 2^64 exactly, and a 10th byte with a continuation bit (11 bytes).
        let mut big = vec![0x80; 9];
        big.push(0x02);
        assert_eq!(get(&big), Err(VarintError::Overflow));
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(get(&eleven), Err(VarintError::Overflow));
    }

    #[test]
    fn refuses_truncated() {
        assert_eq!(get(&[]), Err(VarintError::Truncated));
        assert_eq!(get(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get(&[0xff; 9]), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let bytes = enc(v);
            prop_assert_eq!(bytes.len(), len(v));
            prop_assert_eq!(get(&bytes), Ok((v, bytes.len())));
        }

        #[test]
        fn decode_is_the_only_spelling(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            // Whatever decodes re-encodes to exactly the bytes it took.
            if let Ok((v, n)) = get(&bytes) {
                prop_assert_eq!(enc(v), bytes[..n].to_vec());
            }
        }
    }
}
