//! Issue 13 on format v2: forget removes what a policy does not keep (and
//! never a snapshot a writer may still build on), prune frees what no
//! snapshot references (and nothing younger than its grace), check finds
//! missing and corrupt objects, the lease keeps maintainers apart and is
//! taken over from a crashed holder, history steps over forgotten
//! snapshots — and two writers pushing beside a pruner for 60 s lose
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Store, StoreFixture, key, unique};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sync_core::testkit::conformance::Workbench;
use sync_core::{Backend, BackendError, RestoreOptions};
use sync_s3::{
    CheckOptions, EncryptionKey, ForgetPolicy, ObjectStoreBackend, PruneOptions, ReadData,
};

const KEY: &str = "tether-key-1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc";

/// A backend on `store`'s test location `name` with a reuse window of
/// `window` (tests shrink it so forget and prune act within seconds).
fn backend(fx: &StoreFixture, name: &str, window: Duration, encrypted: bool) -> ObjectStoreBackend {
    let (url, mut options) = fx.url(name);
    options.reuse_window = window;
    if encrypted {
        options.encryption_key = Some(EncryptionKey::from_bytes(KEY.as_bytes().to_vec()));
    }
    ObjectStoreBackend::from_url(&url, options).unwrap()
}

/// A backend in memory with a 100 ms reuse window.
fn memory(name: &str, encrypted: bool) -> Arc<ObjectStoreBackend> {
    let fx = StoreFixture::new(Store::Memory, sync_s3::Layout::Snapshots);
    Arc::new(backend(
        &fx,
        &unique(name),
        Duration::from_millis(100),
        encrypted,
    ))
}

/// Every object under `dir` of the backend's prefix.
async fn listed(b: &ObjectStoreBackend, dir: &str) -> Vec<object_store::ObjectMeta> {
    let prefix = key(b, dir);
    b.store().list(Some(&prefix)).try_collect().await.unwrap()
}

fn stores() -> Vec<StoreFixture> {
    let mut s = vec![Store::Memory, Store::File];
    s.extend(Store::s3());
    s.into_iter()
        .map(|s| StoreFixture::new(s, sync_s3::Layout::Snapshots))
        .collect()
}

fn keep_last(n: u32) -> ForgetPolicy {
    ForgetPolicy {
        keep_last: Some(n),
        ..ForgetPolicy::default()
    }
}

fn grace(g: Duration) -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace = g;
    o
}

