//! The set of workers a dispatcher sends jobs to: health, capacity, in-flight accounting,
//! least-loaded choice and one circuit breaker per worker.
//!
//! All state sits behind one mutex that is never held across an `.await`; a pick is a scan
//! of a few dozen entries, far cheaper than the HTTP call it precedes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
use super::time::opt_rfc3339;
use super::worker::{ClientConfig, WorkerClient, parse_endpoint};
use super::{ClientError, ConfigError};
use crate::protocol::{GpuInfo, HostInfo, WorkerInfo};

/// Source of `Instant`s for breaker cooldowns and busy back-off, injectable so tests move
/// time by hand instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self { base: Instant::now(), offset_nanos: AtomicU64::new(0) }
    }

    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub client: ClientConfig,
    pub breaker: BreakerConfig,
    /// Deadline for one worker's `/readyz` + `/v1/info` probe.
    pub probe_timeout: Duration,
    /// Capacity assumed for a worker that neither reported one nor was given one.
    pub default_capacity: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            breaker: BreakerConfig::default(),
            probe_timeout: Duration::from_secs(2),
            default_capacity: 1,
        }
    }
}

/// A worker as the owner of the fleet knows it (operator: a pod or an external endpoint of a
/// `GpuPool`; gateway: a server registered by webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub endpoint: String,
    /// Display name (pod name); defaults to the endpoint.
    #[serde(default)]
    pub name: Option<String>,
    /// Upper bound on concurrent jobs (`concurrencyPerReplica`). The effective capacity is
    /// the smaller of this and what the worker reports.
    #[serde(default)]
    pub capacity: Option<u32>,
}

impl WorkerSpec {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), name: None, capacity: None }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_capacity(mut self, capacity: u32) -> Self {
        self.capacity = Some(capacity);
        self
    }
}

/// The key the fleet uses for an endpoint: `http://host:port[/prefix]`, no trailing slash.
/// Lets `10.0.0.1:8080`, `http://10.0.0.1:8080/` and `http://10.0.0.1:8080` name one worker.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ConfigError> {
    Ok(parse_endpoint(endpoint)?.as_str().trim_end_matches('/').to_owned())
}

/// Lenient form for lookups: an unparsable string cannot match any stored key anyway.
pub(super) fn lookup_key(endpoint: &str) -> String {
    normalize_endpoint(endpoint).unwrap_or_else(|_| endpoint.to_owned())
}

/// Per-worker view for status pages and `GpuPool.status.workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    pub name: String,
    pub endpoint: String,
    /// Last probe found it ready.
    pub healthy: bool,
    /// Would receive a job right now (healthy, breaker admits, not backing off, free slot).
    pub available: bool,
    /// Local leases plus jobs the worker reported that are not ours.
    pub in_flight: u32,
    pub local_in_flight: u32,
    #[serde(default)]
    pub reported_in_flight: Option<u32>,
    pub capacity: u32,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    pub breaker_trips: u64,
    #[serde(default, with = "opt_rfc3339")]
    pub last_heartbeat: Option<SystemTime>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub gpu: Option<GpuInfo>,
    /// Every GPU the worker reports, in device order (a worker that reports only `gpu`: that
    /// one); empty on CPU workers.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// The worker host's CPU and memory load, when it reports them.
    #[serde(default)]
    pub host: Option<HostInfo>,
    #[serde(default)]
    pub execution_provider: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    pub dispatched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub busy: u64,
}

/// Fleet-wide counters since start (plain atomics; exporters turn them into metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetCounters {
    pub picks: u64,
    /// Picks that found no eligible worker.
    pub pick_misses: u64,
    pub successes: u64,
    pub failures: u64,
    pub busy: u64,
    pub breaker_trips: u64,
    pub probes: u64,
    pub probe_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    pub workers: Vec<WorkerSnapshot>,
    pub healthy_workers: usize,
    /// Capacity of the healthy workers.
    pub capacity: u32,
    pub in_flight: u32,
    pub counters: FleetCounters,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    picks: AtomicU64,
    pick_misses: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    busy: AtomicU64,
    breaker_trips: AtomicU64,
    pub(super) probes: AtomicU64,
    pub(super) probe_failures: AtomicU64,
}

