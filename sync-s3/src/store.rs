//! The object store under a backend: building it from a [`RemoteUrl`], and
//! the few operations both layouts share (keys under the prefix, bounded
//! reads, error mapping that keeps credentials out of messages).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::limit::LimitStore;
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
    /// The request budget: at most this many requests to `store` at once,
    /// from every stream together (see [`Remote::with_request_budget`]).
    pub requests: usize,
}

impl Remote {
    /// Puts `store` behind one request budget of `requests` (object_store's
    /// [`LimitStore`]): every request of both layouts and of the head
    /// protocol takes a permit, however many streams issue them, so two
    /// operations at once (a push and a retirement, a restore and a push)
    /// still send at most `requests`. Streams of requests run
    /// `buffer_unordered(self.requests)`: as wide as the budget, so the
    /// budget is the only limit; a narrower width is kept only where it
    /// bounds memory, and says so.
    ///
    /// A listing holds a permit until its stream is dropped, and a `GET`
    /// until its body is read or dropped: never wait for another request
    /// (or for [`ByteBudget`](crate::transfer::ByteBudget) memory) while
    /// holding either, or a budget of 1 deadlocks. Collect the listing
    /// first; take memory before the `GET`.
    pub fn with_request_budget(mut self, requests: usize) -> Self {
        let requests = requests.max(1);
        self.store = Arc::new(LimitStore::new(Arc::clone(&self.store), requests));
        self.requests = requests;
        self
    }

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
    let raw = flatten(&e);
    let (message, transient) = match permanent_hint(&raw) {
        Some(hint) => (hint, false),
        None => (clean_message(&raw), transient),
    };
    BackendError::Remote {
        operation,
        location: key.to_string(),
        message,
        transient,
    }
}

/// The text of the first `<tag>…</tag>` in an S3-style XML error body.
fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text.get(start..)?.find(&format!("</{tag}>"))?;
    text.get(start..start + len)
}

/// What to change, for errors that retrying will not fix: a missing
/// bucket, rejected credentials, a plain-HTTP endpoint with HTTP off.
/// S3-compatible servers say which in the error body's `<Code>`;
/// object_store passes the body on as text, so it is read from there.
fn permanent_hint(raw: &str) -> Option<String> {
    let code = xml_tag(raw, "Code");
    let bucket = xml_tag(raw, "BucketName")
        .map(|b| format!(" {b:?}"))
        .unwrap_or_default();
    match code {
        Some("NoSuchBucket") => Some(format!(
            "the bucket{bucket} does not exist (NoSuchBucket): create it, or fix the bucket name in the URL"
        )),
        Some(
            c @ ("SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "InvalidClientTokenId"
            | "AuthorizationHeaderMalformed"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"),
        ) => Some(format!(
            "the server rejected the credentials ({c}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the credentials file the pod mounts)"
        )),
        Some(c @ ("AccessDenied" | "AllAccessDisabled" | "AccountProblem")) => Some(format!(
            "access denied to the bucket{bucket} ({c}): the credentials are valid but lack permission for this bucket or prefix"
        )),
        _ if raw.contains("URL scheme is not allowed") => Some(
            "the endpoint is plain http:// but HTTP is off: add allow_http=true to the URL (or set AWS_ALLOW_HTTP=true), or use https".into(),
        ),
        _ if raw.contains("403 Forbidden") || raw.contains("401 Unauthorized") => Some(
            "the server refused the request (HTTP 401/403): check the credentials and their permissions on this bucket".into(),
        ),
        _ => None,
    }
}

/// The error without object_store's wrapping and without a raw XML body
/// (its `<Code>` and `<Message>` are kept).
fn clean_message(raw: &str) -> String {
    let mut text = raw.to_owned();
    for prefix in [
        "Generic S3 error: ",
        "Generic GCS error: ",
        "Generic MicrosoftAzure error: ",
    ] {
        text = text.replace(prefix, "");
    }
    if let Some(at) = text.find("<?xml") {
        let code = xml_tag(&text, "Code");
        let message = xml_tag(&text, "Message");
        let summary = match (code, message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => "(XML error body)".to_owned(),
        };
        text.truncate(at);
        text.push_str(&summary);
    }
    text
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
    let mut allow_http = false;
    for (k, v) in url
        .store_settings
        .iter()
        .chain(options.store_options.iter())
    {
        if k == "allow_http" || k == "aws_allow_http" || k == "azure_allow_http" {
            allow_http = v == "true" || v == "1";
            client = client.with_allow_http(allow_http);
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
                allow_http = true;
            }
            b = b.with_bucket_name(bucket);
            for (k, v) in &settings {
                let key = k
                    .parse::<object_store::aws::AmazonS3ConfigKey>()
                    .map_err(|_| ConfigError::UnknownParameter(k.clone()))?;
                b = b.with_config(key, v);
            }
            refuse_plain_http(
                b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint),
                allow_http,
                "AWS_ALLOW_HTTP",
            )?;
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
            if options.use_env && std::env::var("AZURE_ALLOW_HTTP").is_ok_and(|v| v == "true") {
                client = client.with_allow_http(true);
                allow_http = true;
            }
            for (k, v) in &settings {
                let key = k
                    .parse::<object_store::azure::AzureConfigKey>()
                    .map_err(|_| ConfigError::UnknownParameter(k.clone()))?;
                b = b.with_config(key, v);
            }
            // The emulator (Azurite) is plain HTTP by design.
            let emulator = b
                .get_config_value(&object_store::azure::AzureConfigKey::UseEmulator)
                .is_some_and(|v| v == "true" || v == "1");
            if !emulator {
                refuse_plain_http(
                    b.get_config_value(&object_store::azure::AzureConfigKey::Endpoint),
                    allow_http,
                    "AZURE_ALLOW_HTTP",
                )?;
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
        requests: options.concurrency,
    })
}