/// Objects under a backend's prefix in one directory: (count, bytes).
async fn count(b: &ObjectStoreBackend, dir: &str) -> (usize, u64) {
    let all = listed(b, dir).await;
    (all.len(), all.iter().map(|m| m.size).sum())
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn restore_at(b: &ObjectStoreBackend, w: &Workbench, id: &str, name: &str) {
    let dest = w.tmp.path().join(name);
    b.restore(
        &dest,
        &RestoreOptions {
            at: Some(id.to_owned()),
            ..RestoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("restore of {id}: {e}"));
}

/// Six pushes each replacing a 64 KiB file; forget keeps the last two,
/// prune frees the other four versions, check reads every byte, history
/// and restores of the kept ones still work. A dry run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_then_prune_frees_what_only_forgotten_snapshots_held() {
    for fx in stores() {
        let store = &fx.store;
        for encrypted in [false, true] {
            let window = Duration::from_millis(300);
            let b = backend(&fx, &unique("forget-prune"), window, encrypted);
            let b = Arc::new(b);
            let mut w = Workbench::new(b.clone());
            w.write("keep/always.txt", b"in every snapshot");
            let mut ids = Vec::new();
            for i in 0..6 {
                w.write("data.bin", &noise(i, 64 << 10));
                w.sync().await;
                ids.push(b.head().await.unwrap().unwrap().id);
            }
            // Twice the window by the store's clock, which S3 gives in
            // whole seconds.
            tokio::time::sleep(window * 2 + Duration::from_millis(2_100)).await;
            let (packs_before, bytes_before) = count(&b, "data").await;

            let dry = b.forget(&keep_last(2), true).await.unwrap();
            assert_eq!(dry.removed(), 4, "{dry:?}");
            assert!(dry.dry_run);
            let trees_before = count(&b, "trees").await;
            let pruned_dry = b
                .prune(&{
                    let mut o = grace(Duration::ZERO);
                    o.dry_run = true;
                    o
                })
                .await
                .unwrap();
            // At most the empty directory node the first push stored for
            // `keep/` before it filled it.
            assert!(pruned_dry.objects_deleted <= 1, "{pruned_dry:?}");
            assert_eq!(count(&b, "trees").await, trees_before, "a dry run deleted");
            assert_eq!(
                b.history(100).await.unwrap().len(),
                6,
                "a dry run removed something"
            );

            let report = b.forget(&keep_last(2), false).await.unwrap();
            assert_eq!(report.kept(), 2);
            let kept: Vec<&str> = report
                .snapshots
                .iter()
                .filter(|s| !s.removed)
                .map(|s| s.id.as_str())
                .collect();
            assert_eq!(kept, vec![ids[5].as_str(), ids[4].as_str()]);
            let history: Vec<String> = b
                .history(100)
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(history, vec![ids[5].clone(), ids[4].clone()]);

            // Young garbage waits for the grace period…
            let waiting = b.prune(&grace(Duration::from_secs(3600))).await.unwrap();
            assert_eq!(waiting.objects_deleted, 0);
            assert!(waiting.objects_waiting >= 4, "{waiting:?}");
            assert_eq!(count(&b, "data").await.0, packs_before);
            // …then goes.
            let pruned = b.prune(&grace(Duration::ZERO)).await.unwrap();
            // Versions 1–3 had packs of their own; version 0 shares the
            // first push's pack with `keep/always.txt`, which stays (no
            // repack) and is reported as unused bytes.
            assert!(pruned.objects_deleted >= 3, "{pruned:?}");
            assert!(
                pruned.bytes_freed >= 3 * (60 << 10),
                "three 64 KiB versions should go: {pruned:?}"
            );
            assert!(pruned.bytes_unused_in_live_packs >= 60 << 10, "{pruned:?}");
            let (packs_after, bytes_after) = count(&b, "data").await;
            assert!(
                packs_after <= packs_before - 3,
                "{packs_before} → {packs_after}"
            );
            assert!(bytes_after + 3 * (60 << 10) <= bytes_before);
            let again = b.prune(&grace(Duration::ZERO)).await.unwrap();
            assert_eq!(again.objects_deleted, 0, "{again:?}");

            let check = b.check(&CheckOptions::new(ReadData::All)).await.unwrap();
            assert!(check.is_ok(), "{:?}", check.problems);
            assert_eq!(check.snapshots, 2);
            assert!(check.blobs_read >= 3, "{check:?}");
            restore_at(&b, &w, &ids[4], "at-4").await;
            let dest = w.restore_new("newest").await;
            w.assert_same(&dest);
            // The one before the kept ones is gone, with a clear error.
            let gone = b
                .restore(
                    &w.tmp.path().join("at-3"),
                    &RestoreOptions {
                        at: Some(ids[3].clone()),
                        ..RestoreOptions::default()
                    },
                )
                .await
                .unwrap_err();
            assert!(
                matches!(gone, BackendError::NotFound { .. }),
                "{store:?}: {gone}"
            );
        }
    }
}

/// With the default reuse window, snapshots superseded seconds ago are
/// kept whatever the policy says: a writer may still build on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_keeps_snapshots_a_writer_may_still_build_on() {
    let fx = StoreFixture::new(Store::Memory, sync_s3::Layout::Snapshots);
    let b = Arc::new(backend(
        &fx,
        &unique("recent"),
        sync_s3::REUSE_WINDOW,
        false,
    ));
    let mut w = Workbench::new(b.clone());
    for i in 0..3 {
        w.write("f.txt", format!("version {i}").as_bytes());
        w.sync().await;
    }
    let r = b.forget(&keep_last(1), false).await.unwrap();
    assert_eq!(r.removed(), 0, "{r:?}");
    assert_eq!(r.snapshots.iter().filter(|s| s.too_recent).count(), 2);
    assert_eq!(b.history(10).await.unwrap().len(), 3);
}

