//! Prometheus metrics of the gateway, prefix `purrify_gateway_`. Routes are label values by
//! their template (`/api/v1/status/{task_id}`), never by concrete ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// completed | failed | cancelled
    pub outcome: &'static str,
    /// error code for failures, `none` otherwise
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upload_bytes: Counter,
    pub uploads_rejected: Counter,
    pub tasks: Family<OutcomeLabels, Counter>,
    pub queue_depth: Gauge,
    pub processing: Gauge,
    pub healthy_workers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("purrify_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route template, method and status", requests.clone());
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 3.0, 14)));
        registry.register("http_request_duration_seconds", "HTTP request latency by route template", request_duration.clone());
        let upload_bytes = Counter::default();
        registry.register("upload_bytes", "Bytes of accepted uploads", upload_bytes.clone());
        let uploads_rejected = Counter::default();
        registry.register("uploads_rejected", "Uploads refused (size, type, header)", uploads_rejected.clone());
        let tasks = Family::<OutcomeLabels, Counter>::default();
        registry.register("tasks", "Tasks finished, by outcome and error code", tasks.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Tasks queued and not yet dispatched", queue_depth.clone());
        let processing = Gauge::default();
        registry.register("tasks_processing", "Tasks running on a worker", processing.clone());
        let healthy_workers = Gauge::default();
        registry.register("healthy_workers", "Workers passing health checks", healthy_workers.clone());
        Self { registry, requests, request_duration, upload_bytes, uploads_rejected, tasks, queue_depth, processing, healthy_workers }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
