//! `remote-spec`: what a tether remote URL means, decided in one place.
//!
//! Four programs read remote URLs: the object-store backend (`sync-s3`), the
//! git backend (`sync-git`), the `tether` command line (which picks one of
//! the two) and the admission webhook (`kube-deploy`, which checks the
//! `tether.dev/remote` annotation before a pod starts). They all call
//! [`RemoteSpec::parse`], so a URL the webhook admits is one the sidecar
//! runs, and a URL the sidecar would refuse is refused at admission with the
//! same one-line message.
//!
//! # Data flow
//!
//! ```text
//! text ─► character check ─► optional `git+` prefix ─► url::Url ─► no #fragment
//!      ─► no password (any scheme), no user name (except ssh's login)
//!      ─► Scheme (decides the Family) ─► host / path rules of the scheme
//!      ─► query parameters: allowed per scheme, values checked ─► RemoteSpec
//! ```
//!
//! The backends then do only their own work with the result: `sync-s3`
//! builds an `object_store` from [`RemoteSpec::url`] and
//! [`RemoteSpec::params`], `sync-git` hands [`RemoteSpec::git_url`] to git.
//! Nothing here touches the network, the file system or the environment.
//!
//! # Accepted forms
//!
//! | family | URL | scheme |
//! |---|---|---|
//! | object store | `s3://bucket/prefix` (`s3a://`) | [`Scheme::S3`] |
//! | object store | `gs://bucket/prefix` | [`Scheme::Gcs`] |
//! | object store | `az://container/prefix` (`azure://`) | [`Scheme::Azure`] |
//! | object store | `file:///absolute/dir` | [`Scheme::File`] |
//! | object store | `memory://name/prefix` (one process; tests) | [`Scheme::Memory`] |
//! | git | `ssh://[user@]host[:port]/path` | [`Scheme::GitSsh`] |
//! | git | `git://host[:port]/path` | [`Scheme::GitDaemon`] |
//! | git | `https://host/path.git`, `git+https://host/path` | [`Scheme::GitHttps`] |
//! | git | `http://host/path.git`, `git+http://host/path` | [`Scheme::GitHttp`] |
//! | git | `file:///path.git`, `git+file:///path` | [`Scheme::GitFile`] |
//!
//! **How `https://` is read.** An `http(s)://` or `file://` URL is a git
//! repository when its path ends in `.git`, when it is written with the
//! `git+` prefix, or when it has a `?branch=` parameter. `file:///dir`
//! otherwise is a local object store. A bare `https://host/path` is
//! *refused*: it could be a forge without the `.git` suffix or an
//! S3-compatible server, and guessing wrong only shows up later as a
//! crash-looping pod. The message says to write `git+https://host/path` for
//! git or `s3://BUCKET/PREFIX?endpoint=https://host` for an object store.
//! scp-like `git@host:path` is refused with the `ssh://` spelling to use.
//!
//! # Parameters
//!
//! Git remotes take `branch` (a valid git branch name; default `main`) and
//! `max_entries` (the most tree entries a restore or history expands).
//! Object stores take `layout` (`mirror` or `snapshots`), `concurrency`,
//! `pack_size`, `max_buffered_bytes`, `max_entries`, `max_manifest_bytes`,
//! `single_writer` (`true` or `false`); `compression` (`auto`, `off`,
//! `max`: snapshots content);
//! S3, GCS and Azure also `endpoint`, `allow_http` and `skip_signature`;
//! S3 also `region` and `virtual_hosted_style`. Anything else is refused.
//!
//! # Credentials
//!
//! A URL never carries a secret: a password (`user:password@`) is refused
//! for every scheme, a user name for every scheme but `ssh://` (where it is
//! the login, such as `git@`; for https it is often a token), and so is any
//! query parameter whose name looks like a credential (`…key…`, `…secret…`,
//! `…token…`, `sas`, `signature`, …). Error messages never contain the URL
//! itself, only the parts that cannot be secret (scheme, host, parameter
//! names, values of the known non-secret parameters), and every message is
//! one line. [`RemoteSpec`]'s `Display` is the redacted form for logs.
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::RangeInclusive;

use percent_encoding::percent_decode_str;
use url::Url;

/// Which backend crate serves a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `sync-s3`: S3, GCS, Azure, a local directory, memory.
    ObjectStore,
    /// `sync-git`: a git repository.
    Git,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::ObjectStore => "object store",
            Family::Git => "git",
        })
    }
}

