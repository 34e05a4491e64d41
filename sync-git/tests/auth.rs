//! Authentication against the real ssh and HTTP servers: strict host keys,
//! key files mounted with wide permissions, pushes under a UID with no
//! passwd entry and no HOME (as OpenShift runs pods), HTTP tokens from a
//! file or a variable, and credentials kept out of errors and config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::{GitFixture, Server, server_file};
use sync_core::testkit::conformance::Workbench;
use sync_core::{Backend, BackendError, RestoreOptions};
use sync_git::GitBackend;

/// The UID the OpenShift-like test runs as; it has no passwd entry.
const NO_PASSWD_UID: u32 = 54321;

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused_with_a_clear_error() {
    let Some(f) = GitFixture::new(Server::Ssh) else {
        return;
    };
    let Some(wrong) = sync_core::testkit::testbed_var("TETHER_TEST_GIT_SSH_WRONG_KNOWN_HOSTS")
    else {
        return;
    };
    let (url, dir) = f.new_repo();
    let mut o = f.options();
    o.known_hosts_file = Some(PathBuf::from(&wrong));
    let backend: Arc<dyn Backend> = Arc::new(GitBackend::from_url(&url, o).unwrap());
    let w = Workbench::new(Arc::clone(&backend));
    w.write("secret.txt", b"must not leave");
    let c = w.checkpoint();
    let err = backend
        .push(&c, &sync_core::Source::new(&w.src))
        .await
        .expect_err("push with a wrong host key succeeded");
    let msg = err.to_string();
    assert!(
        msg.contains("host key") && msg.contains(&wrong),
        "unclear error: {msg}"
    );
    assert!(
        matches!(
            err,
            BackendError::Remote {
                transient: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server_file(&dir, "main", "secret.txt"), None);
    // A missing known_hosts file is refused up front.
    let mut o = f.options();
    o.known_hosts_file = None;
    let err = GitBackend::from_url(&url, o).unwrap_err();
    assert!(err.to_string().contains("known_hosts"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_with_mode_0644_still_works() {
    let Some(f) = GitFixture::new(Server::Ssh) else {
        return;
    };
    let (url, dir) = f.new_repo();
    let loose_key = f.tmp.path().join("mounted-key");
    std::fs::copy(f.ssh_key.as_ref().unwrap(), &loose_key).unwrap();
    chmod(&loose_key, 0o644);
    let mut o = f.options();
    o.ssh_key_file = Some(loose_key.clone());
    let state = o.state_dir.clone();
    let backend: Arc<dyn Backend> = Arc::new(GitBackend::from_url(&url, o).unwrap());
    let mut w = Workbench::new(Arc::clone(&backend));
    w.write("hello.txt", b"over ssh");
    w.sync().await;
    assert_eq!(
        server_file(&dir, "main", "hello.txt").as_deref(),
        Some("over ssh")
    );
    let copy = std::fs::metadata(state.join("ssh/identity")).unwrap();
    assert_eq!(copy.mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&loose_key).unwrap().mode() & 0o777, 0o644);
    let dest = w.restore_new("restored").await;
    w.assert_same(&dest);
}

/// Runs the push below in a child process as a UID with no passwd entry,
/// with HOME unset, and checks on the server that it arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_push_as_uid_without_passwd_entry_and_without_home() {
    let Some(f) = GitFixture::new(Server::Ssh) else {
        return;
    };
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipping: needs root to switch to UID {NO_PASSWD_UID}");
        return;
    }
    assert!(
        nix::unistd::User::from_uid(NO_PASSWD_UID.into())
            .unwrap()
            .is_none(),
        "UID {NO_PASSWD_UID} has a passwd entry on this machine; the test would prove nothing"
    );
    let (url, dir) = f.new_repo();
    // Everything the child needs, readable by it; the key as a secret
    // mount would have it (0644, owned by root).
    let work = f.tmp.path().join("openshift");
    std::fs::create_dir(&work).unwrap();
    chmod(f.tmp.path(), 0o755);
    chmod(&work, 0o755);
    let key = work.join("key");
    let kh = work.join("known_hosts");
    std::fs::copy(f.ssh_key.as_ref().unwrap(), &key).unwrap();
    std::fs::copy(f.known_hosts.as_ref().unwrap(), &kh).unwrap();
    chmod(&key, 0o644);
    chmod(&kh, 0o644);
    let state = work.join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(NO_PASSWD_UID), Some(NO_PASSWD_UID)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={NO_PASSWD_UID}"),
            &format!("--regid={NO_PASSWD_UID}"),
            "--clear-groups",
            "env",
            "-u",
            "HOME",
        ])
        .arg(format!("TETHER_CHILD_URL={url}"))
        .arg(format!("TETHER_CHILD_STATE={}", state.display()))
        .arg(format!("TETHER_CHILD_KEY={}", key.display()))
        .arg(format!("TETHER_CHILD_KNOWN_HOSTS={}", kh.display()))
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "child_pushes_as_current_uid",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
    assert_eq!(
        server_file(&dir, "main", "from-openshift.txt").as_deref(),
        Some("pushed by a UID without a passwd entry")
    );
    // ssh really ran under nss_wrapper, with the key copied for that UID.
    let passwd = std::fs::read_to_string(state.join("nss/passwd")).unwrap();
    assert!(passwd.contains(&format!(":{NO_PASSWD_UID}:")), "{passwd}");
    let copy = std::fs::metadata(state.join("ssh/identity")).unwrap();
    assert_eq!((copy.uid(), copy.mode() & 0o777), (NO_PASSWD_UID, 0o600));
}