impl Counters {
    fn read(&self) -> FleetCounters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetCounters {
            picks: r(&self.picks),
            pick_misses: r(&self.pick_misses),
            successes: r(&self.successes),
            failures: r(&self.failures),
            busy: r(&self.busy),
            breaker_trips: r(&self.breaker_trips),
            probes: r(&self.probes),
            probe_failures: r(&self.probe_failures),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
pub(super) struct Entry {
    /// Distinguishes a re-added endpoint from the removed one, so leases of the old entry do
    /// not touch the new one's accounting.
    pub(super) uid: u64,
    name: String,
    endpoint: String,
    pub(super) client: WorkerClient,
    capacity_override: Option<u32>,
    healthy: bool,
    info: Option<WorkerInfo>,
    /// Jobs the worker reported beyond our own leases at the last probe (other dispatchers,
    /// jobs re-attached after a restart). Kept separately because our own count is exact
    /// and changes between probes while the report goes stale.
    foreign_in_flight: u32,
    local_in_flight: u32,
    breaker: CircuitBreaker,
    busy_until: Option<Instant>,
    last_heartbeat: Option<SystemTime>,
    last_error: Option<String>,
    dispatched: u64,
    succeeded: u64,
    failed: u64,
    busy: u64,
}

impl Entry {
    fn capacity(&self, default: u32) -> u32 {
        match (self.capacity_override, self.info.as_ref().map(|i| i.capacity)) {
            (Some(o), Some(r)) => o.min(r),
            (Some(o), None) => o,
            (None, Some(r)) => r,
            (None, None) => default,
        }
    }

    fn in_flight(&self) -> u32 {
        self.local_in_flight.saturating_add(self.foreign_in_flight)
    }

    fn load(&self, now: Instant, default_capacity: u32) -> Option<Load> {
        if !self.healthy || self.busy_until.is_some_and(|t| now < t) || !self.breaker.would_admit(now) {
            return None;
        }
        let capacity = self.capacity(default_capacity);
        let in_flight = self.in_flight();
        (in_flight < capacity).then_some(Load { in_flight, capacity })
    }

    fn snapshot(&self, now: Instant, default_capacity: u32) -> WorkerSnapshot {
        WorkerSnapshot {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            healthy: self.healthy,
            available: self.load(now, default_capacity).is_some(),
            in_flight: self.in_flight(),
            local_in_flight: self.local_in_flight,
            reported_in_flight: self.info.as_ref().map(|i| i.in_flight),
            capacity: self.capacity(default_capacity),
            breaker: self.breaker.state(now),
            consecutive_failures: self.breaker.consecutive_failures(),
            breaker_trips: self.breaker.trips(),
            last_heartbeat: self.last_heartbeat,
            last_error: self.last_error.clone(),
            gpu: self.info.as_ref().and_then(|i| i.gpu.clone()),
            gpus: self
                .info
                .as_ref()
                .map(|i| if i.gpus.is_empty() { i.gpu.iter().cloned().collect() } else { i.gpus.clone() })
                .unwrap_or_default(),
            host: self.info.as_ref().and_then(|i| i.host.clone()),
            execution_provider: self.info.as_ref().map(|i| i.execution_provider.clone()),
            version: self.info.as_ref().map(|i| i.version.clone()),
            dispatched: self.dispatched,
            succeeded: self.succeeded,
            failed: self.failed,
            busy: self.busy,
        }
    }
}

/// A candidate's load; only built for workers that may receive a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    pub(crate) in_flight: u32,
    /// Always greater than `in_flight`, hence non-zero.
    pub(crate) capacity: u32,
}

impl Load {
    /// in_flight/capacity compared exactly (cross-multiplied): 1/4 is lighter than 1/2.
    fn lighter_than(self, other: Load) -> bool {
        u64::from(self.in_flight) * u64::from(other.capacity) < u64::from(other.in_flight) * u64::from(self.capacity)
    }
}

/// Least-loaded choice. Ties go to the first candidate at or after `cursor` in rotation,
/// which spreads equal load round-robin yet stays deterministic for tests.
pub(crate) fn choose(loads: &[Option<Load>], cursor: usize) -> Option<usize> {
    let n = loads.len();
    let mut best: Option<(usize, Load)> = None;
    for k in 0..n {
        let i = (cursor % n.max(1) + k) % n;
        if let Some(load) = loads[i]
            && best.is_none_or(|(_, b)| load.lighter_than(b))
        {
            best = Some((i, load));
        }
    }
    best.map(|(i, _)| i)
}

/// What one health probe found.
#[derive(Debug, Clone)]
pub(super) enum ProbeResult {
    Ready(WorkerInfo),
    /// Answering but not warmed up: not a fault, so the breaker is left alone.
    NotReady(Option<WorkerInfo>),
    Down(String),
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) workers: BTreeMap<String, Entry>,
    cursor: usize,
    next_uid: u64,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) config: FleetConfig,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    pub(super) counters: Counters,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything can panic, so a
        // poisoned lock carries no half-done update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker fleet. Cheap to clone; all clones share one state.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub(super) shared: Arc<Shared>,
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Result<Self, ConfigError> {
        let http = WorkerClient::http_client(&config.client)?;
        Ok(Self::with_parts(config, http, Arc::new(SystemClock)))
    }

    /// Full control: a shared HTTP client and an injected clock.
    pub fn with_parts(config: FleetConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        let state = State { workers: BTreeMap::new(), cursor: 0, next_uid: 0 };
        Self { shared: Arc::new(Shared { state: Mutex::new(state), config, http, clock, counters: Counters::default() }) }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.shared.config
    }

    pub(super) fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// Adds a worker or updates its name and capacity. Health, breaker and in-flight of an
    /// existing worker are kept, so re-registering a live worker does not reset it. New
    /// workers start unhealthy until a probe finds them ready. Returns true when added.
    pub fn upsert(&self, spec: WorkerSpec) -> Result<bool, ConfigError> {
        let prepared = self.prepare(spec)?;
        let mut st = self.shared.lock();
        Ok(self.apply_upsert(&mut st, prepared))
    }

    /// Makes the fleet exactly `specs`: upserts them and removes every other worker. Nothing
    /// changes if any spec is invalid.
    pub fn sync(&self, specs: impl IntoIterator<Item = WorkerSpec>) -> Result<(), ConfigError> {
        let prepared = specs.into_iter().map(|s| self.prepare(s)).collect::<Result<Vec<_>, _>>()?;
        let mut st = self.shared.lock();
        let keep: std::collections::HashSet<String> = prepared.iter().map(|p| p.key.clone()).collect();
        st.workers.retain(|k, w| {
            let kept = keep.contains(k);
            if !kept {
                info!(worker = %w.name, endpoint = %k, "worker removed");
            }
            kept
        });
        for p in prepared {
            self.apply_upsert(&mut st, p);
        }
        Ok(())
    }

    /// Forgets a worker. Its outstanding leases stay valid and no longer count anywhere.
    pub fn remove(&self, endpoint: &str) -> bool {
        let removed = self.shared.lock().workers.remove(&lookup_key(endpoint));
        if let Some(w) = &removed {
            info!(worker = %w.name, endpoint = %w.endpoint, "worker removed");
        }
        removed.is_some()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.shared.lock().workers.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.lock().workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The client of one worker, e.g. to re-attach to a job after a restart (`status`,
    /// `wait`) or cancel it, which must go to the worker running it rather than a pick.
    pub fn client(&self, endpoint: &str) -> Option<WorkerClient> {
        self.shared.lock().workers.get(&lookup_key(endpoint)).map(|w| w.client.clone())
    }

    /// Reserves a slot on the least-loaded available worker. `None` when every worker is
    /// unhealthy, full, backing off or behind an open breaker: queue and try again later.
    pub fn pick(&self) -> Option<Lease> {
        self.pick_excluding::<&str>(&[])
    }

    /// As [`pick`](Self::pick), skipping the given endpoints (workers already tried for
    /// this task).
    pub fn pick_excluding<S: AsRef<str>>(&self, exclude: &[S]) -> Option<Lease> {
        let exclude: Vec<String> = exclude.iter().map(|e| lookup_key(e.as_ref())).collect();
        let now = self.now();
        let default_capacity = self.shared.config.default_capacity;
        let mut st = self.shared.lock();
        let loads: Vec<Option<Load>> =
            st.workers.iter().map(|(k, w)| if exclude.contains(k) { None } else { w.load(now, default_capacity) }).collect();
        let Some(i) = choose(&loads, st.cursor) else {
            bump(&self.shared.counters.pick_misses);
            return None;
        };
        st.cursor = i + 1;
        let w = st.workers.values_mut().nth(i)?;
        // Under the same lock as `would_admit` in `load`, so this cannot be refused.
        let permit = w.breaker.try_acquire(now)?;
        w.local_in_flight += 1;
        w.dispatched += 1;
        bump(&self.shared.counters.picks);
        Some(Lease {
            shared: Arc::clone(&self.shared),
            uid: w.uid,
            endpoint: w.endpoint.clone(),
            name: w.name.clone(),
            client: w.client.clone(),
            probe: permit.is_probe(),
            permit: Some(permit),
        })
    }

    pub fn snapshot(&self) -> FleetSnapshot {
        let now = self.now();
        let default_capacity = self.shared.config.default_capacity;
        let workers: Vec<WorkerSnapshot> = self.shared.lock().workers.values().map(|w| w.snapshot(now, default_capacity)).collect();
        let healthy: Vec<&WorkerSnapshot> = workers.iter().filter(|w| w.healthy).collect();
        FleetSnapshot {
            healthy_workers: healthy.len(),
            capacity: healthy.iter().map(|w| w.capacity).sum(),
            in_flight: workers.iter().map(|w| w.in_flight).sum(),
            counters: self.shared.counters.read(),
            workers,
        }
    }

    pub fn worker(&self, endpoint: &str) -> Option<WorkerSnapshot> {
        let now = self.now();
        let default_capacity = self.shared.config.default_capacity;
        self.shared.lock().workers.get(&lookup_key(endpoint)).map(|w| w.snapshot(now, default_capacity))
    }

    pub fn counters(&self) -> FleetCounters {
        self.shared.counters.read()
    }

    /// Applies one probe's finding, unless the worker was removed (or removed and re-added)
    /// while the probe was in the air.
    pub(super) fn apply_probe(&self, key: &str, uid: u64, result: ProbeResult) {
        let now = self.now();
        let mut st = self.shared.lock();
        let Some(w) = st.workers.get_mut(key).filter(|w| w.uid == uid) else {
            return;
        };
        let was_healthy = w.healthy;
        match result {
            ProbeResult::Ready(info) => {
                w.healthy = true;
                w.last_error = None;
                w.last_heartbeat = Some(SystemTime::now());
                w.foreign_in_flight = info.in_flight.saturating_sub(w.local_in_flight);
                w.info = Some(info);
                // After the cooldown a good health probe is as good a probe as a job: it
                // closes the breaker without risking a task on the worker.
                if w.breaker.state(now) == BreakerState::HalfOpen
                    && let Some(permit) = w.breaker.try_acquire(now)
                {
                    w.breaker.record_success(permit);
                    info!(worker = %w.name, "circuit closed after a successful probe");
                }
                if !was_healthy {
                    info!(worker = %w.name, endpoint = %w.endpoint, "worker healthy");
                }
            }
            ProbeResult::NotReady(info) => {
                w.healthy = false;
                w.last_error = Some("not ready (models loading or warming up)".into());
                w.last_heartbeat = Some(SystemTime::now());
                if let Some(info) = info {
                    w.foreign_in_flight = info.in_flight.saturating_sub(w.local_in_flight);
                    w.info = Some(info);
                }
            }
            ProbeResult::Down(reason) => {
                if was_healthy {
                    warn!(worker = %w.name, endpoint = %w.endpoint, %reason, "worker unhealthy");
                }
                w.healthy = false;
                w.last_error = Some(reason);
                // Refused while open and cooling down: a dead worker's cooldown is not reset.
                if let Some(permit) = w.breaker.try_acquire(now)
                    && w.breaker.record_failure(permit, now)
                {
                    bump(&self.shared.counters.breaker_trips);
                    warn!(worker = %w.name, cooldown = ?w.breaker.cooldown(), "circuit opened by failed probes");
                }
            }
        }
    }

    fn prepare(&self, spec: WorkerSpec) -> Result<Prepared, ConfigError> {
        let key = normalize_endpoint(&spec.endpoint)?;
        let client = WorkerClient::from_parts(self.shared.http.clone(), &key, self.shared.config.client.clone())?;
        Ok(Prepared { name: spec.name.unwrap_or_else(|| key.clone()), key, capacity: spec.capacity, client })
    }

    fn apply_upsert(&self, st: &mut State, p: Prepared) -> bool {
        if let Some(w) = st.workers.get_mut(&p.key) {
            w.name = p.name;
            w.capacity_override = p.capacity;
            return false;
        }
        let uid = st.next_uid;
        st.next_uid += 1;
        info!(worker = %p.name, endpoint = %p.key, "worker added");
        st.workers.insert(
            p.key.clone(),
            Entry {
                uid,
                name: p.name,
                endpoint: p.key,
                client: p.client,
                capacity_override: p.capacity,
                healthy: false,
                info: None,
                foreign_in_flight: 0,
                local_in_flight: 0,
                breaker: CircuitBreaker::new(self.shared.config.breaker),
                busy_until: None,
                last_heartbeat: None,
                last_error: None,
                dispatched: 0,
                succeeded: 0,
                failed: 0,
                busy: 0,
            },
        );
        true
    }
}

struct Prepared {
    key: String,
    name: String,
    capacity: Option<u32>,
    client: WorkerClient,
}

/// One reserved job slot on one worker. Holds the slot until dropped: keep it for the whole
/// job, not just the submit, so in-flight counts stay true. Outcomes fed through it drive
/// the worker's circuit breaker; the first outcome of a half-open probe decides it.
pub struct Lease {
    shared: Arc<Shared>,
    uid: u64,
    endpoint: String,
    name: String,
    client: WorkerClient,
    permit: Option<Permit>,
    probe: bool,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("endpoint", &self.endpoint)
            .field("name", &self.name)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &WorkerClient {
        &self.client
    }

    /// Whether this lease is the single half-open probe of a recovering worker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The worker did its part (job accepted, or finished).
    pub fn success(&mut self) {
        let permit = self.take_permit();
        self.with_entry(|w, _| {
            w.breaker.record_success(permit);
            w.succeeded += 1;
        });
        bump(&self.shared.counters.successes);
    }

    /// The worker failed (unreachable, 5xx, lost the job): counts toward opening its breaker.
    pub fn failure(&mut self, reason: impl fmt::Display) {
        let permit = self.take_permit();
        let reason = reason.to_string();
        let counters = Arc::clone(&self.shared);
        self.with_entry(|w, now| {
            w.failed += 1;
            w.last_error = Some(reason);
            if w.breaker.record_failure(permit, now) {
                bump(&counters.counters.breaker_trips);
                warn!(worker = %w.name, cooldown = ?w.breaker.cooldown(), "circuit opened by failed requests");
            }
        });
        bump(&self.shared.counters.failures);
    }

    /// The worker answered 429: healthy but full. It is skipped by picks for `retry_after`.
    pub fn busy(&mut self, retry_after: Duration) {
        let permit = self.take_permit();
        self.with_entry(|w, now| {
            // It answered correctly, which is all a probe needs to show.
            w.breaker.record_success(permit);
            w.busy += 1;
            w.busy_until = Some(now + retry_after);
        });
        bump(&self.shared.counters.busy);
    }

    /// Feeds the outcome of any client call: success, busy, worker failure, or a refusal
    /// that is the request's fault (which shows the worker alive, so it counts as success).
    pub fn record<T>(&mut self, result: &Result<T, ClientError>) {
        match result {
            Ok(_) => self.success(),
            Err(ClientError::Busy { retry_after }) => self.busy(*retry_after),
            Err(e) if e.is_worker_failure() => self.failure(e),
            Err(_) => self.success(),
        }
    }

    fn take_permit(&mut self) -> Permit {
        self.permit.take().unwrap_or_else(Permit::ordinary)
    }

    fn with_entry(&self, f: impl FnOnce(&mut Entry, Instant)) {
        let now = self.shared.clock.now();
        let mut st = self.shared.lock();
        if let Some(w) = st.workers.get_mut(&self.endpoint).filter(|w| w.uid == self.uid) {
            f(w, now);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let permit = self.permit.take();
        self.with_entry(|w, _| {
            w.local_in_flight = w.local_in_flight.saturating_sub(1);
            if let Some(permit) = permit {
                w.breaker.release(permit);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::GpuInfo;

    fn load(in_flight: u32, capacity: u32) -> Option<Load> {
        Some(Load { in_flight, capacity })
    }

    #[test]
    fn choose_prefers_the_lowest_ratio_not_the_lowest_count() {
        assert_eq!(choose(&[load(1, 2), load(1, 4)], 0), Some(1));
        assert_eq!(choose(&[load(2, 8), load(1, 2)], 1), Some(0));
        assert_eq!(choose(&[load(3, 4), None, load(0, 1)], 0), Some(2));
    }

    #[test]
    fn choose_rotates_among_ties_from_the_cursor() {
        let loads = [load(0, 2), load(1, 2), load(0, 4), load(0, 1)];
        assert_eq!(choose(&loads, 0), Some(0));
        assert_eq!(choose(&loads, 1), Some(2));
        assert_eq!(choose(&loads, 3), Some(3));
        assert_eq!(choose(&loads, 4), Some(0), "cursor wraps");
        assert_eq!(choose(&loads, 9), Some(2));
    }

    #[test]
    fn choose_finds_nothing_without_candidates() {
        assert_eq!(choose(&[], 3), None);
        assert_eq!(choose(&[None, None], 0), None);
    }

    fn info(capacity: u32, in_flight: u32) -> WorkerInfo {
        WorkerInfo {
            version: "test".into(),
            models: vec![],
            execution_provider: "cuda".into(),
            requested_execution_provider: "cuda".into(),
            gpu: Some(GpuInfo { name: "T4".into(), utilization: 10.0, memory_used: 1, memory_total: 2 }),
            gpus: vec![],
            host: None,
            capacity,
            in_flight,
            ready: true,
        }
    }

    struct Harness {
        fleet: Fleet,
        clock: Arc<ManualClock>,
    }

    impl Harness {
        fn new(threshold: u32) -> Self {
            let clock = Arc::new(ManualClock::new());
            let config = FleetConfig {
                breaker: BreakerConfig {
                    failure_threshold: threshold,
                    cooldown: Duration::from_secs(10),
                    max_cooldown: Duration::from_secs(40),
                },
                ..FleetConfig::default()
            };
            let fleet = Fleet::with_parts(config, reqwest::Client::new(), clock.clone());
            Self { fleet, clock }
        }

        fn add(&self, endpoint: &str, capacity: u32, reported_in_flight: u32) {
            self.fleet.upsert(WorkerSpec::new(endpoint)).unwrap();
            self.probe(endpoint, ProbeResult::Ready(info(capacity, reported_in_flight)));
        }

        fn probe(&self, endpoint: &str, result: ProbeResult) {
            let key = normalize_endpoint(endpoint).unwrap();
            let uid = self.fleet.shared.lock().workers[&key].uid;
            self.fleet.apply_probe(&key, uid, result);
        }

        fn w(&self, endpoint: &str) -> WorkerSnapshot {
            self.fleet.worker(endpoint).unwrap()
        }
    }

    const A: &str = "http://a:1";
    const B: &str = "http://b:1";
    const C: &str = "http://c:1";

    #[test]
    fn fleet_and_leases_can_move_across_tasks() {
        fn is_send_sync<T: Send + Sync + 'static>() {}
        is_send_sync::<Fleet>();
        is_send_sync::<Lease>();
        is_send_sync::<FleetSnapshot>();
    }

    #[test]
    fn new_workers_wait_for_a_probe() {
        let h = Harness::new(3);
        assert!(h.fleet.upsert(WorkerSpec::new(A)).unwrap());
        assert!(h.fleet.pick().is_none());
        assert_eq!(h.fleet.counters().pick_misses, 1);
        h.probe(A, ProbeResult::NotReady(None));
        assert!(h.fleet.pick().is_none());
        assert_eq!(h.w(A).breaker, BreakerState::Closed, "warming up is not a failure");
        h.probe(A, ProbeResult::Ready(info(1, 0)));
        assert_eq!(h.fleet.pick().unwrap().endpoint(), A);
    }

    #[test]
    fn picks_least_loaded_and_never_exceeds_capacity() {
        let h = Harness::new(3);
        h.add(A, 2, 0);
        h.add(B, 4, 0);
        let mut leases = Vec::new();
        let mut order = Vec::new();
        while let Some(l) = h.fleet.pick() {
            order.push(l.endpoint().to_owned());
            leases.push(l);
        }
        // Ties rotate, then the lower in_flight/capacity wins: A 1/2 vs B 1/4 -> B, and so on.
        assert_eq!(order, [A, B, B, A, B, B]);
        assert_eq!(h.w(A).in_flight, 2);
        assert_eq!(h.w(B).in_flight, 4);
        leases.retain(|l| l.endpoint() != A);
        assert_eq!(h.w(A).in_flight, 0, "dropping leases frees slots");
        assert_eq!(h.fleet.pick().unwrap().endpoint(), A);
    }

    #[test]
    fn capacity_is_the_smaller_of_spec_and_report_and_foreign_jobs_count() {
        let h = Harness::new(3);
        h.fleet.upsert(WorkerSpec::new(A).with_capacity(2)).unwrap();
        h.probe(A, ProbeResult::Ready(info(8, 1)));
        let snap = h.w(A);
        assert_eq!((snap.capacity, snap.in_flight, snap.reported_in_flight), (2, 1, Some(1)));
        let l = h.fleet.pick().unwrap();
        assert!(h.fleet.pick().is_none(), "one foreign + one ours fills capacity 2");
        // A report that already includes our job does not count it twice.
        h.probe(A, ProbeResult::Ready(info(8, 2)));
        assert_eq!(h.w(A).in_flight, 2);
        drop(l);
        assert_eq!(h.w(A).in_flight, 1);
    }

    #[test]
    fn exclusion_list_skips_tried_workers_in_any_spelling() {
        let h = Harness::new(3);
        h.add(A, 1, 0);
        h.add(B, 1, 0);
        assert_eq!(h.fleet.pick_excluding(&["a:1/"]).unwrap().endpoint(), B);
        assert!(h.fleet.pick_excluding(&[A, B]).is_none());
    }

    #[test]
    fn failures_open_the_breaker_and_only_one_probe_passes_after_cooldown() {
        let h = Harness::new(2);
        h.add(A, 4, 0);
        h.add(B, 4, 0);
        for _ in 0..2 {
            let mut l = h.fleet.pick_excluding(&[B]).unwrap();
            l.failure("HTTP 500");
        }
        let snap = h.w(A);
        assert_eq!(snap.breaker, BreakerState::Open);
        assert_eq!(snap.last_error.as_deref(), Some("HTTP 500"));
        assert!(snap.healthy, "health is the prober's call; the breaker alone keeps it out");
        assert!(h.fleet.pick_excluding(&[B]).is_none());
        assert_eq!(h.fleet.pick().unwrap().endpoint(), B);

        h.clock.advance(Duration::from_secs(10));
        assert_eq!(h.w(A).breaker, BreakerState::HalfOpen);
        let mut probe = h.fleet.pick_excluding(&[B]).unwrap();
        assert!(probe.is_probe());
        assert!(h.fleet.pick_excluding(&[B]).is_none(), "exactly one probe");
        probe.success();
        assert_eq!(h.w(A).breaker, BreakerState::Closed);
        assert!(!h.fleet.pick_excluding(&[B]).unwrap().is_probe());
        assert_eq!(h.fleet.counters().breaker_trips, 1);
    }

    #[test]
    fn abandoned_probe_frees_the_slot_and_failed_probe_reopens() {
        let h = Harness::new(1);
        h.add(A, 4, 0);
        h.fleet.pick().unwrap().failure("reset");
        h.clock.advance(Duration::from_secs(10));
        drop(h.fleet.pick().unwrap());
        let mut probe = h.fleet.pick().unwrap();
        assert!(probe.is_probe());
        probe.failure("reset again");
        // A second report from the same lease is an ordinary outcome: it cannot close it.
        probe.success();
        drop(probe);
        assert_eq!(h.w(A).breaker, BreakerState::Open);
        h.clock.advance(Duration::from_secs(19));
        assert!(h.fleet.pick().is_none(), "cooldown doubled to 20s");
        h.clock.advance(Duration::from_secs(1));
        assert!(h.fleet.pick().is_some());
    }

    #[test]
    fn prober_down_results_open_the_breaker_and_a_ready_probe_closes_it_after_cooldown() {
        let h = Harness::new(2);
        h.add(A, 1, 0);
        h.probe(A, ProbeResult::Down("connection refused".into()));
        let snap = h.w(A);
        assert!(!snap.healthy);
        assert_eq!((snap.breaker, snap.consecutive_failures), (BreakerState::Closed, 1));
        h.probe(A, ProbeResult::Down("connection refused".into()));
        assert_eq!(h.w(A).breaker, BreakerState::Open);
        // Back up, but still cooling down: healthy yet not picked.
        h.probe(A, ProbeResult::Ready(info(1, 0)));
        let snap = h.w(A);
        assert!(snap.healthy && !snap.available);
        assert_eq!(snap.breaker, BreakerState::Open);
        assert!(h.fleet.pick().is_none());
        h.clock.advance(Duration::from_secs(10));
        h.probe(A, ProbeResult::Ready(info(1, 0)));
        assert_eq!(h.w(A).breaker, BreakerState::Closed);
        assert!(h.fleet.pick().is_some());
    }

    #[test]
    fn busy_backs_off_for_retry_after_without_hurting_the_breaker() {
        let h = Harness::new(1);
        h.add(A, 4, 0);
        h.fleet.pick().unwrap().record::<()>(&Err(ClientError::Busy { retry_after: Duration::from_secs(3) }));
        let snap = h.w(A);
        assert_eq!((snap.breaker, snap.busy, snap.available), (BreakerState::Closed, 1, false));
        assert!(h.fleet.pick().is_none());
        h.clock.advance(Duration::from_secs(3));
        assert!(h.fleet.pick().is_some());
    }

    #[test]
    fn record_classifies_outcomes() {
        let h = Harness::new(2);
        h.add(A, 4, 0);
        let mut l = h.fleet.pick().unwrap();
        l.record::<()>(&Err(ClientError::Unavailable("timeout".into())));
        assert_eq!(h.w(A).consecutive_failures, 1);
        l.record::<()>(&Err(ClientError::Rejected { status: 422, message: "bad".into() }));
        assert_eq!(h.w(A).consecutive_failures, 0, "a clean refusal shows the worker alive");
        l.record(&Ok(()));
        let snap = h.w(A);
        assert_eq!((snap.dispatched, snap.succeeded, snap.failed), (1, 2, 1));
        let c = h.fleet.counters();
        assert_eq!((c.picks, c.successes, c.failures), (1, 2, 1));
    }

    #[test]
    fn upsert_is_idempotent_and_keeps_state() {
        let h = Harness::new(1);
        h.add(A, 4, 0);
        let _l = h.fleet.pick().unwrap();
        assert!(!h.fleet.upsert(WorkerSpec::new("a:1").with_name("pod-a").with_capacity(3)).unwrap());
        let snap = h.w(A);
        assert_eq!((snap.name.as_str(), snap.healthy, snap.local_in_flight, snap.capacity), ("pod-a", true, 1, 3));
        assert_eq!(h.fleet.len(), 1);
    }

    #[test]
    fn leases_of_a_removed_worker_do_not_touch_its_successor() {
        let h = Harness::new(1);
        h.add(A, 4, 0);
        let mut old = h.fleet.pick().unwrap();
        assert!(h.fleet.remove(A));
        assert!(!h.fleet.remove(A));
        h.add(A, 4, 0);
        let _new = h.fleet.pick().unwrap();
        old.failure("late failure");
        drop(old);
        let snap = h.w(A);
        assert_eq!((snap.local_in_flight, snap.breaker, snap.failed), (1, BreakerState::Closed, 0));
    }

    #[test]
    fn probe_results_for_a_replaced_worker_are_ignored() {
        let h = Harness::new(1);
        h.fleet.upsert(WorkerSpec::new(A)).unwrap();
        let key = normalize_endpoint(A).unwrap();
        let old_uid = h.fleet.shared.lock().workers[&key].uid;
        h.fleet.remove(A);
        h.fleet.upsert(WorkerSpec::new(A)).unwrap();
        h.fleet.apply_probe(&key, old_uid, ProbeResult::Ready(info(1, 0)));
        assert!(!h.w(A).healthy);
    }

    #[test]
    fn sync_replaces_the_set_atomically() {
        let h = Harness::new(1);
        h.add(A, 1, 0);
        h.add(B, 1, 0);
        assert!(h.fleet.sync([WorkerSpec::new(B), WorkerSpec::new("ftp://nope")]).is_err());
        assert_eq!(h.fleet.len(), 2, "invalid input changes nothing");
        h.fleet.sync([WorkerSpec::new(B), WorkerSpec::new(C)]).unwrap();
        assert_eq!(h.fleet.endpoints(), [B, C]);
        assert!(h.w(B).healthy, "kept workers keep their state");
        assert!(!h.w(C).healthy);
    }

    #[test]
    fn snapshot_serialises_for_status_pages() {
        let h = Harness::new(1);
        h.add(A, 2, 0);
        h.fleet.upsert(WorkerSpec::new(B)).unwrap();
        let _l = h.fleet.pick().unwrap();
        let snap = h.fleet.snapshot();
        assert_eq!((snap.healthy_workers, snap.capacity, snap.in_flight), (1, 2, 1));
        let json = serde_json::to_value(&snap).unwrap();
        let a = &json["workers"][0];
        assert_eq!(a["endpoint"], A);
        assert_eq!(a["breaker"], "closed");
        assert_eq!(a["gpu"]["name"], "T4");
        assert_eq!(a["gpus"][0]["name"], "T4", "a worker reporting only `gpu` has that one GPU");
        assert_eq!(json["workers"][1]["gpus"], serde_json::json!([]));
        assert!(a["last_heartbeat"].as_str().unwrap().ends_with('Z'));
        assert!(json["workers"][1]["last_heartbeat"].is_null());
        assert_eq!(json["counters"]["picks"], 1);
        let back: FleetSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back.workers[0].endpoint, A);
    }
}
