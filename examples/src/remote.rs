//! From a URL to a [`Backend`]: [`remote_spec::RemoteSpec::parse`] decides
//! the family (the same parser the admission webhook uses, so a URL the
//! webhook admits is one the sidecar runs), then git remotes go to
//! `sync-git` and object stores to `sync-s3`.
//!
//! Git remotes are `ssh://`, `git://`, `http(s)://….git`, `file:///….git`,
//! any `git+` URL and any `http(s)://` or `file://` URL with `?branch=`;
//! `s3://`, `gs://`, `az://`, `file:///dir` and `memory://` are object
//! stores; a bare `https://host/path` is refused as ambiguous. Credentials
//! come from the environment or from files, never from the URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use remote_spec::{RemoteSpec, Scheme};
use sync_core::Backend;

use crate::error::CliError;

/// Settings of a backend that are not in its URL.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Private key for `ssh://` git remotes.
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts for `ssh://` git remotes; default: `known_hosts` next to
    /// the key file, when it exists.
    pub ssh_known_hosts_file: Option<PathBuf>,
    /// File holding an HTTPS token for git remotes.
    pub token_file: Option<PathBuf>,
    /// Commit author name (git).
    pub git_author_name: String,
    /// Commit author email (git).
    pub git_author_email: String,
    /// Allow S3 without `AWS_*` credentials (instance metadata, anonymous
    /// endpoints).
    pub allow_instance_credentials: bool,
    /// Timeout of one object-store request; for git, how long a transfer
    /// may stall (`None`: the backend's default).
    pub request_timeout: Option<Duration>,
    /// The encryption key file of an object store's snapshots layout
    /// (refused for git remotes, which tether does not encrypt).
    pub encryption_key_file: Option<PathBuf>,
    /// Requests an object-store backend sends at once (`None`: its
    /// default; the URL's `concurrency=` wins over both).
    pub concurrency: Option<usize>,
}

/// Which backend crate a URL belongs to.
pub use remote_spec::Family as RemoteFamily;

/// Parses and checks `url` as `tether` does before building a backend
/// (pure: no network, no file, no environment): a path where a URL belongs
/// gets the `file://` spelling; then the shared parser; then the chosen
/// backend's own reading of the spec. Every refusal is a usage error (exit
/// 2) with one line that never contains a credential.
pub fn check(url: &str) -> Result<RemoteSpec, CliError> {
    // A path where a URL belongs (`--to /tmp/x`, `--to ./store`).
    let trimmed = url.trim();
    if !trimmed.contains("://") && (trimmed.starts_with('/') || trimmed.starts_with('.')) {
        let absolute = std::path::absolute(trimmed).unwrap_or_else(|_| trimmed.into());
        return Err(CliError::usage(format!(
            "{trimmed:?} is a path, not a remote URL: use file://{} (a local store), or s3://, gs://, az://, a git URL",
            absolute.display()
        )));
    }
    let spec = RemoteSpec::parse(url).map_err(CliError::usage)?;
    match spec.family() {
        RemoteFamily::Git => {
            sync_git::GitRemote::from_spec(&spec).map_err(CliError::usage)?;
        }
        RemoteFamily::ObjectStore => {
            sync_s3::config::RemoteUrl::from_spec(&spec).map_err(CliError::usage)?;
        }
    }
    Ok(spec)
}

/// Why an `s3://` remote cannot authenticate, judged from the environment
/// (pure: `var` looks a variable up). `None` when credentials are present,
/// another mechanism is configured, or the URL asks for no signing.
pub fn missing_s3_credentials(
    spec: &RemoteSpec,
    allow_instance: bool,
    var: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if spec.scheme() != Scheme::S3 {
        return None;
    }
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    if spec
        .param("skip_signature")
        .and_then(remote_spec::parse_bool)
        .unwrap_or(false)
    {
        return None;
    }
    match (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY")) {
        (true, true) => return None,
        (true, false) => {
            return Some("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into());
        }
        (false, true) => {
            return Some("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into());
        }
        (false, false) => {}
    }
    if set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || allow_instance
    {
        return None;
    }
    Some(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_WEB_IDENTITY_TOKEN_FILE), \
         or pass --allow-instance-credentials to use the instance metadata service"
            .into(),
    )
}

fn check_readable(what: &str, path: &Path) -> Result<(), CliError> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(CliError::usage(format!(
            "cannot read {what} {}: not a regular file",
            path.display()
        ))),
        Err(e) => Err(CliError::usage(format!(
            "cannot read {what} {}: {e}",
            path.display()
        ))),
    }
}

