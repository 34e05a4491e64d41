//! The conformance suite run against the in-memory backend: proves the suite
//! (and the shared restore code) before real backends use it.

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sync_core::testkit::MemoryBackend;
use sync_core::testkit::conformance::{Fixture, Hostile, Planted};
use sync_core::{Backend, ContentHash, FileMeta, Meta};

struct Memory;

fn file(content: &[u8]) -> (Meta, Bytes) {
    let meta = Meta::File(FileMeta {
        size: content.len() as u64,
        mtime_ns: 0,
        mode: 0o644,
        hash: ContentHash::of(content),
    });
    (meta, Bytes::copy_from_slice(content))
}

#[async_trait]
impl Fixture for Memory {
    async fn fresh(&self) -> Arc<dyn Backend> {
        Arc::new(MemoryBackend::new())
    }

    async fn plant_hostile(&self, case: &Hostile) -> Option<Arc<dyn Backend>> {
        let (ok_meta, ok_bytes) = file(b"ok");
        let mut entries = vec![("ok.txt".to_string(), ok_meta, ok_bytes)];
        match case {
            Hostile::Name(name) => {
                let (m, b) = file(b"evil");
                entries.push((name.clone(), m, b));
            }
            Hostile::SymlinkThenEntry {
                link,
                target,
                entry,
            } => {
                entries.push((
                    link.clone(),
                    Meta::Symlink {
                        target: target.clone(),
                    },
                    Bytes::new(),
                ));
                let (m, b) = file(b"evil");
                entries.push((entry.clone(), m, b));
            }
            Hostile::Entries(planted) => {
                for p in planted {
                    match p {
                        Planted::File {
                            path,
                            content,
                            mode,
                        } => {
                            let (mut m, b) = file(content);
                            if let Meta::File(f) = &mut m {
                                f.mode = *mode;
                            }
                            entries.push((path.clone(), m, b));
                        }
                        Planted::Dir { path, mode } => {
                            entries.push((path.clone(), Meta::Dir { mode: *mode }, Bytes::new()));
                        }
                    }
                }
            }
        }
        Some(Arc::new(MemoryBackend::with_raw_state(entries)))
    }
}

sync_core::conformance_suite!(memory, Some(Memory));
