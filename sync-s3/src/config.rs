//! Configuration: the remote's URL, its layout and the tuning knobs.
//!
//! [`BackendOptions::default`] holds the measured defaults; [`RemoteUrl::parse`]
//! is a pure function (URL in, settings out) so every accepted and refused
//! URL is tested without a store. Credentials are never taken from the URL:
//! they come from the ecosystem's environment variables (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`, read by object_store's `from_env` builders) or from
//! [`BackendOptions::store_options`], and never appear in
//! [`RemoteUrl::redacted`], errors or logs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use object_store::ObjectStoreScheme;
use object_store::path::Path;
use remote_spec::{Family, RemoteSpec, Scheme, limits};

/// How checkpoints are laid out in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Each file at `prefix/<path>`, browsable with any S3 tool; no history.
    Mirror,
    /// Content-addressed packs, one manifest per checkpoint and a head
    /// pointer written last with a conditional write (the default: every
    /// restore sees a complete checkpoint, writers never overwrite each other
    /// silently, and small files cost a handful of requests).
    #[default]
    Snapshots,
}

impl FromStr for Layout {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "mirror" => Ok(Layout::Mirror),
            "snapshots" => Ok(Layout::Snapshots),
            other => Err(ConfigError::InvalidValue {
                name: "layout".into(),
                reason: format!("{other:?} is not one of mirror, snapshots"),
            }),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Mirror => "mirror",
            Layout::Snapshots => "snapshots",
        })
    }
}

/// Why a remote could not be configured. Never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is refused by the shared remote parser (syntax, scheme,
    /// parameters, credentials in the URL).
    #[error(transparent)]
    Remote(#[from] remote_spec::SpecError),
    /// The URL's path is not a usable object-store prefix.
    #[error("invalid remote URL {url}: {reason}")]
    InvalidUrl {
        /// The redacted URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL names a git remote (or nothing this backend serves).
    #[error(
        "{0} is not an object store (expected s3://, gs://, az://, file:///dir or memory://); git remotes go to the git backend"
    )]
    UnsupportedScheme(String),
    /// A store option is not known to the store.
    #[error("unknown remote parameter {0:?}")]
    UnknownParameter(String),
    /// A parameter has an unusable value.
    #[error("remote parameter {name}: {reason}")]
    InvalidValue {
        /// The parameter.
        name: String,
        /// What is wrong (the value itself is shown only for non-secret parameters).
        reason: String,
    },
    /// The object store could not be built (missing bucket, bad option).
    #[error("configuring {url}: {message}")]
    Store {
        /// The redacted URL.
        url: String,
        /// What object_store said.
        message: String,
    },
}

