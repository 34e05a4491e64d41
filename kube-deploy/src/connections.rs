//! The webhook's table of open connections: a cap on their number that
//! makes room for a new client by closing the connection idle the longest,
//! and per-connection activity (requests in flight, last completed request)
//! for the idle timers.
//!
//! Data flow: the accept loop [`Connections::admit`]s each TCP connection
//! (evicting if at the cap) and gets a [`Slot`]; the connection's task wraps
//! its hyper service in [`Tracked`], which counts requests in flight and
//! hands the [`Activity`] to the handler in the request's extensions; the
//! task watches [`Activity::close_requested`] (eviction) and the idle time.
//!
//! "Idle the longest" is measured from the connection's opening or its last
//! completed request, whichever is later: a client that opens connections
//! and never completes a request (TLS only, the HTTP/2 preface only, a body
//! trickled byte by byte) ages, while the API server's busy connection
//! stays young. Connections whose request is being answered (body read,
//! handler running) are never evicted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Per-connection activity, shared by the connection's task, its service
/// and its handlers.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Service calls (requests with their head received) not finished.
    in_flight: AtomicUsize,
    /// Requests whose body is read and whose answer is being computed.
    answering: AtomicUsize,
    /// Whether any request head has arrived.
    seen_request: AtomicBool,
    /// When the connection last became idle (opened, or a request ended).
    idle_since: Mutex<Instant>,
    /// Poked when `in_flight` goes to or from zero.
    changed: Notify,
    /// Poked (with a stored permit) to close the connection now.
    close: Notify,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            in_flight: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            changed: Notify::new(),
            close: Notify::new(),
        }
    }

    /// When the connection last had no request in flight, `None` while one
    /// is.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock();
        (self.in_flight.load(Ordering::Acquire) == 0).then_some(since)
    }

    /// Whether a request head has arrived on this connection.
    pub(crate) fn seen_request(&self) -> bool {
        self.seen_request.load(Ordering::Acquire)
    }

    /// Completes on the next change of `in_flight` to or from zero.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Completes when the connection must close at once (evicted).
    pub(crate) async fn close_requested(&self) {
        self.close.notified().await;
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Release);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_waiters();
        }
        InFlight(Arc::clone(self))
    }

    /// Marks a request as being answered (its body complete) until the
    /// guard is dropped: the connection is then not evicted.
    pub(crate) fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::AcqRel);
        Answering(Arc::clone(self))
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock();
        *since = Instant::now();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            drop(since);
            self.0.changed.notify_waiters();
        }
    }
}

/// A request being answered.
#[derive(Debug)]
pub(crate) struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: HashMap<u64, Arc<Activity>>,
}

/// The table of open connections. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    inner: Arc<TableInner>,
}

#[derive(Debug)]
struct TableInner {
    cap: usize,
    table: Mutex<Table>,
    freed: Notify,
    open: Gauge,
    evicted: Counter,
}

/// What [`Connections::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The connection has its slot.
    Admitted(Slot),
    /// At the cap and every connection is answering a request: wait for
    /// [`Connections::freed`] and try again.
    Full,
}

impl Connections {
    pub(crate) fn new(cap: usize, open: Gauge, evicted: Counter) -> Self {
        Self {
            inner: Arc::new(TableInner {
                cap: cap.max(1),
                table: Mutex::new(Table::default()),
                freed: Notify::new(),
                open,
                evicted,
            }),
        }
    }

    /// Connections currently holding a slot.
    pub(crate) fn len(&self) -> usize {
        self.inner.table.lock().live.len()
    }

    /// Completes when a slot is given back.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.freed.notified()
    }

    /// Gives a new connection a slot; at the cap, first closes the
    /// connection idle the longest that is not answering a request.
    pub(crate) fn admit(&self) -> Admission {
        let mut table = self.inner.table.lock();
        if table.live.len() >= self.inner.cap && !self.evict_locked(&mut table) {
            return Admission::Full;
        }
        let id = table.next_id;
        table.next_id = table.next_id.wrapping_add(1);
        let activity = Arc::new(Activity::new());
        table.live.insert(id, Arc::clone(&activity));
        self.inner.open.set(gauge_value(table.live.len()));
        Admission::Admitted(Slot {
            connections: self.clone(),
            id,
            activity,
        })
    }

    /// Closes the connection idle the longest (see the module docs); false
    /// if every connection is answering a request.
    pub(crate) fn evict_one(&self) -> bool {
        let mut table = self.inner.table.lock();
        self.evict_locked(&mut table)
    }

    fn evict_locked(&self, table: &mut Table) -> bool {
        let victim = table
            .live
            .iter()
            .filter(|(_, a)| a.answering.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, a)| *a.idle_since.lock())
            .map(|(id, _)| *id);
        let Some(id) = victim else {
            return false;
        };
        if let Some(activity) = table.live.remove(&id) {
            activity.close.notify_one();
        }
        self.inner.open.set(gauge_value(table.live.len()));
        self.inner.evicted.inc();
        true
    }

    fn release(&self, id: u64) {
        let mut table = self.inner.table.lock();
        if table.live.remove(&id).is_some() {
            self.inner.open.set(gauge_value(table.live.len()));
            drop(table);
            self.inner.freed.notify_waiters();
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A connection's place in the table, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    connections: Connections,
    id: u64,
    activity: Arc<Activity>,
}

impl Slot {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.release(self.id);
    }
}

/// A hyper service that counts its requests on the connection's
/// [`Activity`] and puts the activity in each request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Tracked<S> {
    pub(crate) inner: S,
    pub(crate) activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        let guard = self.activity.request_started();
        request
            .extensions_mut()
            .insert(ConnectionActivity(Arc::clone(&self.activity)));
        TrackedFuture {
            inner: Box::pin(self.inner.call(request)),
            _guard: guard,
        }
    }
}

/// The activity of the connection a request came on (a request
/// extension).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionActivity(pub(crate) Arc<Activity>);

/// The future of [`Tracked`]: the inner future, and the in-flight count
/// held until it completes or is dropped.
pub(crate) struct TrackedFuture<F> {
    inner: Pin<Box<F>>,
    _guard: InFlight,
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn admitted(c: &Connections) -> Slot {
        match c.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Full => panic!("full"),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_goes_and_answering_ones_stay() {
        let c = Connections::new(2, Gauge::default(), Counter::default());
        let old = admitted(&c);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let busy = admitted(&c);
        // `old` completes a request now: it becomes the youngest, but
        // `busy` is answering one, so `old` is the only candidate.
        drop(old.activity().request_started());
        let _answering = busy.activity().answering();
        let new = admitted(&c);
        old.activity().close_requested().await;
        assert_eq!(c.len(), 2);
        // Now `busy` is answering and `new` is the only candidate.
        drop(old);
        let _third = admitted(&c);
        new.activity().close_requested().await;
        drop(new);
        assert_eq!(c.len(), 2);
        // With every connection answering, a newcomer must wait.
        let _answering_third = _third.activity().answering();
        assert!(matches!(c.admit(), Admission::Full));
    }
}
