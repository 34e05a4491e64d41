//! Prometheus metrics of the admission webhook, in the OpenMetrics text
//! format served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What happened to one admission request; each outcome has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionOutcome {
    /// A patch adding tether was returned.
    Injected,
    /// The object passed unchanged (not a pod, not annotated, already
    /// injected, excluded namespace, not a CREATE).
    Skipped,
    /// The request was denied (invalid annotations or pod spec).
    Denied,
    /// The request could not be read (HTTP 4xx) or failed internally.
    Error,
}

/// The webhook's counters and latency histogram. Cheap to clone (shared).
#[derive(Clone)]
pub struct WebhookMetrics {
    registry: Arc<Registry>,
    injections: Counter,
    skips: Counter,
    denials: Counter,
    errors: Counter,
    latency: Histogram,
    shed: Counter,
    in_flight_body_bytes: Gauge,
    open_connections: Gauge,
    evicted_connections: Counter,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics")
            .field("injections", &self.injections.get())
            .field("skips", &self.skips.get())
            .field("denials", &self.denials.get())
            .field("errors", &self.errors.get())
            .field("shed", &self.shed.get())
            .field("in_flight_body_bytes", &self.in_flight_body_bytes.get())
            .field("open_connections", &self.open_connections.get())
            .field("evicted_connections", &self.evicted_connections.get())
            .finish()
    }
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Creates the metrics and their registry.
    pub fn new() -> Self {
        let injections = Counter::default();
        let skips = Counter::default();
        let denials = Counter::default();
        let errors = Counter::default();
        // 50 µs … ~1.6 s.
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let mut registry = Registry::with_prefix("tether_webhook");
        registry.register(
            "injections",
            "Pods that received tether",
            injections.clone(),
        );
        registry.register(
            "skips",
            "Admission requests passed unchanged",
            skips.clone(),
        );
        registry.register(
            "denials",
            "Pods refused because of invalid tether annotations",
            denials.clone(),
        );
        registry.register(
            "errors",
            "Requests that could not be read or answered",
            errors.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer one admission request, from body read to response",
            latency.clone(),
        );
        let shed = Counter::default();
        let in_flight_body_bytes = Gauge::default();
        let open_connections = Gauge::default();
        let evicted_connections = Counter::default();
        registry.register(
            "shed_requests",
            "Requests answered 503 because the request-body byte budget was exhausted",
            shed.clone(),
        );
        registry.register(
            "in_flight_body_bytes",
            "Request-body bytes held in memory, across every connection",
            in_flight_body_bytes.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open, including ones in the TLS handshake",
            open_connections.clone(),
        );
        registry.register(
            "evicted_connections",
            "Connections closed to make room for a new one (idle the longest first)",
            evicted_connections.clone(),
        );
        Self {
            registry: Arc::new(registry),
            injections,
            skips,
            denials,
            errors,
            latency,
            shed,
            in_flight_body_bytes,
            open_connections,
            evicted_connections,
        }
    }

    /// Records one answered request.
    pub fn record(&self, outcome: AdmissionOutcome, elapsed: Duration) {
        let counter = match outcome {
            AdmissionOutcome::Injected => &self.injections,
            AdmissionOutcome::Skipped => &self.skips,
            AdmissionOutcome::Denied => &self.denials,
            AdmissionOutcome::Error => &self.errors,
        };
        counter.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a request refused for lack of body budget (also counted as
    /// an error by [`Self::record`]).
    pub fn record_shed(&self) {
        self.shed.inc();
    }

    /// Requests refused for lack of body budget so far.
    pub fn shed_count(&self) -> u64 {
        self.shed.get()
    }

    /// Connections closed to make room for newer ones so far.
    pub fn evicted_connections(&self) -> u64 {
        self.evicted_connections.get()
    }

    pub(crate) fn in_flight_body_bytes_gauge(&self) -> Gauge {
        self.in_flight_body_bytes.clone()
    }

    pub(crate) fn open_connections_gauge(&self) -> Gauge {
        self.open_connections.clone()
    }

    pub(crate) fn evicted_connections_counter(&self) -> Counter {
        self.evicted_connections.clone()
    }

    /// Count of requests with the given outcome so far.
    pub fn count(&self, outcome: AdmissionOutcome) -> u64 {
        match outcome {
            AdmissionOutcome::Injected => self.injections.get(),
            AdmissionOutcome::Skipped => self.skips.get(),
            AdmissionOutcome::Denied => self.denials.get(),
            AdmissionOutcome::Error => self.errors.get(),
        }
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_reach_their_counters_and_the_text_output() {
        let m = WebhookMetrics::new();
        m.record(AdmissionOutcome::Injected, Duration::from_micros(300));
        m.record(AdmissionOutcome::Denied, Duration::from_micros(100));
        m.record(AdmissionOutcome::Denied, Duration::from_micros(100));
        assert_eq!(m.count(AdmissionOutcome::Injected), 1);
        assert_eq!(m.count(AdmissionOutcome::Denied), 2);
        assert_eq!(m.count(AdmissionOutcome::Error), 0);
        let text = m.encode().unwrap_or_default();
        assert!(text.contains("tether_webhook_injections_total 1"), "{text}");
        assert!(text.contains("tether_webhook_denials_total 2"), "{text}");
        assert!(
            text.contains("tether_webhook_admission_duration_seconds_count 3"),
            "{text}"
        );
    }
}