/// A plain `http://` endpoint without `allow_http` is refused by every
/// request later, with an opaque message: say so before anything runs.
fn refuse_plain_http(
    endpoint: Option<String>,
    allow_http: bool,
    env: &str,
) -> Result<(), ConfigError> {
    match endpoint {
        Some(ep)
            if !allow_http
                && ep
                    .get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("http://")) =>
        {
            Err(ConfigError::InvalidValue {
                name: "endpoint".into(),
                reason: format!(
                    "{ep} is plain HTTP, which is off by default: add allow_http=true to the URL (or set {env}=true), or use an https:// endpoint"
                ),
            })
        }
        _ => Ok(()),
    }
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

    #[test]
    fn s3_error_bodies_become_hints_or_one_clean_line() {
        let body = |code: &str| {
            format!(
                "Generic S3 error: Error performing GET http://h/b in 3ms - Server returned non-2xx status code: 503 Service Unavailable: <?xml version=\"1.0\"?>\n<Error><Code>{code}</Code><Message>Try later</Message><BucketName>b</BucketName></Error>"
            )
        };
        assert!(
            permanent_hint(&body("NoSuchBucket"))
                .unwrap()
                .contains("bucket \"b\" does not exist")
        );
        assert!(
            permanent_hint(&body("InvalidAccessKeyId"))
                .unwrap()
                .contains("rejected the credentials")
        );
        assert!(
            permanent_hint(&body("AccessDenied"))
                .unwrap()
                .contains("lack permission")
        );
        assert_eq!(permanent_hint(&body("SlowDown")), None);
        let clean = clean_message(&body("SlowDown"));
        assert!(
            clean.ends_with("503 Service Unavailable: SlowDown: Try later"),
            "{clean}"
        );
        assert!(
            !clean.contains('<') && !clean.contains("Generic"),
            "{clean}"
        );
    }

    fn remote(prefix: &str) -> Remote {
        Remote {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::parse(prefix).unwrap(),
            describe: "memory".into(),
            attributes: Arc::new(true.into()),
            requests: 8,
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
    fn a_plain_http_endpoint_without_allow_http_is_refused_up_front() {
        let opts = BackendOptions {
            use_env: false,
            store_options: vec![
                ("azure_storage_account_name".into(), "acct".into()),
                ("azure_storage_account_key".into(), "a2V5".into()),
            ],
            ..BackendOptions::default()
        };
        for (url, ok) in [
            ("az://c/p?endpoint=http://127.0.0.1:1", false),
            ("az://c/p?endpoint=http://127.0.0.1:1&allow_http=true", true),
            ("az://c/p?endpoint=https://acct.example", true),
        ] {
            let r = build(&RemoteUrl::parse(url).unwrap(), &opts);
            match (r, ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    let e = e.to_string();
                    assert!(e.contains("allow_http=true"), "{url}: {e}");
                }
                (r, _) => panic!("{url}: {:?}", r.map(|_| ())),
            }
        }
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
