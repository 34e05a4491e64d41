//! Running the `git` executable for the network steps (fetch, push,
//! ls-remote), with an environment that needs nothing from the machine:
//!
//! * `HOME` and `XDG_CONFIG_HOME` point into the state directory; system and
//!   global git configuration are ignored (`GIT_CONFIG_NOSYSTEM`,
//!   `GIT_CONFIG_GLOBAL=/dev/null`); every `GIT_*` variable inherited from
//!   the caller is dropped; prompts are off (`GIT_TERMINAL_PROMPT=0`).
//! * SSH: `GIT_SSH_COMMAND` names the key (a 0600 copy in the state
//!   directory), the known_hosts file with strict checking, batch mode and
//!   `-F /dev/null`, so neither `~/.ssh` nor `/etc/ssh/ssh_config` matters.
//!   If the process's UID has no passwd entry (OpenShift's arbitrary UIDs),
//!   `ssh` would exit with "No user exists for uid"; then `libnss_wrapper`
//!   is preloaded with a passwd file of one line in the state directory.
//! * HTTP(S): the token is read (from its file or variable) before each
//!   command and handed to a credential helper defined through
//!   `GIT_CONFIG_COUNT` variables; the helper reads it from the child's
//!   environment. It never appears on a command line, in a URL, in the
//!   repository's config or in a log line, and it is scrubbed from any
//!   output that ends up in an error.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sync_core::BackendError;

use crate::remote::{GitRemote, RemoteKind, redact_url};

/// Where the HTTP token comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// No token.
    #[default]
    None,
    /// Read from this file before each command (so rotated tokens apply).
    File(PathBuf),
    /// Read from this environment variable before each command.
    Env(String),
}

/// Everything needed to run git against one remote.
#[derive(Debug, Clone)]
pub(crate) struct GitRunner {
    pub git: PathBuf,
    pub ssh: PathBuf,
    pub repo_dir: PathBuf,
    pub state_dir: PathBuf,
    pub remote: GitRemote,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub token: TokenSource,
    pub http_user: String,
    pub nss_wrapper: Option<PathBuf>,
    pub timeout: Duration,
    /// How long the network may stall (see `GitOptions::request_timeout`).
    pub stall_timeout: Duration,
}

/// Environment variables set on a git child process.
type ChildEnv = Vec<(String, OsString)>;

/// What a git command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub success: bool,
    pub stdout: String,
    /// Scrubbed of credentials.
    pub stderr: String,
}