/// A live lease stops a second maintainer with a message naming the
/// holder; a crashed holder's lease is taken over once it expires (by the
/// store's clock); a finished maintainer releases its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_excludes_a_second_maintainer_and_is_taken_over_after_expiry() {
    for fx in stores() {
        let store = &fx.store;
        let b = Arc::new(backend(
            &fx,
            &unique("lease"),
            Duration::from_millis(100),
            false,
        ));
        let mut w = Workbench::new(b.clone());
        w.write("a.txt", b"a");
        w.sync().await;
        // A maintainer that finishes releases: the next one goes at once.
        b.prune(&grace(Duration::ZERO)).await.unwrap();
        b.prune(&grace(Duration::ZERO)).await.unwrap();
        // A crashed one holds it until its time runs out.
        let newest = lease_generations(&b).await;
        sync_s3::testing::plant_lease(&b, newest + 1, 2_000)
            .await
            .unwrap();
        let e = b.prune(&grace(Duration::ZERO)).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("crashed-maintainer"), "{store:?}: {msg}");
        assert!(!e.is_permanent(), "a busy lease is worth retrying: {msg}");
        let e = b.forget(&keep_last(1), false).await.unwrap_err();
        assert!(e.to_string().contains("lease"), "{e}");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        b.prune(&grace(Duration::ZERO)).await.unwrap();
        assert!(lease_generations(&b).await > newest + 1);
    }
}

