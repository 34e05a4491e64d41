//! Where certificates live: one small trait, two implementations.
//!
//! A store loads the four PEM documents (see [`crate::bundle`]) together with
//! a [`Revision`], and saves a bundle only if the store still has that
//! revision. This compare-and-swap is what makes concurrent replicas
//! converge on one CA: two replicas that both find an empty store both
//! generate, one save wins, the other gets [`Error::Conflict`], loads again
//! and reuses what the winner wrote ([`ensure_certs`](crate::ensure_certs)
//! does exactly that).
//!
//! * [`DirStore`]: PEM files in a directory, each replaced atomically, keys
//!   mode 0600, a lock file serialising writers.
//! * [`SecretStore`]: a `kubernetes.io/tls` Secret with `ca.crt` and `ca.key`
//!   next to `tls.crt`/`tls.key`; creation is create-if-absent, updates
//!   carry the `resourceVersion` they were based on.

use async_trait::async_trait;

use crate::bundle::{CertBundle, PemFiles};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

mod dir;
mod secret;

pub use dir::DirStore;
pub use secret::{FIELD_MANAGER, SecretStore, TLS_SECRET_TYPE};

/// The version of a store's content that a [`Snapshot`] was read at; opaque,
/// only meaningful to the store that produced it.
#[derive(Clone, PartialEq, Eq)]
pub struct Revision(pub(crate) RevisionKind);

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum RevisionKind {
    /// Nothing was stored.
    Absent,
    /// A Kubernetes `metadata.resourceVersion`.
    ResourceVersion(String),
    /// The exact bytes of the files (they include keys, hence the zeroize
    /// wrapper and the redacted Debug).
    Contents(zeroize::Zeroizing<Vec<u8>>),
}

impl Revision {
    /// The revision of an empty store.
    pub fn absent() -> Self {
        Revision(RevisionKind::Absent)
    }

    /// Whether the store was empty.
    pub fn is_absent(&self) -> bool {
        matches!(self.0, RevisionKind::Absent)
    }
}

impl std::fmt::Debug for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            RevisionKind::Absent => f.write_str("Revision::Absent"),
            RevisionKind::ResourceVersion(rv) => write!(f, "Revision::ResourceVersion({rv})"),
            RevisionKind::Contents(c) => write!(f, "Revision::Contents({} bytes)", c.len()),
        }
    }
}

/// What a store held at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The PEM documents found (all `None` when the store is empty).
    pub files: PemFiles,
    /// The revision to pass back to [`CertStore::save`].
    pub revision: Revision,
}

/// A place that keeps one webhook's certificates.
///
/// Implementations must make [`save`](CertStore::save) conditional: it
/// writes only if the store is still at `expected`, and otherwise fails with
/// [`Error::Conflict`] without writing anything.
#[async_trait]
pub trait CertStore: Send + Sync + std::fmt::Debug {
    /// Where the certificates are, for messages: `directory /etc/certs`,
    /// `Secret ns/name`.
    fn location(&self) -> String;

    /// Reads the current content and its revision.
    async fn load(&self) -> Result<Snapshot>;

    /// Writes `bundle` if the store is still at `expected`.
    async fn save(&self, bundle: &CertBundle, expected: &Revision) -> Result<()>;
}