/// Quotes `s` for `sh` (GIT_SSH_COMMAND is run by the shell).
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `GIT_SSH_COMMAND` for a key and known_hosts file.
pub(crate) fn ssh_command(
    ssh: &Path,
    key: Option<&Path>,
    known_hosts: &Path,
    stall: Duration,
) -> String {
    let stall = stall.as_secs().max(4);
    let mut cmd = vec![
        shell_quote(&ssh.to_string_lossy()),
        "-F".into(),
        "/dev/null".into(),
    ];
    if let Some(key) = key {
        cmd.push("-i".into());
        cmd.push(shell_quote(&key.to_string_lossy()));
        cmd.push("-o".into());
        cmd.push("IdentitiesOnly=yes".into());
    }
    for opt in [
        format!("UserKnownHostsFile={}", known_hosts.to_string_lossy()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "UpdateHostKeys=no".into(),
        "BatchMode=yes".into(),
        format!("ConnectTimeout={stall}"),
        format!("ServerAliveInterval={}", stall / 4),
        "ServerAliveCountMax=4".into(),
        "LogLevel=ERROR".into(),
    ] {
        cmd.push("-o".into());
        cmd.push(shell_quote(&opt));
    }
    cmd.join(" ")
}

/// Removes credentials from text that may end up in an error: the token
/// itself, passwords in URLs and authorization headers. Keeps the last
/// 2,000 characters.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.to_ascii_lowercase().contains("authorization:") {
            out.push_str("[authorization header removed]\n");
            continue;
        }
        let mut line = line
            .split(' ')
            .map(|w| {
                if w.contains("://") {
                    redact_url(w)
                } else {
                    w.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            line = line.replace(*s, "***");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let out = out.trim().to_owned();
    if out.chars().count() > 2000 {
        let skip = out.chars().count() - 2000;
        format!("…{}", out.chars().skip(skip).collect::<String>())
    } else {
        out
    }
}

/// Turns a failed remote command into a backend error with a message that
/// says what to fix. `stderr` must already be scrubbed.
pub(crate) fn classify(
    operation: &'static str,
    remote: &GitRemote,
    known_hosts: Option<&Path>,
    stderr: &str,
) -> BackendError {
    let location = remote.to_string();
    let s = stderr.to_ascii_lowercase();
    let permanent = |msg: String| BackendError::permanent(operation, location.clone(), msg);
    if s.contains("host key verification failed")
        || s.contains("remote host identification has changed")
        || s.contains("no ed25519 host key is known")
        || s.contains("host key for") && s.contains("has changed")
    {
        let kh = known_hosts.map_or_else(|| "(none)".into(), |p| p.display().to_string());
        return permanent(format!(
            "ssh host key verification failed: the server's host key is not in the known_hosts file {kh} or does not match it; refusing to connect ({stderr})"
        ));
    }
    if s.contains("permission denied (publickey")
        || s.contains("permission denied, please try again")
    {
        return permanent(format!(
            "ssh authentication failed: the server refused the key ({stderr})"
        ));
    }
    if s.contains("no user exists for uid") {
        return permanent(format!(
            "ssh cannot run: this UID has no passwd entry and libnss_wrapper was not found ({stderr})"
        ));
    }
    if s.contains("could not read username")
        || s.contains("could not read password")
        || s.contains("authentication failed")
        || s.contains("http 401")
        || s.contains("http 403")
        || s.contains("error: 401")
        || s.contains("error: 403")
    {
        return permanent(format!(
            "authentication failed: the server wants credentials; check the token file or variable ({stderr})"
        ));
    }
    if s.contains("does not appear to be a git repository")
        || s.contains("repository not found")
        || s.contains("not found") && s.contains("repository")
        || s.contains("no such file or directory") && remote.kind() == RemoteKind::File
    {
        return permanent(format!("repository not found ({stderr})"));
    }
    BackendError::transient(operation, location, stderr.to_owned())
}

fn io_config(what: &'static str, path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Config(format!("{what} {}: {e}", path.display()))
}

/// Writes `content` to `path` with mode 0600 (atomically: a fsynced
/// temporary file renamed over it) unless it already holds exactly that
/// with that mode.
fn write_private(path: &Path, content: &[u8]) -> Result<(), BackendError> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o777 == 0o600
        && std::fs::read(path).is_ok_and(|c| c == content)
    {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_config("creating", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| io_config("creating a temporary file in", dir, e))?;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io_config("writing", tmp.path(), e))?;
    tmp.persist(path)
        .map(drop)
        .map_err(|e| io_config("renaming into", path, e.error))
}

/// Finds `libnss_wrapper.so` in the usual library directories.
fn find_nss_wrapper() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/usr/lib"),
        PathBuf::from("/lib64"),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    dirs.into_iter()
        .map(|d| d.join("libnss_wrapper.so"))
        .find(|p| p.is_file())
}

impl GitRunner {
    fn home(&self) -> PathBuf {
        self.state_dir.join("home")
    }

    /// Reads the token now (files and variables are re-read every time).
    fn token(&self) -> Result<Option<SecretString>, BackendError> {
        let raw = match &self.token {
            TokenSource::None => return Ok(None),
            TokenSource::File(p) => {
                std::fs::read_to_string(p).map_err(|e| io_config("reading token file", p, e))?
            }
            TokenSource::Env(name) => std::env::var(name).map_err(|_| {
                BackendError::Config(format!("environment variable {name} (token) is not set"))
            })?,
        };
        let t = raw.trim();
        if t.is_empty() || t.contains(['\n', '\r', '\0']) {
            return Err(BackendError::Config(
                "the token is empty or spans several lines".into(),
            ));
        }
        Ok(Some(SecretString::from(t.to_owned())))
    }