/// The kind of remote a URL names (see the table in the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `s3://bucket/prefix`, `s3a://…`.
    S3,
    /// `gs://bucket/prefix`.
    Gcs,
    /// `az://container/prefix`, `azure://…`.
    Azure,
    /// `file:///absolute/dir`: a directory used as an object store.
    File,
    /// `memory://name/prefix`: a store private to one process (tests).
    Memory,
    /// `ssh://[user@]host[:port]/path`.
    GitSsh,
    /// `https://host/path.git` or `git+https://host/path`.
    GitHttps,
    /// `http://host/path.git` or `git+http://host/path`.
    GitHttp,
    /// `git://host[:port]/path` (the anonymous git daemon).
    GitDaemon,
    /// `file:///path.git` or `git+file:///path`: a repository on disk.
    GitFile,
}

const STORE_PARAMS: &[&str] = &[
    "layout",
    "concurrency",
    "pack_size",
    "max_buffered_bytes",
    "max_entries",
    "max_manifest_bytes",
    "single_writer",
    "compression",
];
const CLOUD_PARAMS: &[&str] = &["endpoint", "allow_http", "skip_signature"];
const S3_PARAMS: &[&str] = &["region", "virtual_hosted_style"];
const GIT_PARAMS: &[&str] = &["branch", "max_entries"];

impl Scheme {
    /// The backend family.
    pub fn family(self) -> Family {
        match self {
            Scheme::S3 | Scheme::Gcs | Scheme::Azure | Scheme::File | Scheme::Memory => {
                Family::ObjectStore
            }
            Scheme::GitSsh
            | Scheme::GitHttps
            | Scheme::GitHttp
            | Scheme::GitDaemon
            | Scheme::GitFile => Family::Git,
        }
    }

    /// A short name for messages (`s3`, `git over https`, …).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
            Scheme::File => "file (object store)",
            Scheme::Memory => "memory",
            Scheme::GitSsh => "git over ssh",
            Scheme::GitHttps => "git over https",
            Scheme::GitHttp => "git over http",
            Scheme::GitDaemon => "git://",
            Scheme::GitFile => "git on disk (file)",
        }
    }

    /// The query parameters this kind of remote understands (canonical,
    /// lowercase names; `endpoint_url` and `virtual_hosted_style_request`
    /// are accepted as aliases).
    pub fn allowed_params(self) -> Vec<&'static str> {
        let parts: &[&[&str]] = match self {
            Scheme::S3 => &[STORE_PARAMS, CLOUD_PARAMS, S3_PARAMS],
            Scheme::Gcs | Scheme::Azure => &[STORE_PARAMS, CLOUD_PARAMS],
            Scheme::File | Scheme::Memory => &[STORE_PARAMS],
            _ => &[GIT_PARAMS],
        };
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }
}

/// Ranges of the numeric object-store parameters (also used by `sync-s3`
/// for options set in code, so a URL and a program get the same limits).
pub mod limits {
    use std::ops::RangeInclusive;

    /// `concurrency`: requests in flight at once.
    pub const CONCURRENCY: RangeInclusive<u64> = 1..=1024;
    /// `pack_size`: 64 KiB to 1 GiB.
    pub const PACK_SIZE: RangeInclusive<u64> = (64 << 10)..=(1 << 30);
    /// `max_buffered_bytes`: 1 MiB to 4 GiB − 1.
    pub const MAX_BUFFERED_BYTES: RangeInclusive<u64> = (1 << 20)..=(u32::MAX as u64);
    /// `max_entries`: at least one.
    pub const MAX_ENTRIES: RangeInclusive<u64> = 1..=u64::MAX;
    /// `max_manifest_bytes`: at least one byte.
    pub const MAX_MANIFEST_BYTES: RangeInclusive<u64> = 1..=u64::MAX;
}

