//! An object store wrapper for concurrency tests: every request waits a
//! fixed delay first (a writer on a slow link), and a hook can run once,
//! just before the first write of a head or mirror index generation
//! (another writer acting at the worst moment). It can also list S3
//! "folder markers" (`dir/`, zero bytes), which object_store reports as
//! `dir` and which no object_store store can create.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// See the module docs.
pub struct Interposer {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
    markers: Vec<Path>,
}

impl Interposer {
    /// Wraps `inner`, delaying every request by `delay`.
    pub fn new(inner: Arc<dyn ObjectStore>, delay: Duration) -> Arc<Self> {
        Arc::new(Interposer {
            inner,
            delay,
            hook: Mutex::new(None),
            markers: Vec::new(),
        })
    }

    /// Wraps `inner`, listing a folder marker at each of `markers` as S3
    /// does (a zero-byte object that a `GET` of the name without the
    /// slash does not find).
    pub fn with_folder_markers(inner: Arc<dyn ObjectStore>, markers: Vec<Path>) -> Arc<Self> {
        Arc::new(Interposer {
            inner,
            delay: Duration::ZERO,
            hook: Mutex::new(None),
            markers,
        })
    }

    /// Runs `hook` before the next write of a generation (`/heads/…` or
    /// `/.tether/mirror/…`), once.
    pub fn before_next_generation(&self, hook: BoxFuture<'static, ()>) {
        *self.hook.lock().unwrap() = Some(hook);
    }

    async fn wait(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

impl std::fmt::Debug for Interposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interposer({:?})", self.delay)
    }
}

impl std::fmt::Display for Interposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interposer({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Interposer {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.wait().await;
        let key = location.as_ref();
        if key.contains("/heads/") || key.contains("/.tether/mirror/") {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                h.await;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.wait().await;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.wait().await;
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.wait().await;
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let delay = self.delay;
        stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.delete_stream(locations)
        })
        .flatten()
        .boxed()
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let delay = self.delay;
        let markers: Vec<object_store::Result<ObjectMeta>> = self
            .markers
            .iter()
            .filter(|m| prefix.is_none_or(|p| m.prefix_matches(p)))
            .map(|m| {
                Ok(ObjectMeta {
                    location: m.clone(),
                    last_modified: Default::default(),
                    size: 0,
                    e_tag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into()),
                    version: None,
                })
            })
            .collect();
        let prefix = prefix.cloned();
        stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .chain(stream::iter(markers))
        .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.wait().await;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.wait().await;
        self.inner.copy_opts(from, to, options).await
    }
}