/// The child half of the test above (run only through it).
#[tokio::test]
#[ignore = "run by ssh_push_as_uid_without_passwd_entry_and_without_home"]
async fn child_pushes_as_current_uid() {
    let var = |n: &str| std::env::var(n).expect(n);
    assert!(std::env::var_os("HOME").is_none(), "HOME is set");
    assert_eq!(nix::unistd::getuid().as_raw(), NO_PASSWD_UID);
    let o = sync_git::GitOptions::new(var("TETHER_CHILD_STATE"))
        .ssh(var("TETHER_CHILD_KEY"), var("TETHER_CHILD_KNOWN_HOSTS"));
    let backend: Arc<dyn Backend> =
        Arc::new(GitBackend::from_url(&var("TETHER_CHILD_URL"), o).unwrap());
    let mut w = Workbench::new(backend);
    w.write(
        "from-openshift.txt",
        b"pushed by a UID without a passwd entry",
    );
    w.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_token_from_file_or_variable_and_never_in_errors() {
    let Some(f) = GitFixture::new(Server::Http) else {
        return;
    };
    let Some(token) = sync_core::testkit::testbed_var("TETHER_TEST_GIT_HTTP_TOKEN") else {
        return;
    };
    let (url, dir) = f.new_repo();

    // No token: refused, with an error that says what to fix.
    let mut o = f.options();
    o.token_file = None;
    let anon: Arc<dyn Backend> = Arc::new(GitBackend::from_url(&url, o).unwrap());
    let w = Workbench::new(Arc::clone(&anon));
    w.write("a.txt", b"a");
    let c = w.checkpoint();
    let err = anon
        .push(&c, &sync_core::Source::new(&w.src))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");

    // A wrong token: refused, and the wrong token is not echoed.
    let wrong = f.tmp.path().join("wrong-token");
    std::fs::write(&wrong, "definitely-not-the-token-1234\n").unwrap();
    let mut o = f.options();
    o.token_file = Some(wrong);
    let bad: Arc<dyn Backend> = Arc::new(GitBackend::from_url(&url, o).unwrap());
    let err = bad
        .push(&c, &sync_core::Source::new(&w.src))
        .await
        .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("authentication"), "{msg}");
    assert!(
        !msg.contains("definitely-not-the-token"),
        "token leaked: {msg}"
    );

    // The token from a variable works, and lands nowhere on disk.
    let mut o = f.options();
    o.token_file = None;
    o.token_env = Some("TETHER_TEST_GIT_HTTP_TOKEN".into());
    let state = o.state_dir.clone();
    let good: Arc<dyn Backend> = Arc::new(GitBackend::from_url(&url, o).unwrap());
    let receipt = good
        .push(&c, &sync_core::Source::new(&w.src))
        .await
        .unwrap();
    assert!(receipt.head.is_some());
    assert_eq!(server_file(&dir, "main", "a.txt").as_deref(), Some("a"));
    let dest = f.tmp.path().join("restored");
    good.restore(&dest, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"a");
    let mut stack = vec![state];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "token written to {}",
                    p.display()
                );
            }
        }
    }
    // Unset variable: refused up front, naming the variable only.
    let mut o = f.options();
    o.token_file = None;
    o.token_env = Some("TETHER_TEST_NO_SUCH_TOKEN_VARIABLE".into());
    let err = GitBackend::from_url(&url, o).unwrap_err();
    assert!(
        err.to_string()
            .contains("TETHER_TEST_NO_SUCH_TOKEN_VARIABLE"),
        "{err}"
    );
}
