//! Git remote URLs: which ones tether accepts, how the branch is chosen, and
//! how to tell a git URL from other backends' URLs.
//!
//! Accepted forms (the query `?branch=NAME` is optional, default `main`):
//!
//! * `ssh://[user@]host[:port]/path/repo.git`
//! * `https://host/path/repo.git`, `http://host/path/repo.git`
//! * `git://host[:port]/path/repo.git`
//! * `file:///path/repo.git`
//! * the same with a `git+` prefix (`git+https://…`), which makes any of
//!   them unambiguous for [`is_git_url`].
//!
//! Passwords in the URL are refused: credentials come from a token file or
//! an environment variable (see [`GitOptions`](crate::GitOptions)), so the
//! URL can be logged, shown in errors and passed on a command line as is.

use std::fmt;

use gix::bstr::ByteSlice;

/// Why a git URL or option set is unusable. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL could not be parsed.
    #[error("invalid git URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL (any password removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL scheme is not one tether's git backend speaks.
    #[error(
        "unsupported git URL scheme {scheme:?} in {url:?} (use ssh://, https://, http://, git:// or file://)"
    )]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
        /// The URL.
        url: String,
    },
    /// The URL carries a password or token.
    #[error(
        "the git URL {url:?} contains a password; put the token in a file or an environment variable instead (token_file / token_env)"
    )]
    CredentialsInUrl {
        /// The URL with the password replaced by `***`.
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
    /// An unknown query parameter.
    #[error("unknown parameter {name:?} in git URL {url:?} (only `branch` is understood)")]
    UnknownParameter {
        /// The parameter.
        name: String,
        /// The URL.
        url: String,
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
    fn from_scheme(s: &str) -> Option<Self> {
        match s {
            "ssh" => Some(RemoteKind::Ssh),
            "https" => Some(RemoteKind::Https),
            "http" => Some(RemoteKind::Http),
            "git" => Some(RemoteKind::Git),
            "file" => Some(RemoteKind::File),
            _ => None,
        }
    }

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
        let trimmed = input.trim();
        let without_prefix = trimmed.strip_prefix("git+").unwrap_or(trimmed);
        let (base, query) = match without_prefix.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (without_prefix, None),
        };
        let shown = redact_url(base);
        let parsed =
            gix::url::parse(base.as_bytes().as_bstr()).map_err(|e| ConfigError::InvalidUrl {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        if parsed.password().is_some() {
            return Err(ConfigError::CredentialsInUrl { url: shown });
        }
        let scheme = parsed.scheme.as_str().to_owned();
        let kind = match RemoteKind::from_scheme(&scheme) {
            // scp-like `user@host:path` parses as ssh but has no `://`.
            Some(RemoteKind::Ssh) if !base.contains("://") => {
                return Err(ConfigError::InvalidUrl {
                    url: shown,
                    reason: "scp-like addresses are not accepted; write ssh://user@host/path"
                        .into(),
                });
            }
            Some(k) => k,
            None => {
                return Err(ConfigError::UnsupportedScheme { scheme, url: shown });
            }
        };
        if kind != RemoteKind::File && parsed.host().is_none_or(str::is_empty) {
            return Err(ConfigError::InvalidUrl {
                url: shown,
                reason: "no host".into(),
            });
        }
        if parsed.path.is_empty() || parsed.path == "/" {
            return Err(ConfigError::InvalidUrl {
                url: shown,
                reason: "no repository path".into(),
            });
        }
        let mut branch = DEFAULT_BRANCH.to_owned();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "branch" => branch = v.to_owned(),
                other => {
                    return Err(ConfigError::UnknownParameter {
                        name: other.to_owned(),
                        url: shown,
                    });
                }
            }
        }
        validate_branch(&branch)?;
        Ok(GitRemote {
            url: base.to_owned(),
            kind,
            branch,
            user: parsed.user().map(str::to_owned),
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
    let err = |reason: String| ConfigError::InvalidBranch {
        branch: branch.to_owned(),
        reason,
    };
    if branch.is_empty() {
        return Err(err("empty".into()));
    }
    if branch.starts_with('-') {
        return Err(err("starts with '-'".into()));
    }
    gix::validate::reference::name(format!("refs/heads/{branch}").as_str().into())
        .map(|_| ())
        .map_err(|e| err(e.to_string()))
}

/// True when `s` looks like a git remote rather than another backend's URL:
/// `git://`, `ssh://` and any `git+…` URL always; `http(s)://` and `file://`
/// when the repository path ends in `.git` (before any `?query`).
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
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("git+") || lower.starts_with("git://") || lower.starts_with("ssh://") {
        return true;
    }
    let base = lower.split('?').next().unwrap_or("");
    let path_is_repo = base.trim_end_matches('/').ends_with(".git");
    (base.starts_with("https://") || base.starts_with("http://") || base.starts_with("file://"))
        && path_is_repo
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
        assert!(matches!(err, ConfigError::CredentialsInUrl { .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("me:***@example.com"), "{err}");
    }

    #[test]
    fn refuses_bad_schemes_branches_and_parameters() {
        assert!(matches!(
            GitRemote::parse("s3://bucket/x").unwrap_err(),
            ConfigError::UnsupportedScheme { .. }
        ));
        for bad in ["a..b", "-x", "a b", "x.lock", "a~1", "", "a:b", "/a"] {
            let url = format!("git://h/x.git?branch={bad}");
            assert!(
                matches!(
                    GitRemote::parse(&url).unwrap_err(),
                    ConfigError::InvalidBranch { .. }
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            GitRemote::parse("git://h/x.git?depth=1").unwrap_err(),
            ConfigError::UnknownParameter { .. }
        ));
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
