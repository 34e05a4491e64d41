//! Names from a remote that carry newlines and terminal escapes (issue 12,
//! item 10) reach stderr escaped, in text logs and in the `tether: …` error
//! line: no raw ESC, no line that a remote name started.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use sync_core::{ContentHash, FileMeta, Meta};

const EVIL: &str = "sub\n2026-01-01T00:00:00Z ERROR forged\x1b[31mred\x1b]0;title\x07";
/// In a log line, as escaped by the text formatter.
const ESCAPED: &str = "sub\\n2026-01-01T00:00:00Z ERROR forged\\x1b[31mred\\x1b]0;title\\x07";
/// In the `tether: …` line, which joins the lines of a message with `; `.
const ONE_LINE: &str = "sub; 2026-01-01T00:00:00Z ERROR forged\\x1b[31mred\\x1b]0;title\\x07";

/// Every line of stderr is a log line (timestamp first) or the error line;
/// no raw control character but the newlines between lines.
fn assert_clean(out: &Output, escaped: &str) {
    let err = stderr(out);
    assert!(err.contains(escaped), "the name is shown escaped: {err:?}");
    for line in err.lines() {
        assert!(
            line.starts_with("tether: ") || line.starts_with(|c: char| c.is_ascii_digit()),
            "a line a remote name started: {line:?} in {err:?}"
        );
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "a forged line: {err:?}"
        );
        assert!(
            !line.chars().any(char::is_control),
            "raw control in {line:?}"
        );
    }
}

fn git(args: &[&str], dir: &std::path::Path, input: Option<&[u8]>) -> String {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_git_tree_name_with_escapes_is_logged_escaped() {
    let sb = Sandbox::new();
    let bare = sb.path("evil.git");
    std::fs::create_dir(&bare).unwrap();
    git(&["init", "-q", "--bare", "-b", "main"], &bare, None);
    let blob = git(&["hash-object", "-w", "--stdin"], &bare, Some(b"hello\n"));
    // A submodule entry (skipped by restore with a warning naming it) and a file.
    let listing = format!(
        "160000 commit 0123456789abcdef0123456789abcdef01234567\t{EVIL}\0100644 blob {blob}\tok.txt\0"
    );
    let tree = git(&["mktree", "-z"], &bare, Some(listing.as_bytes()));
    let commit = git(&["commit-tree", &tree, "-m", "evil"], &bare, None);
    git(&["update-ref", "refs/heads/main", &commit], &bare, None);

    let url = format!("file://{}", bare.display());
    let out = sb.run(&["restore", "out", "--from", &url, "--log-format", "text"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(sb.path("out/ok.txt")).unwrap(), b"hello\n");
    assert_clean(&out, ESCAPED);
}

#[test]
fn a_snapshot_path_with_escapes_is_reported_escaped() {
    let sb = Sandbox::new();
    let remote = sb.path("remote");
    // A snapshot whose one file (named EVIL) lives in a pack that is missing:
    // the restore fails with an error naming the file.
    let content = b"abc";
    let meta = Meta::File(FileMeta {
        size: 3,
        mtime_ns: 0,
        mode: 0o644,
        hash: ContentHash::of(content),
    });
    with_file_backend(&remote, |b| async move {
        sync_s3::testing::plant_snapshot(
            &b,
            vec![(EVIL.into(), meta, Some(bytes::Bytes::from_static(content)))],
            1,
        )
        .await
        .unwrap();
    });
    std::fs::remove_dir_all(remote.join("data")).unwrap();

    let out = sb.run(&[
        "restore",
        "out",
        "--from",
        &sb.url("remote"),
        "--log-format",
        "text",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert_clean(&out, ONE_LINE);
}
