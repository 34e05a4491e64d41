//! The mass-delete guard from the command line: deleting most of a synced
//! directory is not pushed until the user confirms it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn deleting_most_files_waits_for_allow_mass_delete() {
    let sb = Sandbox::new();
    let w = sb.path("w");
    std::fs::create_dir(&w).unwrap();
    for i in 0..150 {
        std::fs::write(w.join(format!("f{i:03}.txt")), format!("{i}")).unwrap();
    }
    let url = format!("file://{}", sb.path("store").display());
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // 149 of 150 files deleted (one is left, so no restore-if-empty), and
    // one new file written.
    for i in 1..150 {
        std::fs::remove_file(w.join(format!("f{i:03}.txt"))).unwrap();
    }
    std::fs::write(w.join("new.txt"), "new").unwrap();
    let out = sb.run(&["sync", "w", "--to", &url, "--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("tether: "), "{err}");
    assert!(last.contains("149 deletes held back"), "{last}");
    assert!(last.contains("--allow-mass-delete"), "{last}");
    // The remote still has all 150, and the new file.
    let out = sb.run(&["restore", "r1", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&sb.path("r1")), 151);

    // Confirmed: the deletes go.
    let out = sb.run(&["sync", "w", "--to", &url, "--once", "--allow-mass-delete"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.run(&["restore", "r2", "--from", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&sb.path("r2")), 2);

    // A count instead of a share: 2 deletes trip --max-delete 1.
    std::fs::remove_file(w.join("f000.txt")).unwrap();
    std::fs::remove_file(w.join("new.txt")).unwrap();
    std::fs::write(w.join("last.txt"), "x").unwrap();
    let out = sb.run(&["sync", "w", "--to", &url, "--once", "--max-delete", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = sb.run(&["sync", "w", "--to", &url, "--once", "--max-delete", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