async fn lease_generations(b: &ObjectStoreBackend) -> u64 {
    listed(b, "lease")
        .await
        .iter()
        .filter_map(|m| m.location.filename()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Check names a deleted pack and a flipped byte (the latter only when it
/// reads data); prune refuses to run on a repository whose snapshot record
/// it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_missing_and_corrupt_packs() {
    for encrypted in [false, true] {
        let b = memory("check", encrypted);
        let mut w = Workbench::new(b.clone());
        w.write("one.txt", &noise(1, 10_000));
        w.sync().await;
        w.write("two.txt", &noise(2, 10_000));
        w.sync().await;
        let ok = b.check(&CheckOptions::new(ReadData::All)).await.unwrap();
        assert!(ok.is_ok(), "{:?}", ok.problems);
        assert_eq!(ok.packs, 2);

        let packs = listed(&b, "data").await;
        // Flip a byte in the first pack; delete the second.
        let first = &packs[0].location;
        let mut bytes = b
            .store()
            .get(first)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        b.store().put(first, PutPayload::from(bytes)).await.unwrap();
        let structure = b.check(&CheckOptions::default()).await.unwrap();
        assert!(
            structure.is_ok(),
            "a flipped byte is not visible without reading: {structure:?}"
        );
        let read = b.check(&CheckOptions::new(ReadData::All)).await.unwrap();
        assert_eq!(read.problems.len(), 1, "{:?}", read.problems);
        assert!(read.problems[0].contains("blob"), "{:?}", read.problems);

        b.store().delete(&packs[1].location).await.unwrap();
        let missing = b.check(&CheckOptions::default()).await.unwrap();
        assert!(
            missing
                .problems
                .iter()
                .any(|p| p.contains(packs[1].location.as_ref()) && p.contains("missing")),
            "{:?}",
            missing.problems
        );
        // A node gone is a problem too, not an abort.
        let trees = listed(&b, "trees").await;
        for t in &trees {
            b.store().delete(&t.location).await.unwrap();
        }
        let broken = b.check(&CheckOptions::default()).await.unwrap();
        assert!(!broken.is_ok());
        // Prune never deletes on a repository whose trees it cannot read.
        let e = b.prune(&grace(Duration::ZERO)).await.unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

/// Issue 13's concurrency test: two writers push to one prefix for 60 s
/// (new, edited, deleted and re-created content, so writers reuse what
/// they read and what they uploaded) while a pruner runs forget + prune in
/// a loop with a short grace; then `check --read-data` finds nothing
/// missing or corrupt, every kept snapshot restores, and the newest holds
/// both writers' latest trees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_and_a_pruner_for_a_minute_lose_nothing() {
    let fx = Arc::new(StoreFixture::new(
        Store::s3().unwrap_or(Store::File),
        sync_s3::Layout::Snapshots,
    ));
    let name = unique("two-writers-pruner");
    let window = Duration::from_secs(2);
    let seconds: u64 = std::env::var("TETHER_MAINTAIN_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut writers = Vec::new();
    for who in ["a", "b"] {
        let b = Arc::new(backend(&fx, &name, window, false));
        writers.push(tokio::spawn(async move {
            let mut w = Workbench::new(b.clone());
            let mut pushes = 0u64;
            let mut i = 0u64;
            while tokio::time::Instant::now() < deadline {
                i += 1;
                // A pool of 5 contents: re-created content is reused.
                let pick = |k: u64| noise(k % 5 + if who == "a" { 0 } else { 100 }, 3_000);
                w.write(&format!("{who}/f{}.bin", i % 7), &pick(i));
                w.write(&format!("{who}/sub{}/g.bin", i % 3), &pick(i * 3));
                // Content that leaves every snapshot and comes back a few
                // pushes later, within the reuse window: the writer reuses
                // its upload by hash (rule W2), which a careless forget or
                // prune would have deleted meanwhile.
                let echo = match i % 6 {
                    0 | 5 => noise(1_000 + i / 6, 200_000),
                    _ => format!("echo {i}").into_bytes(),
                };
                w.write(&format!("{who}/echo.bin"), &echo);
                // Fresh content every push (a pack each, so a push takes
                // long enough for a careless prune to catch it midway).
                w.write(&format!("{who}/big.bin"), &noise(i * 7 + 13, 1 << 20));
                if i.is_multiple_of(4) {
                    let _ = std::fs::remove_dir_all(w.src.join(format!("{who}/sub{}", i % 3)));
                }
                let c = w.checkpoint();
                match w.try_push(&c).await {
                    Ok(_) => pushes += 1,
                    Err(e) if !e.is_permanent() => {
                        tracing::info!(error = %e, "retrying");
                    }
                    Err(e) => panic!("writer {who}: {e}"),
                }
            }
            // The last changes, pushed whatever the pruner does.
            for attempt in 0.. {
                let c = w.checkpoint();
                match w.try_push(&c).await {
                    Ok(_) => break,
                    Err(e) if attempt < 20 && !e.is_permanent() => {
                        tracing::info!(error = %e, "retrying the last push");
                    }
                    Err(e) => panic!("writer {who}'s last push: {e}"),
                }
            }
            (w, pushes)
        }));
    }
    let pruner_backend = Arc::new(backend(&fx, &name, window, false));
    let pruner = {
        let b = pruner_backend.clone();
        tokio::spawn(async move {
            let mut runs = (0u64, 0u64, 0u64);
            let mut problems: Vec<String> = Vec::new();
            // TETHER_MAINTAIN_TEST_GRACE_MS=0 shows the test failing when
            // prune ignores the grace.
            let g = std::env::var("TETHER_MAINTAIN_TEST_GRACE_MS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(8_000);
            let mut options = grace(Duration::from_millis(g));
            options.lease_ttl = Duration::from_secs(30);
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match b.maintain(&keep_last(3), &options).await {
                    Ok(r) => {
                        runs.0 += 1;
                        runs.1 += r.forget.removed() as u64;
                        runs.2 += r.prune.objects_deleted;
                        // Every pack and node the kept snapshots name must
                        // still be there, after every run.
                        let c = b.check(&CheckOptions::default()).await.unwrap();
                        problems.extend(c.problems);
                    }
                    Err(BackendError::NotFound { .. }) => {}
                    Err(e) if !e.is_permanent() => tracing::info!(error = %e, "maintenance retry"),
                    Err(e) => panic!("pruner: {e}"),
                }
            }
            (runs, problems)
        })
    };
    let mut benches = Vec::new();
    for h in writers {
        let (w, pushes) = h.await.unwrap();
        assert!(pushes > 5, "a writer pushed only {pushes} times");
        benches.push(w);
    }
    let ((runs, forgotten, deleted), problems) = pruner.await.unwrap();
    assert!(
        problems.is_empty(),
        "check between maintenance runs: {problems:#?}"
    );
    assert!(
        runs > 5 && forgotten > 0 && deleted > 0,
        "the pruner did nothing: {runs} runs, {forgotten} forgotten, {deleted} deleted"
    );

    let b = pruner_backend;
    // A final round with both writers stopped.
    tokio::time::sleep(window * 3).await;
    b.maintain(&keep_last(3), &grace(Duration::from_secs(8)))
        .await
        .unwrap();
    let check = b.check(&CheckOptions::new(ReadData::All)).await.unwrap();
    assert!(
        check.is_ok(),
        "after {runs} maintenance runs: {:?}",
        check.problems
    );
    for (i, h) in b.history(1000).await.unwrap().iter().enumerate() {
        restore_at(&b, &benches[0], &h.id, &format!("kept-{i}")).await;
    }
    let dest = benches[0].restore_new("newest").await;
    for (who, w) in ["a", "b"].iter().zip(&benches) {
        let want = sync_core::testkit::conformance::tree(&w.src.join(who), b.capabilities());
        let got = sync_core::testkit::conformance::tree(&dest.join(who), b.capabilities());
        assert_eq!(want, got, "writer {who}'s newest tree");
    }
}

/// History goes on past snapshots removed from the middle of the chain
/// (what forget does with calendar rules), in order, and restores of what
/// remains still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_steps_over_forgotten_snapshots() {
    let b = memory("gaps", false);
    let mut w = Workbench::new(b.clone());
    let mut ids = Vec::new();
    for i in 0..6 {
        w.write("f.txt", format!("version {i}").as_bytes());
        w.sync().await;
        ids.push(b.head().await.unwrap().unwrap().id);
    }
    for gone in [&ids[1], &ids[3], &ids[4]] {
        b.store()
            .delete(&key(&b, &format!("snapshots/{gone}")))
            .await
            .unwrap();
    }
    let history: Vec<String> = b
        .history(100)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(
        history,
        vec![ids[5].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(b.history(2).await.unwrap().len(), 2);
    restore_at(&b, &w, &ids[2], "at-2").await;
    assert_eq!(
        std::fs::read_to_string(w.tmp.path().join("at-2/f.txt")).unwrap(),
        "version 2"
    );
}

/// A prune stopped midway (its task dropped while deleting) leaves a
/// repository that check passes, and gives its lease back as it is
/// dropped, so the next maintainer finishes the job at once rather than
/// after the lease's 30 s (a SIGKILLed one's lease is taken over after it
/// expires: `the_lease_excludes…` and the CLI's kill test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_stopped_midway_leaves_a_sound_repository_and_is_finished_later() {
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let slow = common::interposer::Interposer::new(inner.clone(), Duration::from_millis(20));
    let b = Arc::new(
        ObjectStoreBackend::new(
            slow,
            "stopped",
            "memory (slow deletes)",
            sync_s3::BackendOptions {
                use_env: false,
                reuse_window: Duration::from_millis(100),
                ..sync_s3::BackendOptions::default()
            },
        )
        .unwrap(),
    );
    let mut w = Workbench::new(b.clone());
    w.write("kept.txt", b"kept");
    w.sync().await;
    // 3,000 unreferenced nodes (well-formed names, nothing names them).
    for i in 0..3_000u32 {
        let id = blake3::hash(&i.to_le_bytes()).to_hex().to_string();
        inner
            .put(
                &key(&b, &format!("trees/{}/{id}", &id[..2])),
                PutPayload::from_static(b"garbage"),
            )
            .await
            .unwrap();
    }
    let trees = || async {
        let all: Vec<_> = inner
            .list(Some(&key(&b, "trees")))
            .try_collect()
            .await
            .unwrap();
        all.len()
    };
    let before = trees().await;
    let mut options = grace(Duration::ZERO);
    options.lease_ttl = Duration::from_secs(30);
    let task = {
        let (b, options) = (b.clone(), options.clone());
        tokio::spawn(async move { b.prune(&options).await })
    };
    while trees().await > before - 100 {
        assert!(
            !task.is_finished(),
            "prune finished before it could be stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;
    let left = trees().await;
    assert!(
        left > 100,
        "prune was not stopped midway ({left} nodes left)"
    );

    let check = b.check(&CheckOptions::new(ReadData::All)).await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    let started = std::time::Instant::now();
    let done = loop {
        match b.prune(&options).await {
            Ok(done) => break done,
            Err(e) if e.to_string().contains("lease") && started.elapsed().as_secs() < 20 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(done.objects_deleted as usize >= left - 2, "{done:?}");
    assert!(trees().await <= 2, "garbage left after the second prune");
    let dest = w.restore_new("after").await;
    w.assert_same(&dest);
}