/// Tuning and configuration of an [`ObjectStoreBackend`](crate::ObjectStoreBackend).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendOptions {
    /// The layout (default [`Layout::Snapshots`]); a URL's `?layout=` wins.
    pub layout: Layout,
    /// Requests in flight at once, uploads, downloads, listings and
    /// deletes of this backend together: one budget for the store
    /// (default 32).
    /// Measured with `benches/s3-vs-peers.sh` on 10,000 × 4 KiB files against
    /// SeaweedFS on a 2-core machine: restore took 13.6 / 13.0 / 11.5 /
    /// 11.4 s at 8 / 16 / 32 / 64, push 13.4 / 11.4 / 10.7 / 8.1 s; 32 gets
    /// most of the gain while keeping one pod's load on a shared server
    /// moderate, and costs about 1 MB of memory per 8 more requests.
    pub concurrency: usize,
    /// Target size of a pack of small files (default 8 MiB, see the crate
    /// docs for why).
    pub pack_size: usize,
    /// Files at least this large get a pack object of their own, uploaded
    /// with multipart and downloaded as a stream (default 8 MiB).
    pub large_file_threshold: u64,
    /// Part size of multipart uploads and chunk size of streamed downloads
    /// (default 8 MiB).
    pub part_size: usize,
    /// Multipart parts of one file in flight at once (default 4).
    pub parts_in_flight: usize,
    /// File content held in memory at once by transfers (default 32 MiB;
    /// URL `?max_buffered_bytes=`): small files read for upload (mirror
    /// layout, and the packer's read-ahead), multipart parts in flight,
    /// ranges downloaded for a restore before they are written. Transfers
    /// wait for their share, so `concurrency` requests never hold more
    /// than this; one transfer larger than the budget runs alone. Packs
    /// being filled and uploaded (`(parts_in_flight + 1) × pack_size`)
    /// come on top. Between 1 MiB and 4 GiB − 1.
    pub max_buffered_bytes: usize,
    /// Manifests and mirror indexes larger than this are refused before
    /// they are read (default 64 MiB, roughly 250,000 files; URL
    /// `?max_manifest_bytes=`).
    pub max_manifest_bytes: u64,
    /// Manifests, mirror indexes and mirror listings with more entries than
    /// this are refused before they are built (default 500,000; URL
    /// `?max_entries=`). With the byte cap this bounds what a restore takes
    /// for remote metadata, whatever the remote holds: measured 307 MB peak
    /// RSS for a hostile 62 MB manifest of 500,000 entries (2-core VM,
    /// 2026-11-30), inside the init container's 512 MiB. Raise both (and
    /// the container's memory) for larger trees: the snapshots v1 manifest
    /// lists the whole tree. A push that would write a manifest or mirror
    /// index past either limit is refused (a permanent error naming them),
    /// so a remote never holds a state its restores refuse.
    pub max_entries: u64,
    /// Extra settings passed to the object_store builder, as
    /// `(key, value)` (for example `("aws_access_key_id", "...")`,
    /// `("aws_endpoint", "http://127.0.0.1:8333")`). Values may be secrets:
    /// they are never logged or shown in errors.
    pub store_options: Vec<(String, String)>,
    /// Read the ecosystem's environment variables (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`) before applying the URL and `store_options` (default true).
    pub use_env: bool,
    /// How many times object_store retries one failed request (default 3);
    /// the engine retries whole pushes on top of this.
    pub request_retries: usize,
    /// Give up retrying one request after this long (default 15 s), so an
    /// outage surfaces in the engine's status quickly.
    pub request_retry_timeout: Duration,
    /// Timeout of one request (default 120 s: a whole multipart part on a
    /// slow link).
    pub request_timeout: Duration,
    /// Snapshots layout: a push does not store again a node it read (in the
    /// snapshot it builds on) or stored, nor content it stored, within
    /// this window (default [`REUSE_WINDOW`](crate::REUSE_WINDOW), 10
    /// minutes). Maintenance depends on it: prune's grace
    /// ([`PruneOptions::grace`](crate::PruneOptions::grace), default 25
    /// minutes) must stay above twice the window of every writer, and
    /// forget keeps a snapshot superseded less than twice the window ago.
    pub reuse_window: Duration,
    /// The URL's `single_writer=true`: accept a store that does not enforce
    /// create-if-absent (`If-None-Match`) when the repository marker is
    /// first written (default false: such a store is refused, since two
    /// writers could then overwrite each other's heads). Declare it only
    /// when one writer ever uses the prefix.
    pub single_writer: bool,
    /// Snapshots layout: how file content is compressed (URL
    /// `?compression=auto|off|max`, default `auto`); tree nodes and
    /// records are always compressed. The choice is recorded per blob, so
    /// readers need no setting.
    pub compression: Compression,
    /// Snapshots layout: the user's encryption key (the bytes of a key
    /// file: `tether key generate`'s `tether-key-1:…` line, or a
    /// passphrase). Required to open an encrypted repository, refused for a
    /// plaintext one; on the first push it makes the new repository
    /// encrypted. Never printed, never logged.
    pub encryption_key: Option<EncryptionKey>,
}

/// How the snapshots layout compresses file content (FORMAT.md "Stored
/// units").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd level 3 where it saves at least 1/16; content that a 64 KiB
    /// sample shows to be incompressible is stored as it is.
    #[default]
    Auto,
    /// Content is never compressed (nodes and records still are).
    Off,
    /// zstd level 19, kept when smaller.
    Max,
}

impl FromStr for Compression {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(Compression::Auto),
            "off" => Ok(Compression::Off),
            "max" => Ok(Compression::Max),
            _ => Err(ConfigError::InvalidValue {
                name: "compression".into(),
                reason: format!("{s:?} is not one of auto, off, max"),
            }),
        }
    }
}

impl From<Compression> for crate::v2::frame::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Auto => crate::v2::frame::Compression::Auto,
            Compression::Off => crate::v2::frame::Compression::Off,
            Compression::Max => crate::v2::frame::Compression::Max,
        }
    }
}

/// A user's encryption key or passphrase, as read from a key file: zeroed
/// when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey(zeroize::Zeroizing<Vec<u8>>);

