//! GPU servers and routing: registration by webhook, where new tasks go, and the workers'
//! health as status pages show it. Standalone mode keeps servers in the database and the
//! fleet; Kubernetes mode keeps them in the default GpuPool's `spec.external`, where the
//! operator probes them and publishes their health in the pool's status.

use std::net::IpAddr;

use purrify_store::StoreError;
use purrify_store::settings::keys;
use serde::Serialize;

use super::kubernetes::{self, KubeError};
use super::{Backend, Routing, TaskService, WorkerLine};
use crate::domain::fleet::{fleet_specs, fleet_sync_error, refuse_address, worker_url};
use crate::domain::{DomainError, DomainResult};

/// One registered GPU server with its live health (`/webhook/servers`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerLine {
    pub server_id: String,
    pub ip: String,
    pub port: u16,
    pub url: String,
    pub healthy: bool,
    pub in_flight: u32,
    pub capacity: u32,
    /// The worker's circuit breaker, as the fleet keeps it.
    #[schema(value_type = Option<Object>)]
    pub circuit: Option<serde_json::Value>,
    /// RFC 3339 time of the last successful probe.
    pub last_heartbeat: Option<String>,
    pub last_error: Option<String>,
    /// GPU telemetry the worker reports.
    #[schema(value_type = Option<Object>)]
    pub gpu: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub registered_at: i64,
}

/// The seed's `/webhook/servers` data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServersOverview {
    pub total_servers: usize,
    pub healthy_servers: usize,
    pub unhealthy_servers: usize,
    pub health_check_running: bool,
    pub servers: Vec<ServerLine>,
}

/// The cluster refused or could not take a GpuPool change (logged; the client may retry).
fn cluster_refused(e: KubeError) -> DomainError {
    if let KubeError::Db(e) = e {
        return DomainError::Store(e);
    }
    tracing::error!(error = %e, "GpuPool change failed");
    DomainError::Unavailable("the cluster did not accept the change; try again shortly".into())
}

fn duplicate_as_conflict(e: StoreError) -> DomainError {
    match e {
        StoreError::Duplicate(m) => DomainError::Conflict(m),
        other => DomainError::Store(other),
    }
}

impl TaskService {
    pub async fn routing(&self) -> DomainResult<Routing> {
        let db = &self.inner.db;
        Ok(Routing {
            backend_url: db.get_setting(keys::BACKEND_URL).await?,
            default_backend_url: self.inner.embedded.clone(),
            multi_backend: db.get_bool_setting(keys::MULTI_BACKEND_ENABLED).await?.unwrap_or(true),
            fallback_to_default: db.get_bool_setting(keys::FALLBACK_TO_DEFAULT).await?.unwrap_or(true),
            pool: match &self.inner.backend {
                Backend::Kubernetes(_) => Some(db.get_setting(keys::POOL).await?.unwrap_or_else(|| kubernetes::default_pool().into())),
                Backend::Standalone(_) => None,
            },
        })
    }

    /// Makes the standalone fleet match the routing settings and registered servers.
    pub(super) async fn sync_fleet(&self, wait_for_probes: bool) -> DomainResult<()> {
        let Backend::Standalone(dispatcher) = &self.inner.backend else {
            // In Kubernetes mode the operator owns the workers.
            return Ok(());
        };
        let routing = self.routing().await?;
        let servers = self.inner.db.list_gpu_servers().await?;
        let default = routing.backend_url.clone().or(routing.default_backend_url.clone());
        let specs = fleet_specs(&routing, &servers);
        let fleet = &self.inner.fleet;
        let before: std::collections::HashSet<String> = fleet.endpoints().into_iter().collect();
        fleet.sync(specs).map_err(|e| fleet_sync_error(e, default.as_deref()))?;
        // New workers take no jobs until probed; probe now instead of at the next round.
        let fresh: Vec<String> = fleet.endpoints().into_iter().filter(|e| !before.contains(e)).collect();
        let fleet = fleet.clone();
        let probes = async move {
            futures::future::join_all(fresh.iter().map(|e| fleet.probe_worker(e))).await;
        };
        if wait_for_probes {
            probes.await;
        } else {
            tokio::spawn(probes);
        }
        dispatcher.notify();
        Ok(())
    }

