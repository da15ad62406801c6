//! The workers' load for GPU monitoring, in one shape whichever backend runs: in standalone
//! mode from the fleet (probes of `/v1/info`: every GPU, the host's CPU and memory); in
//! Kubernetes mode from the status the operator keeps on the GpuPool uploads are routed to
//! (health, in-flight jobs, last heartbeat, every GPU and the host's load as the workers
//! report them; no capacity). A status written by an older operator carries only `gpu`, the
//! first GPU, and no host load.

use purrify_inference::protocol::HostInfo;

use super::{Backend, TaskService, kubernetes};

/// One GPU as its worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// The device name, where the source carries it (the fleet does; GpuPool status does not).
    pub name: Option<String>,
    /// Percent, 0..=100.
    pub utilization: f32,
    /// Bytes.
    pub memory_used: u64,
    /// Bytes.
    pub memory_total: u64,
}

/// Where a worker comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerOrigin {
    /// The in-process worker (standalone).
    Embedded,
    /// A URL of the fleet: the configured backend URL or a registered GPU server.
    Fleet,
    /// A worker of the GpuPool (in-cluster pod or external endpoint).
    Pool,
}

/// One worker's health and load.
#[derive(Debug, Clone)]
pub struct WorkerTelemetry {
    /// Pod or endpoint name (the fleet names workers by URL).
    pub name: String,
    pub endpoint: String,
    pub origin: WorkerOrigin,
    pub healthy: bool,
    pub in_flight: u32,
    /// Jobs it runs at once, where known.
    pub capacity: Option<u32>,
    /// RFC 3339 time of the last successful probe.
    pub last_heartbeat: Option<String>,
    /// In device order; empty for CPU workers and workers that report no telemetry.
    pub gpus: Vec<GpuReading>,
    /// Host CPU busy, percent, where reported.
    pub cpu_usage: Option<f32>,
    /// Host memory in use, percent, where reported.
    pub memory_usage: Option<f32>,
}

impl TaskService {
    /// Every worker tasks can go to, with the load it reports.
    pub async fn worker_telemetry(&self) -> Vec<WorkerTelemetry> {
        match &self.inner.backend {
            Backend::Standalone(_) => {
                let embedded = self.inner.embedded.as_deref().map(|e| e.trim_end_matches('/').to_owned());
                self.inner
                    .fleet
                    .snapshot()
                    .workers
                    .into_iter()
                    .map(|w| WorkerTelemetry {
                        origin: if embedded.as_deref() == Some(w.endpoint.trim_end_matches('/')) {
                            WorkerOrigin::Embedded
                        } else {
                            WorkerOrigin::Fleet
                        },
                        name: w.name,
                        endpoint: w.endpoint,
                        healthy: w.healthy,
                        in_flight: w.in_flight,
                        capacity: Some(w.capacity),
                        last_heartbeat: w.last_heartbeat.map(purrify_inference::client::format_rfc3339),
                        gpus: w
                            .gpus
                            .into_iter()
                            .map(|g| GpuReading {
                                name: Some(g.name),
                                utilization: g.utilization,
                                memory_used: g.memory_used,
                                memory_total: g.memory_total,
                            })
                            .collect(),
                        cpu_usage: w.host.as_ref().map(|h| h.cpu_usage),
                        memory_usage: w.host.as_ref().map(|h| h.memory_usage()),
                    })
                    .collect()
            }
            Backend::Kubernetes(k) => {
                let pool = self.routing().await.ok().and_then(|r| r.pool).unwrap_or_else(|| kubernetes::default_pool().into());
                let Some(status) = k.pool_status(&pool).await else { return Vec::new() };
                status
                    .workers
                    .into_iter()
                    .map(|w| WorkerTelemetry {
                        name: w.name,
                        endpoint: w.endpoint,
                        origin: WorkerOrigin::Pool,
                        healthy: w.healthy,
                        in_flight: w.in_flight,
                        capacity: None,
                        last_heartbeat: w.last_heartbeat,
                        gpus: if w.gpus.is_empty() { w.gpu.into_iter().collect() } else { w.gpus }
                            .into_iter()
                            .map(|g| GpuReading {
                                name: None,
                                utilization: g.utilization,
                                memory_used: g.memory_used,
                                memory_total: g.memory_total,
                            })
                            .collect(),
                        cpu_usage: w.host.as_ref().map(|h| h.cpu_usage),
                        memory_usage: w.host.map(|h| {
                            HostInfo { cpu_usage: h.cpu_usage, memory_used: h.memory_used, memory_total: h.memory_total }.memory_usage()
                        }),
                    })
                    .collect()
            }
        }
    }
}
