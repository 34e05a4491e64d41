//! Remote data the binary prints must never make it panic: a snapshot (and
//! head) whose time is `u64::MAX` milliseconds, or before the epoch's
//! representable range, still lists with `tether history` (exit 0) and
//! restores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;

use common::{Sandbox, stderr, stdout, with_file_backend};

/// Sets the snapshot's and the head's time to `value` (records are
/// compressed, so through the repository's own codecs).
fn set_all_times(store: &std::path::Path, value: u64) {
    with_file_backend(store, |b| async move {
        use sync_core::Backend;
        let id = b.head().await.unwrap().unwrap().id;
        sync_s3::testing::set_times(&b, &id, value).await.unwrap();
    });
}

#[test]
fn history_and_restore_survive_any_snapshot_time() {
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("a.txt"), "a").unwrap();
    let store = sb.url("store");
    let out = sb.run(&["sync", "work", "--to", &store, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    for value in [u64::MAX, 253_402_300_800_000, 0] {
        set_all_times(&sb.path("store"), value);
        let hist = sb.run(&["history", "--from", &store]);
        assert_eq!(
            hist.status.code(),
            Some(0),
            "time {value}: {}{}",
            stdout(&hist),
            stderr(&hist)
        );
        assert_eq!(stdout(&hist).lines().count(), 2, "{}", stdout(&hist));
        let dest = format!("copy-{value}");
        let out = sb.run(&["restore", &dest, "--from", &store]);
        assert!(out.status.success(), "time {value}: {}", stderr(&out));
        assert_eq!(
            fs::read_to_string(sb.path(&dest).join("a.txt")).unwrap(),
            "a"
        );
    }
}
