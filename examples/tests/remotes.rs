//! The binary against git (a bare repository, `file://….git`) and a real
//! S3 server (SeaweedFS from scripts/testbed, skipped without it unless
//! TETHER_TESTBED=1).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::Command;

use common::*;

use sync_core::testkit::testbed_var;

#[test]
fn git_bare_repository_round_trip_with_history() {
    let sb = Sandbox::new();
    let bare = sb.path("notes.git");
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let url = format!("file://{}", bare.display());
    fs::create_dir(sb.path("notes")).unwrap();
    fs::write(sb.path("notes/todo.md"), "- write tests\n").unwrap();
    let out = sb.run(&["sync", "notes", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(sb.path("notes/todo.md"), "- write tests\n- ship\n").unwrap();
    let out = sb.run(&["sync", "notes", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let hist = sb.run(&["history", "--from", &url]);
    assert!(hist.status.success(), "{}", stderr(&hist));
    assert_eq!(stdout(&hist).lines().count(), 3, "{}", stdout(&hist));

    let out = sb.run(&["restore", "copy", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("copy")), tree(&sb.path("notes")));
    // the commit is visible to plain git
    let log = Command::new("git")
        .args(["--git-dir"])
        .arg(&bare)
        .args(["log", "--oneline", "main"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 2);
}

#[test]
fn s3_round_trip_with_credentials_from_the_environment() {
    let (Some(endpoint), Some(key), Some(secret), Some(bucket)) = (
        testbed_var("TETHER_TEST_S3_ENDPOINT"),
        testbed_var("TETHER_TEST_S3_ACCESS_KEY"),
        testbed_var("TETHER_TEST_S3_SECRET_KEY"),
        testbed_var("TETHER_TEST_S3_BUCKET"),
    ) else {
        return;
    };
    let sb = Sandbox::new();
    let prefix = format!("cli-{}", std::process::id());
    let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true");
    let s3 = |args: &[&str]| {
        sb.tether()
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_REGION", "us-east-1")
            .args(args)
            .output()
            .unwrap()
    };
    fs::create_dir_all(sb.path("w/sub")).unwrap();
    fs::write(sb.path("w/a.txt"), "alpha").unwrap();
    fs::write(sb.path("w/sub/b.bin"), vec![7u8; 100_000]).unwrap();
    let out = s3(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s3(&["restore", "r", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("r")), tree(&sb.path("w")));
    let hist = s3(&["history", "--from", &url]);
    assert!(hist.status.success(), "{}", stderr(&hist));
    assert_eq!(stdout(&hist).lines().count(), 2, "{}", stdout(&hist));
    // wrong secret: a usage error (exit 2: retrying will not help) naming
    // the remote and what to check, never the secret
    let bad = sb
        .tether()
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
        .args(["restore", "r2", "--from", &url])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("rejected the credentials"),
        "{}",
        stderr(&bad)
    );
    assert!(!stderr(&bad).contains("wrong-secret-value"));
}
