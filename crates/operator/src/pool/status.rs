//! A pool's status, computed from what the reconcile observed, and the Events its changes
//! deserve. Pure: time comes in as an argument.
//!
//! Status writes cost etcd writes and wake every watcher of the pool, so the status is built
//! to be equal from one reconcile to the next unless something a reader cares about changed:
//! condition transition times are carried over while a condition keeps its status, and a
//! healthy worker's telemetry (in-flight, GPU numbers, host load, heartbeat) is refreshed at most once
//! per `telemetry_refresh` unless its health changes.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use purrify_api::{GpuPoolStatus, WorkerStatus};
use purrify_inference::client::parse_rfc3339;

use super::validate::Invalid;

pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
pub const SCALING_LIMITED: &str = "ScalingLimited";
/// Unhealthy workers named in the Degraded message; the rest are counted.
const NAMED_WORKERS: usize = 5;

/// The scaler's view, for in-cluster pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleView {
    pub wanted: i32,
    pub max: i32,
    pub limited: bool,
}

#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    /// The status this one replaces.
    pub previous: Option<&'a GpuPoolStatus>,
    pub invalid: Option<&'a Invalid>,
    /// `None` for pools without in-cluster replicas.
    pub scale: Option<ScaleView>,
    /// From the Deployment's status.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Fleet members as just probed, in any order.
    pub workers: Vec<WorkerStatus>,
    pub queue: u32,
    pub now: SystemTime,
    pub telemetry_refresh: Duration,
}

pub fn compute(input: StatusInput<'_>) -> GpuPoolStatus {
    let prev_workers = input.previous.map(|p| p.workers.as_slice()).unwrap_or_default();
    let mut workers: Vec<WorkerStatus> = input
        .workers
        .into_iter()
        .map(|w| {
            let prev = prev_workers.iter().find(|p| p.endpoint == w.endpoint);
            coalesce(w, prev, input.now, input.telemetry_refresh)
        })
        .collect();
    workers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.endpoint.cmp(&b.endpoint)));
    let total = workers.len();
    let healthy = workers.iter().filter(|w| w.healthy).count();
    let unhealthy: Vec<&str> = workers.iter().filter(|w| !w.healthy).map(|w| w.name.as_str()).collect();

    let prev_conditions = input.previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let now = whole_seconds(input.now);
    let cond = |type_: &str, status: bool, reason: &str, message: String| {
        condition(type_, status, reason, message, input.generation, prev_conditions, &now)
    };

    let ready = match input.invalid {
        Some(inv) => cond(READY, false, "InvalidSpec", inv.to_string()),
        None if healthy > 0 => cond(READY, true, "WorkersAvailable", format!("{healthy} of {total} workers healthy")),
        None if total == 0 && input.scale.is_some() => cond(READY, false, "NoWorkers", "no in-cluster replica is ready yet".into()),
        None if total == 0 => cond(READY, false, "NoWorkers", "the pool has no workers".into()),
        None => cond(READY, false, "NoHealthyWorkers", format!("none of the {total} workers passes its health probe")),
    };
    let degraded = match input.invalid {
        Some(inv) => cond(DEGRADED, true, "InvalidSpec", inv.to_string()),
        None if !unhealthy.is_empty() => {
            let mut names = unhealthy.iter().take(NAMED_WORKERS).copied().collect::<Vec<_>>().join(", ");
            if unhealthy.len() > NAMED_WORKERS {
                names.push_str(&format!(" and {} more", unhealthy.len() - NAMED_WORKERS));
            }
            cond(DEGRADED, true, "WorkersUnhealthy", format!("{} of {total} workers fail their health probe: {names}", unhealthy.len()))
        }
        None => cond(DEGRADED, false, "AllWorkersHealthy", String::new()),
    };
    let scaling = match (input.invalid, input.scale) {
        (Some(_), _) => cond(SCALING_LIMITED, false, "InvalidSpec", String::new()),
        (None, None) => cond(SCALING_LIMITED, false, "NoInClusterReplicas", String::new()),
        (None, Some(s)) if s.limited => cond(
            SCALING_LIMITED,
            true,
            "MaxReplicasReached",
            format!("the load (queued and running tasks) asks for {} replicas; replicas.max is {}", s.wanted, s.max),
        ),
        (None, Some(_)) => cond(SCALING_LIMITED, false, "WithinBounds", String::new()),
    };

    GpuPoolStatus {
        replicas: input.replicas,
        ready_replicas: input.ready_replicas,
        healthy_workers: i32::try_from(healthy).unwrap_or(i32::MAX),
        workers,
        queue_depth: i32::try_from(input.queue).unwrap_or(i32::MAX),
        observed_generation: input.generation,
        conditions: vec![ready, degraded, scaling],
    }
}

