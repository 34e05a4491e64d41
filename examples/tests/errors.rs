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