/// Why a remote URL is refused. Every message is one line, says what to
/// change, and never contains a credential or the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Nothing was given.
    #[error("the remote URL is empty")]
    Empty,
    /// Longer than any real remote URL.
    #[error("the remote URL is longer than {MAX_LEN} bytes")]
    TooLong,
    /// A character that has no business in a remote URL.
    #[error(
        "the remote URL contains a {0}: remove it or percent-encode it (URLs are passed as is, never through a shell)"
    )]
    Character(String),
    /// No `scheme://`.
    #[error(
        "the remote is not a URL: write SCHEME://…, e.g. s3://bucket/prefix, ssh://git@host/repo.git or file:///absolute/dir"
    )]
    NotAUrl,
    /// `user@host:path`.
    #[error(
        "scp-like git addresses (user@host:path) are not accepted: write ssh://user@host/path instead"
    )]
    ScpLike,
    /// The URL library refused it.
    #[error("the remote URL does not parse: {0}")]
    Syntax(#[source] url::ParseError),
    /// A scheme tether does not speak.
    #[error(
        "unsupported remote scheme {0:?}: use s3://, gs://, az://, file:///dir, or a git remote (ssh://, git://, https://….git, git+https://…, file:///….git)"
    )]
    UnsupportedScheme(String),
    /// `https://host/path` without `.git`, `git+` or `?branch=`.
    #[error(
        "{scheme}://{host}/… is ambiguous: for a git repository write git+{scheme}://… (or end the path in .git); for an S3-compatible server write s3://BUCKET/PREFIX?endpoint={scheme}://{host}"
    )]
    AmbiguousHttp {
        /// `http` or `https`.
        scheme: &'static str,
        /// The host (never user information).
        host: String,
    },
    /// `#fragment`.
    #[error("the remote URL has a #fragment, which tether does not use: remove it")]
    Fragment,
    /// `user:password@`.
    #[error(
        "the remote URL embeds a password: remove user:password@; credentials come from the environment, a token or key file, or the credentials Secret"
    )]
    Password,
    /// `user@` outside ssh.
    #[error(
        "the remote URL embeds a user name (it may be a token): remove NAME@; only ssh:// URLs take a login (git@host), https tokens come from a token file"
    )]
    UserName,
    /// A query parameter named like a credential.
    #[error(
        "remote parameter {0:?} looks like a credential: credentials are read from the environment, a token or key file, or the credentials Secret, never from the URL"
    )]
    CredentialParameter(String),
    /// No bucket, container or host.
    #[error("missing {what} name: write {example}")]
    MissingHost {
        /// `bucket`, `container` or `host`.
        what: &'static str,
        /// The form to use.
        example: &'static str,
    },
    /// A port on a bucket or container.
    #[error("{0} names are not host names and take no :port; put the server in ?endpoint=")]
    Port(&'static str),
    /// `file://host/…`.
    #[error("file URLs must be file:///absolute/path (three slashes, no host)")]
    FileHost,
    /// A git URL without a repository path.
    #[error("no repository path: write e.g. ssh://git@host/me/notes.git")]
    MissingPath,
    /// An object-store prefix or directory with an unusable segment.
    #[error("bad prefix in the remote URL: {0}")]
    BadPrefix(&'static str),
    /// A parameter the remote's kind does not read.
    #[error("unknown remote parameter {name:?} for {scheme} remotes (allowed: {allowed})")]
    UnknownParameter {
        /// The parameter (lowercased).
        name: String,
        /// The kind of remote.
        scheme: &'static str,
        /// The allowed names.
        allowed: String,
    },
    /// The same parameter twice.
    #[error("remote parameter {0:?} is given twice: keep one")]
    Duplicate(String),
    /// A parameter with an unusable value.
    #[error("remote parameter {name}: {reason}")]
    InvalidValue {
        /// The parameter.
        name: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// Longest accepted URL.
pub const MAX_LEN: usize = 4096;

/// The branch git remotes use when the URL names none.
pub const DEFAULT_BRANCH: &str = "main";

/// Query parameter names that suggest a credential.
const SECRET_HINTS: &[&str] = &[
    "key",
    "secret",
    "token",
    "password",
    "passwd",
    "sas",
    "credential",
    "signature",
    "auth",
];

/// A parsed, checked remote URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    scheme: Scheme,
    /// The scheme as written, lowercased, with any `git+` prefix.
    written_scheme: String,
    /// The URL without `git+`, query and fragment.
    url: Url,
    /// For git: the text handed to git (as written, without `git+` and query).
    git_url: Option<String>,
    /// Decoded path.
    path: String,
    /// Checked parameters, canonical names, in the order given.
    params: Vec<(&'static str, String)>,
}

impl RemoteSpec {
    /// Parses and checks a remote URL (see the crate docs for the rules).
    ///
    /// ```
    /// use remote_spec::{Family, RemoteSpec, Scheme};
    /// let s = RemoteSpec::parse("s3://work/pods/alice?layout=mirror").unwrap();
    /// assert_eq!((s.family(), s.scheme(), s.host(), s.prefix().as_str()),
    ///            (Family::ObjectStore, Scheme::S3, "work", "pods/alice"));
    /// let g = RemoteSpec::parse("git+https://gitea.example/me/notes?branch=pod-a").unwrap();
    /// assert_eq!((g.scheme(), g.git_url(), g.branch()),
    ///            (Scheme::GitHttps, Some("https://gitea.example/me/notes"), Some("pod-a")));
    /// assert!(RemoteSpec::parse("https://gitea.example/me/notes").is_err());
    /// let e = RemoteSpec::parse("https://me:hunter2@example.com/x.git").unwrap_err();
    /// assert!(!e.to_string().contains("hunter2"));
    /// ```
    pub fn parse(input: &str) -> Result<RemoteSpec, SpecError> {
        if input.is_empty() {
            return Err(SpecError::Empty);
        }
        if input.len() > MAX_LEN {
            return Err(SpecError::TooLong);
        }
        if let Some(c) = input.chars().find(|&c| forbidden(c)) {
            return Err(SpecError::Character(describe_char(c)));
        }
        let Some(scheme_end) = input.find("://") else {
            return Err(if scp_like(input) {
                SpecError::ScpLike
            } else {
                SpecError::NotAUrl
            });
        };
        let written_scheme = input[..scheme_end].to_ascii_lowercase();
        let (git_prefix, inner) = match written_scheme.strip_prefix("git+") {
            Some(_) => (true, &input[4..]),
            None => (false, input),
        };
        let scheme_name = &written_scheme[if git_prefix { 4 } else { 0 }..];
        let mut url = Url::parse(inner).map_err(SpecError::Syntax)?;
        if url.fragment().is_some() {
            return Err(SpecError::Fragment);
        }
        if url.password().is_some() {
            return Err(SpecError::Password);
        }
        let gitish = url.path().trim_end_matches('/').ends_with(".git")
            || url
                .query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("branch"));
        let scheme = match (git_prefix, scheme_name) {
            (_, "ssh") => Scheme::GitSsh,
            (_, "git") => Scheme::GitDaemon,
            (true, "https") => Scheme::GitHttps,
            (true, "http") => Scheme::GitHttp,
            (true, "file") => Scheme::GitFile,
            (false, "https") if gitish => Scheme::GitHttps,
            (false, "http") if gitish => Scheme::GitHttp,
            (false, "file") if gitish => Scheme::GitFile,
            (false, "file") => Scheme::File,
            (false, s @ ("https" | "http")) => {
                return Err(SpecError::AmbiguousHttp {
                    scheme: if s == "https" { "https" } else { "http" },
                    host: url.host_str().unwrap_or("").to_owned(),
                });
            }
            (false, "s3" | "s3a") => Scheme::S3,
            (false, "gs") => Scheme::Gcs,
            (false, "az" | "azure") => Scheme::Azure,
            (false, "memory") => Scheme::Memory,
            _ => {
                let mut shown: String = written_scheme.chars().take(32).collect();
                if written_scheme.len() > 32 {
                    shown.push('…');
                }
                return Err(SpecError::UnsupportedScheme(shown));
            }
        };
        if !url.username().is_empty() && scheme != Scheme::GitSsh {
            return Err(SpecError::UserName);
        }
        let host = url.host_str().unwrap_or("");
        match scheme {
            Scheme::S3 | Scheme::Gcs | Scheme::Azure => {
                let (what, example) = match scheme {
                    Scheme::Azure => ("container", "az://CONTAINER/PREFIX"),
                    Scheme::Gcs => ("bucket", "gs://BUCKET/PREFIX"),
                    _ => ("bucket", "s3://BUCKET/PREFIX"),
                };
                if host.is_empty() {
                    return Err(SpecError::MissingHost { what, example });
                }
                if url.port().is_some() {
                    return Err(SpecError::Port(what));
                }
            }
            Scheme::File | Scheme::GitFile => {
                if !host.is_empty() {
                    return Err(SpecError::FileHost);
                }
            }
            Scheme::Memory => {}
            _ => {
                if host.is_empty() {
                    return Err(SpecError::MissingHost {
                        what: "host",
                        example: "ssh://git@HOST/path/repo.git",
                    });
                }
            }
        }
        let path = percent_decode_str(url.path())
            .decode_utf8()
            .map_err(|_| SpecError::BadPrefix("the path is not UTF-8 once percent-decoded"))?
            .into_owned();
        if path.chars().any(char::is_control) {
            return Err(SpecError::BadPrefix(
                "the path holds a percent-encoded control character",
            ));
        }
        match scheme.family() {
            Family::ObjectStore => check_segments(&path)?,
            Family::Git => {
                if path.trim_matches('/').is_empty() {
                    return Err(SpecError::MissingPath);
                }
            }
        }
        let params = check_params(scheme, &url)?;
        let git_url = (scheme.family() == Family::Git)
            .then(|| inner.split_once('?').map_or(inner, |(b, _)| b).to_owned());
        url.set_query(None);
        Ok(RemoteSpec {
            scheme,
            written_scheme,
            url,
            git_url,
            path,
            params,
        })
    }

    /// The kind of remote.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The backend family.
    pub fn family(&self) -> Family {
        self.scheme.family()
    }

    /// The URL without `git+`, query and fragment (for `object_store`'s
    /// scheme parser; may hold an ssh login, never a secret).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The bucket, container or host (`""` for `file://`).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }

    /// The ssh login (`git` in `ssh://git@host/…`), if any.
    pub fn user(&self) -> Option<&str> {
        Some(self.url.username()).filter(|u| !u.is_empty())
    }

    /// The percent-decoded path, with its leading `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The decoded path without leading and trailing `/` (an object store's
    /// key prefix; the directory of `file:///dir` without its root `/`).
    pub fn prefix(&self) -> String {
        self.path.trim_matches('/').to_owned()
    }

    /// For git remotes, the URL handed to git: as written, without the
    /// `git+` prefix and the query. `None` for object stores.
    pub fn git_url(&self) -> Option<&str> {
        self.git_url.as_deref()
    }

    /// For git remotes, the branch: `?branch=` or [`DEFAULT_BRANCH`].
    /// `None` for object stores.
    pub fn branch(&self) -> Option<&str> {
        (self.family() == Family::Git).then(|| self.param("branch").unwrap_or(DEFAULT_BRANCH))
    }

    /// The checked query parameters, canonical lowercase names, values
    /// percent-decoded, in the order given.
    pub fn params(&self) -> &[(&'static str, String)] {
        &self.params
    }

    /// One parameter's value (canonical name).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The redacted form, safe for logs: scheme, ssh login, host, path and the
/// parameters (an endpoint shown as scheme, host and port only).
impl fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.written_scheme)?;
        if let Some(user) = self.user() {
            write!(f, "{user}@")?;
        }
        f.write_str(self.host())?;
        if let Some(port) = self.url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(self.url.path())?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            if *k == "endpoint" {
                write!(f, "{sep}{k}={}", endpoint_origin(v))?;
            } else {
                write!(f, "{sep}{k}={v}")?;
            }
        }
        Ok(())
    }
}

