//! The binary run the way the container image runs it in a pod, since no
//! container engine can run containers on the test machine: an arbitrary
//! UID with no passwd entry in group 0 (OpenShift's restricted SCC, via
//! `setpriv --reuid=1000680000 --regid=0 --clear-groups`), a clean
//! environment with `HOME`, `TMPDIR` and `TETHER_STATE_DIR` on writable
//! "emptyDirs" (0777 directories, as the kubelet makes them), credentials
//! as a Secret volume would hold them (root:root, the injector's mode
//! 0440), and no write access anywhere else. Each remote goes through the
//! pod's life: init-container restore → sidecar sync with /readyz and
//! /metrics → an edit pushed → an edit made just before SIGTERM flushed →
//! exit 0 → a fresh restore sees both.
//!
//! Not exercised here: the image build itself, the read-only root
//! filesystem as a mount (only "no write permission" is), the
//! Containerfile's packages (the host's git, ssh and libnss_wrapper stand
//! in for them), and a kubelet.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// An OpenShift-style UID: high, and without a passwd entry.
const POD_UID: u32 = 1_000_680_000;
/// The injector's credentials mode (kube-deploy's `CREDENTIALS_MODE`).
const SECRET_MODE: u32 = kube_deploy::builders::CREDENTIALS_MODE as u32;

use sync_core::testkit::testbed_var;

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn can_switch_uid() -> bool {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        assert!(
            std::env::var("TETHER_TESTBED").as_deref() != Ok("1"),
            "the image test needs root and setpriv under TETHER_TESTBED=1"
        );
        println!("skipped: needs root and setpriv to switch to UID {POD_UID}");
        return false;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    assert!(
        !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&POD_UID.to_string())),
        "UID {POD_UID} has a passwd entry here; the test would prove nothing"
    );
    true
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The pod's file system as the tether containers see it.
struct Pod {
    root: tempfile::TempDir,
    /// The synced directory's volume (an emptyDir or the app's PVC).
    work: PathBuf,
    /// TETHER_STATE_DIR, HOME, TMPDIR: emptyDirs shared by both containers.
    state: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    /// The credentials Secret volume.
    secrets: PathBuf,
    /// Environment of both containers (what the injector sets).
    env: Vec<(String, String)>,
}

impl Pod {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        // Root-owned and not writable by the pod's UID: "elsewhere".
        chmod(root.path(), 0o755);
        let dir = |name: &str, mode: u32| {
            let p = root.path().join(name);
            fs::create_dir(&p).unwrap();
            chmod(&p, mode);
            p
        };
        let pod = Pod {
            work: dir("work", 0o777),
            state: dir("state", 0o777),
            home: dir("home", 0o777),
            tmp: dir("tmp", 0o777),
            secrets: dir("secrets", 0o755),
            env: Vec::new(),
            root,
        };
        let env = vec![
            ("TETHER_STATE_DIR", pod.state.display().to_string()),
            ("HOME", pod.home.display().to_string()),
            ("TMPDIR", pod.tmp.display().to_string()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
            ("TETHER_LOG_FORMAT", "json".to_owned()),
        ];
        Pod {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..pod
        }
    }

    /// A Secret key file as the kubelet writes it without an fsGroup:
    /// root:root, the injector's mode.
    fn secret_file(&mut self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.secrets.join(name);
        fs::write(&path, content).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        chmod(&path, SECRET_MODE);
        path
    }

    /// `tether ARGS` as the pod's UID in group 0, with only the pod's env.
    fn tether(&self, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={POD_UID}"),
            "--regid=0",
            "--clear-groups",
            "env",
            "-i",
        ]);
        for (k, v) in &self.env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .current_dir(self.root.path());
        c
    }

    /// Files under the pod's root owned by the pod's UID outside the
    /// writable volumes (there must be none).
    fn written_elsewhere(&self) -> Vec<PathBuf> {
        let allowed = [&self.work, &self.state, &self.home, &self.tmp];
        let mut out = Vec::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if allowed.iter().any(|a| path.starts_with(a)) {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.uid() == POD_UID {
                    out.push(path.clone());
                }
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out
    }
}

