//! A global budget on request-body bytes held in memory by the webhook,
//! across every connection and stream.
//!
//! Each request body being read gets a [`Reservation`]; before the reader
//! lets its buffer grow it [`Reservation::acquire`]s the growth (the
//! buffer's *capacity*, so the count is an upper bound of what the bodies
//! really occupy). Bytes return to the budget when the reservation is
//! dropped, i.e. when the request has been answered or abandoned.
//!
//! When the budget is exhausted, newer requests win over older ones: a
//! request that needs bytes cancels the *oldest* readers still receiving
//! their bodies (they are answered 503 and release what they held), then
//! waits for the release, at most a short while. A client that opens many
//! streams and never finishes their bodies therefore cannot keep a fresh
//! request from being read: its streams are the oldest. The invariant
//! `in_flight() <= capacity()` always holds, checked under one lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Why bytes could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The budget stayed exhausted until the deadline.
    Exhausted,
    /// A newer request needed the bytes; this one was cancelled.
    Evicted,
}

#[derive(Debug)]
struct Reader {
    held: usize,
    cancelled: bool,
    cancel: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    peak: usize,
    /// Bytes held by cancelled readers, not yet released.
    releasing: usize,
    next_id: u64,
    /// Live readers by id; ids grow, so the first entries are the oldest.
    readers: BTreeMap<u64, Reader>,
}

/// The shared byte budget. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    state: Mutex<State>,
    released: Notify,
    gauge: Gauge,
}

impl ByteBudget {
    /// A budget of `capacity` bytes; `gauge` follows the in-flight total.
    pub(crate) fn new(capacity: usize, gauge: Gauge) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity,
                state: Mutex::new(State::default()),
                released: Notify::new(),
                gauge,
            }),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.inner.capacity
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.inner.state.lock().used
    }

    pub(crate) fn peak(&self) -> usize {
        self.inner.state.lock().peak
    }

    /// Registers a new reader holding nothing yet.
    pub(crate) fn reserve(&self) -> Reservation {
        let cancel = Arc::new(Notify::new());
        let mut state = self.inner.state.lock();
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        state.readers.insert(
            id,
            Reader {
                held: 0,
                cancelled: false,
                cancel: Arc::clone(&cancel),
            },
        );
        Reservation {
            budget: self.clone(),
            id,
            cancel,
        }
    }
}

/// One request body's share of the budget; released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: ByteBudget,
    id: u64,
    cancel: Arc<Notify>,
}

impl Reservation {
    /// Completes when a newer request has cancelled this one.
    pub(crate) async fn cancelled(&self) {
        self.cancel.notified().await;
    }

    /// Takes `bytes` more from the budget, cancelling older readers when
    /// it is exhausted, and waiting for them until `deadline`.
    pub(crate) async fn acquire(&mut self, bytes: usize, deadline: Instant) -> Result<(), Refused> {
        if bytes > self.budget.capacity() {
            return Err(Refused::Exhausted);
        }
        loop {
            let released = self.budget.inner.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.budget.inner.state.lock();
                if state.readers.get(&self.id).is_none_or(|me| me.cancelled) {
                    return Err(Refused::Evicted);
                }
                let capacity = self.budget.inner.capacity;
                if let Some(total) = state.used.checked_add(bytes)
                    && total <= capacity
                {
                    state.used = total;
                    state.peak = state.peak.max(total);
                    if let Some(me) = state.readers.get_mut(&self.id) {
                        me.held += bytes;
                    }
                    self.budget.inner.gauge.set(gauge_value(total));
                    return Ok(());
                }
                // Cancel the oldest readers until what they will release
                // covers the shortfall.
                let State {
                    used,
                    releasing,
                    readers,
                    ..
                } = &mut *state;
                for (id, reader) in readers.iter_mut() {
                    if *id >= self.id || used.saturating_sub(*releasing) + bytes <= capacity {
                        break;
                    }
                    if reader.cancelled || reader.held == 0 {
                        continue;
                    }
                    reader.cancelled = true;
                    *releasing += reader.held;
                    reader.cancel.notify_one();
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(Refused::Exhausted);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.budget.inner.state.lock();
        if let Some(reader) = state.readers.remove(&self.id) {
            state.used = state.used.saturating_sub(reader.held);
            if reader.cancelled {
                state.releasing = state.releasing.saturating_sub(reader.held);
            }
            let used = state.used;
            drop(state);
            self.budget.inner.gauge.set(gauge_value(used));
            if reader.held > 0 {
                self.budget.inner.released.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(200)
    }

    #[tokio::test]
    async fn never_exceeds_capacity_and_releases_on_drop() {
        let budget = ByteBudget::new(100, Gauge::default());
        let mut a = budget.reserve();
        assert_eq!(a.acquire(60, soon()).await, Ok(()));
        assert_eq!(a.acquire(40, soon()).await, Ok(()));
        assert_eq!(budget.in_flight(), 100);
        // A newer reader cancels `a`, which releases on drop.
        let mut b = budget.reserve();
        let waiter = tokio::spawn(async move {
            let r = b.acquire(10, Instant::now() + Duration::from_secs(5)).await;
            (r, b)
        });
        a.cancelled().await;
        assert_eq!(a.acquire(1, soon()).await, Err(Refused::Evicted));
        drop(a);
        let (r, b) = waiter.await.unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(budget.in_flight(), 10);
        assert_eq!(budget.peak(), 100);
        drop(b);
        assert_eq!(budget.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_older_reader_never_cancels_a_newer_one() {
        let budget = ByteBudget::new(100, Gauge::default());
        let mut old = budget.reserve();
        let mut new = budget.reserve();
        assert_eq!(new.acquire(100, soon()).await, Ok(()));
        assert_eq!(old.acquire(1, soon()).await, Err(Refused::Exhausted));
        assert_eq!(budget.in_flight(), 100);
        assert_eq!(old.acquire(101, soon()).await, Err(Refused::Exhausted));
    }
}
