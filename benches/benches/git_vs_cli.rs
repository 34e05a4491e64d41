//! tether's git backend against the git CLI on the same server, same run
//! (run by `benches/git-vs-cli.sh`, which starts git daemon).
//!
//! 1. A repository of 10,000 files, one file changed: tether's checkpoint
//!    (detect the dirty path, hash it) + commit + push, against
//!    `git add -A && git commit -m x && git push` in a working copy of the
//!    same tree, the way shell auto-committers run.
//! 2. The initial push of 1,000 files into an empty repository: tether's
//!    full checkpoint + push against `git init && git add -A && git commit
//!    && git push`.
//!
//! Every sample starts after `sync`, so none pays for another's writeback.
//! Prints each sample and the medians and ratios. Environment:
//! `TETHER_TEST_GIT_DAEMON_URL_BASE`, `TETHER_TEST_GIT_DAEMON_ROOT` (from
//! scripts/testbed/git-daemon.sh), `GIT_BENCH_RUNS` (default 7).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sync_core::detect::{DirtySet, detect};
use sync_core::{Backend, Checkpoint, IgnoreRules, Index, RelPath, Source};
use sync_git::{GitBackend, GitOptions};

/// Runs `cmd` in `dir` as the CLI side of the comparison (no system
/// config, a fixed identity) and fails loudly with its stderr.
fn run_cli(mut cmd: Command, dir: &Path, what: &str) {
    let out = cmd
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "cli")
        .env("GIT_AUTHOR_EMAIL", "cli@example.com")
        .env("GIT_COMMITTER_NAME", "cli")
        .env("GIT_COMMITTER_EMAIL", "cli@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("git");
    cmd.args(args);
    run_cli(cmd, dir, &format!("git {args:?}"));
}

fn sh(dir: &Path, script: &str) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    run_cli(cmd, dir, script);
}

/// `n` files of ~1 KiB in directories of 100.
fn make_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let line = format!("file {i} of the benchmark tree, with some text to make it ~1 KiB\n");
        std::fs::write(dir.join(format!("f{i:05}.txt")), line.repeat(16)).unwrap();
    }
}

fn bare_repo(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    git(
        root,
        &["init", "-q", "--bare", "-b", "main", dir.to_str().unwrap()],
    );
    dir
}

