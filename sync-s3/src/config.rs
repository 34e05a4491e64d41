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
    /// The URL does not parse.
    #[error("invalid remote URL {url}: {reason}")]
    InvalidUrl {
        /// The URL without query values or user information.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The scheme is not one of s3, gs, az, file, memory.
    #[error("unsupported remote scheme {0:?} (expected s3, gs, az, file or memory)")]
    UnsupportedScheme(String),
    /// A query parameter or store option is not known.
    #[error("unknown remote parameter {0:?}")]
    UnknownParameter(String),
    /// A credential was put in the URL.
    #[error(
        "remote parameter {0:?} looks like a credential; credentials are read from the environment or passed as store options, never from the URL"
    )]
    CredentialInUrl(String),
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
    /// Snapshots layout: blobs found only in a pack that no snapshot
    /// references yet (another writer's, or an earlier failed attempt's)
    /// are reused only while that pack is younger than this (default
    /// [`REUSE_WINDOW`](crate::REUSE_WINDOW), 10 minutes). `prune` deletes
    /// such packs once they are older than its `min_age` (default 1 hour),
    /// which must stay well above this.
    pub reuse_window: Duration,
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
        if self.concurrency == 0 || self.concurrency > 1024 {
            return bad("concurrency", "must be between 1 and 1024");
        }
        if self.pack_size < 64 << 10 || self.pack_size > 1 << 30 {
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
        if self.max_buffered_bytes < 1 << 20 || self.max_buffered_bytes > u32::MAX as usize {
            return bad("max_buffered_bytes", "must be between 1 MiB and 4 GiB - 1");
        }
        if self.max_entries == 0 {
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
    redacted: String,
}

/// Query parameters that name credentials: refused in URLs.
const SECRET_HINTS: &[&str] = &[
    "key",
    "secret",
    "token",
    "password",
    "sas",
    "credential",
    "signature",
];

impl RemoteUrl {
    /// Parses `s3://bucket/prefix?layout=mirror&endpoint=http://127.0.0.1:8333&allow_http=true`
    /// and the like.
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
        let url = url::Url::parse(input).map_err(|e| ConfigError::InvalidUrl {
            url: redact_raw(input),
            reason: e.to_string(),
        })?;
        let redacted = redact(&url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::CredentialInUrl("user information".into()));
        }
        let host = url.host_str().unwrap_or("").to_owned();
        let path = percent_decode(url.path()).map_err(|reason| ConfigError::InvalidUrl {
            url: redacted.clone(),
            reason,
        })?;
        let need_host = |what: &str| -> Result<String, ConfigError> {
            if host.is_empty() {
                Err(ConfigError::InvalidUrl {
                    url: redacted.clone(),
                    reason: format!("missing {what} name"),
                })
            } else {
                Ok(host.clone())
            }
        };
        let (kind, prefix) = match url.scheme() {
            "s3" | "s3a" => (
                StoreKind::S3 {
                    bucket: need_host("bucket")?,
                },
                path.trim_matches('/').to_owned(),
            ),
            "gs" => (
                StoreKind::Gcs {
                    bucket: need_host("bucket")?,
                },
                path.trim_matches('/').to_owned(),
            ),
            "az" | "azure" => (
                StoreKind::Azure {
                    container: need_host("container")?,
                },
                path.trim_matches('/').to_owned(),
            ),
            "file" => {
                if !host.is_empty() && host != "localhost" {
                    return Err(ConfigError::InvalidUrl {
                        url: redacted,
                        reason: "file URLs must be file:///absolute/path".into(),
                    });
                }
                let dir = std::path::PathBuf::from(&path);
                if !dir.is_absolute() || path.split('/').any(|c| c == "..") {
                    return Err(ConfigError::InvalidUrl {
                        url: redacted,
                        reason: "file URLs need an absolute path without `..`".into(),
                    });
                }
                (StoreKind::File { dir }, String::new())
            }
            "memory" => {
                let joined = format!("{host}{path}");
                (StoreKind::Memory, joined.trim_matches('/').to_owned())
            }
            other => return Err(ConfigError::UnsupportedScheme(other.to_owned())),
        };
        if !prefix.is_empty() {
            object_store::path::Path::parse(&prefix).map_err(|e| ConfigError::InvalidUrl {
                url: redacted.clone(),
                reason: format!("bad prefix: {e}"),
            })?;
        }
        let mut out = RemoteUrl {
            kind,
            prefix,
            layout: None,
            store_settings: Vec::new(),
            concurrency: None,
            pack_size: None,
            max_buffered_bytes: None,
            max_entries: None,
            max_manifest_bytes: None,
            redacted,
        };
        for (name, value) in url.query_pairs() {
            let name = name.into_owned();
            let value = value.into_owned();
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "layout" => out.layout = Some(value.parse()?),
                "concurrency" => {
                    out.concurrency =
                        Some(value.parse().map_err(|_| ConfigError::InvalidValue {
                            name,
                            reason: format!("{value:?} is not a number"),
                        })?)
                }
                "pack_size" => out.pack_size = Some(parse_size(&name, &value)?),
                "max_buffered_bytes" => out.max_buffered_bytes = Some(parse_size(&name, &value)?),
                "max_manifest_bytes" => {
                    out.max_manifest_bytes = Some(parse_size(&name, &value)? as u64)
                }
                "max_entries" => {
                    out.max_entries =
                        Some(value.parse().map_err(|_| ConfigError::InvalidValue {
                            name,
                            reason: format!("{value:?} is not a number"),
                        })?)
                }
                "endpoint" | "endpoint_url" => {
                    url::Url::parse(&value).map_err(|e| ConfigError::InvalidValue {
                        name: name.clone(),
                        reason: format!("not a URL: {e}"),
                    })?;
                    out.store_settings
                        .push((store_key(&out.kind, "endpoint")?, value))
                }
                "region" => out
                    .store_settings
                    .push((store_key(&out.kind, "region")?, value)),
                "allow_http" => {
                    parse_bool(&name, &value)?;
                    out.store_settings.push(("allow_http".into(), value))
                }
                "virtual_hosted_style" | "virtual_hosted_style_request" => {
                    parse_bool(&name, &value)?;
                    out.store_settings
                        .push((store_key(&out.kind, "virtual_hosted_style")?, value))
                }
                "skip_signature" => {
                    parse_bool(&name, &value)?;
                    out.store_settings
                        .push((store_key(&out.kind, "skip_signature")?, value))
                }
                _ if SECRET_HINTS.iter().any(|h| lower.contains(h)) => {
                    return Err(ConfigError::CredentialInUrl(name));
                }
                _ => return Err(ConfigError::UnknownParameter(name)),
            }
        }
        Ok(out)
    }

    /// The URL as it is safe to show: scheme, bucket, prefix and the
    /// non-secret parameters.
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

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            name: name.into(),
            reason: format!("{value:?} is not true or false"),
        }),
    }
}

