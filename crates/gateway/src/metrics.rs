//! Prometheus metrics of the gateway, prefix `purrify_gateway_`. Routes are label values by
//! their template (`/api/v1/status/{task_id}`), never by concrete ids.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::tasks::DispatchMetrics;
use crate::http::error::ErrorCode;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The error code the client got (a closed set).
    pub code: &'static str,
}

/// Task outcomes and the dispatcher's counters, read when scraped. In standalone mode they
/// come from the dispatcher's own exact counters; in Kubernetes mode, where no dispatcher
/// runs here, outcomes are the ones observed on the progress stream.
#[derive(Debug, Default)]
struct TaskCollector {
    dispatch: Arc<OnceLock<Arc<DispatchMetrics>>>,
    observed: Family<OutcomeLabels, Counter>,
}

fn const_counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for TaskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Tasks finished, by outcome and error code";
        let Some(dispatch) = self.dispatch.get() else {
            return self.observed.encode(encoder.encode_descriptor("tasks", help, None, MetricType::Counter)?);
        };
        let s = dispatch.snapshot();
        {
            let mut family = encoder.encode_descriptor("tasks", help, None, MetricType::Counter)?;
            for (outcome, code, n) in [("completed", "none", s.completed), ("cancelled", "none", s.cancelled)]
                .into_iter()
                .chain(s.failed.iter().map(|(code, n)| ("failed", *code, *n)))
            {
                let labels = [("outcome", outcome), ("code", code)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        const_counter(&mut encoder, "dispatch_attempts", "Attempts handed to a worker", s.dispatched)?;
        const_counter(&mut encoder, "dispatch_retries", "Attempts that failed and were queued again", s.retries)?;
        const_counter(
            &mut encoder,
            "dispatch_busy_requeues",
            "Tasks queued again because a worker did not take the job: full (429) or unreachable (not an attempt)",
            s.busy_requeues,
        )?;
        const_counter(&mut encoder, "dispatch_reattached", "Running jobs re-attached after a restart or a lost follower", s.reattached)?;
        const_counter(&mut encoder, "dispatch_db_errors", "Database calls of the dispatcher that failed", s.db_errors)?;
        let running = ConstGauge::new(i64::try_from(s.running).unwrap_or(i64::MAX));
        running.encode(encoder.encode_descriptor("dispatch_following", "Jobs the dispatcher follows now", None, running.metric_type())?)
    }
}

/// Rows of the log tables that were never stored (seed 002's `/api/logs`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLossLabels {
    /// system_logs | user_actions | task_events
    pub table: &'static str,
    /// queue_full | write_failed
    pub reason: &'static str,
}

/// One provider call's outcome (`provider`: a configured provider's id, so bounded by the
/// admin's configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    pub provider: String,
    /// ok, transient, rate_limited, rejected, auth, protocol, unsupported, circuit_open
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub log_records_lost: Family<LogLossLabels, Counter>,
    /// Calls to outside AI providers (each attempt), by provider and outcome.
    pub provider_calls: Family<ProviderCallLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upload_bytes: Counter,
    pub uploads_rejected: Family<RejectLabels, Counter>,
    /// Outcomes observed on the progress stream; exported only while no dispatcher is attached.
    pub tasks: Family<OutcomeLabels, Counter>,
    dispatch: Arc<OnceLock<Arc<DispatchMetrics>>>,
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
        let uploads_rejected = Family::<RejectLabels, Counter>::default();
        registry.register("uploads_rejected", "Uploads that did not become a task, by the error code answered", uploads_rejected.clone());
        let tasks = Family::<OutcomeLabels, Counter>::default();
        let dispatch = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(TaskCollector { dispatch: dispatch.clone(), observed: tasks.clone() }));
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Tasks queued and not yet dispatched", queue_depth.clone());
        let processing = Gauge::default();
        registry.register("tasks_processing", "Tasks running on a worker", processing.clone());
        let healthy_workers = Gauge::default();
        registry.register("healthy_workers", "Workers passing health checks", healthy_workers.clone());
        let log_records_lost = Family::<LogLossLabels, Counter>::default();
        registry.register("log_records_lost", "Log rows never stored, by table and reason", log_records_lost.clone());
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        registry.register("provider_calls", "Attempts of calls to outside AI providers, by provider and outcome", provider_calls.clone());
        Self {
            registry,
            log_records_lost,
            provider_calls,
            requests,
            request_duration,
            upload_bytes,
            uploads_rejected,
            tasks,
            dispatch,
            queue_depth,
            processing,
            healthy_workers,
        }
    }

    /// Exports the standalone dispatcher's exact counters (and task outcomes from them).
    pub fn attach_dispatch(&self, metrics: Arc<DispatchMetrics>) {
        let _ = self.dispatch.set(metrics);
    }

    pub fn upload_rejected(&self, code: ErrorCode) {
        self.uploads_rejected.get_or_create(&RejectLabels { code: code.as_str() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
