//! README.md's configuration reference stays in step with `--help`: every
//! long flag and every `TETHER_*` variable of every subcommand appears in it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

const SUBCOMMANDS: &[&[&str]] = &[
    &["sync"],
    &["restore"],
    &["history"],
    &["certs", "create"],
    &["certs", "patch"],
    &["certs", "show"],
    &["webhook"],
    &["manifests", "inject"],
    &["manifests", "webhook"],
    &["manifests", "app"],
    &["follow"],
    &["convert"],
    &["key", "generate"],
    &["key", "list"],
    &["key", "add"],
    &["key", "remove"],
    &["forget"],
    &["prune"],
    &["check"],
];

fn words(text: &str, start: &str, allowed: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(start) {
        let tail = &rest[i + start.len()..];
        let end = tail.find(|c: char| !allowed(c)).unwrap_or(tail.len());
        if end > 0 {
            out.insert(format!("{start}{}", &tail[..end]));
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_flag_and_variable_is_in_the_configuration_reference() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let reference = readme
        .split_once("## Configuration reference")
        .expect("README.md has a configuration reference")
        .1;
    let mut missing = Vec::new();
    for sub in SUBCOMMANDS {
        let out = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(*sub)
            .arg("--help")
            .env("COLUMNS", "200")
            .output()
            .unwrap();
        assert!(out.status.success(), "{sub:?} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        let flags = words(&help, "--", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        });
        assert!(flags.len() >= 3, "{sub:?}: too few flags found in help");
        for flag in flags {
            if !reference.contains(&format!("`{flag}`")) {
                missing.push(format!("{} {flag}", sub.join(" ")));
            }
        }
        for var in words(&help, "TETHER_", |c| c.is_ascii_uppercase() || c == '_') {
            if !reference.contains(&format!("`{var}`")) {
                missing.push(format!("{} {var}", sub.join(" ")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in README.md's configuration reference: {missing:?}"
    );
}
