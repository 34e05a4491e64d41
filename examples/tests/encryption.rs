//! Client-side encryption through the binary (issue 17 item 4):
//! `--encryption-key-file` on every command that opens a remote, `tether key
//! generate|list|add|remove`, exit 2 for a wrong or missing key, and no
//! plaintext name or content (and no key) anywhere it must not be: the
//! store, logs, errors, `/metrics`, the state directory. On `file://`, and
//! on the test bed's SeaweedFS when it is configured (skipped otherwise
//! unless TETHER_TESTBED=1).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use sync_core::testkit::testbed_var;

const LIMIT: Duration = Duration::from_secs(60);
/// A file name and a content string that must never be readable in an
/// encrypted store.
const SECRET_NAME: &str = "quarterly-layoffs-plan.txt";
const SECRET_TEXT: &str = "the merger closes on the ninth of march";

/// `tether key generate -o NAME` in the sandbox; returns the key's text.
fn generate(sb: &Sandbox, name: &str) -> String {
    let out = sb.run(&["key", "generate", "-o", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(sb.path(name)).unwrap();
    assert!(text.starts_with("tether-key-1:"), "{text}");
    // The key is in the file and nowhere on the terminal.
    assert!(!stdout(&out).contains(text.trim()) && !stderr(&out).contains(text.trim()));
    text.trim().to_owned()
}

fn write_tree(sb: &Sandbox) {
    fs::create_dir_all(sb.path("w/plans")).unwrap();
    fs::write(sb.path("w/plans").join(SECRET_NAME), SECRET_TEXT).unwrap();
    fs::write(sb.path("w/readme.md"), "# notes\n").unwrap();
}

/// Every byte of every file under `dir`, one blob per file.
fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for entry in walk(dir) {
        out.push((entry.display().to_string(), fs::read(&entry).unwrap()));
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asserts no output of `outs` shows `secret`.
fn never_printed(outs: &[&Output], secret: &str) {
    for o in outs {
        assert!(!stdout(o).contains(secret), "stdout shows the key");
        assert!(!stderr(o).contains(secret), "stderr shows the key");
    }
}

fn expect_refused(out: &Output, want: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    assert!(
        stderr(out).contains(want),
        "{:?} lacks {want:?}",
        stderr(out)
    );
}

#[test]
fn encrypted_round_trip_and_every_refusal_on_file_store() {
    let sb = Sandbox::new();
    let key = generate(&sb, "key");
    let wrong = generate(&sb, "wrong");
    write_tree(&sb);
    // compression=off: nothing but encryption stands between the content
    // and the store's bytes.
    let url = sb.url("store") + "?compression=off";
    let with_key = |args: &[&str]| {
        sb.tether()
            .env("TETHER_LOG", "debug")
            .env("TETHER_ENCRYPTION_KEY_FILE", sb.path("key"))
            .args(args)
            .output()
            .unwrap()
    };

    let pushed = with_key(&["sync", "w", "--to", &url, "--once"]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let restored = with_key(&["restore", "r", "--from", &url]);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(tree(&sb.path("r")), tree(&sb.path("w")));
    // The other reading commands take the key too.
    let history = with_key(&["history", "--from", &url]);
    assert!(history.status.success(), "{}", stderr(&history));
    assert_eq!(stdout(&history).lines().count(), 2, "{}", stdout(&history));
    let rel = format!("plans/{SECRET_NAME}");
    let cat = with_key(&["cat", &rel, "--from", &url]);
    assert!(cat.status.success(), "{}", stderr(&cat));
    assert_eq!(stdout(&cat), SECRET_TEXT);
    let ls = with_key(&["ls", "-R", "--from", &url]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert!(stdout(&ls).contains(SECRET_NAME), "{}", stdout(&ls));

    // No key for an encrypted repository: exit 2, saying what to give.
    for args in [
        vec!["restore", "r2", "--from", &url],
        vec!["history", "--from", &url],
        vec!["ls", "--from", &url],
        vec!["cat", &rel, "--from", &url],
    ] {
        let out = sb.run(&args);
        expect_refused(&out, "--encryption-key-file");
        assert!(stderr(&out).contains("encrypted"), "{}", stderr(&out));
    }
    assert!(!sb.path("r2").join("plans").exists());
    // A wrong key: exit 2, saying so; a push with it writes nothing.
    let wrong_key = |args: &[&str]| {
        sb.tether()
            .arg("--log-level")
            .arg("debug")
            .args(args)
            .arg("--encryption-key-file")
            .arg(sb.path("wrong"))
            .output()
            .unwrap()
    };
    let out = wrong_key(&["restore", "r3", "--from", &url]);
    expect_refused(&out, "the key does not open this repository");
    assert!(!sb.path("r3").join("plans").exists());
    fs::write(sb.path("w/readme.md"), "# notes, edited\n").unwrap();
    let before = all_files(&sb.path("store")).len();
    let out = wrong_key(&["sync", "w", "--to", &url, "--once", "--state-dir", "s2"]);
    expect_refused(&out, "the key does not open this repository");
    assert_eq!(all_files(&sb.path("store")).len(), before);
    // An empty key file and a damaged generated key are refused too.
    fs::write(sb.path("empty"), "").unwrap();
    let out = sb.run(&[
        "restore",
        "r4",
        "--from",
        &url,
        "--encryption-key-file",
        "empty",
    ]);
    expect_refused(&out, "empty");
    fs::write(sb.path("damaged"), format!("{}\r\n", &key[..40])).unwrap();
    let out = sb.run(&[
        "restore",
        "r4",
        "--from",
        &url,
        "--encryption-key-file",
        "damaged",
    ]);
    expect_refused(&out, "tether-key-1:");
    let out = sb.run(&[
        "restore",
        "r4",
        "--from",
        &url,
        "--encryption-key-file",
        "missing",
    ]);
    expect_refused(&out, "cannot read encryption key file");

    // Nothing in the store reveals the file's name or content.
    let stored = all_files(&sb.path("store"));
    assert!(stored.len() > 4, "{stored:?}");
    for (path, bytes) in &stored {
        assert!(
            !path.contains(SECRET_NAME) && !path.contains("plans"),
            "{path}"
        );
        for needle in [SECRET_NAME, SECRET_TEXT, "readme.md", "# notes"] {
            assert!(!contains(bytes, needle), "{path} holds {needle:?}");
        }
        assert!(
            !contains(bytes, &key) && !contains(bytes, &key[13..]),
            "{path} holds the key"
        );
    }
    // Nor does anything the commands printed or kept hold the key.
    never_printed(&[&pushed, &restored, &history, &cat, &ls], &key[13..]);
    for (path, bytes) in all_files(&sb.path("home"))
        .iter()
        .chain(&all_files(&sb.path("s2")))
    {
        assert!(!contains(bytes, &key[13..]), "{path} holds the key");
        assert!(!contains(bytes, &wrong[13..]), "{path} holds the wrong key");
    }
}

/// The same scan on a plaintext repository finds the name and the
/// content: the scan above can fail.
#[test]
fn a_plaintext_store_shows_what_an_encrypted_one_hides() {
    let sb = Sandbox::new();
    write_tree(&sb);
    let url = sb.url("store") + "?compression=off";
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = all_files(&sb.path("store"));
    assert!(stored.iter().any(|(_, b)| contains(b, SECRET_TEXT)));
    assert!(stored.iter().any(|(_, b)| contains(b, SECRET_NAME)));

    // A key for a plaintext repository is refused, not ignored.
    generate(&sb, "key");
    let out = sb.run(&[
        "restore",
        "r",
        "--from",
        &url,
        "--encryption-key-file",
        "key",
    ]);
    expect_refused(&out, "not encrypted");
    fs::write(sb.path("w/new.txt"), "x").unwrap();
    let out = sb.run(&[
        "sync",
        "w",
        "--to",
        &url,
        "--once",
        "--encryption-key-file",
        "key",
    ]);
    expect_refused(&out, "not encrypted");
    let out = sb.run(&["key", "list", "--from", &url]);
    expect_refused(&out, "not encrypted");
    // The mirror layout and git remotes are never encrypted: refused.
    let mirror = sb.url("mirror") + "?layout=mirror";
    let out = sb.run(&[
        "sync",
        "w",
        "--to",
        &mirror,
        "--once",
        "--encryption-key-file",
        "key",
    ]);
    expect_refused(&out, "mirror layout");
    assert!(!sb.path("mirror").exists());
    let git = sb.url("repo.git");
    let out = sb.run(&[
        "restore",
        "g",
        "--from",
        &git,
        "--encryption-key-file",
        "key",
    ]);
    expect_refused(&out, "tether does not encrypt git remotes");
}

#[test]
fn rotation_adds_a_key_removes_the_old_one_and_lists_no_secret() {
    let sb = Sandbox::new();
    let old = generate(&sb, "old");
    let new = generate(&sb, "new");
    write_tree(&sb);
    let url = sb.url("store");
    let out = sb.run(&[
        "sync",
        "w",
        "--to",
        &url,
        "--once",
        "--encryption-key-file",
        "old",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let list = |key: Option<&str>| {
        let mut args = vec!["key", "list", "--from", &url];
        if let Some(k) = key {
            args.extend(["--encryption-key-file", k]);
        }
        sb.run(&args)
    };
    let listed = list(Some("old"));
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert_eq!(
        text.lines().filter(|l| l.contains("generated")).count(),
        1,
        "{text}"
    );
    let old_id = text
        .lines()
        .find(|l| l.starts_with('*'))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    assert_eq!(old_id.len(), 16, "{text}");

    // Adding needs the current key; a wrong current key is exit 2.
    let out = sb.run(&["key", "add", "--from", &url, "--new-key-file", "new"]);
    expect_refused(&out, "--encryption-key-file");
    let out = sb.run(&[
        "key",
        "add",
        "--from",
        &url,
        "--new-key-file",
        "old",
        "--encryption-key-file",
        "new",
    ]);
    expect_refused(&out, "the key does not open this repository");
    let added = sb.run(&[
        "key",
        "add",
        "--from",
        &url,
        "--encryption-key-file",
        "old",
        "--new-key-file",
        "new",
        "--label",
        "alice's laptop",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let new_id = stdout(&added).split_whitespace().nth(3).unwrap().to_owned();
    assert_eq!(new_id.len(), 16, "{}", stdout(&added));

    // Both open it; the list marks the slot of the key given.
    let listed_new = list(Some("new"));
    let text = stdout(&listed_new);
    assert!(text.contains("alice's laptop"), "{text}");
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains(&new_id), "{text}");
    let keyless = list(None);
    assert!(keyless.status.success(), "{}", stderr(&keyless));
    assert_eq!(
        stdout(&keyless)
            .lines()
            .filter(|l| l.contains("generated"))
            .count(),
        2
    );

    // The slot that opened the repository needs --force; the old slot is
    // removed with the new key.
    let out = sb.run(&[
        "key",
        "remove",
        "--from",
        &url,
        &old_id,
        "--encryption-key-file",
        "old",
    ]);
    expect_refused(&out, "--force");
    let removed = sb.run(&[
        "key",
        "remove",
        "--from",
        &url,
        &old_id,
        "--encryption-key-file",
        "new",
    ]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(
        stdout(&removed).contains("re-encrypted"),
        "{}",
        stdout(&removed)
    );
    // The last slot is never removed.
    let out = sb.run(&[
        "key",
        "remove",
        "--from",
        &url,
        &new_id,
        "--force",
        "--encryption-key-file",
        "new",
    ]);
    expect_refused(&out, "the only one");

    // The new key restores; the old one is refused.
    let out = sb.run(&[
        "restore",
        "r",
        "--from",
        &url,
        "--encryption-key-file",
        "new",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("r")), tree(&sb.path("w")));
    let out = sb.run(&[
        "restore",
        "r2",
        "--from",
        &url,
        "--encryption-key-file",
        "old",
    ]);
    expect_refused(&out, "the key does not open this repository");

    // No listing or message carries a secret.
    never_printed(
        &[&listed, &listed_new, &keyless, &added, &removed],
        &old[13..],
    );
    never_printed(
        &[&listed, &listed_new, &keyless, &added, &removed],
        &new[13..],
    );
    for (path, bytes) in all_files(&sb.path("store")) {
        assert!(
            !contains(&bytes, &old[13..]) && !contains(&bytes, &new[13..]),
            "{path}"
        );
    }
}

#[test]
fn key_generate_writes_a_private_file_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let sb = Sandbox::new();
    let key = generate(&sb, "k");
    let mode = fs::metadata(sb.path("k")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = sb.run(&["key", "generate", "--output", "k"]);
    expect_refused(&out, "refusing to overwrite");
    assert_eq!(fs::read_to_string(sb.path("k")).unwrap().trim(), key);
    // To stdout: one key line, a fresh one each time.
    let a = sb.run(&["key", "generate"]);
    let b = sb.run(&["key", "generate"]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(stdout(&a).len(), "tether-key-1:".len() + 43 + 1);
    assert_ne!(stdout(&a), stdout(&b));
}

/// The key never shows in `/metrics` or the sidecar's logs.
#[test]
fn the_sidecar_keeps_the_key_out_of_metrics_and_logs() {
    let sb = Sandbox::new();
    let key = generate(&sb, "key");
    write_tree(&sb);
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let url = sb.url("store");
    let mut child = sb
        .tether()
        .env("TETHER_ENCRYPTION_KEY_FILE", sb.path("key"))
        .env("TETHER_LOG", "debug")
        .args([
            "sync",
            "w",
            "--to",
            &url,
            "--http-bind",
            &bind,
            "--debounce",
            "100ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = wait_for("the first push", LIMIT, || {
        let (_, text) = http_get(port, "/metrics")?;
        (metric(&text, "tether_files_pushed_total")? >= 2.0).then_some(text)
    });
    sigterm(&child);
    let (code, logs) = wait_exit(&mut child, LIMIT);
    assert_eq!(code, 0, "{logs}");
    assert!(!metrics.contains(&key[13..]), "{metrics}");
    assert!(!logs.contains(&key[13..]), "the logs show the key");
    let out = sb.run(&[
        "restore",
        "r",
        "--from",
        &url,
        "--encryption-key-file",
        "key",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("r")), tree(&sb.path("w")));
}

#[test]
fn s3_encrypted_round_trip_and_wrong_key() {
    let (Some(endpoint), Some(access), Some(secret), Some(bucket)) = (
        testbed_var("TETHER_TEST_S3_ENDPOINT"),
        testbed_var("TETHER_TEST_S3_ACCESS_KEY"),
        testbed_var("TETHER_TEST_S3_SECRET_KEY"),
        testbed_var("TETHER_TEST_S3_BUCKET"),
    ) else {
        return;
    };
    let sb = Sandbox::new();
    let key = generate(&sb, "key");
    generate(&sb, "other");
    write_tree(&sb);
    let prefix = format!(
        "encryption-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}&allow_http=true&compression=off");
    let s3 = |args: &[&str]| {
        sb.tether()
            .env("AWS_ACCESS_KEY_ID", &access)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_REGION", "us-east-1")
            .args(args)
            .output()
            .unwrap()
    };
    let out = s3(&[
        "sync",
        "w",
        "--to",
        &url,
        "--once",
        "--encryption-key-file",
        "key",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s3(&[
        "restore",
        "r",
        "--from",
        &url,
        "--encryption-key-file",
        "key",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&sb.path("r")), tree(&sb.path("w")));
    let out = s3(&[
        "restore",
        "r2",
        "--from",
        &url,
        "--encryption-key-file",
        "other",
    ]);
    expect_refused(&out, "the key does not open this repository");
    let out = s3(&["restore", "r3", "--from", &url]);
    expect_refused(&out, "--encryption-key-file");
    // Rotation against the real server.
    let out = s3(&[
        "key",
        "add",
        "--from",
        &url,
        "--encryption-key-file",
        "key",
        "--new-key-file",
        "other",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s3(&[
        "key",
        "list",
        "--from",
        &url,
        "--encryption-key-file",
        "other",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains("generated"))
            .count(),
        2
    );
    assert!(!stdout(&out).contains(&key[13..]));
    let out = s3(&[
        "restore",
        "r4",
        "--from",
        &url,
        "--encryption-key-file",
        "other",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}
