//! GPU monitoring (seed 002's `/api/gpu/*`): every worker tasks can go to, in one shape
//! whichever backend runs (the fleet's probes in standalone mode, the GpuPool status in
//! Kubernetes mode), plus registered GPU servers no worker answers for (offline). Per-GPU
//! figures are the workers' own reports; memory in GiB, usage in percent. Running tasks come
//! from the tasks table: processing tasks whose current attempt is on that worker.

use purrify_store::{GpuServer as Registered, Task};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Monitoring;
use crate::domain::tasks::{GpuReading, WorkerOrigin, WorkerTelemetry};
use crate::domain::{DomainError, DomainResult};

/// A GPU counts as busy at or above this utilisation (percent).
pub const BUSY_UTILIZATION: f64 = 10.0;

const GIB: f64 = (1u64 << 30) as f64;

/// Where a server comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerSource {
    /// Registered through `/webhook/register`.
    Registered,
    /// The configured backend URL (`/api/v1/config/backend`).
    Configured,
    /// The gateway's in-process worker.
    Embedded,
    /// A worker of the GpuPool (Kubernetes mode).
    Pool,
}

/// One GPU server (seed 002's list item).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GpuServer {
    /// Stable and URL-safe: the id given at registration, else `w-` and 12 hex digits of the
    /// SHA-256 of the worker's URL.
    pub id: String,
    /// Pod or endpoint name.
    pub name: String,
    /// The worker's host (name or address).
    pub host: String,
    /// The worker's base URL.
    pub endpoint: String,
    pub source: ServerSource,
    /// `online` (passing health checks) or `offline`.
    pub status: &'static str,
    /// Jobs on the worker now.
    pub current_tasks: u32,
    /// Jobs it runs at once; null where the source does not say (Kubernetes mode).
    pub max_concurrent_tasks: Option<u32>,
    /// GPU memory over all its GPUs, GiB.
    pub total_memory: f64,
    pub used_memory: f64,
    /// GPUs reporting telemetry; 0 for CPU workers.
    pub gpu_count: usize,
    /// Host CPU busy, percent; null when the worker does not report it.
    pub cpu_usage: Option<f64>,
    /// Host memory in use, percent; null when the worker does not report it.
    pub memory_usage: Option<f64>,
    /// RFC 3339 time of the last successful health probe.
    pub last_heartbeat: Option<String>,
}

impl GpuServer {
    pub fn online(&self) -> bool {
        self.status == "online"
    }
}

/// One GPU as its worker reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GpuUsage {
    /// Device index on the server.
    pub gpu_id: usize,
    /// Device name, where reported.
    pub name: Option<String>,
    /// Utilisation, percent.
    pub usage: f64,
    /// GiB.
    pub memory_used: f64,
    /// GiB.
    pub memory_total: f64,
}

/// A task running on a server.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunningTask {
    pub task_id: String,
    /// Percent.
    pub progress: f64,
}

/// `GET /api/gpu/servers/{id}`: the server with its GPUs and running tasks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GpuServerDetail {
    #[serde(flatten)]
    pub server: GpuServer,
    pub gpu_usage: Vec<GpuUsage>,
    pub running_tasks: Vec<RunningTask>,
}

/// `GET /api/gpu/servers/{id}/status` (seed 002's shape).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GpuServerStatus {
    pub server_id: String,
    pub status: &'static str,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub gpu_usage: Vec<GpuUsage>,
    pub running_tasks: Vec<RunningTask>,
    /// RFC 3339 time of this reading.
    pub timestamp: String,
}

/// `GET /api/gpu/cluster/overview` (seed 002's shape).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterOverview {
    pub total_servers: usize,
    pub online_servers: usize,
    pub offline_servers: usize,
    /// GPUs reporting telemetry.
    pub total_gpus: usize,
    /// GPUs at or above 10 % utilisation.
    pub busy_gpus: usize,
    pub idle_gpus: usize,
    /// Tasks being processed now.
    pub total_running_tasks: u64,
    /// Tasks waiting for a worker.
    pub queue_length: u64,
    /// Mean utilisation of the GPUs that report it, percent; null when none does.
    pub average_gpu_usage: Option<f64>,
    /// GiB.
    pub total_memory: f64,
    pub used_memory: f64,
}

