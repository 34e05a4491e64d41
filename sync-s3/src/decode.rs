//! Decoding remote lists with memory bounded by a count, not only by bytes.
//!
//! A byte cap alone does not bound memory: 250 MB of tiny JSON entries
//! (`{"path":"a","type":"dir"}`) become several gigabytes once each is a
//! struct with its own allocations. So before a manifest, mirror index or
//! pack index is built, [`count_entries`] walks its bytes once without
//! building anything (serde's `IgnoredAny`: no allocation per element) and
//! stops at the first element past the limit; only a document within the
//! limit is then parsed for real. Peak memory is the document's bytes
//! (already capped) plus at most `limit` parsed entries.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why counting stopped.
#[derive(Debug)]
pub(crate) enum CountError {
    /// The list holds more than the limit.
    TooMany { limit: u64 },
    /// Not valid JSON of the expected shape.
    Json(serde_json::Error),
}

impl fmt::Display for CountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountError::TooMany { limit } => write!(
                f,
                "holds more than {limit} entries, the most tether reads (max_entries); refusing it before building it"
            ),
            CountError::Json(e) => write!(f, "{e}"),
        }
    }
}

/// How many elements the top-level object's `field` holds (an array or an
/// object), refusing more than `limit`. A missing field counts 0.
pub(crate) fn count_entries(bytes: &[u8], field: &str, limit: u64) -> Result<u64, CountError> {
    let exceeded = Cell::new(false);
    let seed = TopLevel {
        field,
        limit,
        exceeded: &exceeded,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = seed.deserialize(&mut de).and_then(|n| de.end().map(|()| n));
    match result {
        Ok(n) => Ok(n),
        Err(_) if exceeded.get() => Err(CountError::TooMany { limit }),
        Err(e) => Err(CountError::Json(e)),
    }
}

struct TopLevel<'a> {
    field: &'a str,
    limit: u64,
    exceeded: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with a field {:?}", self.field)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut count = 0;
        // Keys are few at the top level; each is read as a small string.
        while let Some(key) = map.next_key::<String>()? {
            if key == self.field {
                count = map.next_value_seed(Counter {
                    limit: self.limit,
                    exceeded: self.exceeded,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(count)
    }
}

struct Counter<'a> {
    limit: u64,
    exceeded: &'a Cell<bool>,
}

impl Counter<'_> {
    fn one_more<E: serde::de::Error>(&self, n: &mut u64) -> Result<(), E> {
        *n += 1;
        if *n > self.limit {
            self.exceeded.set(true);
            return Err(E::custom("too many entries"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array or an object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            self.one_more(&mut n)?;
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            self.one_more(&mut n)?;
        }
        Ok(n)
    }
    // `null` (serde's `None`) counts as empty; the real parse decides
    // whether it is acceptable.
    fn visit_unit<E: serde::de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_arrays_and_objects_and_stops_past_the_limit() {
        let doc = br#"{"format":"x","entries":[{"a":[1,2]},{"b":"c"},3],"more":{"k":1}}"#;
        assert_eq!(count_entries(doc, "entries", 10).unwrap(), 3);
        assert_eq!(count_entries(doc, "more", 10).unwrap(), 1);
        assert_eq!(count_entries(doc, "absent", 10).unwrap(), 0);
        let e = count_entries(doc, "entries", 2).unwrap_err();
        assert!(matches!(e, CountError::TooMany { limit: 2 }), "{e}");
        assert!(e.to_string().contains("more than 2 entries"), "{e}");
        assert!(matches!(
            count_entries(&doc[..20], "entries", 10),
            Err(CountError::Json(_))
        ));
        assert!(matches!(
            count_entries(b"[1,2]", "entries", 10),
            Err(CountError::Json(_))
        ));
    }

    #[test]
    fn refuses_a_huge_list_without_reading_past_the_limit() {
        // The limit is reached long before the (invalid) end: the refusal
        // is about the count, not the syntax further on.
        let mut doc = b"{\"entries\":[".to_vec();
        for _ in 0..1000 {
            doc.extend_from_slice(b"{\"path\":\"a\",\"type\":\"dir\"},");
        }
        doc.extend_from_slice(b"this is not json");
        let e = count_entries(&doc, "entries", 100).unwrap_err();
        assert!(matches!(e, CountError::TooMany { limit: 100 }), "{e}");
    }
}
