//! Issue 16: `tether restore --as-copy` (a copy beside the original, never
//! overwriting) and `tether diff --local DIR` (a checkpoint against the
//! directory), on the snapshots layout and on git.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// The id of the `n`th newest checkpoint (`tether history`).
fn nth_id(sb: &Sandbox, url: &str, extra: &[&str], n: usize) -> String {
    let mut args = vec!["history", "--from", url];
    args.extend(extra);
    let out = sb.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .nth(n + 1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The remotes to test: a snapshots store and, when `git` is installed, a
/// bare repository. Each with the flags its reading commands need.
fn remotes(sb: &Sandbox) -> Vec<(String, Vec<&'static str>)> {
    let mut out = vec![(sb.url("store"), vec![])];
    let git = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(sb.path("r.git"))
        .status()
        .is_ok_and(|s| s.success());
    if git {
        out.push((sb.url("r.git"), vec!["--state-dir", "h"]));
    }
    out
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn restore_as_copy_writes_beside_the_original_and_never_overwrites() {
    let sb0 = Sandbox::new();
    for (url, extra) in remotes(&sb0) {
        let sb = Sandbox::new();
        let url = url.replace(
            &sb0.root.path().display().to_string(),
            &sb.root.path().display().to_string(),
        );
        if url.ends_with(".git") {
            std::process::Command::new("git")
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(sb.path("r.git"))
                .status()
                .unwrap();
        }
        let w = sb.path("w");
        std::fs::create_dir_all(w.join("nb/data")).unwrap();
        std::fs::write(w.join("nb/a.ipynb"), "version 1").unwrap();
        std::fs::write(w.join("nb/data/x.csv"), "1,2").unwrap();
        std::fs::write(w.join(".bashrc"), "rc").unwrap();
        let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let first = nth_id(&sb, &url, &extra, 0);
        std::fs::write(w.join("nb/a.ipynb"), "version 2, broken").unwrap();
        let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));

        let restore = |more: &[&str]| {
            let mut args = vec!["restore", "w", "--from", &url, "--at", &first, "--as-copy"];
            args.extend(extra.iter().copied());
            args.extend(more);
            sb.run(&args)
        };
        let out = restore(&["--path", "nb/a.ipynb", "--path", ".bashrc"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let said = stdout(&out);
        assert!(said.contains("restored nb/a.ipynb as "), "{said}");
        assert!(said.contains("nothing was replaced"), "{said}");
        // The original is untouched; the copy is named after the
        // checkpoint's time, with the extension kept.
        assert_eq!(
            std::fs::read_to_string(w.join("nb/a.ipynb")).unwrap(),
            "version 2, broken"
        );
        let nb = names(&w.join("nb"));
        assert_eq!(nb.len(), 3, "{url}: {nb:?}");
        let copy = nb.iter().find(|n| n.starts_with("a (tether ")).unwrap();
        assert!(copy.ends_with(").ipynb"), "{copy}");
        let stamp = &copy["a (tether ".len()..copy.len() - ").ipynb".len()];
        assert_eq!(stamp.len(), "2026-12-01 05:40".len(), "{copy}");
        assert_eq!(
            std::fs::read_to_string(w.join("nb").join(copy)).unwrap(),
            "version 1"
        );
        assert!(
            names(&w).iter().any(|n| n.starts_with(".bashrc (tether ")),
            "{:?}",
            names(&w)
        );

        // Again: a second copy under a numbered name, the first untouched.
        std::fs::write(w.join("nb").join(copy), "edited copy").unwrap();
        let out = restore(&["--path", "nb/a.ipynb"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let nb2 = names(&w.join("nb"));
        assert_eq!(nb2.len(), 4, "{nb2:?}");
        assert!(nb2.iter().any(|n| n.ends_with(", 2).ipynb")), "{nb2:?}");
        assert_eq!(
            std::fs::read_to_string(w.join("nb").join(copy)).unwrap(),
            "edited copy"
        );

        // A folder comes back whole under a new name.
        let out = restore(&["--path", "nb/data"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let data = names(&w.join("nb"))
            .into_iter()
            .find(|n| n.starts_with("data (tether "))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(w.join("nb").join(&data).join("x.csv")).unwrap(),
            "1,2"
        );
        // No staging directory is left behind.
        assert!(
            !names(&w).iter().any(|n| n.starts_with(".tether-restore-")),
            "{:?}",
            names(&w)
        );

        // Mistakes: a missing path (exit 1), --as-copy without --path (2).
        let out = restore(&["--path", "nope.txt"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("no path nope.txt"),
            "{}",
            stderr(&out)
        );
        let out = sb.run(&["restore", "w", "--from", &url, "--as-copy"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
}

#[test]
fn restore_as_copy_works_while_sync_holds_the_directory() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("a.txt"), "one").unwrap();
    let url = sb.url("store");
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn(&sb, &["sync", "w", "--to", &url, "--http-bind", &addr]);
    wait_for("readiness", std::time::Duration::from_secs(60), || {
        http_get(port.parse().unwrap(), "/readyz").filter(|(c, _)| *c == 200)
    });
    let out = sb.run(&[
        "restore",
        "w",
        "--from",
        &url,
        "--as-copy",
        "--path",
        "a.txt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = names(&w)
        .into_iter()
        .find(|n| n.starts_with("a (tether "))
        .unwrap();
    assert_eq!(std::fs::read_to_string(w.join(copy)).unwrap(), "one");
    sigterm(&child);
    let (code, err) = wait_exit(&mut child, std::time::Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn diff_local_compares_a_checkpoint_with_the_directory() {
    let sb0 = Sandbox::new();
    for (url, extra) in remotes(&sb0) {
        let sb = Sandbox::new();
        let url = url.replace(
            &sb0.root.path().display().to_string(),
            &sb.root.path().display().to_string(),
        );
        if url.ends_with(".git") {
            std::process::Command::new("git")
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(sb.path("r.git"))
                .status()
                .unwrap();
        }
        let w = sb.path("w");
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebook/tests/fixtures");
        std::fs::create_dir_all(w.join("sub")).unwrap();
        std::fs::copy(fixtures.join("analysis-v1.ipynb"), w.join("analysis.ipynb")).unwrap();
        std::fs::write(w.join("sub/same.txt"), "same").unwrap();
        std::fs::write(w.join("sub/edit.txt"), "abcd").unwrap();
        std::fs::write(w.join("gone.txt"), "bye").unwrap();
        let out = sb.run(&["sync", "w", "--to", &url, "--state-dir", "s", "--once"]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));

        let diff = |more: &[&str]| {
            let mut args = vec!["diff", "--from", &url, "--local", "w"];
            args.extend(extra.iter().copied());
            args.extend(more);
            sb.run(&args)
        };
        let out = diff(&[]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        assert!(
            stdout(&out)
                .trim_end()
                .ends_with("0 added, 0 modified, 0 deleted"),
            "{url}: {}",
            stdout(&out)
        );

        // Same size, other bytes; a notebook edited; a file added, one
        // deleted; Jupyter's checkpoints (ignored by sync) not reported.
        std::fs::write(w.join("sub/edit.txt"), "abce").unwrap();
        std::fs::copy(fixtures.join("analysis-v2.ipynb"), w.join("analysis.ipynb")).unwrap();
        std::fs::write(w.join("new.csv"), "a,b").unwrap();
        std::fs::remove_file(w.join("gone.txt")).unwrap();
        std::fs::create_dir_all(w.join(".ipynb_checkpoints")).unwrap();
        std::fs::write(w.join(".ipynb_checkpoints/x-checkpoint.ipynb"), "{}").unwrap();
        let out = diff(&[]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let d = stdout(&out);
        assert!(d.contains("A  new.csv  (3 B)"), "{url}: {d}");
        assert!(d.contains("D  gone.txt  (3 B)"), "{url}: {d}");
        assert!(d.contains("M  sub/edit.txt  (4 B → 4 B)"), "{url}: {d}");
        assert!(!d.contains("same.txt"), "{url}: {d}");
        assert!(!d.contains("ipynb_checkpoints"), "{url}: {d}");
        assert!(d.contains("cell 6 (markdown) added:"), "{url}: {d}");
        assert!(
            d.trim_end().ends_with("1 added, 2 modified, 1 deleted"),
            "{url}: {d}"
        );
        // --path names one file: its lines.
        let out = diff(&["--path", "sub/edit.txt"]);
        let d = stdout(&out);
        assert!(d.contains("   -abcd\n   +abce\n"), "{url}: {d}");
        // Two ids with --local: a usage error.
        let id = nth_id(&sb, &url, &extra, 0);
        let out = diff(&[&id, &id]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
}
