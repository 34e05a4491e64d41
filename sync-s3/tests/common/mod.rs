//! Fixtures shared by sync-s3's integration tests: the four stores
//! (SeaweedFS over S3, Azurite over Azure Blob, `file://`, `memory://`) in
//! both layouts, and helpers that write raw objects in the backend's
//! storage format.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sync_core::testkit::conformance::{Fixture, Hostile, Planted};
use sync_core::testkit::testbed_var;
use sync_core::{Backend, ContentHash, FileMeta, Meta};
use sync_s3::{BackendOptions, Layout, ObjectStoreBackend};
use tempfile::TempDir;

/// Where a fixture's remotes live.
#[derive(Debug, Clone)]
pub enum Store {
    /// SeaweedFS from the test bed.
    S3 {
        endpoint: String,
        access_key: String,
        secret_key: String,
        bucket: String,
    },
    /// Azurite from the test bed (object_store's emulator mode: the
    /// well-known `devstoreaccount1` account and key, the endpoint from
    /// `AZURITE_BLOB_STORAGE_URL`, which object_store reads itself).
    Azure { container: String },
    /// A local directory.
    File,
    /// Process memory.
    Memory,
}

impl Store {
    /// The SeaweedFS test bed, or `None` (test skipped) when it is not running.
    pub fn s3() -> Option<Store> {
        Some(Store::S3 {
            endpoint: testbed_var("TETHER_TEST_S3_ENDPOINT")?,
            access_key: testbed_var("TETHER_TEST_S3_ACCESS_KEY")?,
            secret_key: testbed_var("TETHER_TEST_S3_SECRET_KEY")?,
            bucket: testbed_var("TETHER_TEST_S3_BUCKET")?,
        })
    }

    /// The Azurite test bed, or `None` (test skipped) when it is not running.
    pub fn azure() -> Option<Store> {
        testbed_var("AZURITE_BLOB_STORAGE_URL")?;
        Some(Store::Azure {
            container: testbed_var("TETHER_TEST_AZURE_CONTAINER")?,
        })
    }

    /// Whether objects keep user metadata (everything but `file://`).
    pub fn keeps_metadata(&self) -> bool {
        !matches!(self, Store::File)
    }
}

/// Memory and `file://`, plus SeaweedFS and Azurite when the test bed runs.
pub fn all_stores() -> Vec<Store> {
    let mut v = vec![Store::Memory, Store::File];
    v.extend(Store::s3());
    v.extend(Store::azure());
    v
}

/// A unique name for a remote prefix.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Builds backends on one kind of store in one layout.
pub struct StoreFixture {
    pub store: Store,
    pub layout: Layout,
    pub tmp: TempDir,
    pub options: BackendOptions,
}

impl StoreFixture {
    pub fn new(store: Store, layout: Layout) -> Self {
        StoreFixture {
            store,
            layout,
            tmp: tempfile::tempdir().unwrap(),
            options: BackendOptions::default(),
        }
    }

    /// The same fixture with client-side encryption (a generated key).
    pub fn encrypted(mut self) -> Self {
        self.options.encryption_key = Some(sync_s3::EncryptionKey::from_bytes(
            b"tether-key-1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc".to_vec(),
        ));
        self
    }

    /// The URL and options for a remote named `name`.
    pub fn url(&self, name: &str) -> (String, BackendOptions) {
        let mut options = BackendOptions {
            use_env: false,
            ..self.options.clone()
        };
        let url = match &self.store {
            Store::S3 {
                endpoint,
                access_key,
                secret_key,
                bucket,
            } => {
                options.store_options = vec![
                    ("aws_access_key_id".into(), access_key.clone()),
                    ("aws_secret_access_key".into(), secret_key.clone()),
                    ("aws_region".into(), "us-east-1".into()),
                ];
                format!(
                    "s3://{bucket}/{name}?layout={}&endpoint={endpoint}&allow_http=true",
                    self.layout
                )
            }
            Store::Azure { container } => {
                options.store_options = vec![("azure_storage_use_emulator".into(), "true".into())];
                format!("az://{container}/{name}?layout={}", self.layout)
            }
            Store::File => format!(
                "file://{}?layout={}",
                self.tmp.path().join(name).display(),
                self.layout
            ),
            Store::Memory => format!("memory://mem/{name}?layout={}", self.layout),
        };
        (url, options)
    }

    /// A backend on a fresh remote.
    pub fn backend(&self, name: &str) -> ObjectStoreBackend {
        let (url, options) = self.url(name);
        ObjectStoreBackend::from_url(&url, options).unwrap()
    }

    /// A second backend on the same remote as `name` (same store object for
    /// memory, which has no other way to share).
    pub fn same_remote(&self, name: &str, first: &ObjectStoreBackend) -> ObjectStoreBackend {
        match self.store {
            Store::Memory => ObjectStoreBackend::new(
                Arc::clone(first.store()),
                first.prefix().as_ref(),
                "memory",
                BackendOptions {
                    layout: self.layout,
                    ..self.options.clone()
                },
            )
            .unwrap(),
            _ => self.backend(name),
        }
    }
}

