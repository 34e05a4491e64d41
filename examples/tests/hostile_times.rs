//! Remote data the binary prints must never make it panic: a snapshot (and
//! head) whose time is `u64::MAX` milliseconds, or before the epoch's
//! representable range, still lists with `tether history` (exit 0) and
//! restores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;

use common::{Sandbox, stderr, stdout};

/// Replaces the number after every `"time_ms":` in `text` with `value`.
fn set_times(text: &str, value: u64) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"time_ms\":") {
        let (head, tail) = rest.split_at(i + "\"time_ms\":".len());
        out.push_str(head);
        out.push_str(&value.to_string());
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn rewrite_all(dir: &std::path::Path, value: u64) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let text = fs::read_to_string(&p).unwrap();
        fs::write(&p, set_times(&text, value)).unwrap();
    }
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
        rewrite_all(&sb.path("store/snapshots"), value);
        rewrite_all(&sb.path("store/heads"), value);
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