/// Flushes dirty pages before a timed sample, so no sample pays for the
/// writeback of the files an earlier one (or the tree set-up) wrote.
fn settle() {
    let _ = Command::new("sync").status();
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Tether {
    backend: GitBackend,
    index: Index,
    src: PathBuf,
}

impl Tether {
    fn new(url: &str, state: &Path, src: &Path) -> Self {
        let _ = std::fs::remove_dir_all(state);
        let backend = GitBackend::from_url(url, GitOptions::new(state.join("git"))).unwrap();
        let index = Index::open(&state.join("index")).unwrap();
        Tether {
            backend,
            index,
            src: src.to_path_buf(),
        }
    }

    /// Detects `dirty` (or everything), pushes, records in the index.
    async fn checkpoint_and_push(&mut self, dirty: Option<&str>) {
        let dirty = match dirty {
            Some(p) => DirtySet {
                paths: BTreeSet::from([RelPath::new(p).unwrap()]),
                rescan: false,
            },
            None => DirtySet {
                paths: BTreeSet::new(),
                rescan: true,
            },
        };
        let found = detect(
            &self.src,
            &IgnoreRules::none(),
            &self.index,
            &Checkpoint::new(),
            &dirty,
            &mut |_| {},
        );
        let receipt = self
            .backend
            .push(&found.checkpoint, &Source::new(&self.src))
            .await
            .unwrap();
        self.index.apply(&found.checkpoint, receipt.head).unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let (Ok(url_base), Ok(root)) = (
        std::env::var("TETHER_TEST_GIT_DAEMON_URL_BASE"),
        std::env::var("TETHER_TEST_GIT_DAEMON_ROOT"),
    ) else {
        eprintln!("git_vs_cli: run benches/git-vs-cli.sh (needs the git daemon test bed)");
        return;
    };
    let runs: usize = std::env::var("GIT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let root = PathBuf::from(root);
    let work = std::env::temp_dir().join(format!("tether-git-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // --- 1. 10,000 files, one changed ---
    let files = 10_000;
    let src = work.join("tether-src");
    let cli = work.join("cli-work");
    make_tree(&src, files);
    make_tree(&cli, files);
    bare_repo(&root, "bench-tether.git");
    bare_repo(&root, "bench-cli.git");
    let mut tether = Tether::new(
        &format!("{url_base}/bench-tether.git"),
        &work.join("tether-state"),
        &src,
    );
    tether.checkpoint_and_push(None).await;
    git(&cli, &["init", "-q", "-b", "main"]);
    sh(
        &cli,
        &format!(
            "git add -A && git commit -q -m init && git push -q {url_base}/bench-cli.git main"
        ),
    );
    git(
        &cli,
        &[
            "remote",
            "add",
            "origin",
            &format!("{url_base}/bench-cli.git"),
        ],
    );

    let (mut t_times, mut c_times) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let rel = format!(
            "d{:03}/f{:05}.txt",
            (run * 37) % 100,
            (run * 37) % 100 * 100 + run
        );
        let content = format!("changed in run {run}\n");
        std::fs::write(src.join(&rel), &content).unwrap();
        std::fs::write(cli.join(&rel), &content).unwrap();
        settle();
        let t = Instant::now();
        tether.checkpoint_and_push(Some(&rel)).await;
        let te = t.elapsed();
        settle();
        let t = Instant::now();
        sh(
            &cli,
            "git add -A && git commit -q -m x && git push -q origin main",
        );
        let ce = t.elapsed();
        println!(
            "one-file run {run}: tether {:>7.1} ms, git CLI {:>7.1} ms",
            te.as_secs_f64() * 1e3,
            ce.as_secs_f64() * 1e3
        );
        t_times.push(te);
        c_times.push(ce);
    }
    let (tm, cm) = (median(&mut t_times), median(&mut c_times));

    // --- 2. initial push of 1,000 files ---
    let small = work.join("small-src");
    make_tree(&small, 1_000);
    let (mut ti, mut ci) = (Vec::new(), Vec::new());
    for run in 0..runs {
        bare_repo(&root, "bench-init-tether.git");
        bare_repo(&root, "bench-init-cli.git");
        let mut t1 = Tether::new(
            &format!("{url_base}/bench-init-tether.git"),
            &work.join("init-state"),
            &small,
        );
        settle();
        let t = Instant::now();
        t1.checkpoint_and_push(None).await;
        let te = t.elapsed();
        let cli_small = work.join("cli-small");
        let _ = std::fs::remove_dir_all(&cli_small);
        std::fs::create_dir_all(&cli_small).unwrap();
        make_tree(&cli_small, 1_000);
        settle();
        let t = Instant::now();
        sh(
            &cli_small,
            &format!(
                "git init -q -b main && git add -A && git commit -q -m init && git push -q {url_base}/bench-init-cli.git main"
            ),
        );
        let ce = t.elapsed();
        println!(
            "initial 1,000 files run {run}: tether {:>7.1} ms, git CLI {:>7.1} ms",
            te.as_secs_f64() * 1e3,
            ce.as_secs_f64() * 1e3
        );
        ti.push(te);
        ci.push(ce);
    }
    let (tim, cim) = (median(&mut ti), median(&mut ci));

    println!();
    println!("| case | tether (median) | git CLI (median) | tether / CLI |");
    println!("|---|---|---|---|");
    println!(
        "| 10,000-file repo, 1 file changed: checkpoint + commit + push | {:.1} ms | {:.1} ms | {:.2}× |",
        tm.as_secs_f64() * 1e3,
        cm.as_secs_f64() * 1e3,
        tm.as_secs_f64() / cm.as_secs_f64()
    );
    println!(
        "| initial push of 1,000 files | {:.1} ms | {:.1} ms | {:.2}× |",
        tim.as_secs_f64() * 1e3,
        cim.as_secs_f64() * 1e3,
        tim.as_secs_f64() / cim.as_secs_f64()
    );
    println!("({runs} runs each, interleaved; git daemon on loopback)");
    let _ = std::fs::remove_dir_all(&work);
}