/// One server with everything read about it.
struct Reading {
    server: GpuServer,
    gpus: Vec<GpuReading>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn gib(bytes: u64) -> f64 {
    round2(bytes as f64 / GIB)
}

fn norm(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// `w-` and 12 hex digits of the URL's SHA-256: stable across restarts and gateways.
fn url_id(endpoint: &str) -> String {
    let digest = Sha256::digest(norm(endpoint).as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("w-{hex}")
}

/// Host and `host:port` of a worker URL.
fn host_of(endpoint: &str) -> (String, String) {
    match url::Url::parse(endpoint) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
            let authority = match u.port_or_known_default() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_owned(),
            };
            (host, authority)
        }
        Err(_) => (endpoint.to_owned(), endpoint.to_owned()),
    }
}

fn usage(gpus: &[GpuReading]) -> Vec<GpuUsage> {
    gpus.iter()
        .enumerate()
        .map(|(i, g)| GpuUsage {
            gpu_id: i,
            name: g.name.clone(),
            usage: round2(f64::from(g.utilization)),
            memory_used: gib(g.memory_used),
            memory_total: gib(g.memory_total),
        })
        .collect()
}

fn reading(w: WorkerTelemetry, registered: Option<&Registered>) -> Reading {
    let (host, authority) = host_of(&w.endpoint);
    let source = match (registered, w.origin) {
        (Some(_), _) => ServerSource::Registered,
        (None, WorkerOrigin::Embedded) => ServerSource::Embedded,
        (None, WorkerOrigin::Pool) => ServerSource::Pool,
        (None, WorkerOrigin::Fleet) => ServerSource::Configured,
    };
    // The fleet names workers by URL; a pod name says more.
    let name = if w.origin == WorkerOrigin::Pool && norm(&w.name) != norm(&w.endpoint) { w.name.clone() } else { authority };
    let server = GpuServer {
        id: registered.map_or_else(|| url_id(&w.endpoint), |r| r.id.clone()),
        name,
        host,
        endpoint: w.endpoint.clone(),
        source,
        status: if w.healthy { "online" } else { "offline" },
        current_tasks: w.in_flight,
        max_concurrent_tasks: w.capacity,
        total_memory: gib(w.gpus.iter().map(|g| g.memory_total).sum()),
        used_memory: gib(w.gpus.iter().map(|g| g.memory_used).sum()),
        gpu_count: w.gpus.len(),
        cpu_usage: w.cpu_usage.map(|c| round2(f64::from(c))),
        memory_usage: w.memory_usage.map(|m| round2(f64::from(m))),
        last_heartbeat: w.last_heartbeat,
    };
    Reading { server, gpus: w.gpus }
}

/// A registered server no worker answers for.
fn unreachable(r: &Registered) -> Reading {
    let (host, authority) = host_of(&r.url);
    Reading {
        server: GpuServer {
            id: r.id.clone(),
            name: authority,
            host,
            endpoint: r.url.clone(),
            source: ServerSource::Registered,
            status: "offline",
            current_tasks: 0,
            max_concurrent_tasks: None,
            total_memory: 0.0,
            used_memory: 0.0,
            gpu_count: 0,
            cpu_usage: None,
            memory_usage: None,
            last_heartbeat: None,
        },
        gpus: Vec::new(),
    }
}

/// Ids worth looking up: what [`url_id`] and registration produce, nothing longer.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_found(id: &str) -> DomainError {
    if plausible_id(id) { DomainError::NotFound(format!("no GPU server {id}")) } else { DomainError::NotFound("no such GPU server".into()) }
}

