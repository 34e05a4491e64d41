//! Shared test support: bare repositories on the test bed's git servers
//! (git daemon, smart HTTP, sshd, started by scripts/testbed/git-*.sh) or on
//! a local `file://` path, and the conformance suite's `Fixture` for them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use gix::objs::Write as _;
use sync_core::Backend;
use sync_core::testkit::conformance::{Fixture, Hostile, Planted};
use sync_core::testkit::testbed_var;
use sync_git::{GitBackend, GitOptions};
use tempfile::TempDir;

/// Which server a fixture's repositories live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// A local bare repository, `file://` (no server).
    File,
    /// `git://`, git daemon.
    Daemon,
    /// `http://`, lighttpd + git-http-backend with basic auth.
    Http,
    /// `ssh://`, sshd.
    Ssh,
}

/// Repositories on one server and backends for them.
pub struct GitFixture {
    pub server: Server,
    /// Where the server's repositories are on disk.
    pub root: PathBuf,
    url_base: String,
    ssh_user: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Holds state directories (and the file:// root).
    pub tmp: TempDir,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

/// `git` for inspecting server repositories (owned by another user on the
/// ssh server, hence `safe.directory=*`).
pub fn git_cmd() -> Command {
    let mut c = Command::new("git");
    c.args(["-c", "safe.directory=*"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    c
}

pub fn git(args: &[&str], dir: &Path) -> String {
    let out = git_cmd()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl GitFixture {
    /// A fixture for `server`, or `None` (test skipped) when its test-bed
    /// variables are unset outside CI.
    pub fn new(server: Server) -> Option<Self> {
        let tmp = tempfile::tempdir().unwrap();
        let var = |name: &str| testbed_var(name);
        let mut f = GitFixture {
            server,
            root: PathBuf::new(),
            url_base: String::new(),
            ssh_user: None,
            ssh_key: None,
            known_hosts: None,
            token_file: None,
            tmp,
        };
        match server {
            Server::File => {
                f.root = f.tmp.path().join("server");
                std::fs::create_dir(&f.root).unwrap();
                f.url_base = format!("file://{}", f.root.display());
            }
            Server::Daemon => {
                f.url_base = var("TETHER_TEST_GIT_DAEMON_URL_BASE")?;
                f.root = var("TETHER_TEST_GIT_DAEMON_ROOT")?.into();
            }
            Server::Http => {
                f.url_base = var("TETHER_TEST_GIT_HTTP_URL_BASE")?;
                f.root = var("TETHER_TEST_GIT_HTTP_ROOT")?.into();
                f.token_file = Some(var("TETHER_TEST_GIT_HTTP_TOKEN_FILE")?.into());
            }
            Server::Ssh => {
                f.url_base = var("TETHER_TEST_GIT_SSH_URL_BASE")?;
                f.root = var("TETHER_TEST_GIT_SSH_ROOT")?.into();
                f.ssh_user = Some(var("TETHER_TEST_GIT_SSH_USER")?);
                f.ssh_key = Some(var("TETHER_TEST_GIT_SSH_KEY")?.into());
                f.known_hosts = Some(var("TETHER_TEST_GIT_SSH_KNOWN_HOSTS")?.into());
            }
        }
        Some(f)
    }

    /// Creates an empty bare repository on the server; returns its URL and
    /// its directory.
    pub fn new_repo(&self) -> (String, PathBuf) {
        let name = format!("{}.git", unique("t"));
        let dir = self.root.join(&name);
        git(
            &["init", "-q", "--bare", "-b", "main", dir.to_str().unwrap()],
            &self.root,
        );
        self.fix_owner(&dir);
        (format!("{}/{name}", self.url_base), dir)
    }

    /// Gives a server repository to the ssh user (it pushes as that user).
    pub fn fix_owner(&self, dir: &Path) {
        if let Some(user) = &self.ssh_user {
            let st = Command::new("chown")
                .args(["-R", &format!("{user}:"), dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    /// Options with a fresh state directory and this server's credentials.
    pub fn options(&self) -> GitOptions {
        let state = self.tmp.path().join(unique("state"));
        let mut o = GitOptions::new(state).author("Tether Test", "tether-test@example.com");
        o.ssh_key_file = self.ssh_key.clone();
        o.known_hosts_file = self.known_hosts.clone();
        o.token_file = self.token_file.clone();
        o.host_name = Some("test-pod".into());
        o
    }

    pub fn backend_for(&self, url: &str) -> Arc<GitBackend> {
        Arc::new(GitBackend::from_url(url, self.options()).expect("backend"))
    }

    /// Plants a commit with a hand-written (hostile) root tree as `main`.
    fn plant(&self, case: &Hostile) -> Option<String> {
        let (url, dir) = self.new_repo();
        let repo = gix::open(&dir).unwrap();
        let blob = |data: &[u8]| repo.objects.write_buf(gix::objs::Kind::Blob, data).unwrap();
        let ok = blob(b"ok");
        let evil = blob(b"evil");
        let mut root: Vec<(&str, Vec<u8>, gix::ObjectId)> =
            vec![("100644", b"ok.txt".to_vec(), ok)];
        // A file at `name`: nested trees per component, or one verbatim
        // entry when the name has empty components (`/etc/x`).
        let nested = |name: &str, leaf_mode: &'static str, leaf: gix::ObjectId| {
            let comps: Vec<&str> = name.split('/').collect();
            if comps.iter().any(|c| c.is_empty()) || comps.len() == 1 {
                return (leaf_mode, name.as_bytes().to_vec(), leaf);
            }
            let mut id = leaf;
            let mut mode = leaf_mode;
            for c in comps[1..].iter().rev() {
                id = write_tree(&repo, &[(mode, c.as_bytes().to_vec(), id)]);
                mode = "40000";
            }
            (mode, comps[0].as_bytes().to_vec(), id)
        };
        match case {
            Hostile::Name(name) => {
                if name.contains('\0') {
                    // Tree entry names end at the first NUL byte: git's
                    // format cannot carry such a name at all.
                    return None;
                }
                root.push(nested(name, "100644", evil));
            }
            Hostile::SymlinkThenEntry {
                link,
                target,
                entry,
            } => {
                root.push(("120000", link.as_bytes().to_vec(), blob(target.as_bytes())));
                root.push(nested(entry, "100644", evil));
            }
            Hostile::Entries(planted) => {
                // Files in nested trees, and every mode (special bits
                // included) in the modes file, as a tether push records them.
                let mut top = Dir::default();
                let mut modes = serde_json::Map::new();
                for p in planted {
                    match p {
                        Planted::File {
                            path,
                            content,
                            mode,
                        } => {
                            let tree_mode = if mode & 0o111 != 0 {
                                "100755"
                            } else {
                                "100644"
                            };
                            top.insert(path, tree_mode, blob(content));
                            modes.insert(path.clone(), format!("{mode:o}").into());
                        }
                        Planted::Dir { path, mode } => {
                            modes.insert(path.clone(), format!("{mode:o}").into());
                        }
                    }
                }
                let file = serde_json::json!({"format": "tether-git-modes-1", "modes": modes});
                top.insert(
                    ".tether/modes",
                    "100644",
                    blob(&serde_json::to_vec(&file).unwrap()),
                );
                for (name, (mode, id)) in top.write(&repo) {
                    root.push((mode, name, id));
                }
            }
        }
        sort_git_order(&mut root);
        let tree = write_tree(&repo, &root);
        let sig = gix::actor::Signature {
            name: "attacker".into(),
            email: "a@example.com".into(),
            time: gix::date::Time::now_utc(),
        };
        let commit = gix::objs::Commit {
            tree,
            parents: Default::default(),
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: "hostile".into(),
            extra_headers: Vec::new(),
        };
        let id = repo.write_object(&commit).unwrap().detach();
        repo.reference(
            "refs/heads/main",
            id,
            gix::refs::transaction::PreviousValue::Any,
            "plant",
        )
        .unwrap();
        self.fix_owner(&dir);
        Some(url)
    }
}

/// A directory being planted: names to blobs or subdirectories.
#[derive(Default)]
struct Dir(std::collections::BTreeMap<Vec<u8>, Node>);

enum Node {
    Blob(&'static str, gix::ObjectId),
    Dir(Dir),
}

impl Dir {
    fn insert(&mut self, path: &str, mode: &'static str, id: gix::ObjectId) {
        match path.split_once('/') {
            None => {
                self.0
                    .insert(path.as_bytes().to_vec(), Node::Blob(mode, id));
            }
            Some((first, rest)) => {
                let node = self
                    .0
                    .entry(first.as_bytes().to_vec())
                    .or_insert_with(|| Node::Dir(Dir::default()));
                if let Node::Dir(d) = node {
                    d.insert(rest, mode, id);
                }
            }
        }
    }

    /// Writes the subtrees; returns this directory's entries.
    fn write(self, repo: &gix::Repository) -> Vec<(Vec<u8>, (&'static str, gix::ObjectId))> {
        self.0
            .into_iter()
            .map(|(name, node)| match node {
                Node::Blob(mode, id) => (name, (mode, id)),
                Node::Dir(d) => {
                    let mut entries: Vec<(&str, Vec<u8>, gix::ObjectId)> = d
                        .write(repo)
                        .into_iter()
                        .map(|(n, (m, id))| (m, n, id))
                        .collect();
                    sort_git_order(&mut entries);
                    (name, ("40000", write_tree(repo, &entries)))
                }
            })
            .collect()
    }
}

/// Sorts tree entries the way git does (a tree's name compares as if it
/// ended in `/`).
pub fn sort_git_order(entries: &mut [(&str, Vec<u8>, gix::ObjectId)]) {
    let key = |(mode, name, _): &(&str, Vec<u8>, gix::ObjectId)| {
        let mut k = name.clone();
        if *mode == "40000" {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_key(key);
}

/// Writes a tree object from raw entries, in the given order, unvalidated.
pub fn write_tree(
    repo: &gix::Repository,
    entries: &[(&str, Vec<u8>, gix::ObjectId)],
) -> gix::ObjectId {
    let mut buf = Vec::new();
    for (mode, name, id) in entries {
        buf.extend_from_slice(mode.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(name);
        buf.push(0);
        buf.extend_from_slice(id.as_bytes());
    }
    repo.objects.write_buf(gix::objs::Kind::Tree, &buf).unwrap()
}

#[async_trait]
impl Fixture for GitFixture {
    async fn fresh(&self) -> Arc<dyn Backend> {
        let (url, _) = self.new_repo();
        self.backend_for(&url)
    }

    async fn plant_hostile(&self, case: &Hostile) -> Option<Arc<dyn Backend>> {
        let url = self.plant(case)?;
        Some(self.backend_for(&url))
    }
}

/// The commit a server-side branch points to (read from the bare repo).
pub fn server_ref(dir: &Path, name: &str) -> Option<String> {
    let out = git_cmd()
        .args([
            "--git-dir",
            dir.to_str().unwrap(),
            "rev-parse",
            "--verify",
            "-q",
            name,
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Branch names on the server repository.
pub fn server_branches(dir: &Path) -> Vec<String> {
    let out = git(
        &[
            "--git-dir",
            dir.to_str().unwrap(),
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads",
        ],
        dir,
    );
    out.lines().map(str::to_owned).collect()
}

/// A file's content at `rev` in the server repository.
pub fn server_file(dir: &Path, rev: &str, path: &str) -> Option<String> {
    let out = git_cmd()
        .args([
            "--git-dir",
            dir.to_str().unwrap(),
            "show",
            &format!("{rev}:{path}"),
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