    /// The environment of every git command, and the secrets to scrub.
    fn environment(&self, network: bool) -> Result<(ChildEnv, Vec<SecretString>), BackendError> {
        let home = self.home();
        std::fs::create_dir_all(&home).map_err(|e| io_config("creating", &home, e))?;
        let mut env: Vec<(String, OsString)> = vec![
            ("GIT_DIR".into(), self.repo_dir.clone().into()),
            ("HOME".into(), home.clone().into()),
            ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("LC_ALL".into(), "C".into()),
            ("LANGUAGE".into(), "".into()),
        ];
        let mut config: Vec<(String, String)> = vec![
            (
                "safe.directory".into(),
                self.repo_dir.to_string_lossy().into_owned(),
            ),
            ("gc.auto".into(), "0".into()),
            ("maintenance.auto".into(), "false".into()),
            ("core.bigFileThreshold".into(), "32m".into()),
            ("protocol.version".into(), "2".into()),
            ("credential.helper".into(), String::new()),
        ];
        let mut secrets = Vec::new();
        if network {
            match self.remote.kind() {
                RemoteKind::Ssh => {
                    let key = match &self.ssh_key {
                        Some(src) => {
                            let mut bytes = std::fs::read(src)
                                .map_err(|e| io_config("reading ssh key file", src, e))?;
                            // Secret mounts often drop the final newline, which
                            // OpenSSH then refuses as "invalid format".
                            if !bytes.ends_with(b"\n") {
                                bytes.push(b'\n');
                            }
                            let copy = self.state_dir.join("ssh").join("identity");
                            write_private(&copy, &bytes)?;
                            Some(copy)
                        }
                        None => None,
                    };
                    let kh = self.known_hosts.clone().ok_or_else(|| {
                        BackendError::Config(format!(
                            "ssh remote {} needs a known_hosts file",
                            self.remote.url()
                        ))
                    })?;
                    env.push((
                        "GIT_SSH_COMMAND".into(),
                        ssh_command(&self.ssh, key.as_deref(), &kh, self.stall_timeout).into(),
                    ));
                    env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
                    self.nss_wrapper_env(&mut env)?;
                }
                RemoteKind::Http | RemoteKind::Https => {
                    config.push(("http.lowSpeedLimit".into(), "1000".into()));
                    config.push((
                        "http.lowSpeedTime".into(),
                        self.stall_timeout.as_secs().max(1).to_string(),
                    ));
                    if let Some(token) = self.token()? {
                        if self.remote.kind() == RemoteKind::Http {
                            tracing::warn!(remote = %self.remote, "sending a token over plain http");
                        }
                        config.push((
                            "credential.helper".into(),
                            "!f() { test \"$1\" = get || exit 0; echo \"username=$TETHER_GIT_USERNAME\"; echo \"password=$TETHER_GIT_PASSWORD\"; }; f".into(),
                        ));
                        env.push(("TETHER_GIT_USERNAME".into(), self.http_user.clone().into()));
                        env.push(("TETHER_GIT_PASSWORD".into(), token.expose_secret().into()));
                        secrets.push(token);
                    }
                }
                RemoteKind::Git | RemoteKind::File => {}
            }
        }
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string().into()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k.into()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v.into()));
        }
        Ok((env, secrets))
    }

    /// Preloads libnss_wrapper when this UID has no passwd entry.
    fn nss_wrapper_env(&self, env: &mut Vec<(String, OsString)>) -> Result<(), BackendError> {
        let uid = nix::unistd::getuid();
        if matches!(nix::unistd::User::from_uid(uid), Ok(Some(_))) {
            return Ok(());
        }
        let lib = self.nss_wrapper.clone().or_else(find_nss_wrapper).ok_or_else(|| {
            BackendError::Config(format!(
                "UID {uid} has no passwd entry, which ssh needs, and libnss_wrapper.so was not found; install it in the image (Debian: libnss-wrapper) or set nss_wrapper_library"
            ))
        })?;
        let gid = nix::unistd::getgid();
        let dir = self.state_dir.join("nss");
        let home = self.home();
        write_private(
            &dir.join("passwd"),
            format!("tether:x:{uid}:{gid}:tether:{}:/bin/sh\n", home.display()).as_bytes(),
        )?;
        write_private(&dir.join("group"), format!("tether:x:{gid}:\n").as_bytes())?;
        env.push(("LD_PRELOAD".into(), lib.into()));
        env.push(("NSS_WRAPPER_PASSWD".into(), dir.join("passwd").into()));
        env.push(("NSS_WRAPPER_GROUP".into(), dir.join("group").into()));
        Ok(())
    }

    /// A `std::process::Command` for git with the prepared environment.
    pub fn command(
        &self,
        network: bool,
    ) -> Result<(std::process::Command, Vec<SecretString>), BackendError> {
        let (env, secrets) = self.environment(network)?;
        let mut cmd = std::process::Command::new(&self.git);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("GIT_")
                || k == "SSH_ASKPASS"
                || k == "SSH_AUTH_SOCK"
                || k == "LD_PRELOAD"
                || k.starts_with("NSS_WRAPPER")
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.envs(env);
        cmd.current_dir(&self.repo_dir);
        cmd.stdin(Stdio::null());
        Ok((cmd, secrets))
    }

    /// Runs git with `args`, waiting at most the configured timeout.
    pub async fn run(
        &self,
        operation: &'static str,
        args: &[&str],
        network: bool,
    ) -> Result<Output, BackendError> {
        // Preparing the environment writes key and passwd files (fsynced)
        // and looks up the UID: blocking work, off the async workers.
        let runner = self.clone();
        let (mut cmd, secrets) = tokio::task::spawn_blocking(move || runner.command(network))
            .await
            .map_err(|e| BackendError::Config(format!("preparing git: {e}")))??;
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| BackendError::Config(format!("cannot run {}: {e}", self.git.display())))?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(BackendError::transient(
                    operation,
                    self.remote.to_string(),
                    e,
                ));
            }
            Err(_) => {
                return Err(BackendError::transient(
                    operation,
                    self.remote.to_string(),
                    format!("git did not finish within {} s", self.timeout.as_secs()),
                ));
            }
        };
        let secret_strs: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
        let stderr = scrub(&String::from_utf8_lossy(&out.stderr), &secret_strs);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        tracing::debug!(operation, success = out.status.success(), %stderr, "git finished");
        // Lines starting with "remote:" are the server's (its disk, not ours).
        let local_disk_full = stderr
            .lines()
            .any(|l| !l.trim_start().starts_with("remote:") && crate::tree::is_disk_full(l));
        if !out.status.success() && local_disk_full {
            return Err(BackendError::transient(
                operation,
                self.remote.to_string(),
                format!(
                    "disk full in state directory {} (free space there): {}",
                    self.state_dir.display(),
                    stderr.trim()
                ),
            ));
        }
        Ok(Output {
            success: out.status.success(),
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_quotes_paths_and_is_strict() {
        let c = ssh_command(
            Path::new("ssh"),
            Some(Path::new("/state dir/it's/key")),
            Path::new("/kh"),
            Duration::from_secs(30),
        );
        assert!(c.contains(r"-i '/state dir/it'\''s/key'"), "{c}");
        for must in [
            "-F /dev/null",
            "'StrictHostKeyChecking=yes'",
            "'BatchMode=yes'",
            "IdentitiesOnly=yes",
            "'UserKnownHostsFile=/kh'",
        ] {
            assert!(c.contains(must), "{must} missing in {c}");
        }
    }

    #[test]
    fn scrub_removes_tokens_passwords_and_headers() {
        let text = "fatal: unable to access 'https://u:s3cr3t-token@h/x.git/': 403\n\
                    Authorization: Basic abc\n\
                    remote: token s3cr3t-token rejected\n";
        let s = scrub(text, &["s3cr3t-token"]);
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(!s.contains("Basic abc"), "{s}");
        assert!(s.contains("u:***@h"), "{s}");
        let long = "x".repeat(5000);
        assert!(scrub(&long, &[]).chars().count() <= 2001);
    }

    #[test]
    fn errors_say_what_to_fix() {
        let r = GitRemote::parse("ssh://git@h:2222/x.git").unwrap();
        let e = classify(
            "push",
            &r,
            Some(Path::new("/kh")),
            "Host key verification failed.\nfatal: Could not read from remote repository.",
        );
        let m = e.to_string();
        assert!(m.contains("host key") && m.contains("/kh"), "{m}");
        assert!(matches!(
            e,
            BackendError::Remote {
                transient: false,
                ..
            }
        ));
        let e = classify(
            "push",
            &r,
            None,
            "ssh: connect to host h port 2222: Connection refused",
        );
        assert!(matches!(
            e,
            BackendError::Remote {
                transient: true,
                ..
            }
        ));
        let h = GitRemote::parse("https://h/x.git").unwrap();
        let e = classify(
            "fetch",
            &h,
            None,
            "fatal: Authentication failed for 'https://h/x.git/'",
        );
        assert!(e.to_string().contains("check the token"), "{e}");
        assert!(matches!(
            e,
            BackendError::Remote {
                transient: false,
                ..
            }
        ));
    }
}