/// Parses `8388608`, `8M`, `8MiB`, `512k`, `1G`.
pub fn parse_size(name: &str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().map_err(|_| ConfigError::InvalidValue {
        name: name.into(),
        reason: format!("{value:?} is not a size"),
    })?;
    let mul: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => {
            return Err(ConfigError::InvalidValue {
                name: name.into(),
                reason: format!("{value:?}: unknown unit"),
            });
        }
    };
    n.checked_mul(mul).ok_or_else(|| ConfigError::InvalidValue {
        name: name.into(),
        reason: format!("{value:?} is too large"),
    })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad percent-encoding in path".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "path is not UTF-8".to_string())
}

/// `scheme://host/path` plus the values of non-secret parameters only.
fn redact(url: &url::Url) -> String {
    let mut out = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    );
    let shown: Vec<String> = url
        .query_pairs()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let public = matches!(
                lower.as_str(),
                "layout"
                    | "region"
                    | "allow_http"
                    | "concurrency"
                    | "pack_size"
                    | "virtual_hosted_style"
                    | "virtual_hosted_style_request"
                    | "skip_signature"
            );
            if public {
                format!("{k}={v}")
            } else if lower == "endpoint" || lower == "endpoint_url" {
                let ep = url::Url::parse(&v)
                    .map(|u| {
                        format!(
                            "{}://{}{}",
                            u.scheme(),
                            u.host_str().unwrap_or(""),
                            u.port().map(|p| format!(":{p}")).unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|_| "<invalid>".into());
                format!("{k}={ep}")
            } else {
                format!("{k}=<hidden>")
            }
        })
        .collect();
    if !shown.is_empty() {
        out.push('?');
        out.push_str(&shown.join("&"));
    }
    out
}

/// Redaction for a string that is not even a URL: keep the scheme only.
fn redact_raw(input: &str) -> String {
    match input.split_once("://") {
        Some((scheme, _)) if scheme.len() < 16 => format!("{scheme}://…"),
        _ => "<unparsable URL>".into(),
    }
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
