//! What the plugin counts while it runs, for the operator: requests by transport, method
//! and outcome, their latency, refused requests, errors, and the time from a held payment
//! to its channel's funding. Kept in `prometheus-client` metrics, so `/metrics` encodes
//! them as they are; the figures that live in the store are added at each scrape by the
//! console (`Telemetry::encode`), never counted twice.
//!
//! A leaf: it imports nothing of the crate, so every room may count into it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `transport`, `method`, `outcome`.
type RequestLabels = [(&'static str, &'static str); 3];
/// `transport`, `method`.
type MethodLabels = [(&'static str, &'static str); 2];
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// How many errors `recent_errors` keeps.
pub const RECENT_ERRORS: usize = 20;

/// Request latencies: 0.5 ms to ~16 s.
fn request_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

/// Payment held to funding broadcast: 1 s to ~36 h (an on-chain payment waits for its confirmations).
fn open_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 18))
}

/// One gauge of the figures the store holds, with its samples, encoded at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// Label pairs and value of each sample; a family without samples is left out.
    pub samples: Vec<(Vec<(&'static str, String)>, i64)>,
}

impl GaugeFamily {
    pub fn single(name: &'static str, help: &'static str, value: i64) -> Self {
        GaugeFamily { name, help, samples: vec![(vec![], value)] }
    }
}

/// The figures of one scrape, handed to the registry's collector.
#[derive(Debug, Default, Clone)]
struct Figures(std::sync::Arc<Mutex<Vec<GaugeFamily>>>);

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for f in families.iter().filter(|f| !f.samples.is_empty()) {
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, ConstGauge::new(0i64).metric_type())?;
            for (labels, value) in &f.samples {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                ConstGauge::new(*value).encode(metric.encode_family(&pairs)?)?;
            }
        }
        Ok(())
    }
}

/// An error shown to the operator (`lsps1-status`, the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    pub at_ms: i64,
    pub message: String,
}

/// The plugin's running counts. One per plugin, shared by every transport.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    figures: Figures,
    /// One scrape at a time: the figures of one are not mixed with another's.
    scrape: Mutex<()>,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<MethodLabels>,
    refused: Family<MethodLabels, Counter>,
    errors: Counter,
    payment_to_open: Histogram,
    rate_limited: AtomicU64,
    refused_other: AtomicU64,
    recent: Mutex<VecDeque<RecentError>>,
    started_at_ms: i64,
}

/// A request's method as a label: the LSPS methods by name, anything else `other`, so a
/// client cannot make up label values.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "lsps1.get_info" | "get_info" => "get_info",
        "lsps1.create_order" | "create_order" => "create_order",
        "lsps1.get_order" | "get_order" => "get_order",
        "lsps0.list_protocols" => "list_protocols",
        _ => "other",
    }
}

impl Telemetry {
    /// `started_at_ms`: when counting began (shown beside the counts).
    pub fn new(started_at_ms: i64) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily<MethodLabels> = Family::new_with_constructor(request_buckets);
        let refused = Family::<MethodLabels, Counter>::default();
        let errors = Counter::default();
        let payment_to_open = open_buckets();
        registry.register(
            "lsps1_requests",
            "LSPS requests answered, by transport, method and outcome",
            requests.clone(),
        );
        registry.register(
            "lsps1_request_duration_seconds",
            "Time to answer an LSPS request, by transport and method",
            durations.clone(),
        );
        registry.register(
            "lsps1_requests_refused",
            "Requests refused by admission control before being served, by transport and reason",
            refused.clone(),
        );
        registry.register("lsps1_errors", "Errors shown to the operator (lsps1-status recent_errors)", errors.clone());
        registry.register(
            "lsps1_payment_to_open_seconds",
            "Time from an order's payment being held to its channel's funding broadcast",
            payment_to_open.clone(),
        );
        let figures = Figures::default();
        registry.register_collector(Box::new(figures.clone()));
        Telemetry {
            registry,
            figures,
            scrape: Mutex::new(()),
            requests,
            durations,
            refused,
            errors,
            payment_to_open,
            rate_limited: AtomicU64::new(0),
            refused_other: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
            started_at_ms,
        }
    }

    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// One answered request. `ok`: answered with a result, not an error.
    pub fn request(&self, transport: &'static str, method: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.requests.get_or_create(&[("transport", transport), ("method", method), ("outcome", outcome)]).inc();
        self.durations.get_or_create(&[("transport", transport), ("method", method)]).observe(took.as_secs_f64());
    }

    /// One request admission control refused; `reason`: `rate_limited`, `in_flight`,
    /// `overloaded` (`limits::Refusal::label`).
    pub fn refused(&self, transport: &'static str, reason: &'static str) {
        self.refused.get_or_create(&[("transport", transport), ("reason", reason)]).inc();
        if reason == "rate_limited" { &self.rate_limited } else { &self.refused_other }.fetch_add(1, Ordering::Relaxed);
    }

    /// Refused requests since start: (rate-limited, refused for another reason).
    pub fn refused_counts(&self) -> (u64, u64) {
        (self.rate_limited.load(Ordering::Relaxed), self.refused_other.load(Ordering::Relaxed))
    }

    /// A payment held for `took` before its channel's funding went out.
    pub fn payment_to_open(&self, took: Duration) {
        self.payment_to_open.observe(took.as_secs_f64());
    }

    /// An error the operator should see; the newest [`RECENT_ERRORS`] are kept.
    pub fn error(&self, at_ms: i64, message: impl Into<String>) {
        self.errors.inc();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(RecentError { at_ms, message: message.into() });
    }

    /// The newest errors, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }

    /// The Prometheus text exposition (format 0.0.4) of the running counts and `figures`.
    pub fn encode(&self, figures: Vec<GaugeFamily>) -> Result<String, std::fmt::Error> {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        *self.figures.0.lock().unwrap_or_else(|p| p.into_inner()) = figures;
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Telemetry::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_figures_encode() {
        let t = Telemetry::new(0);
        t.request("p2p", method_label("lsps1.get_info"), true, Duration::from_millis(2));
        t.request("rest", method_label("made.up"), false, Duration::from_millis(2));
        t.refused("p2p", "rate_limited");
        t.refused("rest", "overloaded");
        for i in 0..25 {
            t.error(i, format!("e{i}"));
        }
        assert_eq!(t.refused_counts(), (1, 1));
        let recent = t.recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].message, "e24");
        let text = t
            .encode(vec![
                GaugeFamily::single("lsps1_blockheight", "Height", 7),
                GaugeFamily { name: "lsps1_empty", help: "none", samples: vec![] },
            ])
            .unwrap();
        assert!(text.contains("lsps1_blockheight 7"), "{text}");
        assert!(!text.contains("lsps1_empty"), "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
    }
}
