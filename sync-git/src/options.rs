//! [`GitOptions`]: everything about a git backend that is not in its URL.

use std::path::PathBuf;
use std::time::Duration;

/// Default of [`GitOptions::gc_loose_objects`]: git's own `gc.auto`.
pub const DEFAULT_GC_LOOSE_OBJECTS: usize = 6_700;

/// Default of [`GitOptions::max_entries`].
pub const DEFAULT_MAX_ENTRIES: u64 = 500_000;

/// Options for [`GitBackend::from_url`](crate::GitBackend::from_url).
///
/// Only `state_dir` is required; [`GitOptions::new`] fills in the rest.
/// Credentials are given as *where to read them* (a file or a variable),
/// re-read before every network command so rotated secrets apply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitOptions {
    /// A directory owned by this backend, outside the synced directory: the
    /// bare repository, the 0600 copy of the ssh key and the private `HOME`
    /// of git and ssh live here. It must be writable; nothing is written
    /// anywhere else.
    pub state_dir: PathBuf,
    /// Commit author and committer name (default `tether`).
    pub author_name: String,
    /// Commit author and committer email (default `tether@localhost`).
    pub author_email: String,
    /// Private key for `ssh://` remotes. Copied to a 0600 file in the state
    /// directory before use, so a mount with wider permissions works.
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts file for `ssh://` remotes (required for them: host keys
    /// are always checked strictly).
    pub known_hosts_file: Option<PathBuf>,
    /// File holding the HTTPS token (surrounding whitespace is ignored).
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the HTTPS token (used when
    /// `token_file` is unset).
    pub token_env: Option<String>,
    /// User name sent with the token (default: the user in the URL, else
    /// `tether`; forges accept any name with a personal access token).
    pub http_user: Option<String>,
    /// Name used in conflict branches (`tether/conflict/<host>/<time>`);
    /// default: `$HOSTNAME`, then `/etc/hostname`, then `unknown`.
    pub host_name: Option<String>,
    /// The git executable (default `git`, looked up in `PATH`).
    pub git_program: PathBuf,
    /// The ssh executable (default `ssh`).
    pub ssh_program: PathBuf,
    /// `libnss_wrapper.so`, used when the UID has no passwd entry and ssh is
    /// needed (default: searched in the usual library directories).
    pub nss_wrapper_library: Option<PathBuf>,
    /// Longest time one git command may take before it is killed and the
    /// operation fails as transient (default 10 minutes).
    pub command_timeout: Duration,
    /// How long the network may stall before git gives up (default 60 s):
    /// HTTP(S) transfers slower than 1 KB/s for this long are aborted
    /// (`http.lowSpeedTime`), ssh gives up connecting after it and drops a
    /// connection whose server stopped answering for about as long. (The
    /// `git://` protocol has no such setting; `command_timeout` and the
    /// engine's shutdown deadline bound it.)
    pub request_timeout: Duration,
    /// Loose objects in the local bare repository above which a push
    /// starts `git gc --auto` in the background (default 6,700, git's own
    /// `gc.auto`); 0 never packs. A failed gc is retried an hour later. Every checkpoint writes its blobs, trees and commit
    /// as loose objects, so a sidecar running for weeks would otherwise
    /// fill its state directory with small files.
    pub gc_loose_objects: usize,
    /// The most tree entries one restore, history or re-base expands
    /// (default 500,000, as for object stores). Trees name subtrees by id,
    /// so a few KB of hostile trees can share one subtree into billions of
    /// paths; past this a tree is refused as invalid instead of filling
    /// memory. Raise it for larger trees.
    pub max_entries: u64,
}

impl GitOptions {
    /// Defaults, with state kept in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        GitOptions {
            state_dir: state_dir.into(),
            author_name: "tether".into(),
            author_email: "tether@localhost".into(),
            ssh_key_file: None,
            known_hosts_file: None,
            token_file: None,
            token_env: None,
            http_user: None,
            host_name: None,
            git_program: PathBuf::from("git"),
            ssh_program: PathBuf::from("ssh"),
            nss_wrapper_library: None,
            command_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
            gc_loose_objects: DEFAULT_GC_LOOSE_OBJECTS,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Sets the commit author (and committer).
    pub fn author(mut self, name: impl Into<String>, email: impl Into<String>) -> Self {
        self.author_name = name.into();
        self.author_email = email.into();
        self
    }

    /// Sets the ssh key file and known_hosts file.
    pub fn ssh(
        mut self,
        key_file: impl Into<PathBuf>,
        known_hosts_file: impl Into<PathBuf>,
    ) -> Self {
        self.ssh_key_file = Some(key_file.into());
        self.known_hosts_file = Some(known_hosts_file.into());
        self
    }

    /// Reads the HTTPS token from `path`.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Reads the HTTPS token from the environment variable `name`.
    pub fn token_env(mut self, name: impl Into<String>) -> Self {
        self.token_env = Some(name.into());
        self
    }
}