/// Keeps the previous telemetry of a worker whose health and name did not change and whose
/// heartbeat is younger than `refresh`.
fn coalesce(fresh: WorkerStatus, prev: Option<&WorkerStatus>, now: SystemTime, refresh: Duration) -> WorkerStatus {
    let Some(p) = prev else { return fresh };
    let recent = p.last_heartbeat.as_deref().and_then(parse_rfc3339).is_some_and(|t| now.duration_since(t).unwrap_or_default() < refresh);
    if p.healthy == fresh.healthy && p.name == fresh.name && recent {
        WorkerStatus {
            in_flight: p.in_flight,
            gpu: p.gpu.clone(),
            gpus: p.gpus.clone(),
            host: p.host.clone(),
            last_heartbeat: p.last_heartbeat.clone(),
            ..fresh
        }
    } else {
        fresh
    }
}

/// Kubernetes keeps condition times to the second; a finer time would never compare equal to
/// what a later read returns.
fn whole_seconds(t: SystemTime) -> Time {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since =
        previous.iter().find(|c| c.type_ == type_ && c.status == status).map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

pub fn condition_status<'a>(status: Option<&'a GpuPoolStatus>, type_: &str) -> Option<&'a str> {
    status?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

fn condition_of<'a>(status: &'a GpuPoolStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// An Event worth publishing about the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEvent {
    pub warning: bool,
    /// PascalCase, bounded set.
    pub reason: &'static str,
    pub note: String,
}

impl PoolEvent {
    fn normal(reason: &'static str, note: String) -> Self {
        Self { warning: false, reason, note }
    }
    fn warning(reason: &'static str, note: String) -> Self {
        Self { warning: true, reason, note }
    }
}

