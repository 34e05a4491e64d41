//! Git remote URLs: which transport git uses and which branch tether pushes.
//!
//! The URL itself is parsed by [`remote_spec::RemoteSpec::parse`], the one
//! parser every tether program shares (the CLI, the admission webhook and
//! the object-store backend use it too, so they agree on what is a git
//! URL). Accepted forms (the query `?branch=NAME` is optional, default
//! `main`):
//!
//! * `ssh://[user@]host[:port]/path/repo.git`
//! * `https://host/path/repo.git`, `http://host/path/repo.git`
//! * `git://host[:port]/path/repo.git`
//! * `file:///path/repo.git`
//! * the same with a `git+` prefix (`git+https://host/path`), needed when
//!   the path does not end in `.git`: a bare `https://host/path` is refused
//!   as ambiguous (see remote-spec's docs).
//!
//! Passwords and (except for ssh's login) user names in the URL are
//! refused: credentials come from a token file or an environment variable
//! (see [`GitOptions`](crate::GitOptions)), so the URL can be logged, shown
//! in errors and passed on a command line as is.

use std::fmt;

use remote_spec::{Family, RemoteSpec, Scheme};

/// Why a git URL or option set is unusable. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is refused by the shared remote parser (syntax, scheme,
    /// parameters, credentials in the URL).
    #[error(transparent)]
    Remote(#[from] remote_spec::SpecError),
    /// The URL names an object store, not a git repository.
    #[error(
        "{url} is not a git remote (use ssh://, https://….git, git+https://…, git:// or file:///….git)"
    )]
    NotGit {
        /// The redacted URL.
        url: String,
    },
    /// The branch name is not a valid git branch name.
    #[error("invalid branch name {branch:?}: {reason}")]
    InvalidBranch {
        /// The branch asked for.
        branch: String,
        /// Why git would refuse it.
        reason: String,
    },
    /// An ssh remote needs a known_hosts file (host keys are always checked).
    #[error(
        "ssh remote {url:?} needs a known_hosts file (known_hosts_file): host keys are always checked"
    )]
    MissingKnownHosts {
        /// The URL.
        url: String,
    },
    /// A file named in the options cannot be used.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which option (`ssh key file`, `known_hosts file`, `token file`, `state directory`).
        what: &'static str,
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The token environment variable is not set.
    #[error("environment variable {name} (token_env) is not set or empty")]
    MissingTokenEnv {
        /// The variable's name.
        name: String,
    },
    /// The author name or email is unusable in a commit.
    #[error("invalid commit author {0:?}: names and emails cannot contain <, > or newlines")]
    InvalidAuthor(String),
}

/// Which transport a remote uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// `ssh://`
    Ssh,
    /// `https://`
    Https,
    /// `http://`
    Http,
    /// `git://`
    Git,
    /// `file://`
    File,
}

impl RemoteKind {
    /// True for `http://` and `https://`.
    pub fn is_http(self) -> bool {
        matches!(self, RemoteKind::Http | RemoteKind::Https)
    }
}

/// A parsed git remote: the URL git is given and the branch tether pushes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRemote {
    url: String,
    kind: RemoteKind,
    branch: String,
    user: Option<String>,
}

/// The branch used when the URL does not name one.
pub const DEFAULT_BRANCH: &str = "main";

impl GitRemote {
    /// Parses a URL in one of the forms listed in the module docs.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        Self::from_spec(&RemoteSpec::parse(input)?)
    }

    /// The git remote of a parsed URL; refuses object-store URLs.
    pub fn from_spec(spec: &RemoteSpec) -> Result<Self, ConfigError> {
        let not_git = || ConfigError::NotGit {
            url: spec.to_string(),
        };
        let kind = match spec.scheme() {
            Scheme::GitSsh => RemoteKind::Ssh,
            Scheme::GitHttps => RemoteKind::Https,
            Scheme::GitHttp => RemoteKind::Http,
            Scheme::GitDaemon => RemoteKind::Git,
            Scheme::GitFile => RemoteKind::File,
            _ => return Err(not_git()),
        };
        let (Some(url), Some(branch)) = (spec.git_url(), spec.branch()) else {
            return Err(not_git());
        };
        validate_branch(branch)?;
        Ok(GitRemote {
            url: url.to_owned(),
            kind,
            branch: branch.to_owned(),
            user: spec.user().map(str::to_owned),
        })
    }

    /// The URL handed to git (no query, no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The transport.
    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    /// The branch checkpoints are pushed to (without `refs/heads/`).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The full ref name of the branch.
    pub fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// The user name in the URL, if any (for HTTP authentication).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl fmt::Display for GitRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (branch {})", self.url, self.branch)
    }
}