impl EncryptionKey {
    /// The key file's bytes (one trailing newline is ignored).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        EncryptionKey(zeroize::Zeroizing::new(bytes))
    }

    /// Reads a key file. Its content is never part of an error.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        std::fs::read(path)
            .map(Self::from_bytes)
            .map_err(|e| ConfigError::InvalidValue {
                name: "encryption key file".into(),
                reason: format!("cannot read {}: {e}", path.display()),
            })
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(…)")
    }
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            layout: Layout::Snapshots,
            concurrency: 32,
            pack_size: 8 << 20,
            large_file_threshold: 8 << 20,
            part_size: 8 << 20,
            parts_in_flight: 4,
            max_buffered_bytes: 32 << 20,
            max_manifest_bytes: 64 << 20,
            max_entries: 500_000,
            store_options: Vec::new(),
            use_env: true,
            request_retries: 3,
            request_retry_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            reuse_window: crate::REUSE_WINDOW,
            single_writer: false,
            compression: Compression::Auto,
            encryption_key: None,
        }
    }
}

impl fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.store_options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("BackendOptions")
            .field("layout", &self.layout)
            .field("concurrency", &self.concurrency)
            .field("pack_size", &self.pack_size)
            .field("large_file_threshold", &self.large_file_threshold)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .field("max_entries", &self.max_entries)
            .field("store_options (values hidden)", &keys)
            .field("use_env", &self.use_env)
            .field("request_retries", &self.request_retries)
            .field("request_retry_timeout", &self.request_retry_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reuse_window", &self.reuse_window)
            .field("single_writer", &self.single_writer)
            .field("compression", &self.compression)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "(set)"),
            )
            .finish()
    }
}

impl BackendOptions {
    /// Checks the numbers are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, reason: &str| {
            Err(ConfigError::InvalidValue {
                name: name.into(),
                reason: reason.into(),
            })
        };
        let within = |n: usize, r: std::ops::RangeInclusive<u64>| {
            u64::try_from(n).is_ok_and(|n| r.contains(&n))
        };
        if !within(self.concurrency, limits::CONCURRENCY) {
            return bad("concurrency", "must be between 1 and 1024");
        }
        if !within(self.pack_size, limits::PACK_SIZE) {
            return bad("pack_size", "must be between 64 KiB and 1 GiB");
        }
        // S3 refuses parts under 5 MiB (except the last).
        if self.part_size < 5 << 20 || self.part_size > 1 << 30 {
            return bad("part_size", "must be between 5 MiB and 1 GiB");
        }
        if self.large_file_threshold == 0 {
            return bad("large_file_threshold", "must be positive");
        }
        if self.parts_in_flight == 0 {
            return bad("parts_in_flight", "must be positive");
        }
        if !within(self.max_buffered_bytes, limits::MAX_BUFFERED_BYTES) {
            return bad("max_buffered_bytes", "must be between 1 MiB and 4 GiB - 1");
        }
        if !limits::MAX_ENTRIES.contains(&self.max_entries) {
            return bad("max_entries", "must be positive");
        }
        Ok(())
    }
}

/// The store a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `s3://bucket/prefix` (also `s3a://`).
    S3 {
        /// The bucket.
        bucket: String,
    },
    /// `gs://bucket/prefix`.
    Gcs {
        /// The bucket.
        bucket: String,
    },
    /// `az://container/prefix` (also `azure://`).
    Azure {
        /// The container.
        container: String,
    },
    /// `file:///absolute/dir`: the directory is the store's root.
    File {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// `memory://name/prefix`: a store private to this process (tests).
    Memory,
}

/// A parsed remote URL: which store, which prefix, which settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Which store.
    pub kind: StoreKind,
    /// The key prefix inside the bucket (empty for the root), `/`-separated,
    /// without leading or trailing `/`.
    pub prefix: String,
    /// `?layout=`, if given.
    pub layout: Option<Layout>,
    /// Store settings from the query (endpoint, region, allow_http,
    /// virtual_hosted_style), as object_store config keys.
    pub store_settings: Vec<(String, String)>,
    /// `?concurrency=`, if given.
    pub concurrency: Option<usize>,
    /// `?pack_size=`, if given (bytes; `K`, `M`, `G`, `KiB`, `MiB`, `GiB` suffixes).
    pub pack_size: Option<usize>,
    /// `?max_buffered_bytes=`.
    pub max_buffered_bytes: Option<usize>,
    /// `?max_entries=`, if given.
    pub max_entries: Option<u64>,
    /// `?max_manifest_bytes=`, if given (a size like `pack_size`).
    pub max_manifest_bytes: Option<u64>,
    /// `?single_writer=true|false`, if given.
    pub single_writer: Option<bool>,
    /// `?compression=auto|off|max`, if given.
    pub compression: Option<Compression>,
    redacted: String,
}