    /// Registers (idempotently) the GPU server at `ip:port`; returns its id and whether it is
    /// new. Addresses that would make the gateway call its own host or a cloud metadata
    /// service are refused unless private workers are allowed.
    pub async fn register_server(&self, ip: IpAddr, port: u16) -> DomainResult<(String, bool)> {
        if let Some(why) = refuse_address(ip, self.inner.settings.allow_private_workers) {
            return Err(DomainError::invalid("ip", why));
        }
        let url = worker_url(ip, port);
        let server = self.inner.db.upsert_gpu_server(&ip.to_string(), port, &url).await.map_err(duplicate_as_conflict)?;
        match &self.inner.backend {
            Backend::Kubernetes(k) => {
                k.add_external(kubernetes::default_pool(), &url, &server.id).await.map_err(cluster_refused)?;
            }
            Backend::Standalone(_) => self.sync_fleet(false).await?,
        }
        Ok((server.id.clone(), server.registered_at == server.last_seen))
    }

    /// Unregisters the GPU server at `ip:port`; its id, or `None` when it was not registered.
    /// No address policy here: whatever is registered can be unregistered.
    pub async fn unregister_server(&self, ip: IpAddr, port: u16) -> DomainResult<Option<String>> {
        if let Backend::Kubernetes(k) = &self.inner.backend {
            // The pool before the row: a failed cluster change must leave something to retry.
            let url = worker_url(ip, port);
            return k.unregister(kubernetes::default_pool(), &ip.to_string(), port, &url).await.map_err(cluster_refused);
        }
        let removed = self.inner.db.delete_gpu_server(&ip.to_string(), port).await?;
        if removed.is_some() {
            self.sync_fleet(false).await?;
        }
        Ok(removed)
    }

