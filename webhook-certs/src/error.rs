//! The crate's error type.
//!
//! Every variant names the object it concerns (a path, a Secret, a webhook
//! configuration, a certificate subject). Key material never appears in a
//! message: errors about keys say which key and what went wrong, not what it
//! contained.

use std::path::PathBuf;

/// Everything that can go wrong while generating, storing, publishing or
/// serving webhook certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service, namespace, cluster domain or an extra DNS name is not a
    /// valid DNS name.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which input was wrong ("service", "namespace", ...).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The rotation policy or loop settings contradict each other.
    #[error("invalid rotation policy: {0}")]
    InvalidPolicy(String),

    /// rcgen failed to generate a key or sign a certificate.
    #[error("could not {action}: {source}")]
    Generate {
        /// What was being generated ("generate the CA key", ...).
        action: &'static str,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },

    /// RSA key generation failed.
    #[cfg(feature = "rsa")]
    #[error("could not generate an RSA-2048 key: {0}")]
    RsaKeyGeneration(String),

    /// A PEM document or certificate could not be parsed.
    #[error("could not parse {what}: {reason}")]
    Parse {
        /// What was being parsed ("tls.crt in Secret ns/name", ...).
        what: String,
        /// Why parsing failed (never contains key material).
        reason: String,
    },

    /// rustls refused a certificate, key or configuration (for example the
    /// key does not match the certificate).
    #[error("rustls: could not {what}: {source}")]
    Rustls {
        /// What was being done, naming the certificate.
        what: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },

    /// Reading or writing a certificate directory failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "read", "lock", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: could not {action} {object}: {source}")]
    Kube {
        /// The verb ("get", "create", "patch").
        action: &'static str,
        /// The object ("Secret ns/name", "MutatingWebhookConfiguration name").
        object: String,
        /// The kube client error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The Secret exists with a type other than `kubernetes.io/tls`; a
    /// Secret's type is immutable, so this crate will not take it over.
    #[error(
        "Secret {object} has type {found:?}, expected \"kubernetes.io/tls\"; delete it or choose another name"
    )]
    SecretType {
        /// "namespace/name" of the Secret.
        object: String,
        /// Its current type.
        found: String,
    },

    /// The store changed between load and save (another replica wrote
    /// first). [`ensure_certs`](crate::ensure_certs) handles this by loading
    /// again; other callers should do the same.
    #[error("{location} changed since it was read (another writer was first)")]
    Conflict {
        /// The store ("directory /x", "Secret ns/name").
        location: String,
    },

    /// The store kept changing under us.
    #[error("{location} kept changing: gave up after {attempts} attempts")]
    TooManyConflicts {
        /// The store.
        location: String,
        /// How many load/save rounds were tried.
        attempts: u32,
    },

    /// The webhook configuration to publish the CA bundle to does not exist.
    #[error("{config} not found")]
    WebhookConfigNotFound {
        /// Kind and name of the configuration.
        config: String,
    },

    /// A background task (blocking file I/O) was cancelled or panicked.
    #[error("background task for {what} failed: {reason}")]
    Task {
        /// What the task did.
        what: String,
        /// The join error text.
        reason: String,
    },
}

impl Error {
    pub(crate) fn kube(
        action: &'static str,
        object: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        Error::Kube {
            action,
            object: object.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn generate(action: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Error::Generate { action, source }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