/// Builds the backend for `url`, keeping backend state (git's bare
/// repository) under `state_dir`. Configuration problems (bad URL, missing
/// credentials, unreadable key or token file) are usage errors; nothing is
/// contacted yet.
pub fn open_backend(
    url: &str,
    options: &RemoteOptions,
    state_dir: &Path,
) -> Result<Arc<dyn Backend>, CliError> {
    let spec = check(url)?;
    match spec.family() {
        RemoteFamily::Git => {
            let mut git = sync_git::GitOptions::new(state_dir.join("git"))
                .author(&options.git_author_name, &options.git_author_email);
            if let Some(t) = options.request_timeout {
                git.request_timeout = t;
            }
            // Checked (a number in range) by the parse above.
            if let Some(n) = spec.param("max_entries").and_then(|v| v.parse().ok()) {
                git.max_entries = n;
            }
            if spec.scheme() == Scheme::GitSsh {
                if let Some(key) = &options.ssh_key_file {
                    check_readable("ssh key file", key)?;
                }
                let known_hosts = options.ssh_known_hosts_file.clone().or_else(|| {
                    let sibling = options.ssh_key_file.as_ref()?.parent()?.join("known_hosts");
                    sibling.is_file().then_some(sibling)
                });
                match known_hosts {
                    Some(kh) => {
                        check_readable("known_hosts file", &kh)?;
                        git.known_hosts_file = Some(kh);
                    }
                    None => {
                        return Err(CliError::usage(
                            "ssh remotes need a known_hosts file: --ssh-known-hosts-file or TETHER_SSH_KNOWN_HOSTS_FILE (host keys are always checked)",
                        ));
                    }
                }
                git.ssh_key_file = options.ssh_key_file.clone();
            }
            if options.encryption_key_file.is_some() {
                return Err(CliError::usage(
                    "--encryption-key-file (TETHER_ENCRYPTION_KEY_FILE) applies to object-store remotes (snapshots layout); tether does not encrypt git remotes",
                ));
            }
            if let Some(token) = &options.token_file {
                check_readable("token file", token)?;
                git.token_file = Some(token.clone());
            }
            let backend = sync_git::GitBackend::from_url(url, git).map_err(CliError::usage)?;
            Ok(Arc::new(backend))
        }
        RemoteFamily::ObjectStore => Ok(Arc::new(object_store_backend(url, &spec, options)?)),
    }
}

/// Builds the object-store backend of a checked `spec` (see
/// [`open_backend`]); the key file, if any, is read here, and neither its
/// content nor anything derived from it is ever part of a message.
fn object_store_backend(
    url: &str,
    spec: &RemoteSpec,
    options: &RemoteOptions,
) -> Result<sync_s3::ObjectStoreBackend, CliError> {
    if let Some(problem) = missing_s3_credentials(spec, options.allow_instance_credentials, |n| {
        std::env::var(n).ok()
    }) {
        return Err(CliError::usage(problem));
    }
    let mut s3 = sync_s3::BackendOptions::default();
    if let Some(t) = options.request_timeout {
        s3.request_timeout = t;
    }
    if let Some(n) = options.concurrency {
        s3.concurrency = n;
    }
    if let Some(path) = &options.encryption_key_file {
        check_readable("encryption key file", path)?;
        s3.encryption_key = Some(sync_s3::EncryptionKey::from_file(path).map_err(CliError::usage)?);
    }
    sync_s3::ObjectStoreBackend::from_url(url, s3).map_err(CliError::usage)
}

/// The object-store backend for `url` (`tether key`, `forget`, `prune`,
/// `check`, the sidecar's maintenance): a git URL is refused with
/// `git_refusal` (a usage error), since these work on object stores alone.
pub fn open_object_store(
    url: &str,
    options: &RemoteOptions,
    git_refusal: &str,
) -> Result<sync_s3::ObjectStoreBackend, CliError> {
    let spec = check(url)?;
    match spec.family() {
        RemoteFamily::Git => Err(CliError::usage(git_refusal)),
        RemoteFamily::ObjectStore => object_store_backend(url, &spec, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_dispatched_by_family() {
        use RemoteFamily::*;
        for (url, want) in [
            ("ssh://git@host/me/notes.git", Git),
            ("git://127.0.0.1:9418/notes.git", Git),
            ("https://git.example.com/me/notes.git?branch=pod-a", Git),
            ("file:///srv/notes.git", Git),
            ("file:///srv/notes?branch=main", Git),
            ("git+https://gitea.local/me/notes", Git),
            ("file:///srv/store", ObjectStore),
            ("s3://bucket/prefix", ObjectStore),
            ("gs://bucket/prefix", ObjectStore),
            ("az://container/prefix", ObjectStore),
            ("memory://test", ObjectStore),
        ] {
            assert_eq!(check(url).map(|s| s.family()).ok(), Some(want), "{url}");
        }
        let e = check("https://gitea.example/me/notes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("git+https://"), "{e}");
    }

    #[test]
    fn s3_credentials_are_required_unless_another_way_is_set() {
        let missing_s3_credentials = |url: &str, allow, var| {
            let spec = RemoteSpec::parse(url).unwrap();
            missing_s3_credentials(&spec, allow, var)
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(missing_s3_credentials("s3://b/p", false, env(&[])).is_some());
        assert!(missing_s3_credentials("s3://b/p", true, env(&[])).is_none());
        assert!(missing_s3_credentials("gs://b/p", false, env(&[])).is_none());
        assert!(missing_s3_credentials("s3://b/p?skip_signature=true", false, env(&[])).is_none());
        let half = missing_s3_credentials("s3://b/p", false, env(&[("AWS_ACCESS_KEY_ID", "a")]));
        assert!(half.unwrap().contains("AWS_SECRET_ACCESS_KEY"));
        assert!(
            missing_s3_credentials(
                "s3://b/p",
                false,
                env(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")])
            )
            .is_none()
        );
        assert!(
            missing_s3_credentials(
                "s3://b/p",
                false,
                env(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")])
            )
            .is_none()
        );
    }
}