/// The transitions from `prev` to `next` that an admin wants to see in `kubectl describe`:
/// readiness gained or lost, degradation and recovery, hitting the replica ceiling, and each
/// worker that stopped answering. `unready_pods` are pods that exist but lost readiness, so a
/// worker that left the fleet that way counts as lost while a scaled-down one does not.
pub fn transitions(prev: Option<&GpuPoolStatus>, next: &GpuPoolStatus, unready_pods: &[String]) -> Vec<PoolEvent> {
    let mut events = Vec::new();
    let was = |t: &str| condition_status(prev, t) == Some("True");
    let is = |t: &str| condition_status(Some(next), t) == Some("True");
    let message = |t: &str| condition_of(next, t).map(|c| c.message.clone()).unwrap_or_default();

    if is(READY) && !was(READY) {
        events.push(PoolEvent::normal("Ready", message(READY)));
    } else if was(READY) && !is(READY) {
        events.push(PoolEvent::warning("NotReady", message(READY)));
    }
    if is(DEGRADED) && !was(DEGRADED) {
        let invalid = condition_of(next, DEGRADED).is_some_and(|c| c.reason == "InvalidSpec");
        events.push(PoolEvent::warning(if invalid { "InvalidSpec" } else { "Degraded" }, message(DEGRADED)));
    } else if was(DEGRADED) && !is(DEGRADED) {
        events.push(PoolEvent::normal("Recovered", "every worker passes its health probe".into()));
    }
    if is(SCALING_LIMITED) && !was(SCALING_LIMITED) {
        events.push(PoolEvent::warning("ScalingLimited", message(SCALING_LIMITED)));
    }

    let prev_workers = prev.map(|p| p.workers.as_slice()).unwrap_or_default();
    for old in prev_workers.iter().filter(|w| w.healthy) {
        match next.workers.iter().find(|w| w.endpoint == old.endpoint) {
            Some(now) if !now.healthy => events
                .push(PoolEvent::warning("WorkerLost", format!("worker {} ({}) stopped passing its health probe", old.name, old.endpoint))),
            None if unready_pods.contains(&old.name) => {
                events.push(PoolEvent::warning("WorkerLost", format!("pod {} is no longer ready", old.name)))
            }
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_api::{GpuStatus, HostStatus};
    use purrify_inference::client::format_rfc3339;

    fn worker(name: &str, healthy: bool, at: SystemTime, util: f32) -> WorkerStatus {
        WorkerStatus {
            name: name.into(),
            endpoint: format!("http://{name}:8000"),
            healthy,
            in_flight: 1,
            gpu: Some(GpuStatus { utilization: util, memory_used: 1 << 30, memory_total: 8 << 30 }),
            gpus: vec![
                GpuStatus { utilization: util, memory_used: 1 << 30, memory_total: 8 << 30 },
                GpuStatus { utilization: util / 2.0, memory_used: 2 << 30, memory_total: 8 << 30 },
            ],
            host: Some(HostStatus { cpu_usage: util, memory_used: 4 << 30, memory_total: 32 << 30 }),
            last_heartbeat: healthy.then(|| format_rfc3339(at)),
        }
    }

    fn input<'a>(previous: Option<&'a GpuPoolStatus>, workers: Vec<WorkerStatus>, now: SystemTime) -> StatusInput<'a> {
        StatusInput {
            generation: Some(2),
            previous,
            invalid: None,
            scale: None,
            replicas: 0,
            ready_replicas: 0,
            workers,
            queue: 3,
            now,
            telemetry_refresh: Duration::from_secs(60),
        }
    }

    fn cond<'a>(s: &'a GpuPoolStatus, t: &str) -> &'a Condition {
        condition_of(s, t).unwrap()
    }

    #[test]
    fn steady_state_is_equal_and_keeps_transition_times() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = compute(input(None, vec![worker("a", true, t0, 40.0)], t0));
        assert_eq!(cond(&first, READY).status, "True");
        assert_eq!(cond(&first, DEGRADED).status, "False");
        assert_eq!(cond(&first, SCALING_LIMITED).reason, "NoInClusterReplicas");
        assert_eq!((first.healthy_workers, first.queue_depth, first.observed_generation), (1, 3, Some(2)));

        // Ten seconds later the worker reports other numbers: still within the refresh.
        let t1 = t0 + Duration::from_secs(10);
        let second = compute(input(Some(&first), vec![worker("a", true, t1, 43.0)], t1));
        assert_eq!(second, first, "nothing a reader needs changed");

        // After the refresh the telemetry moves, the transition times do not.
        let t2 = t0 + Duration::from_secs(61);
        let third = compute(input(Some(&second), vec![worker("a", true, t2, 43.0)], t2));
        assert_ne!(third, second);
        assert_eq!(third.workers[0].gpu.as_ref().unwrap().utilization, 43.0);
        let utils: Vec<_> = third.workers[0].gpus.iter().map(|g| g.utilization).collect();
        assert_eq!(utils, [43.0, 21.5], "every GPU moves with the refresh");
        assert_eq!(third.workers[0].host.as_ref().unwrap().cpu_usage, 43.0, "so does the host load");
        assert_eq!(cond(&third, READY).last_transition_time, cond(&first, READY).last_transition_time);
    }

    #[test]
    fn losing_the_last_worker_degrades_and_emits_events() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let up = compute(input(None, vec![worker("a", true, t0, 10.0)], t0));
        let t1 = t0 + Duration::from_secs(5);
        let mut down_worker = worker("a", false, t1, 10.0);
        down_worker.last_heartbeat = up.workers[0].last_heartbeat.clone();
        let down = compute(input(Some(&up), vec![down_worker], t1));
        assert_eq!(cond(&down, READY).status, "False");
        assert_eq!(cond(&down, READY).reason, "NoHealthyWorkers");
        assert_eq!(cond(&down, DEGRADED).status, "True");
        assert!(cond(&down, DEGRADED).message.contains(": a"), "{}", cond(&down, DEGRADED).message);
        assert_ne!(cond(&down, READY).last_transition_time, cond(&up, READY).last_transition_time);

        let reasons: Vec<_> = transitions(Some(&up), &down, &[]).into_iter().map(|e| (e.reason, e.warning)).collect();
        assert_eq!(reasons, [("NotReady", true), ("Degraded", true), ("WorkerLost", true)]);
        let back: Vec<_> = transitions(Some(&down), &up, &[]).into_iter().map(|e| e.reason).collect();
        assert_eq!(back, ["Ready", "Recovered"]);
        assert!(transitions(Some(&up), &up, &[]).is_empty());
    }

    #[test]
    fn a_pod_that_lost_readiness_is_a_lost_worker_but_a_removed_one_is_not() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let two = compute(input(None, vec![worker("a", true, t0, 0.0), worker("b", true, t0, 0.0)], t0));
        let one = compute(input(Some(&two), vec![worker("a", true, t0, 0.0)], t0));
        assert!(transitions(Some(&two), &one, &[]).is_empty(), "scale-down is not a loss");
        let lost = transitions(Some(&two), &one, &["b".to_owned()]);
        assert_eq!(lost.len(), 1);
        assert!(lost[0].note.contains("pod b"));
    }

    #[test]
    fn invalid_spec_and_scaling_limits_show_in_conditions() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let inv = Invalid(vec!["replicas.min (3) exceeds replicas.max (1)".into()]);
        let s = compute(StatusInput { invalid: Some(&inv), ..input(None, vec![], now) });
        assert_eq!((cond(&s, READY).reason.as_str(), cond(&s, DEGRADED).status.as_str()), ("InvalidSpec", "True"));
        assert!(cond(&s, READY).message.contains("exceeds"));
        let ev = transitions(None, &s, &[]);
        assert_eq!(ev[0].reason, "InvalidSpec");

        let limited = compute(StatusInput { scale: Some(ScaleView { wanted: 9, max: 4, limited: true }), ..input(None, vec![], now) });
        assert_eq!(cond(&limited, SCALING_LIMITED).status, "True");
        assert_eq!(cond(&limited, READY).reason, "NoWorkers");
        assert!(transitions(None, &limited, &[]).iter().any(|e| e.reason == "ScalingLimited"));
    }

    #[test]
    fn condition_times_are_whole_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        let s = compute(input(None, vec![], now));
        assert_eq!(cond(&s, READY).last_transition_time.0, Timestamp::from_second(1_700_000_000).unwrap());
    }
}