impl Monitoring<'_> {
    async fn readings(&self) -> DomainResult<Vec<Reading>> {
        let (workers, registered) = tokio::join!(self.tasks.worker_telemetry(), self.tasks.db().list_gpu_servers());
        let registered = registered?;
        let mut out: Vec<Reading> = Vec::with_capacity(workers.len());
        for w in workers {
            let r = registered.iter().find(|r| norm(&r.url) == norm(&w.endpoint));
            let reading = reading(w, r);
            // A pool may list one endpoint twice (in-cluster and external): keep the first.
            if !out.iter().any(|o| o.server.id == reading.server.id) {
                out.push(reading);
            }
        }
        for r in &registered {
            if !out.iter().any(|o| o.server.id == r.id) {
                out.push(unreachable(r));
            }
        }
        Ok(out)
    }

    /// Every server, online ones first, each group in a stable order.
    pub async fn servers(&self) -> DomainResult<Vec<GpuServer>> {
        let mut servers: Vec<GpuServer> = self.readings().await?.into_iter().map(|r| r.server).collect();
        servers.sort_by(|a, b| b.online().cmp(&a.online()).then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id)));
        Ok(servers)
    }

    async fn reading(&self, id: &str) -> DomainResult<Reading> {
        if !plausible_id(id) {
            return Err(not_found(id));
        }
        self.readings().await?.into_iter().find(|r| r.server.id == id).ok_or_else(|| not_found(id))
    }

    /// Processing tasks on the worker at `endpoint` (or named `name`), by task id.
    async fn running_on(&self, endpoint: &str, name: &str) -> DomainResult<Vec<RunningTask>> {
        let tasks: Vec<Task> = self.tasks.db().processing_tasks().await?;
        let mut running: Vec<RunningTask> = tasks
            .into_iter()
            .filter(|t| t.worker.as_deref().is_some_and(|w| norm(w) == norm(endpoint) || w == name))
            .map(|t| RunningTask { task_id: t.id, progress: round2(t.progress * 100.0) })
            .collect();
        running.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(running)
    }

    pub async fn server(&self, id: &str) -> DomainResult<GpuServerDetail> {
        let r = self.reading(id).await?;
        let running_tasks = self.running_on(&r.server.endpoint, &r.server.name).await?;
        Ok(GpuServerDetail { gpu_usage: usage(&r.gpus), running_tasks, server: r.server })
    }

    pub async fn server_status(&self, id: &str) -> DomainResult<GpuServerStatus> {
        let d = self.server(id).await?;
        Ok(GpuServerStatus {
            server_id: d.server.id,
            status: d.server.status,
            cpu_usage: d.server.cpu_usage,
            memory_usage: d.server.memory_usage,
            gpu_usage: d.gpu_usage,
            running_tasks: d.running_tasks,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }

    pub async fn cluster_overview(&self) -> DomainResult<ClusterOverview> {
        let (readings, queue_length, active) = tokio::try_join!(self.readings(), self.tasks.queue_depth(), async {
            Ok::<_, DomainError>(self.tasks.db().count_active().await?)
        })?;
        let gpus: Vec<&GpuReading> = readings.iter().flat_map(|r| r.gpus.iter()).collect();
        let busy = gpus.iter().filter(|g| f64::from(g.utilization) >= BUSY_UTILIZATION).count();
        let online = readings.iter().filter(|r| r.server.online()).count();
        let average = (!gpus.is_empty()).then(|| round2(gpus.iter().map(|g| f64::from(g.utilization)).sum::<f64>() / gpus.len() as f64));
        Ok(ClusterOverview {
            total_servers: readings.len(),
            online_servers: online,
            offline_servers: readings.len() - online,
            total_gpus: gpus.len(),
            busy_gpus: busy,
            idle_gpus: gpus.len() - busy,
            total_running_tasks: active.processing,
            queue_length,
            average_gpu_usage: average,
            total_memory: gib(gpus.iter().map(|g| g.memory_total).sum()),
            used_memory: gib(gpus.iter().map(|g| g.memory_used).sum()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_are_stable_and_url_safe() {
        let a = url_id("http://10.0.0.5:8000/");
        assert_eq!(a, url_id("http://10.0.0.5:8000"), "a trailing slash names the same worker");
        assert_ne!(a, url_id("http://10.0.0.6:8000"));
        assert_eq!(a.len(), 14);
        assert!(plausible_id(&a));
        assert!(!plausible_id("../etc") && !plausible_id("") && !plausible_id(&"x".repeat(65)));
    }

    #[test]
    fn hosts_come_from_urls() {
        assert_eq!(host_of("http://192.168.1.100:8000"), ("192.168.1.100".into(), "192.168.1.100:8000".into()));
        assert_eq!(host_of("http://[::1]:9000"), ("::1".into(), "[::1]:9000".into()));
        assert_eq!(host_of("https://gpu.example.com"), ("gpu.example.com".into(), "gpu.example.com:443".into()));
    }
}
