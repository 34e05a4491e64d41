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

#[test]
fn ls_and_diff_show_what_changed_and_notebooks_cell_by_cell() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebook/tests/fixtures");
    std::fs::create_dir_all(w.join("work/sub")).unwrap();
    std::fs::copy(
        fixtures.join("analysis-v1.ipynb"),
        w.join("work/analysis.ipynb"),
    )
    .unwrap();
    std::fs::write(w.join("work/sub/notes.txt"), "line 1\nline 2\n").unwrap();
    std::fs::write(w.join("gone.txt"), "bye").unwrap();
    let url = format!("file://{}", sb.path("store").display());
    let once = |sb: &Sandbox| {
        let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    once(&sb);

    // ls: the top, a folder, recursive, long.
    let out = sb.run(&["ls", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "gone.txt\nwork/\n");
    let out = sb.run(&["ls", "--from", &url, "work", "-R"]);
    assert_eq!(
        stdout(&out),
        "work/analysis.ipynb\nwork/sub/\nwork/sub/notes.txt\n",
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["ls", "--from", &url, "--long", "work/sub"]);
    let long = stdout(&out);
    assert!(long.starts_with("-rw-r--r--       14 B "), "{long}");
    assert!(long.trim_end().ends_with(" work/sub/notes.txt"), "{long}");
    let out = sb.run(&["ls", "--from", &url, "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no path nope"),
        "{}",
        stderr(&out)
    );

    // A second checkpoint: the notebook edited (nbformat's v2), a file
    // added, one deleted, one changed.
    std::fs::copy(
        fixtures.join("analysis-v2.ipynb"),
        w.join("work/analysis.ipynb"),
    )
    .unwrap();
    std::fs::write(w.join("work/sub/notes.txt"), "line 1\nline two\n").unwrap();
    std::fs::write(w.join("work/new.csv"), "a,b").unwrap();
    std::fs::remove_file(w.join("gone.txt")).unwrap();
    once(&sb);
    let out = sb.run(&["diff", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = stdout(&out);
    assert!(d.contains("D  gone.txt  (3 B)"), "{d}");
    assert!(d.contains("A  work/new.csv  (3 B)"), "{d}");
    assert!(d.contains("M  work/analysis.ipynb  ("), "{d}");
    assert!(d.contains("M  work/sub/notes.txt  (14 B → 16 B)"), "{d}");
    assert!(d.contains("outputs changed: 1 image → 2 images"), "{d}");
    assert!(d.contains("cell 6 (markdown) added:"), "{d}");
    assert!(d.contains("+    return math.pi * r * r"), "{d}");
    assert!(
        !d.contains("line two"),
        "a plain file is diffed only when named: {d}"
    );
    assert!(
        d.trim_end().ends_with("1 added, 2 modified, 1 deleted"),
        "{d}"
    );
    // --stat: the list only; --path: one file, its lines.
    let out = sb.run(&["diff", "--from", &url, "--stat"]);
    assert!(!stdout(&out).contains("cell 6"), "{}", stdout(&out));
    let out = sb.run(&["diff", "--from", &url, "--path", "work/sub/notes.txt"]);
    let d = stdout(&out);
    assert!(d.contains("   -line 2\n   +line two\n"), "{d}");
    assert!(!d.contains("analysis"), "{d}");
    let out = sb.run(&["diff", "--from", &url, "0000000000000-00000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
