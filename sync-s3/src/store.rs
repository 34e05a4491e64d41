//! The object store under a backend: building it from a [`RemoteUrl`], and
//! the few operations both layouts share (keys under the prefix, bounded
//! reads, error mapping that keeps credentials out of messages).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    PutResult, RetryConfig, UpdateVersion,
};
use sync_core::BackendError;

use crate::config::{BackendOptions, ConfigError, RemoteUrl, StoreKind};

/// A store, the prefix everything lives under, and what to call it in logs.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub describe: String,
    /// Whether `put` accepts user metadata (S3, GCS, Azure, memory; not the
    /// local filesystem store). Starts true for unknown stores and turns
    /// false the first time a store refuses metadata.
    pub attributes: Arc<std::sync::atomic::AtomicBool>,
}

impl Remote {
    /// The key `prefix/<rel>`; `rel` is `/`-separated, its segments raw.
    pub fn key(&self, rel: &str) -> Result<Path, BackendError> {
        let full = if self.prefix.as_ref().is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        Path::parse(&full).map_err(|e| BackendError::InvalidRemote {
            object: full.clone(),
            reason: format!("not a valid object key: {e}"),
        })
    }

    /// The part of `key` after the prefix, or `None` if it is not under it.
    pub fn relative<'a>(&self, key: &'a Path) -> Option<&'a str> {
        let k = key.as_ref();
        let p = self.prefix.as_ref();
        if p.is_empty() {
            Some(k)
        } else {
            k.strip_prefix(p)?.strip_prefix('/')
        }
    }

    /// Reads a whole object, refusing one larger than `max` bytes before
    /// reading its body. `Ok(None)` when it does not exist.
    pub async fn get_bounded(
        &self,
        key: &Path,
        max: u64,
    ) -> Result<Option<(Bytes, UpdateVersion)>, BackendError> {
        let res = match self.store.get_opts(key, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(remote_err("get", key, e)),
        };
        if res.meta.size > max {
            return Err(BackendError::InvalidRemote {
                object: key.to_string(),
                reason: format!(
                    "{} bytes, more than the {max} bytes allowed for it; refusing to read it",
                    res.meta.size
                ),
            });
        }
        let version = UpdateVersion {
            e_tag: res.meta.e_tag.clone(),
            version: res.meta.version.clone(),
        };
        let expected = res.meta.size;
        let mut stream = res.into_stream();
        let mut buf = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| remote_err("get", key, e))?;
            if (buf.len() + chunk.len()) as u64 > max {
                return Err(BackendError::InvalidRemote {
                    object: key.to_string(),
                    reason: format!("longer than the {max} bytes allowed for it"),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Some((Bytes::from(buf), version)))
    }

    /// Writes `bytes` at `key` with `mode`.
    pub async fn put(
        &self,
        key: &Path,
        bytes: impl Into<PutPayload>,
        mode: PutMode,
    ) -> Result<PutResult, object_store::Error> {
        self.store
            .put_opts(key, bytes.into(), PutOptions::from(mode))
            .await
    }

    /// Deletes `key`; a missing object is not an error.
    pub async fn delete(&self, key: &Path) -> Result<(), BackendError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err("delete", key, e)),
        }
    }
}

/// Maps an object_store error to a backend error naming the object.
/// object_store's messages carry URLs and status codes, never credentials
/// (requests are signed in headers).
pub(crate) fn remote_err(
    operation: &'static str,
    key: &Path,
    e: object_store::Error,
) -> BackendError {
    use object_store::Error as E;
    let transient = match &e {
        E::Generic { .. } | E::JoinError { .. } => true,
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => false,
        // Precondition / AlreadyExists are handled by callers; anything else
        // may be worth another try.
        _ => true,
    };
    let message = flatten(&e);
    BackendError::Remote {
        operation,
        location: key.to_string(),
        message,
        transient,
    }
}

