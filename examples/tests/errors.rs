//! Each bad input gives one `tether: …` line naming the problem and the
//! documented exit code (2 usage/configuration, 1 runtime), never a panic.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn check(sb: &Sandbox, args: &[&str], code: i32, needle: &str) {
    let out = sb.run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("tether: "), "{args:?}: {err}");
    assert!(
        last.contains(needle),
        "{args:?}: expected {needle:?} in {last:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_inputs_give_one_line_and_the_right_exit_code() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("w")).unwrap();
    std::fs::write(sb.path("w/f"), "x").unwrap();
    std::fs::write(sb.path("known_hosts"), "").unwrap();
    let kh = sb.path("known_hosts").display().to_string();
    let dead = free_port();

    // Usage and configuration: exit 2.
    check(
        &sb,
        &["sync", "w", "--to", "ftp://host/x"],
        2,
        "unsupported remote scheme \"ftp\"",
    );
    check(
        &sb,
        &["sync", "w", "--to", "s3:///no-bucket"],
        2,
        "missing bucket name",
    );
    check(
        &sb,
        &["sync", "w", "--to", "s3://b/p?secret_access_key=x"],
        2,
        "credential",
    );
    check(
        &sb,
        &["sync", "w", "--to", "s3://bucket/prefix"],
        2,
        "no S3 credentials",
    );
    check(
        &sb,
        &[
            "sync",
            "w",
            "--to",
            "ssh://git@127.0.0.1/x.git",
            "--ssh-known-hosts-file",
            &kh,
            "--ssh-key-file",
            "/nonexistent/id_ed25519",
        ],
        2,
        "cannot read ssh key file /nonexistent/id_ed25519",
    );
    check(
        &sb,
        &["sync", "w", "--to", "ssh://git@127.0.0.1/x.git"],
        2,
        "known_hosts",
    );
    check(
        &sb,
        &[
            "restore",
            "r",
            "--from",
            "https://127.0.0.1/x.git",
            "--token-file",
            "/nonexistent/token",
        ],
        2,
        "cannot read token file /nonexistent/token",
    );
    check(&sb, &["sync", "w", "--grace", "soon"], 2, "--grace");
    check(&sb, &["history"], 2, "--from");
    check(
        &sb,
        &["sync", "w", "--log-level", "=[nope"],
        2,
        "--log-level",
    );
    check(
        &sb,
        &["history", "--from", &sb.url("mirror?layout=mirror")],
        2,
        "does not support history",
    );

    // Runtime: exit 1.
    let unreachable = format!("git://127.0.0.1:{dead}/x.git");
    check(
        &sb,
        &["restore", "r", "--from", &unreachable],
        1,
        &format!("127.0.0.1:{dead}"),
    );
    check(
        &sb,
        &["sync", "w", "--to", &unreachable, "--once", "--grace", "1s"],
        1,
        "not saved within 1s: f",
    );
}