/// restore → sync → edit → SIGTERM with an edit pending → restore again.
fn pod_life(pod: &Pod, url: &str, seeded: &[(&str, &str)], root_tether: impl Fn(&[&str]) -> bool) {
    // Init container.
    let out = pod
        .tether(&["restore", pod.work.to_str().unwrap(), "--from", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", stderr(&out));
    for (name, content) in seeded {
        assert_eq!(
            fs::read_to_string(pod.work.join(name)).unwrap(),
            *content,
            "{name}"
        );
        assert_eq!(fs::metadata(pod.work.join(name)).unwrap().uid(), POD_UID);
    }

    // Native sidecar.
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut sidecar = pod
        .tether(&[
            "sync",
            pod.work.to_str().unwrap(),
            "--to",
            url,
            "--grace",
            "20s",
            "--http-bind",
            &bind,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        http_get(port, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    // The app edits (as another UID of the pod; group-writable volume).
    fs::write(pod.work.join("edited.txt"), "saved while running\n").unwrap();
    chmod(&pod.work.join("edited.txt"), 0o664);
    wait_for("the edit to be pushed", Duration::from_secs(60), || {
        let (_, body) = http_get(port, "/metrics")?;
        let pushed = metric(&body, "tether_checkpoints_pushed_total")?;
        let pending = metric(&body, "tether_pending_paths")?;
        (pushed >= 1.0 && pending == 0.0).then_some(())
    });

    // An edit right before the pod stops: SIGTERM must flush it.
    fs::write(pod.work.join("last.txt"), "saved on SIGTERM\n").unwrap();
    chmod(&pod.work.join("last.txt"), 0o664);
    sigterm(&sidecar);
    let (code, err) = wait_exit(&mut sidecar, Duration::from_secs(40));
    assert_eq!(code, 0, "sync after SIGTERM: {err}");

    // The state the sidecar wrote belongs to the pod's UID; nothing was
    // written anywhere else.
    assert!(
        fs::read_dir(&pod.state)
            .unwrap()
            .flatten()
            .any(|e| e.metadata().unwrap().uid() == POD_UID),
        "no state written by UID {POD_UID}"
    );
    assert_eq!(pod.written_elsewhere(), Vec::<PathBuf>::new());

    // A fresh restore (as root, elsewhere) sees everything.
    let check = pod.root.path().join("check");
    assert!(root_tether(&[
        "restore",
        check.to_str().unwrap(),
        "--from",
        url
    ]));
    assert_eq!(
        fs::read_to_string(check.join("edited.txt")).unwrap(),
        "saved while running\n"
    );
    assert_eq!(
        fs::read_to_string(check.join("last.txt")).unwrap(),
        "saved on SIGTERM\n"
    );
    for (name, content) in seeded {
        assert_eq!(fs::read_to_string(check.join(name)).unwrap(), *content);
    }
}

const SEEDED: [(&str, &str); 2] = [
    ("notebook.ipynb", "{\"cells\": []}\n"),
    ("data/table.csv", "a,b\n1,2\n"),
];

fn seed(sb: &Sandbox) {
    for (name, content) in SEEDED {
        let path = sb.path("seed").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}

#[test]
fn s3_pod_life_under_an_arbitrary_uid_in_group_zero() {
    let (Some(endpoint), Some(key), Some(secret), Some(bucket)) = (
        testbed_var("TETHER_TEST_S3_ENDPOINT"),
        testbed_var("TETHER_TEST_S3_ACCESS_KEY"),
        testbed_var("TETHER_TEST_S3_SECRET_KEY"),
        testbed_var("TETHER_TEST_S3_BUCKET"),
    ) else {
        return;
    };
    if !can_switch_uid() {
        return;
    }
    let url = format!(
        "s3://{bucket}/image-{}?endpoint={endpoint}&allow_http=true",
        std::process::id()
    );
    let sb = Sandbox::new();
    let as_root = |args: &[&str]| {
        let out = sb
            .tether()
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_REGION", "us-east-1")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        true
    };
    seed(&sb);
    as_root(&[
        "sync",
        sb.path("seed").to_str().unwrap(),
        "--to",
        &url,
        "--once",
    ]);

    // Credentials reach the containers as secretKeyRef env (S3).
    let mut pod = Pod::new();
    pod.env.extend([
        ("AWS_ACCESS_KEY_ID".to_owned(), key.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), secret.clone()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
    ]);
    pod_life(&pod, &url, &SEEDED, as_root);
}

#[test]
fn git_ssh_pod_life_under_an_arbitrary_uid_with_a_0440_key() {
    let (Some(base), Some(root), Some(user), Some(key), Some(known_hosts)) = (
        testbed_var("TETHER_TEST_GIT_SSH_URL_BASE"),
        testbed_var("TETHER_TEST_GIT_SSH_ROOT"),
        testbed_var("TETHER_TEST_GIT_SSH_USER"),
        testbed_var("TETHER_TEST_GIT_SSH_KEY"),
        testbed_var("TETHER_TEST_GIT_SSH_KNOWN_HOSTS"),
    ) else {
        return;
    };
    if !can_switch_uid() {
        return;
    }
    let name = format!("image-{}.git", std::process::id());
    let repo = Path::new(&root).join(&name);
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&repo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let ok = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(&repo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let url = format!("{base}/{name}");
    let sb = Sandbox::new();
    let as_root = |args: &[&str]| {
        let out = sb
            .tether()
            .env("TETHER_SSH_KEY_FILE", &key)
            .env("TETHER_SSH_KNOWN_HOSTS_FILE", &known_hosts)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        true
    };
    seed(&sb);
    as_root(&[
        "sync",
        sb.path("seed").to_str().unwrap(),
        "--to",
        &url,
        "--once",
    ]);

    // The key and known_hosts as files of the Secret volume, root:root 0440:
    // readable by group 0 only (what the injector's mode promises).
    let mut pod = Pod::new();
    let key_file = pod.secret_file("ssh-privatekey", &fs::read(&key).unwrap());
    pod.secret_file("known_hosts", &fs::read(&known_hosts).unwrap());
    pod.env.push((
        "TETHER_SSH_KEY_FILE".to_owned(),
        key_file.display().to_string(),
    ));
    pod_life(&pod, &url, &SEEDED, as_root);
    fs::remove_dir_all(&repo).ok();
}