/// The error and its sources on one line.
pub(crate) fn flatten(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

/// Builds the store a URL names.
pub(crate) fn build(url: &RemoteUrl, options: &BackendOptions) -> Result<Remote, ConfigError> {
    let redacted = url.redacted().to_owned();
    let store_err = |e: object_store::Error| ConfigError::Store {
        url: redacted.clone(),
        message: flatten(&e),
    };
    let retry = RetryConfig {
        max_retries: options.request_retries,
        retry_timeout: options.request_retry_timeout,
        ..RetryConfig::default()
    };
    let mut client = ClientOptions::new()
        .with_timeout(options.request_timeout)
        .with_pool_max_idle_per_host(options.concurrency.max(8));
    // Settings that belong to the HTTP client rather than the store.
    let mut settings: Vec<(String, String)> = Vec::new();
    for (k, v) in url
        .store_settings
        .iter()
        .chain(options.store_options.iter())
    {
        if k == "allow_http" || k == "aws_allow_http" {
            client = client.with_allow_http(v == "true" || v == "1");
        } else {
            settings.push((k.clone(), v.clone()));
        }
    }
    let mut attributes = true;
    let store: Arc<dyn ObjectStore> = match &url.kind {
        StoreKind::S3 { bucket } => {
            install_crypto_provider();
            let mut b = if options.use_env {
                object_store::aws::AmazonS3Builder::from_env()
            } else {
                object_store::aws::AmazonS3Builder::new()
            };
            if options.use_env && std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true") {
                client = client.with_allow_http(true);
            }
            b = b.with_bucket_name(bucket);
            for (k, v) in &settings {
                let key = k
                    .parse::<object_store::aws::AmazonS3ConfigKey>()
                    .map_err(|_| ConfigError::UnknownParameter(k.clone()))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(store_err)?,
            )
        }
        StoreKind::Gcs { bucket } => {
            install_crypto_provider();
            let mut b = if options.use_env {
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
            } else {
                object_store::gcp::GoogleCloudStorageBuilder::new()
            };
            b = b.with_bucket_name(bucket);
            for (k, v) in &settings {
                let key = k
                    .parse::<object_store::gcp::GoogleConfigKey>()
                    .map_err(|_| ConfigError::UnknownParameter(k.clone()))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(store_err)?,
            )
        }
        StoreKind::Azure { container } => {
            install_crypto_provider();
            let mut b = if options.use_env {
                object_store::azure::MicrosoftAzureBuilder::from_env()
            } else {
                object_store::azure::MicrosoftAzureBuilder::new()
            };
            b = b.with_container_name(container);
            for (k, v) in &settings {
                let key = k
                    .parse::<object_store::azure::AzureConfigKey>()
                    .map_err(|_| ConfigError::UnknownParameter(k.clone()))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(store_err)?,
            )
        }
        StoreKind::File { dir } => {
            if let Some((k, _)) = settings.first() {
                return Err(ConfigError::UnknownParameter(k.clone()));
            }
            std::fs::create_dir_all(dir).map_err(|e| ConfigError::Store {
                url: redacted.clone(),
                message: format!("creating {}: {e}", dir.display()),
            })?;
            attributes = false;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(store_err)?
                    .with_automatic_cleanup(true),
            )
        }
        StoreKind::Memory => {
            if let Some((k, _)) = settings.first() {
                return Err(ConfigError::UnknownParameter(k.clone()));
            }
            Arc::new(object_store::memory::InMemory::new())
        }
    };
    let prefix = Path::parse(&url.prefix).map_err(|e| ConfigError::InvalidUrl {
        url: redacted.clone(),
        reason: e.to_string(),
    })?;
    Ok(Remote {
        store,
        prefix,
        describe: redacted,
        attributes: Arc::new(attributes.into()),
    })
}

/// reqwest is built without a bundled crypto provider (see the workspace
/// manifest); install ring's as the process default. Does nothing if the
/// program installed one already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(prefix: &str) -> Remote {
        Remote {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::parse(prefix).unwrap(),
            describe: "memory".into(),
            attributes: Arc::new(true.into()),
        }
    }

    #[test]
    fn keys_keep_names_raw_and_strip_the_prefix() {
        let r = remote("a/b");
        let k = r.key("x y/[1]~.txt").unwrap();
        assert_eq!(k.as_ref(), "a/b/x y/[1]~.txt");
        assert_eq!(r.relative(&k), Some("x y/[1]~.txt"));
        assert_eq!(r.relative(&Path::parse("a/bc/x").unwrap()), None);
        assert!(r.key("a/../x").is_err());
        let root = remote("");
        assert_eq!(root.key("f").unwrap().as_ref(), "f");
        assert_eq!(root.relative(&Path::parse("f").unwrap()), Some("f"));
    }

    #[tokio::test]
    async fn bounded_reads_refuse_large_objects() {
        let r = remote("p");
        let k = r.key("obj").unwrap();
        assert!(r.get_bounded(&k, 10).await.unwrap().is_none());
        r.put(&k, Bytes::from_static(b"0123456789abc"), PutMode::Overwrite)
            .await
            .unwrap();
        let e = r.get_bounded(&k, 10).await.unwrap_err().to_string();
        assert!(e.contains("p/obj") && e.contains("13 bytes"), "{e}");
        let (b, v) = r.get_bounded(&k, 100).await.unwrap().unwrap();
        assert_eq!(&b[..], b"0123456789abc");
        assert!(v.e_tag.is_some());
    }

    #[test]
    fn builds_stores_without_leaking_options() {
        let url =
            RemoteUrl::parse("s3://bucket/p?endpoint=http://127.0.0.1:1&allow_http=true").unwrap();
        let opts = BackendOptions {
            use_env: false,
            store_options: vec![
                ("aws_access_key_id".into(), "AKIDSECRET".into()),
                ("aws_secret_access_key".into(), "SUPERSECRET".into()),
            ],
            ..BackendOptions::default()
        };
        let r = build(&url, &opts).unwrap();
        assert!(!r.describe.contains("SECRET"));
        assert!(!format!("{:?}", r.describe).contains("SUPERSECRET"));
        let bad = BackendOptions {
            store_options: vec![("no_such_option".into(), "SUPERSECRET".into())],
            ..opts
        };
        let e = build(&url, &bad).unwrap_err().to_string();
        assert!(
            e.contains("no_such_option") && !e.contains("SUPERSECRET"),
            "{e}"
        );
    }
}