impl RemoteUrl {
    /// Parses `s3://bucket/prefix?layout=mirror&endpoint=http://127.0.0.1:8333&allow_http=true`
    /// and the like: [`RemoteSpec::parse`] (the rules every tether program
    /// shares), then [`RemoteUrl::from_spec`].
    ///
    /// ```
    /// use sync_s3::config::{Layout, RemoteUrl, StoreKind};
    /// let u = RemoteUrl::parse("s3://work/pods/alice?layout=mirror&endpoint=http://127.0.0.1:8333").unwrap();
    /// assert_eq!(u.kind, StoreKind::S3 { bucket: "work".into() });
    /// assert_eq!(u.prefix, "pods/alice");
    /// assert_eq!(u.layout, Some(Layout::Mirror));
    /// assert!(RemoteUrl::parse("s3://work/x?secret_access_key=abc").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<RemoteUrl, ConfigError> {
        Self::from_spec(&RemoteSpec::parse(input)?)
    }

    /// The object-store settings of a parsed remote: which store (scheme
    /// and bucket from `object_store`'s own [`ObjectStoreScheme`]), which
    /// prefix, and the URL's parameters as store settings and options.
    pub fn from_spec(spec: &RemoteSpec) -> Result<RemoteUrl, ConfigError> {
        let redacted = spec.to_string();
        if spec.family() != Family::ObjectStore {
            return Err(ConfigError::UnsupportedScheme(redacted));
        }
        let bad_prefix = |e: object_store::path::Error| ConfigError::InvalidUrl {
            url: redacted.clone(),
            reason: format!("bad prefix: {e}"),
        };
        let (kind, prefix) = if spec.scheme() == Scheme::Memory {
            // object_store reads `memory://` without a host only; tether's
            // test URLs name a store (`memory://name/prefix`).
            let joined = format!("{}/{}", spec.host(), spec.prefix());
            let prefix = Path::parse(joined.trim_matches('/')).map_err(bad_prefix)?;
            (StoreKind::Memory, prefix)
        } else {
            // The spec has checked the segments already; what is left here
            // is object_store's own view of the path (one line, no query).
            let (scheme, path) =
                ObjectStoreScheme::parse(spec.url()).map_err(|e| ConfigError::InvalidUrl {
                    url: redacted.clone(),
                    reason: format!("bad prefix: {e}"),
                })?;
            let bucket = spec.host().to_owned();
            match scheme {
                ObjectStoreScheme::AmazonS3 => (StoreKind::S3 { bucket }, path),
                ObjectStoreScheme::GoogleCloudStorage => (StoreKind::Gcs { bucket }, path),
                ObjectStoreScheme::MicrosoftAzure => (StoreKind::Azure { container: bucket }, path),
                ObjectStoreScheme::Local => {
                    let dir = std::path::Path::new("/").join(path.as_ref());
                    (StoreKind::File { dir }, Path::default())
                }
                _ => return Err(ConfigError::UnsupportedScheme(redacted)),
            }
        };
        let mut out = RemoteUrl {
            kind,
            prefix: prefix.to_string(),
            layout: None,
            store_settings: Vec::new(),
            concurrency: None,
            pack_size: None,
            max_buffered_bytes: None,
            max_entries: None,
            max_manifest_bytes: None,
            single_writer: None,
            compression: None,
            redacted,
        };
        for (name, value) in spec.params() {
            let name = *name;
            let number = |v: &str| -> Result<u64, ConfigError> {
                v.parse().map_err(|_| ConfigError::InvalidValue {
                    name: name.into(),
                    reason: format!("{v:?} is not a number"),
                })
            };
            let boolean = |v: &str| -> Result<String, ConfigError> {
                remote_spec::parse_bool(v)
                    .map(|b| b.to_string())
                    .ok_or_else(|| ConfigError::InvalidValue {
                        name: name.into(),
                        reason: format!("{v:?} is not true or false"),
                    })
            };
            match name {
                "layout" => out.layout = Some(value.parse()?),
                "concurrency" => out.concurrency = Some(to_usize(name, number(value)?)?),
                "pack_size" => out.pack_size = Some(parse_size(name, value)?),
                "max_buffered_bytes" => out.max_buffered_bytes = Some(parse_size(name, value)?),
                "max_manifest_bytes" => {
                    out.max_manifest_bytes = Some(size_u64(name, value)?);
                }
                "max_entries" => out.max_entries = Some(number(value)?),
                "single_writer" => out.single_writer = Some(boolean(value)? == "true"),
                "compression" => out.compression = Some(value.parse()?),
                "endpoint" | "region" | "virtual_hosted_style" | "skip_signature" => {
                    let key = store_key(&out.kind, name)?;
                    let value = if name == "endpoint" || name == "region" {
                        value.clone()
                    } else {
                        boolean(value)?
                    };
                    out.store_settings.push((key, value));
                }
                "allow_http" => out
                    .store_settings
                    .push(("allow_http".into(), boolean(value)?)),
                other => return Err(ConfigError::UnknownParameter(other.into())),
            }
        }
        Ok(out)
    }

    /// The URL as it is safe to show: scheme, bucket, prefix and the
    /// parameters (an endpoint as scheme, host and port only).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// Maps a generic setting to the object_store key of the URL's store.