fn endpoint_origin(v: &str) -> String {
    match Url::parse(v) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid>".into(),
    }
}

/// Control characters, whitespace and the shell's metacharacters. tether
/// passes URLs as argv entries, never through a shell: these are refused
/// for clarity (none has a use in a URL tether accepts; a path that needs
/// one can percent-encode it) and because the URL library silently drops
/// tabs and newlines, so what runs would differ from what was written.
fn forbidden(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '`' | '$'
                | ';'
                | '|'
                | '<'
                | '>'
                | '\\'
                | '"'
                | '\''
                | '('
                | ')'
                | '{'
                | '}'
                | '*'
                | '!'
        )
}

/// Describes a character without echoing control characters.
pub fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("control or space character U+{:04X}", c as u32)
    } else {
        format!("character {c:?}")
    }
}

/// `user@host:path` or `host:path` (no `://`, a `:` before any `/`).
fn scp_like(input: &str) -> bool {
    match input.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}

/// Object-store keys: no empty, `.` or `..` segment (object_store's `Path`
/// rules, so the webhook refuses what the backend would).
fn check_segments(path: &str) -> Result<(), SpecError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(());
    }
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err(SpecError::BadPrefix("empty path segment (//)")),
            "." | ".." => {
                return Err(SpecError::BadPrefix(
                    "`.` and `..` segments are not allowed",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_params(scheme: Scheme, url: &Url) -> Result<Vec<(&'static str, String)>, SpecError> {
    let allowed = scheme.allowed_params();
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let lower = name.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "endpoint_url" => "endpoint",
            "virtual_hosted_style_request" => "virtual_hosted_style",
            other => other,
        };
        let Some(canonical) = allowed.iter().copied().find(|a| *a == alias) else {
            if SECRET_HINTS.iter().any(|h| lower.contains(h)) {
                return Err(SpecError::CredentialParameter(shown_name(&lower)));
            }
            return Err(SpecError::UnknownParameter {
                name: shown_name(&lower),
                scheme: scheme.name(),
                allowed: allowed.join(", "),
            });
        };
        if out.iter().any(|(k, _)| *k == canonical) {
            return Err(SpecError::Duplicate(canonical.to_owned()));
        }
        check_value(canonical, &value)?;
        out.push((canonical, value.into_owned()));
    }
    Ok(out)
}

/// A parameter name as it may appear in a message: bounded, printable.
fn shown_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 40 {
        s.push('…');
    }
    s
}

