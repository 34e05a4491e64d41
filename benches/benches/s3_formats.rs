//! sync-s3's CPU-side costs: encoding and checking a 10,000-file manifest,
//! and packing 10,000 × 4 KiB blobs (hashing the pack included).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sync_core::{ContentHash, FileMeta, Meta};
use sync_s3::manifest::{BlobLoc, Manifest, ManifestEntry, PackBuilder};

fn manifest_of(n: usize) -> Manifest {
    let mut entries = BTreeMap::new();
    for i in 0..n {
        let path = format!("dir{:03}/file{i:05}.txt", i % 100);
        let hash = ContentHash::of(path.as_bytes());
        entries.insert(
            path.clone(),
            ManifestEntry {
                path,
                meta: Meta::File(FileMeta {
                    size: 4096,
                    mtime_ns: 1_700_000_000_000_000_000,
                    mode: 0o644,
                    hash,
                }),
                blob: Some(BlobLoc {
                    pack: "ab".repeat(32),
                    offset: i as u64 * 4096,
                    length: 4096,
                }),
            },
        );
    }
    Manifest::new("1700000000000-00000001".into(), None, 0, entries)
}

fn bench(c: &mut Criterion) {
    let m = manifest_of(10_000);
    let bytes = m.encode();
    eprintln!("10,000-file manifest: {} bytes", bytes.len());
    c.bench_function("s3/manifest_encode_10k", |b| {
        b.iter(|| black_box(m.encode()))
    });
    c.bench_function("s3/manifest_decode_check_10k", |b| {
        let max = sync_s3::config::BackendOptions::default().max_entries;
        b.iter(|| black_box(Manifest::decode(&bytes, "m", max).map(|m| m.files)))
    });
    let blobs: Vec<(ContentHash, Vec<u8>)> = (0..10_000u32)
        .map(|i| {
            let mut v = vec![(i % 251) as u8; 4096];
            v[..4].copy_from_slice(&i.to_le_bytes());
            (ContentHash::of(&v), v)
        })
        .collect();
    c.bench_function("s3/pack_10k_x_4KiB", |b| {
        b.iter(|| {
            let mut packs = 0;
            let mut p = PackBuilder::with_capacity(8 << 20);
            for (h, v) in &blobs {
                p.add(*h, v);
                if p.len() >= 8 << 20 {
                    black_box(std::mem::take(&mut p).seal());
                    packs += 1;
                }
            }
            black_box(p.seal());
            packs
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