fn store_key(kind: &StoreKind, setting: &str) -> Result<String, ConfigError> {
    let key = match (kind, setting) {
        (StoreKind::S3 { .. }, "endpoint") => "aws_endpoint",
        (StoreKind::S3 { .. }, "region") => "aws_region",
        (StoreKind::S3 { .. }, "virtual_hosted_style") => "aws_virtual_hosted_style_request",
        (StoreKind::S3 { .. }, "skip_signature") => "aws_skip_signature",
        (StoreKind::Azure { .. }, "endpoint") => "azure_storage_endpoint",
        (StoreKind::Azure { .. }, "skip_signature") => "azure_skip_signature",
        (StoreKind::Gcs { .. }, "endpoint") => "google_base_url",
        (StoreKind::Gcs { .. }, "skip_signature") => "google_skip_signature",
        _ => {
            return Err(ConfigError::InvalidValue {
                name: setting.into(),
                reason: "not supported for this kind of store".into(),
            });
        }
    };
    Ok(key.into())
}

fn to_usize(name: &str, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| ConfigError::InvalidValue {
        name: name.into(),
        reason: format!("{n} is too large for this machine"),
    })
}

fn size_u64(name: &str, value: &str) -> Result<u64, ConfigError> {
    remote_spec::parse_size(value).map_err(|reason| ConfigError::InvalidValue {
        name: name.into(),
        reason,
    })
}

