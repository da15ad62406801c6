//! Prometheus metrics of the operator, prefix `purrify_operator_`. Labels are bounded:
//! controller, pool (admin-defined, few), phase, verb, outcome; never task names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `gpupool` | `enhancetask`
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `ok` | `error`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `namespace/name` of the GpuPool.
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Queued | Running | Succeeded | Failed | Cancelled
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create` | `apply` | `patch_status` | `replace` | `delete`
    pub verb: &'static str,
    /// Kubernetes resource, e.g. `enhancetasks`, `deployments`.
    pub resource: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Time from a task's creation to its job being accepted by a worker.
    pub dispatch_latency: Histogram,
    pub queue_depth: Family<PoolLabels, Gauge>,
    pub tasks_by_phase: Family<PhaseLabels, Gauge>,
    pub task_transitions: Family<PhaseLabels, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub healthy_workers: Family<PoolLabels, Gauge>,
    pub is_leader: Gauge,
    pub leader_transitions: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("purrify_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by controller and outcome", reconciles.clone());
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register("reconcile_duration_seconds", "Reconcile duration by controller", reconcile_duration.clone());
        let dispatch_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 20));
        registry.register("dispatch_latency_seconds", "From task creation to the worker accepting its job", dispatch_latency.clone());
        let queue_depth = Family::<PoolLabels, Gauge>::default();
        registry.register("queue_depth", "Queued tasks per pool", queue_depth.clone());
        let tasks_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("tasks", "EnhanceTasks by phase", tasks_by_phase.clone());
        let task_transitions = Family::<PhaseLabels, Counter>::default();
        registry.register("task_transitions", "EnhanceTasks entering each phase", task_transitions.clone());
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register("api_writes", "Writes to the Kubernetes API by verb and resource", api_writes.clone());
        let healthy_workers = Family::<PoolLabels, Gauge>::default();
        registry.register("healthy_workers", "Healthy workers per pool", healthy_workers.clone());
        let is_leader = Gauge::default();
        registry.register("is_leader", "1 while this replica holds the leader lease", is_leader.clone());
        let leader_transitions = Counter::default();
        registry.register("leader_transitions", "Times this replica became leader", leader_transitions.clone());
        Self {
            registry,
            reconciles,
            reconcile_duration,
            dispatch_latency,
            queue_depth,
            tasks_by_phase,
            task_transitions,
            api_writes,
            healthy_workers,
            is_leader,
            leader_transitions,
        }
    }

    /// Counts one write to the API server.
    pub fn write(&self, verb: &'static str, resource: &'static str) {
        self.api_writes.get_or_create(&WriteLabels { verb, resource }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
