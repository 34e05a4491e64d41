//! An object store wrapper for concurrency tests: every request waits a
//! fixed delay first (a writer on a slow link), and a hook can run once,
//! just before the first write of a head or mirror index generation
//! (another writer acting at the worst moment). It can also list S3
//! "folder markers" (`dir/`, zero bytes), which object_store reports as
//! `dir` and which no object_store store can create. It counts the
//! requests in flight (a listing until its stream is dropped, a `GET`
//! until its body is), and the most at once.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// See the module docs.
pub struct Interposer {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
    markers: Vec<Path>,
    flight: Arc<Flight>,
    /// Writes every create-if-absent as an overwrite, as a store or gateway
    /// that ignores `If-None-Match` does.
    ignore_create: bool,
}

/// Requests in flight now, and the most at once.
#[derive(Debug, Default)]
struct Flight {
    now: AtomicUsize,
    peak: AtomicUsize,
    /// Single `PUT`s sent, and their bytes (multipart parts not counted).
    puts: AtomicUsize,
    put_bytes: AtomicUsize,
    /// `GET`s sent (a `get_ranges` counts once, however many ranges).
    gets: AtomicUsize,
}

/// One request in flight, until dropped.
struct InFlight(Arc<Flight>);

impl InFlight {
    fn new(flight: &Arc<Flight>) -> Self {
        let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        flight.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(flight))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts each part of a multipart upload as one request.
#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    flight: Arc<Flight>,
}

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let flight = Arc::clone(&self.flight);
        Box::pin(async move {
            let _in_flight = InFlight::new(&flight);
            part.await
        })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let _in_flight = InFlight::new(&self.flight);
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        let _in_flight = InFlight::new(&self.flight);
        self.inner.abort().await
    }
}

impl Interposer {
    /// Wraps `inner`, delaying every request by `delay`.
    pub fn new(inner: Arc<dyn ObjectStore>, delay: Duration) -> Arc<Self> {
        Arc::new(Interposer {
            inner,
            delay,
            hook: Mutex::new(None),
            markers: Vec::new(),
            flight: Arc::default(),
            ignore_create: false,
        })
    }

    /// Wraps `inner` as a store that ignores create-if-absent: every
    /// `PutMode::Create` overwrites whatever is there.
    pub fn ignoring_create_if_absent(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Interposer {
            inner,
            delay: Duration::ZERO,
            hook: Mutex::new(None),
            markers: Vec::new(),
            flight: Arc::default(),
            ignore_create: true,
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
            flight: Arc::default(),
            ignore_create: false,
        })
    }

    /// Runs `hook` before the next write of a generation (`/heads/…` or
    /// `/.tether/mirror/…`), once.
    pub fn before_next_generation(&self, hook: BoxFuture<'static, ()>) {
        *self.hook.lock().unwrap() = Some(hook);
    }

    /// Single `PUT`s sent so far and their payload bytes.
    pub fn puts(&self) -> (usize, usize) {
        (
            self.flight.puts.load(Ordering::SeqCst),
            self.flight.put_bytes.load(Ordering::SeqCst),
        )
    }

    /// `GET`s sent so far (one per `get_ranges` call).
    pub fn gets(&self) -> usize {
        self.flight.gets.load(Ordering::SeqCst)
    }

    /// The most requests that were in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.flight.peak.load(Ordering::SeqCst)
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
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.ignore_create && opts.mode == object_store::PutMode::Create {
            opts.mode = object_store::PutMode::Overwrite;
        }
        let _in_flight = InFlight::new(&self.flight);
        self.flight.puts.fetch_add(1, Ordering::SeqCst);
        self.flight
            .put_bytes
            .fetch_add(payload.content_length(), Ordering::SeqCst);
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
        let _in_flight = InFlight::new(&self.flight);
        self.wait().await;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountedUpload {
            inner,
            flight: Arc::clone(&self.flight),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let in_flight = InFlight::new(&self.flight);
        self.flight.gets.fetch_add(1, Ordering::SeqCst);
        self.wait().await;
        let mut r = self.inner.get_opts(location, options).await?;
        // The body is part of the request.
        if let GetResultPayload::Stream(body) = r.payload {
            r.payload = GetResultPayload::Stream(
                body.map(move |chunk| {
                    let _ = &in_flight;
                    chunk
                })
                .boxed(),
            );
        }
        Ok(r)
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let _in_flight = InFlight::new(&self.flight);
        self.flight.gets.fetch_add(1, Ordering::SeqCst);
        self.wait().await;
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let delay = self.delay;
        let in_flight = InFlight::new(&self.flight);
        stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.delete_stream(locations)
        })
        .flatten()
        .map(move |r| {
            let _ = &in_flight;
            r
        })
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
        let in_flight = InFlight::new(&self.flight);
        stream::once(async move {
            tokio::time::sleep(delay).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .chain(stream::iter(markers))
        .map(move |r| {
            let _ = &in_flight;
            r
        })
        .boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let _in_flight = InFlight::new(&self.flight);
        self.wait().await;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let _in_flight = InFlight::new(&self.flight);
        self.wait().await;
        self.inner.copy_opts(from, to, options).await
    }
}