#[test]
fn secrets_in_the_environment_never_reach_the_output() {
    let sb = Sandbox::new();
    let out = sb
        .tether()
        .env("AWS_ACCESS_KEY_ID", "AKIDSECRETVALUE")
        .args(["restore", "r", "--from", "s3://bucket/p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("AWS_SECRET_ACCESS_KEY is set")
            || stderr(&out).contains("AWS_SECRET_ACCESS_KEY")
    );
    assert!(!stderr(&out).contains("AKIDSECRETVALUE"));
}

#[test]
fn help_and_version_exit_zero() {
    let sb = Sandbox::new();
    let out = sb.run(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("sync"));
    let out = sb.run(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("tether "));
}

/// Issue 14 item 6: every `--help` is plain text — no control or
/// invisible characters (a zero-width space slipped into `sync --help`) —
/// and lists only flags that do something there.
#[test]
fn every_help_is_plain_and_lists_only_its_own_flags() {
    let sb = Sandbox::new();
    let commands: &[&[&str]] = &[
        &[],
        &["sync"],
        &["restore"],
        &["history"],
        &["certs"],
        &["certs", "create"],
        &["certs", "patch"],
        &["certs", "show"],
        &["webhook"],
        &["manifests"],
        &["manifests", "sidecar"],
        &["manifests", "webhook"],
        &["manifests", "inject"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = sb.run(&args);
        let text = stdout(&out);
        if !out.status.success() {
            // (A subcommand this build does not have.)
            assert!(stderr(&out).contains("unrecognized subcommand"), "{args:?}");
            continue;
        }
        for c in text.chars() {
            let plain = c == '\n'
                || (!c.is_control()
                    && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'));
            assert!(plain, "{args:?}: invisible or control character {c:?}");
        }
    }
    for cmd in ["restore", "history"] {
        let text = stdout(&sb.run(&[cmd, "--help"]));
        assert!(!text.contains("--git-author"), "{cmd} --help: {text}");
    }
    assert!(stdout(&sb.run(&["sync", "--help"])).contains("--git-author-name"));
}

/// Issue 14 item 2: errors that retrying will not fix — a missing bucket,
/// rejected credentials, a plain-HTTP endpoint without `allow_http`, a git
/// repository that does not exist — make `sync --once`, `restore` and
/// `history` exit 2 at once with one line saying what to change (no raw
/// XML, no object_store internals); the sidecar keeps running, reports it
/// in `/metrics` and logs it once.
#[test]
fn permanent_remote_errors_exit_2_at_once_and_the_sidecar_reports_them() {
    use std::time::{Duration, Instant};
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("w")).unwrap();
    std::fs::write(sb.path("w/notes.txt"), "x").unwrap();
    // (URL, environment, what the one line must say)
    type Case<'a> = (String, Vec<(&'a str, String)>, &'a str);
    let mut cases: Vec<Case> = vec![(sb.url("missing.git"), vec![], "repository not found")];
    let s3 = (
        sync_core::testkit::testbed_var("TETHER_TEST_S3_ENDPOINT"),
        sync_core::testkit::testbed_var("TETHER_TEST_S3_ACCESS_KEY"),
        sync_core::testkit::testbed_var("TETHER_TEST_S3_SECRET_KEY"),
        sync_core::testkit::testbed_var("TETHER_TEST_S3_BUCKET"),
    );
    if let (Some(endpoint), Some(key), Some(secret), Some(bucket)) = s3 {
        let creds = |k: &str, s: &str| {
            vec![
                ("AWS_ACCESS_KEY_ID", k.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", s.to_owned()),
                ("AWS_REGION", "us-east-1".to_owned()),
            ]
        };
        let url = |b: &str, http: bool| {
            format!(
                "s3://{b}/permanent?endpoint={endpoint}{}",
                if http { "&allow_http=true" } else { "" }
            )
        };
        cases.push((
            url("tether-no-such-bucket", true),
            creds(&key, &secret),
            "does not exist (NoSuchBucket): create it",
        ));
        cases.push((
            url(&bucket, true),
            creds(&key, "not-the-secret"),
            "rejected the credentials (SignatureDoesNotMatch)",
        ));
        cases.push((
            url(&bucket, true),
            creds("AKIANOBODY", &secret),
            "rejected the credentials (InvalidAccessKeyId)",
        ));
        cases.push((
            url(&bucket, false),
            creds(&key, &secret),
            "add allow_http=true",
        ));
    }
    for (n, (url, env, needle)) in cases.iter().enumerate() {
        let state = format!("state-{n}");
        let restore_state = format!("state-{n}-restore");
        let dest = format!("dest-{n}");
        for args in [
            vec!["sync", "w", "--to", url, "--state-dir", &state, "--once"],
            vec![
                "restore",
                &dest,
                "--from",
                url,
                "--state-dir",
                &restore_state,
            ],
            vec!["history", "--from", url],
        ] {
            let started = Instant::now();
            let out = sb
                .tether()
                .args(&args)
                .envs(env.iter().map(|(k, v)| (*k, v)))
                .output()
                .unwrap();
            let took = started.elapsed();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
            let last = err.lines().last().unwrap_or("");
            assert!(
                last.starts_with("tether: ") && last.contains(needle),
                "{args:?}: expected {needle:?} in {last:?}"
            );
            for raw in ["<?xml", "<Code>", "Generic S3 error", "Error performing"] {
                assert!(!last.contains(raw), "{args:?}: raw {raw:?} in {last:?}");
            }
        }
    }
    // The sidecar keeps running and says so in /metrics, logging it once.
    // (The missing bucket when S3 is there, else the missing repository.)
    let (url, env, needle) = &cases[cases.len().min(2) - 1];
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = sb
        .tether()
        .args([
            "sync",
            "w",
            "--to",
            url,
            "--state-dir",
            "state-sidecar",
            "--http-bind",
            &bind,
            "--grace",
            "2s",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "tether_remote_error_permanent 1",
        Duration::from_secs(60),
        || {
            let text = http_get(port, "/metrics")?.1;
            (metric(&text, "tether_remote_error_permanent")? == 1.0).then_some(())
        },
    );
    assert!(child.try_wait().unwrap().is_none(), "the sidecar exited");
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(code, 1, "unsaved changes at exit: {err}");
    let logged = err.matches(*needle).count();
    assert!(
        (1..=2).contains(&logged),
        "the error is logged once (plus the exit line), not per retry: {logged} in {err}"
    );
}

/// Issue 14 item 5: typos get a message that says what was meant, never a
/// silent success.
#[test]
fn typos_are_named_not_silently_accepted() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("w")).unwrap();
    std::fs::write(sb.path("w/notes.txt"), "x").unwrap();
    std::fs::write(sb.path("a-file"), "x").unwrap();
    let store = sb.url("store");
    // A missing parent is not created (`mkdir -p` would make the typo real).
    check(
        &sb,
        &["sync", "typo/deeper/work", "--to", &store, "--once"],
        2,
        "its parent typo/deeper does not exist",
    );
    assert!(!sb.path("typo").exists());
    // ...but the last component is.
    let out = sb.run(&[
        "sync",
        "fresh",
        "--to",
        &store,
        "--state-dir",
        "s0",
        "--once",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sb.path("fresh").is_dir());
    for cmd in ["sync", "restore"] {
        let flag = if cmd == "sync" { "--to" } else { "--from" };
        check(
            &sb,
            &[cmd, "a-file", flag, &store],
            2,
            "is a file, not a directory",
        );
    }
    check(
        &sb,
        &["sync", "w", "--to", "/tmp/some-store"],
        2,
        "is a path, not a remote URL: use file:///tmp/some-store",
    );
    // Push w, then restore into a non-empty directory with --existing fail.
    let out = sb.run(&["sync", "w", "--to", &store, "--state-dir", "s1", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir(sb.path("busy")).unwrap();
    std::fs::write(sb.path("busy/other"), "y").unwrap();
    check(
        &sb,
        &[
            "restore",
            "busy",
            "--from",
            &store,
            "--state-dir",
            "s2",
            "--existing",
            "fail",
        ],
        2,
        "--existing is fail: use --existing keep-newer",
    );
    check(
        &sb,
        &[
            "restore",
            "r",
            "--from",
            &store,
            "--state-dir",
            "s3",
            "--at",
            "0123456789abcdef01234567",
        ],
        2,
        "tether history",
    );
    // history DIR lists the local store `sync DIR` uses by default.
    let out = sb.run(&["sync", "w", "--state-dir", "s4", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.run(&["history", "w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).lines().count() >= 2, "{}", stdout(&out));
    check(&sb, &["history"], 2, "--from URL");
}

/// Issue 14 item 5: git accepts a unique abbreviated commit id.
#[test]
fn git_restore_accepts_an_abbreviated_commit_id() {
    let sb = Sandbox::new();
    let ok = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(sb.path("r.git"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return;
    }
    std::fs::create_dir(sb.path("w")).unwrap();
    std::fs::write(sb.path("w/notes.txt"), "v1").unwrap();
    let url = sb.url("r.git");
    let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history = stdout(&sb.run(&["history", "--from", &url, "--state-dir", "h"]));
    let id = history
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(id.len(), 40, "{history}");
    std::fs::write(sb.path("w/notes.txt"), "v2").unwrap();
    let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.run(&[
        "restore",
        "old",
        "--from",
        &url,
        "--state-dir",
        "r",
        "--at",
        &id[..8],
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sb.path("old/notes.txt")).unwrap(),
        "v1"
    );
    check(
        &sb,
        &[
            "restore",
            "x",
            "--from",
            &url,
            "--state-dir",
            "r2",
            "--at",
            "abc",
        ],
        2,
        "7 to 40 hexadecimal",
    );
}

/// A git tree larger than `max_entries` is refused with the parameter that
/// raises the limit, and the parameter on the git URL does raise it.
#[test]
fn git_max_entries_is_named_and_can_be_raised() {
    let sb = Sandbox::new();
    let ok = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(sb.path("r.git"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return;
    }
    std::fs::create_dir(sb.path("w")).unwrap();
    for i in 0..5 {
        std::fs::write(sb.path(&format!("w/f{i}.txt")), format!("{i}")).unwrap();
    }
    let url = sb.url("r.git");
    let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let small = format!("{url}?max_entries=3");
    let out = sb.run(&["restore", "a", "--from", &small, "--state-dir", "ra"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("?max_entries=N"), "{}", stderr(&out));
    assert!(!sb.path("a/f0.txt").exists());
    let large = format!("{url}?max_entries=100");
    let out = sb.run(&["restore", "b", "--from", &large, "--state-dir", "rb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(sb.path("b/f4.txt")).unwrap(), "4");
}

#[test]
fn a_remote_url_pointed_at_the_wrong_place_is_named() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("w")).unwrap();
    std::fs::write(sb.path("w/f"), "x").unwrap();
    let store = sb.path("store");
    let url = |layout: &str| format!("file://{}?layout={layout}", store.display());
    // A mirror pushed here; a snapshots URL on it is refused by name.
    let out = sb.run(&["sync", "w", "--to", &url("mirror"), "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    check(
        &sb,
        &["restore", "r", "--from", &url("snapshots")],
        2,
        "holds a mirror",
    );
    check(
        &sb,
        &["sync", "w", "--to", &url("snapshots"), "--once"],
        2,
        "holds a mirror",
    );
    assert!(
        !store.join("config").exists(),
        "a refused push wrote a marker"
    );
    // Someone else's files, no marker: refused for snapshots, not "empty".
    let other = sb.path("other");
    std::fs::create_dir_all(other.join("data")).unwrap();
    std::fs::write(other.join("data/x.csv"), "1,2").unwrap();
    let other_url = format!("file://{}", other.display());
    check(
        &sb,
        &["restore", "r2", "--from", &other_url],
        2,
        "no tether repository marker (first keys: data/)",
    );
    // Nothing at all: a fresh location, exit 0, said so.
    let out = sb.run(&[
        "restore",
        "r3",
        "--from",
        &format!("file://{}", sb.path("none").display()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("a fresh location"), "{said}");
}