/// Parses `8388608`, `8M`, `8MiB`, `512k`, `1G` ([`remote_spec::parse_size`]).
pub fn parse_size(name: &str, value: &str) -> Result<usize, ConfigError> {
    to_usize(name, size_u64(name, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_schemes() {
        let u = RemoteUrl::parse("s3://b/p/q").unwrap();
        assert_eq!(u.kind, StoreKind::S3 { bucket: "b".into() });
        assert_eq!(u.prefix, "p/q");
        assert_eq!(u.layout, None);
        let u = RemoteUrl::parse("s3://b").unwrap();
        assert_eq!(u.prefix, "");
        let u = RemoteUrl::parse("gs://g/x/").unwrap();
        assert_eq!(
            (u.kind, u.prefix.as_str()),
            (StoreKind::Gcs { bucket: "g".into() }, "x")
        );
        let u = RemoteUrl::parse("az://c/y").unwrap();
        assert_eq!(
            u.kind,
            StoreKind::Azure {
                container: "c".into()
            }
        );
        let u = RemoteUrl::parse("file:///tmp/store%20dir?layout=mirror").unwrap();
        assert_eq!(
            u.kind,
            StoreKind::File {
                dir: "/tmp/store dir".into()
            }
        );
        assert_eq!(u.layout, Some(Layout::Mirror));
        let u = RemoteUrl::parse("memory://t/a/b").unwrap();
        assert_eq!((u.kind, u.prefix.as_str()), (StoreKind::Memory, "t/a/b"));
    }

    #[test]
    fn compression_is_a_url_parameter_and_the_key_is_never_printed() {
        for (v, want) in [
            ("auto", Compression::Auto),
            ("off", Compression::Off),
            ("max", Compression::Max),
        ] {
            let u = RemoteUrl::parse(&format!("s3://b/p?compression={v}")).unwrap();
            assert_eq!(u.compression, Some(want));
        }
        let e = RemoteUrl::parse("s3://b/p?compression=fast").unwrap_err();
        assert!(e.to_string().contains("auto, off, max"), "{e}");
        let o = BackendOptions {
            encryption_key: Some(EncryptionKey::from_bytes(b"hunter2-passphrase".to_vec())),
            ..BackendOptions::default()
        };
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("(set)"),
            "{shown}"
        );
    }

    #[test]
    fn query_parameters_become_store_settings() {
        let u = RemoteUrl::parse(
            "s3://b/p?layout=snapshots&endpoint=http://127.0.0.1:8333&allow_http=true&region=eu-west-1&virtual_hosted_style=false&concurrency=8&pack_size=4MiB&max_entries=5000&max_manifest_bytes=1GiB",
        )
        .unwrap();
        assert_eq!(u.layout, Some(Layout::Snapshots));
        assert_eq!(u.concurrency, Some(8));
        assert_eq!(u.pack_size, Some(4 << 20));
        assert_eq!(u.max_entries, Some(5000));
        assert_eq!(u.max_manifest_bytes, Some(1 << 30));
        assert!(RemoteUrl::parse("s3://b/p?max_entries=lots").is_err());
        assert_eq!(
            u.store_settings,
            vec![
                (
                    "aws_endpoint".to_string(),
                    "http://127.0.0.1:8333".to_string()
                ),
                ("allow_http".into(), "true".into()),
                ("aws_region".into(), "eu-west-1".into()),
                ("aws_virtual_hosted_style_request".into(), "false".into()),
            ]
        );
    }

    #[test]
    fn refuses_bad_urls_without_echoing_secrets() {
        for (url, want) in [
            ("ftp://b/p", "unsupported remote scheme"),
            ("s3:///p", "missing bucket"),
            ("s3://b/p?layout=tree", "not one of mirror"),
            ("s3://b/p?colour=red", "unknown remote parameter"),
            ("s3://b/p?allow_http=maybe", "not true or false"),
            ("file://host/x", "file:///absolute"),
            ("s3://b/a//c", "bad prefix"),
        ] {
            let e = RemoteUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        let e = RemoteUrl::parse("s3://b/p?aws_secret_access_key=SUPERSECRET")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credential") && !e.contains("SUPERSECRET"),
            "{e}"
        );
        let e = RemoteUrl::parse("s3://AKIA:SUPERSECRET@b/p")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SUPERSECRET"), "{e}");
        let e = RemoteUrl::parse("not a url SUPERSECRET")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SUPERSECRET"), "{e}");
    }

    #[test]
    fn the_shared_parser_decides_and_values_are_normalised() {
        // `yes` used to reach the store as "yes", which it read as false.
        let u = RemoteUrl::parse("s3://b/p?allow_http=yes").unwrap();
        assert_eq!(u.store_settings, vec![("allow_http".into(), "true".into())]);
        assert!(matches!(
            RemoteUrl::parse("ssh://h/x.git"),
            Err(ConfigError::UnsupportedScheme(_))
        ));
        let e = RemoteUrl::parse("https://h/bucket")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://BUCKET/PREFIX?endpoint=https://h"), "{e}");
        assert!(RemoteUrl::parse("file:///x?allow_http=true").is_err());
        assert!(RemoteUrl::parse("s3://b/p?concurrency=0").is_err());
        let u = RemoteUrl::parse("file://localhost/srv/x/").unwrap();
        assert_eq!(
            u.kind,
            StoreKind::File {
                dir: "/srv/x".into()
            }
        );
    }

    #[test]
    fn redaction_keeps_public_parameters_only() {
        let u =
            RemoteUrl::parse("s3://b/p?layout=mirror&endpoint=http://127.0.0.1:8333/x?y").unwrap();
        assert_eq!(
            u.redacted(),
            "s3://b/p?layout=mirror&endpoint=http://127.0.0.1:8333"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("x", "123").unwrap(), 123);
        assert_eq!(parse_size("x", "8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("x", "16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("x", "1g").unwrap(), 1 << 30);
        assert!(parse_size("x", "1 parsec").is_err());
        assert!(parse_size("x", "").is_err());
    }

    #[test]
    fn options_debug_hides_store_option_values() {
        let o = BackendOptions {
            store_options: vec![("aws_secret_access_key".into(), "SUPERSECRET".into())],
            ..BackendOptions::default()
        };
        let d = format!("{o:?}");
        assert!(d.contains("aws_secret_access_key") && !d.contains("SUPERSECRET"));
        assert!(o.validate().is_ok());
        assert!(
            BackendOptions {
                concurrency: 0,
                ..o
            }
            .validate()
            .is_err()
        );
    }
}
