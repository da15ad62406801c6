//! Which workers a pool has: its ready pods and its external endpoints, as fleet members; and
//! how a fleet member reads in `status.workers`. Pure.

use k8s_openapi::api::core::v1::Pod;
use purrify_api::{GpuStatus, HostStatus, WorkerStatus};
use purrify_inference::client::{WorkerSnapshot, WorkerSpec, format_rfc3339};
use purrify_inference::protocol::GpuInfo;

use super::builder::{CONTAINER_NAME, WORKER_PORT, WORKER_PORT_NAME};

/// The pool's pods, sorted into fleet members and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodWorkers {
    /// Ready pods, reached on their IP.
    pub ready: Vec<WorkerSpec>,
    /// Pods that exist and are not shutting down, but are not ready (starting, or failing
    /// their readiness probe). Not fleet members: Kubernetes already says they cannot serve.
    pub unready: Vec<String>,
}

/// Sorts `pods` (the pool's, by label) into ready workers and the rest. Terminating pods are
/// neither: they are leaving on purpose (scale-down, rollout), which is not a lost worker.
pub fn pod_workers(pods: &[Pod], capacity: u32) -> PodWorkers {
    let mut out = PodWorkers::default();
    for pod in pods {
        let Some(name) = pod.metadata.name.clone() else { continue };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let ready =
            status.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status.and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty());
        match ip {
            Some(ip) if ready => {
                let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
                let endpoint = format!("http://{host}:{}", worker_port(pod));
                out.ready.push(WorkerSpec::new(endpoint).with_name(name).with_capacity(capacity));
            }
            _ => out.unready.push(name),
        }
    }
    out.ready.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    out.unready.sort();
    out
}

/// The worker container's `http` port as the pod declares it; the default when it declares
/// none (a template from an older operator).
fn worker_port(pod: &Pod) -> i32 {
    pod.spec
        .as_ref()
        .and_then(|s| {
            let c = s.containers.iter().find(|c| c.name == CONTAINER_NAME).or(s.containers.first())?;
            c.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some(WORKER_PORT_NAME)).map(|p| p.container_port)
        })
        .unwrap_or(WORKER_PORT)
}

/// A fleet member as `status.workers[]` shows it. Utilisation and CPU usage are rounded to
/// whole percent: finer changes are noise that would only cost status writes.
pub fn worker_status(w: &WorkerSnapshot) -> WorkerStatus {
    WorkerStatus {
        name: w.name.clone(),
        endpoint: w.endpoint.clone(),
        healthy: w.healthy,
        in_flight: w.in_flight,
        gpu: w.gpu.as_ref().map(gpu_status),
        gpus: w.gpus.iter().map(gpu_status).collect(),
        host: w.host.as_ref().map(|h| HostStatus {
            cpu_usage: whole_percent(h.cpu_usage),
            memory_used: h.memory_used,
            memory_total: h.memory_total,
        }),
        last_heartbeat: w.last_heartbeat.map(format_rfc3339),
    }
}

fn gpu_status(g: &GpuInfo) -> GpuStatus {
    GpuStatus { utilization: whole_percent(g.utilization), memory_used: g.memory_used, memory_total: g.memory_total }
}

fn whole_percent(p: f32) -> f32 {
    p.clamp(0.0, 100.0).round()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: Option<&str>, ready: bool, deleting: bool) -> Pod {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "inference", "image": "x", "ports": [{"name": "http", "containerPort": 8000}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        if let Some(ip) = ip {
            v["status"]["podIP"] = json!(ip);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ready_pods_become_workers_on_their_ip() {
        let pods = [
            pod("b", Some("10.0.0.2"), true, false),
            pod("a", Some("10.0.0.1"), true, false),
            pod("starting", Some("10.0.0.3"), false, false),
            pod("pending", None, false, false),
            pod("leaving", Some("10.0.0.4"), true, true),
            pod("v6", Some("fd00::1"), true, false),
        ];
        let w = pod_workers(&pods, 2);
        let endpoints: Vec<_> = w.ready.iter().map(|s| s.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://[fd00::1]:8000"]);
        assert_eq!(w.ready[0].name.as_deref(), Some("a"));
        assert_eq!(w.ready[0].capacity, Some(2));
        assert_eq!(w.unready, ["pending", "starting"]);
    }

    #[test]
    fn every_gpu_and_the_host_load_are_shown_in_whole_percent() {
        let snap: WorkerSnapshot = serde_json::from_value(json!({
            "name": "a", "endpoint": "http://10.0.0.1:8000", "healthy": true, "available": true,
            "in_flight": 1, "local_in_flight": 1, "capacity": 2, "breaker": "closed",
            "consecutive_failures": 0, "breaker_trips": 0,
            "gpu": {"name": "T4", "utilization": 12.4, "memory_used": 1, "memory_total": 16},
            "gpus": [
                {"name": "T4", "utilization": 12.4, "memory_used": 1, "memory_total": 16},
                {"name": "T4", "utilization": 100.7, "memory_used": 3, "memory_total": 16}
            ],
            "host": {"cpu_usage": 37.6, "memory_used": 5, "memory_total": 64},
            "dispatched": 0, "succeeded": 0, "failed": 0, "busy": 0
        }))
        .unwrap();
        let s = worker_status(&snap);
        assert_eq!(s.gpu, Some(GpuStatus { utilization: 12.0, memory_used: 1, memory_total: 16 }));
        let utils: Vec<_> = s.gpus.iter().map(|g| (g.utilization, g.memory_used)).collect();
        assert_eq!(utils, [(12.0, 1), (100.0, 3)]);
        assert_eq!(s.host, Some(HostStatus { cpu_usage: 38.0, memory_used: 5, memory_total: 64 }));

        let cpu_only = WorkerSnapshot { gpu: None, gpus: vec![], host: None, ..snap };
        let s = worker_status(&cpu_only);
        assert!(s.gpu.is_none() && s.gpus.is_empty() && s.host.is_none());
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("gpus").is_none() && v.get("host").is_none(), "{v}");
    }

    #[test]
    fn the_declared_port_wins() {
        let mut p = pod("a", Some("127.0.0.1"), true, false);
        p.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap()[0].container_port = 18000;
        assert_eq!(pod_workers(&[p], 1).ready[0].endpoint, "http://127.0.0.1:18000");
    }
}