/// Writes `bytes` at `prefix/rel` in the backend's store.
pub async fn put_raw(b: &ObjectStoreBackend, rel: &str, bytes: impl Into<Bytes>) {
    let key = key(b, rel);
    b.store()
        .put(&key, PutPayload::from(bytes.into()))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// The mirror layout's object metadata names, as tether writes them.
pub const METADATA_NAMES: [&str; 3] = ["tetherblake3", "tethermode", "tethermtimens"];
/// The names earlier versions wrote (still read; Azure refuses them).
pub const LEGACY_METADATA_NAMES: [&str; 3] = ["tether-blake3", "tether-mode", "tether-mtime-ns"];

/// Writes `bytes` at `prefix/rel` with the mirror layout's object metadata
/// for `meta` (mode exactly as given).
pub async fn put_with_metadata(b: &ObjectStoreBackend, rel: &str, bytes: Bytes, meta: &FileMeta) {
    put_with_metadata_named(b, rel, bytes, meta, METADATA_NAMES).await;
}

/// [`put_with_metadata`] under the metadata names `names` (hash, mode,
/// mtime).
pub async fn put_with_metadata_named(
    b: &ObjectStoreBackend,
    rel: &str,
    bytes: Bytes,
    meta: &FileMeta,
    names: [&str; 3],
) {
    use object_store::{Attribute, AttributeValue, Attributes, ObjectStore as _, PutOptions};
    let mut attributes = Attributes::new();
    for (k, v) in names.into_iter().zip([
        meta.hash.to_hex(),
        format!("{:o}", meta.mode),
        meta.mtime_ns.to_string(),
    ]) {
        attributes.insert(
            Attribute::Metadata(k.to_owned().into()),
            AttributeValue::from(v),
        );
    }
    let key = key(b, rel);
    b.store()
        .put_opts(
            &key,
            PutPayload::from(bytes),
            PutOptions {
                attributes,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// The key `prefix/rel`.
pub fn key(b: &ObjectStoreBackend, rel: &str) -> Path {
    let p = b.prefix().as_ref();
    if p.is_empty() {
        Path::parse(rel).unwrap()
    } else {
        Path::parse(format!("{p}/{rel}")).unwrap()
    }
}

pub fn file_meta(content: &[u8]) -> FileMeta {
    FileMeta {
        size: content.len() as u64,
        mtime_ns: 1_600_000_000_000_000_000,
        mode: 0o644,
        hash: ContentHash::of(content),
    }
}

/// Plants a snapshot (format v2) holding `entries` exactly as given
/// (unvalidated: duplicates and `..` components kept) as head generation 1.
/// Returns the snapshot id.
pub async fn plant_snapshot(
    b: &ObjectStoreBackend,
    entries: Vec<(String, Meta, Option<Bytes>)>,
) -> String {
    sync_s3::testing::plant_snapshot(b, entries, 1)
        .await
        .unwrap()
}

/// Plants head generation `n` pointing at `snapshot`.
pub async fn plant_head(b: &ObjectStoreBackend, n: u64, snapshot: &str) {
    sync_s3::testing::plant_head(b, n, snapshot, None)
        .await
        .unwrap();
}

/// Plants mirror index generation 1 with `entries` (name → meta JSON
/// values, with optional etag) exactly as given.
pub async fn plant_mirror_index(b: &ObjectStoreBackend, entries: serde_json::Value) {
    let index = serde_json::json!({
        "format": "tether-mirror-index-1",
        "time_ms": 0,
        "entries": entries,
    });
    put_raw(
        b,
        &format!(".tether/mirror/{:020}", 1),
        serde_json::to_vec(&index).unwrap(),
    )
    .await;
}

pub fn meta_json(meta: &Meta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap()
}

#[async_trait]
impl Fixture for StoreFixture {
    async fn fresh(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend(&unique("conf")))
    }

    async fn plant_hostile(&self, case: &Hostile) -> Option<Arc<dyn Backend>> {
        let b = self.backend(&unique("hostile"));
        let ok = Meta::File(file_meta(b"ok"));
        let evil = Meta::File(file_meta(b"evil"));
        let mut raw: Vec<(String, Meta, Option<Bytes>)> =
            vec![("ok.txt".into(), ok.clone(), Some(Bytes::from_static(b"ok")))];
        match case {
            Hostile::Name(name) => {
                raw.push((name.clone(), evil, Some(Bytes::from_static(b"evil"))));
            }
            Hostile::SymlinkThenEntry {
                link,
                target,
                entry,
            } => {
                raw.push((
                    link.clone(),
                    Meta::Symlink {
                        target: target.clone(),
                    },
                    None,
                ));
                raw.push((entry.clone(), evil, Some(Bytes::from_static(b"evil"))));
            }
            Hostile::Entries(planted) => {
                for p in planted {
                    match p {
                        Planted::File {
                            path,
                            content,
                            mode,
                        } => {
                            let mut f = file_meta(content);
                            f.mode = *mode;
                            raw.push((
                                path.clone(),
                                Meta::File(f),
                                Some(Bytes::from(content.clone())),
                            ));
                        }
                        Planted::Dir { path, mode } => {
                            raw.push((path.clone(), Meta::Dir { mode: *mode }, None));
                        }
                    }
                }
            }
        }
        match self.layout {
            Layout::Snapshots => {
                plant_snapshot(&b, raw).await;
            }
            Layout::Mirror => {
                // The objects that can exist as keys, and an index naming
                // every entry (the only place a `..` or NUL name can live).
                let mut entries = serde_json::Map::new();
                for (name, meta, content) in &raw {
                    if let Some(c) = content
                        && object_store::path::Path::parse(name).is_ok()
                        && !name.starts_with('/')
                        && !name.contains('\\')
                    {
                        match (meta, &self.store) {
                            // The object's own metadata says the same as
                            // the index (which names no ETag, so the
                            // restore reads the metadata).
                            (Meta::File(f), s) if s.keeps_metadata() => {
                                put_with_metadata(&b, name, c.clone(), f).await;
                            }
                            _ => put_raw(&b, name, c.clone()).await,
                        }
                    }
                    entries.insert(name.clone(), meta_json(meta));
                }
                plant_mirror_index(&b, serde_json::Value::Object(entries)).await;
            }
        }
        Some(Arc::new(b))
    }
}
pub mod interposer;