/// Checks a branch name with git's rules (`git check-ref-format --branch`).
pub fn validate_branch(branch: &str) -> Result<(), ConfigError> {
    remote_spec::check_branch(branch).map_err(|reason| ConfigError::InvalidBranch {
        branch: branch.to_owned(),
        reason,
    })
}

/// True when `s` is a git remote rather than another backend's URL (by
/// [`RemoteSpec::parse`]'s rules): `git://`, `ssh://` and any `git+…` URL;
/// `http(s)://` and `file://` when the repository path ends in `.git` or
/// the URL has a `?branch=`. False for anything the parser refuses.
///
/// ```
/// use sync_git::is_git_url;
/// assert!(is_git_url("https://github.com/me/notes.git?branch=main"));
/// assert!(is_git_url("ssh://git@example.com/me/notes"));
/// assert!(is_git_url("git+https://gitea.local/me/notes"));
/// assert!(!is_git_url("s3://bucket/prefix"));
/// assert!(!is_git_url("https://s3.example.com/bucket"));
/// ```
pub fn is_git_url(s: &str) -> bool {
    RemoteSpec::parse(s).is_ok_and(|spec| spec.family() == Family::Git)
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{}:***@{}", &url[..scheme_end], user, &rest[at + 1..])
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_four_transports_and_a_branch() {
        for (url, kind) in [
            ("ssh://git@example.com:2222/srv/notes.git", RemoteKind::Ssh),
            ("https://example.com/me/notes.git", RemoteKind::Https),
            ("http://127.0.0.1:8081/git/notes.git", RemoteKind::Http),
            ("git://127.0.0.1:9418/notes.git", RemoteKind::Git),
            ("file:///srv/git/notes.git", RemoteKind::File),
        ] {
            let r = GitRemote::parse(url).unwrap();
            assert_eq!(r.kind(), kind, "{url}");
            assert_eq!(r.url(), url);
            assert_eq!(r.branch(), "main");
        }
        let r = GitRemote::parse("git+https://example.com/me/notes?branch=pods/a").unwrap();
        assert_eq!(r.url(), "https://example.com/me/notes");
        assert_eq!(r.branch(), "pods/a");
        assert_eq!(r.branch_ref(), "refs/heads/pods/a");
        assert_eq!(
            GitRemote::parse("ssh://git@h/x.git").unwrap().user(),
            Some("git")
        );
    }

    #[test]
    fn refuses_passwords_and_never_echoes_them() {
        let err = GitRemote::parse("https://me:hunter2@example.com/x.git").unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Remote(remote_spec::SpecError::Password)
        ));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("password"), "{err}");
    }

    #[test]
    fn refuses_bad_schemes_branches_and_parameters() {
        assert!(matches!(
            GitRemote::parse("s3://bucket/x").unwrap_err(),
            ConfigError::NotGit { .. }
        ));
        for bad in ["a..b", "-x", "a%20b", "x.lock", "a~1", "", "a:b", "/a"] {
            let url = format!("git://h/x.git?branch={bad}");
            let err = GitRemote::parse(&url).unwrap_err();
            assert!(err.to_string().contains("branch"), "{bad:?}: {err}");
            assert!(
                validate_branch(&bad.replace("%20", " ")).is_err(),
                "{bad:?}"
            );
        }
        assert!(matches!(
            GitRemote::parse("git://h/x.git?depth=1").unwrap_err(),
            ConfigError::Remote(remote_spec::SpecError::UnknownParameter { .. })
        ));
        // A bare https URL is ambiguous (object store or forge): refused
        // with the spelling to use.
        let err = GitRemote::parse("https://gitea.example/me/notes").unwrap_err();
        assert!(err.to_string().contains("git+https://"), "{err}");
        assert!(GitRemote::parse("git@example.com:me/x.git").is_err());
        assert!(GitRemote::parse("https:///x.git").is_err());
    }

    #[test]
    fn recognises_git_urls() {
        for yes in [
            "git://h/x",
            "ssh://h/x",
            "git+https://h/x",
            "git+file:///x",
            "https://h/x.git",
            "http://h/x.git/",
            "file:///srv/x.git?branch=b",
            "file:///srv/x?branch=b",
        ] {
            assert!(is_git_url(yes), "{yes}");
        }
        for no in [
            "s3://b/p",
            "https://h/bucket",
            "file:///srv/data",
            "/local/dir",
        ] {
            assert!(!is_git_url(no), "{no}");
        }
    }

    #[test]
    fn redaction_keeps_user_and_host() {
        assert_eq!(redact_url("https://u:p@h/x"), "https://u:***@h/x");
        assert_eq!(redact_url("ssh://git@h/x"), "ssh://git@h/x");
        assert_eq!(redact_url("/plain/path"), "/plain/path");
    }
}
