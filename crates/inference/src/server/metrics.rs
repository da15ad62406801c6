//! Prometheus metrics of the worker, prefix `purrify_worker_`. Labels are bounded: outcome and
//! error reason come from fixed enums, model names from the configured set; never job ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// succeeded | failed | cancelled
    pub outcome: &'static str,
    /// bad_input | too_large | ... | none
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub provider: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub jobs: Family<OutcomeLabels, Counter>,
    pub job_duration: Histogram,
    pub tile_duration: Histogram,
    pub in_flight: Gauge,
    pub rejected_full: Counter,
    pub model_load_seconds: Family<ModelLabels, Gauge<f64, AtomicU64>>,
    /// Tiles split in four after the execution provider failed to allocate.
    pub tile_splits: Family<ModelLabels, Counter>,
    /// Largest tile edge that worked after an allocation failure: what jobs are capped at.
    pub tile_size_limit: Family<ModelLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("purrify_worker");
        let jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register("jobs", "Jobs finished, by outcome and failure reason", jobs.clone());
        // 50 ms .. ~14 min: tiny CPU jobs to x4plus on a large photo.
        let job_duration = Histogram::new(exponential_buckets(0.05, 2.0, 15));
        registry.register("job_duration_seconds", "Wall time of finished jobs", job_duration.clone());
        let tile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("tile_duration_seconds", "Model time per super-resolution tile", tile_duration.clone());
        let in_flight = Gauge::default();
        registry.register("jobs_in_flight", "Jobs accepted and not finished", in_flight.clone());
        let rejected_full = Counter::default();
        registry.register("jobs_rejected_full", "Submissions refused with 429 because the worker was full", rejected_full.clone());
        let model_load_seconds = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("model_load_seconds", "Time to create each model's session", model_load_seconds.clone());
        let tile_splits = Family::<ModelLabels, Counter>::default();
        registry.register("tile_splits", "Tiles split in four after an allocation failure of the execution provider", tile_splits.clone());
        let tile_size_limit = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "tile_size_limit",
            "Largest tile edge (input pixels) that worked after an allocation failure; later jobs are capped at it",
            tile_size_limit.clone(),
        );
        Self { registry, jobs, job_duration, tile_duration, in_flight, rejected_full, model_load_seconds, tile_splits, tile_size_limit }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
