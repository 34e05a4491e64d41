//! Getting back one file or folder: `tether cat` and `tether restore --path`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_file_or_folder_comes_back_without_touching_the_rest() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    std::fs::create_dir_all(w.join("notebooks/data")).unwrap();
    std::fs::write(w.join("notebooks/a.ipynb"), "version 1").unwrap();
    std::fs::write(w.join("notebooks/data/x.csv"), "1,2").unwrap();
    std::fs::write(w.join("notes.md"), "notes").unwrap();
    let url = format!("file://{}", sb.path("store").display());
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history = stdout(&sb.run(&["history", "--from", &url]));
    let first = history
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(w.join("notebooks/a.ipynb"), "version 2, broken").unwrap();
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // cat: the newest, or an earlier checkpoint, byte for byte.
    let out = sb.run(&["cat", "notebooks/a.ipynb", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "version 2, broken");
    let out = sb.run(&["cat", "notebooks/a.ipynb", "--from", &url, "--at", &first]);
    assert_eq!(stdout(&out), "version 1", "{}", stderr(&out));

    // restore --path: only the folder, into the live directory.
    std::fs::write(w.join("notes.md"), "local edit").unwrap();
    let out = sb.run(&[
        "restore",
        "w",
        "--from",
        &url,
        "--at",
        &first,
        "--path",
        "notebooks",
        "--existing",
        "overwrite",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.join("notebooks/a.ipynb")).unwrap(),
        "version 1"
    );
    assert_eq!(
        std::fs::read_to_string(w.join("notes.md")).unwrap(),
        "local edit"
    );

    // Mistakes: named, the right exit code, nothing written.
    let out = sb.run(&["cat", "notebooks/missing.ipynb", "--from", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no path notebooks/missing.ipynb in snapshot"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    let out = sb.run(&["cat", "notebooks", "--from", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("notebooks is a directory"),
        "{}",
        stderr(&out)
    );
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
        let out = sb.run(&["cat", bad, "--from", &url]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a path inside the directory"),
            "{}",
            stderr(&out)
        );
        let out = sb.run(&["restore", "r", "--from", &url, "--path", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    let out = sb.run(&["restore", "r2", "--from", &url, "--path", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no path nope"), "{}", stderr(&out));
    assert!(!sb.path("r2/notebooks").exists());
}
