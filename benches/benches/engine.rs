//! sync-core change detection: the start-up scan of a 100k-file tree with a
//! warm index, and the cost of finding one changed file in 1k vs 100k files.
//!
//! `cargo bench -p benches --bench engine`

// Tests and benchmarks fail loudly: unwrap/expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sync_core::{Checkpoint, DirtySet, IgnoreConfig, IgnoreRules, Index, RelPath, detect};

fn warm(root: &Path, state: &Path, files: usize) -> Index {
    benches::make_tree(root, files, 100).expect("tree");
    let mut index = Index::open(state).expect("index");
    let rules = IgnoreRules::load(root, &IgnoreConfig::default()).expect("rules");
    let full = DirtySet {
        paths: BTreeSet::new(),
        rescan: true,
    };
    let found = detect(root, &rules, &index, &Checkpoint::new(), &full, &mut |_| {});
    index.apply(&found.checkpoint, None).expect("apply");
    index.compact().expect("compact");
    index
}

fn startup_scan(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    drop(warm(&root, &state, 100_000));
    let rules = IgnoreRules::load(&root, &IgnoreConfig::default()).expect("rules");
    let mut g = c.benchmark_group("startup");
    g.sample_size(10);
    g.bench_function("load index + scan 100k files (warm index)", |b| {
        b.iter(|| {
            let index = Index::open(&state).expect("index");
            let full = DirtySet {
                paths: BTreeSet::new(),
                rescan: true,
            };
            let found = detect(
                &root,
                &rules,
                &index,
                &Checkpoint::new(),
                &full,
                &mut |_| {},
            );
            assert!(found.checkpoint.is_empty());
        })
    });
    g.finish();
}

fn one_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("one changed file");
    for files in [1_000usize, 100_000] {
        let tmp = tempfile::tempdir().expect("tmp");
        let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
        let mut index = warm(&root, &state, files);
        let rules = IgnoreRules::load(&root, &IgnoreConfig::default()).expect("rules");
        let target = RelPath::new("d0005/f000500.txt").expect("path");
        let mut n = 0u64;
        g.bench_function(format!("detect + record in index, tree of {files}"), |b| {
            b.iter(|| {
                n += 1;
                std::fs::write(target.to_path(&root), format!("edit {n}")).expect("write");
                let dirty = DirtySet {
                    paths: [target.clone()].into(),
                    rescan: false,
                };
                let found = detect(
                    &root,
                    &rules,
                    &index,
                    &Checkpoint::new(),
                    &dirty,
                    &mut |_| {},
                );
                assert_eq!(found.checkpoint.len(), 1);
                index.apply(&found.checkpoint, None).expect("apply");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, startup_scan, one_change);
criterion_main!(benches);