    /// Every worker tasks can go to, with its health: the fleet in standalone mode, in
    /// Kubernetes mode the status (kept by the operator) of the GpuPool uploads are routed
    /// to, read from the watch-fed cache.
    pub async fn workers(&self) -> Vec<WorkerLine> {
        match &self.inner.backend {
            Backend::Standalone(_) => self
                .inner
                .fleet
                .snapshot()
                .workers
                .into_iter()
                .map(|w| WorkerLine {
                    endpoint: w.endpoint,
                    healthy: w.healthy,
                    in_flight: w.in_flight,
                    capacity: w.capacity,
                    circuit: serde_json::to_value(w.breaker).ok(),
                    last_heartbeat: w.last_heartbeat.map(purrify_inference::client::format_rfc3339),
                    last_error: w.last_error,
                    gpu: w.gpu.and_then(|g| serde_json::to_value(g).ok()),
                })
                .collect(),
            Backend::Kubernetes(k) => k
                .pool_status(&self.routing().await.ok().and_then(|r| r.pool).unwrap_or_else(|| kubernetes::default_pool().into()))
                .await
                .map(|st| {
                    st.workers
                        .into_iter()
                        .map(|w| WorkerLine {
                            endpoint: w.endpoint,
                            healthy: w.healthy,
                            in_flight: w.in_flight,
                            capacity: 0,
                            circuit: None,
                            last_heartbeat: w.last_heartbeat,
                            last_error: None,
                            gpu: w.gpu.and_then(|g| serde_json::to_value(g).ok()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub async fn servers_overview(&self) -> DomainResult<ServersOverview> {
        let registered = self.inner.db.list_gpu_servers().await?;
        let workers = self.workers().await;
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        let servers: Vec<ServerLine> = registered
            .iter()
            .map(|s| {
                let live = workers.iter().find(|w| norm(&w.endpoint) == norm(&s.url));
                ServerLine {
                    server_id: s.id.clone(),
                    ip: s.ip.clone(),
                    port: s.port,
                    url: s.url.clone(),
                    healthy: live.is_some_and(|w| w.healthy),
                    in_flight: live.map_or(0, |w| w.in_flight),
                    capacity: live.map_or(0, |w| w.capacity),
                    circuit: live.and_then(|w| w.circuit.clone()),
                    last_heartbeat: live.and_then(|w| w.last_heartbeat.clone()),
                    last_error: live.and_then(|w| w.last_error.clone()),
                    gpu: live.and_then(|w| w.gpu.clone()),
                    registered_at: s.registered_at,
                }
            })
            .collect();
        let healthy = servers.iter().filter(|s| s.healthy).count();
        Ok(ServersOverview {
            total_servers: servers.len(),
            healthy_servers: healthy,
            unhealthy_servers: servers.len() - healthy,
            health_check_running: self.health_checks_running().await,
            servers,
        })
    }

    /// Whether worker health is being checked: by the gateway's own prober in standalone mode;
    /// in Kubernetes mode by the operator, which publishes the results in the GpuPool status.
    pub async fn health_checks_running(&self) -> bool {
        match &self.inner.backend {
            Backend::Standalone(_) => !self.inner.prober.is_finished(),
            Backend::Kubernetes(k) => {
                let pool = self.routing().await.ok().and_then(|r| r.pool).unwrap_or_else(|| kubernetes::default_pool().into());
                k.pool_status(&pool).await.is_some()
            }
        }
    }

    /// `POST /api/v1/config/backend`: in standalone mode the default worker URL
    /// (`backend_url`); in Kubernetes mode the GpuPool new tasks go to (`pool`, or its name
    /// in `backend_url`). Returns what was set.
    pub async fn set_backend(&self, backend_url: Option<String>, pool: Option<String>) -> DomainResult<String> {
        match &self.inner.backend {
            Backend::Kubernetes(k) => {
                let Some(pool) = pool.or(backend_url) else {
                    return Err(DomainError::invalid("pool", "name the GpuPool new tasks go to"));
                };
                let pool = pool.trim();
                let valid = !pool.is_empty()
                    && pool.len() <= 253
                    && pool.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
                if !valid {
                    return Err(DomainError::invalid("pool", format!("{pool:?} is not a valid GpuPool name")));
                }
                if k.pool(pool).await.map_err(|e| DomainError::Internal(e.to_string()))?.is_none() {
                    return Err(DomainError::invalid("pool", format!("there is no GpuPool {pool} in namespace {}", k.namespace())));
                }
                self.inner.db.set_setting(keys::POOL, pool).await?;
                Ok(pool.to_string())
            }
            Backend::Standalone(_) => {
                let Some(raw) = backend_url else {
                    return Err(DomainError::invalid("backend_url", "required: the URL of an inference worker"));
                };
                let url = url::Url::parse(raw.trim()).map_err(|e| DomainError::invalid("backend_url", e.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(DomainError::invalid("backend_url", "must be an http:// or https:// URL with a host"));
                }
                let normalized = purrify_inference::client::normalize_endpoint(url.as_str())
                    .map_err(|e| DomainError::invalid("backend_url", e.to_string()))?;
                self.inner.db.set_setting(keys::BACKEND_URL, &normalized).await?;
                self.sync_fleet(false).await?;
                Ok(normalized)
            }
        }
    }

    /// Whether the backend routes by GpuPool (Kubernetes) rather than by worker URL.
    pub fn routes_by_pool(&self) -> bool {
        matches!(self.inner.backend, Backend::Kubernetes(_))
    }

    pub async fn set_multi_backend(&self, enabled: bool, fallback_to_default: bool) -> DomainResult<()> {
        let db = &self.inner.db;
        db.set_bool_setting(keys::MULTI_BACKEND_ENABLED, enabled).await?;
        db.set_bool_setting(keys::FALLBACK_TO_DEFAULT, fallback_to_default).await?;
        self.sync_fleet(false).await
    }
}