fn check_value(name: &'static str, value: &str) -> Result<(), SpecError> {
    let bad = |reason: String| Err(SpecError::InvalidValue { name, reason });
    if value.is_empty() {
        return bad("is empty".into());
    }
    if value.chars().any(char::is_control) {
        return bad("contains a control character".into());
    }
    match name {
        "layout" if value != "mirror" && value != "snapshots" => {
            return bad(format!("{value:?} is not one of mirror, snapshots"));
        }
        "compression" if !matches!(value, "auto" | "off" | "max") => {
            return bad(format!("{value:?} is not one of auto, off, max"));
        }
        "branch" => check_branch(value).map_err(|reason| SpecError::InvalidValue {
            name,
            reason: format!("{value:?} is not a valid git branch name ({reason})"),
        })?,
        "allow_http" | "virtual_hosted_style" | "skip_signature" | "single_writer" => {
            parse_bool(value).ok_or_else(|| SpecError::InvalidValue {
                name,
                reason: format!("{value:?} is not true or false"),
            })?;
        }
        "concurrency" | "max_entries" => {
            let range = if name == "concurrency" {
                limits::CONCURRENCY
            } else {
                limits::MAX_ENTRIES
            };
            let n: u64 = value.parse().map_err(|_| SpecError::InvalidValue {
                name,
                reason: format!("{value:?} is not a number"),
            })?;
            in_range(name, n, &range)?;
        }
        "pack_size" | "max_buffered_bytes" | "max_manifest_bytes" => {
            let n = parse_size(value).map_err(|reason| SpecError::InvalidValue { name, reason })?;
            let range = match name {
                "pack_size" => limits::PACK_SIZE,
                "max_buffered_bytes" => limits::MAX_BUFFERED_BYTES,
                _ => limits::MAX_MANIFEST_BYTES,
            };
            in_range(name, n, &range)?;
        }
        "endpoint" => {
            let ok = Url::parse(value).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.username().is_empty()
                    && u.password().is_none()
            });
            if !ok {
                return bad(
                    "must be an http(s) URL without user information, e.g. https://s3.example.com or http://127.0.0.1:8333".into(),
                );
            }
        }
        "region"
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            return bad(format!(
                "{value:?} is not a region name (letters, digits, -)"
            ));
        }
        _ => {}
    }
    Ok(())
}

fn in_range(name: &'static str, n: u64, range: &RangeInclusive<u64>) -> Result<(), SpecError> {
    if range.contains(&n) {
        Ok(())
    } else if *range.end() == u64::MAX {
        Err(SpecError::InvalidValue {
            name,
            reason: format!("must be at least {}", range.start()),
        })
    } else {
        Err(SpecError::InvalidValue {
            name,
            reason: format!("{n} is not between {} and {}", range.start(), range.end()),
        })
    }
}

/// `true`/`1`/`yes` or `false`/`0`/`no`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a size: `8388608`, `8M`, `8MiB`, `512k`, `1G` (binary units);
/// the error says what is wrong.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{value:?} is not a size (e.g. 8MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("{value:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// Checks a branch name with git's rules (`git check-ref-format --branch`),
/// returning why git would refuse it.
pub fn check_branch(branch: &str) -> Result<(), String> {
    if branch.is_empty() {
        return Err("empty".into());
    }
    if branch.starts_with('-') {
        return Err("starts with '-'".into());
    }
    let full = format!("refs/heads/{branch}");
    gix_validate::reference::branch_name(full.as_bytes().into())
        .map(|_| ())
        .map_err(|e| e.to_string().replace(['\n', '\r'], " "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
