//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one schedules tasks and manages pools.
//!
//! Rules (those of client-go's leader election, which admins already know):
//! - A candidate takes the Lease by creating it, or by replacing it once it has expired or
//!   been released. Replacing sends the `resourceVersion` it read, so of two candidates racing
//!   for the same expired Lease the API server accepts one and refuses the other with 409.
//! - Expiry is judged on the candidate's own clock: a Lease is expired when its record has not
//!   changed for `leaseDurationSeconds` since this candidate first saw that record. Clocks of
//!   different nodes never get compared.
//! - The leader renews every `renew_interval`. If it cannot renew within `renew_deadline`
//!   (shorter than the lease duration) it considers itself no longer leader *before* anyone
//!   else can take over, and the process stops its controllers and exits non-zero, to come
//!   back as a standby.
//! - On a graceful stop the leader releases the Lease (empty holder), so a standby takes over
//!   at its next poll instead of after a full lease duration.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

pub const DEFAULT_LEASE_NAME: &str = "purrify-operator";

/// `(apiGroup, resource, verbs)` leader election uses, in the Lease's namespace only;
/// `deploy/operator-rbac.yaml` grants exactly these (a test checks).
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[("coordination.k8s.io", "leases", &["get", "create", "update"])];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate; unique per process.
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// The leader gives up when it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often a standby checks the Lease.
    pub retry_interval: Duration,
}

impl LeaderConfig {
    /// Intervals derived from the lease duration as client-go's defaults relate them
    /// (15 s lease: renew every 5 s, give up after 10 s, standbys poll every 2 s).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>, lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_interval: lease_duration / 3,
            renew_deadline: lease_duration * 2 / 3,
            retry_interval: (lease_duration / 7).max(Duration::from_millis(100)),
        }
    }
}

/// A unique holder identity: the pod name (or host name) plus a random suffix, so a restarted
/// process never mistakes the Lease of its previous life for its own.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned());
    // RandomState is seeded from the OS per process; mixing in time and pid guards against a
    // platform where it is not.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    format!("{host}-{:08x}", h.finish() as u32)
}

/// The Lease record last seen, and when this candidate first saw it.
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// One candidate.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    metrics: Arc<Metrics>,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderConfig, metrics: Arc<Metrics>) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config, metrics, observed: None }
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// One election round: renews the Lease if held, takes it if free or expired. `Ok(true)`
    /// while this candidate holds it; `Ok(false)` when someone else does or won a race.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mine = holder == Some(self.config.identity.as_str());
        if !mine && holder.is_some() && !self.expired(&spec) {
            return Ok(false);
        }
        let mut next = current.clone();
        let s = next.spec.get_or_insert_with(LeaseSpec::default);
        s.renew_time = Some(now.clone());
        s.lease_duration_seconds = Some(duration_secs);
        if !mine {
            s.holder_identity = Some(self.config.identity.clone());
            s.acquire_time = Some(now);
            s.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        // `next` carries the resourceVersion read above: a concurrent writer makes this fail.
        match self.api.replace(&self.config.name, &PostParams::default(), &next).await {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone();
        if self.observed.as_ref().is_none_or(|o| o.resource_version != rv) {
            self.observed = Some(Observed { resource_version: rv, at: Instant::now() });
        }
    }

    fn expired(&self, spec: &LeaseSpec) -> bool {
        let duration =
            spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(self.config.lease_duration, Duration::from_secs);
        self.observed.as_ref().is_some_and(|o| o.at.elapsed() >= duration)
    }

    /// Waits until this candidate holds the Lease, then keeps renewing it in the background.
    /// API errors are retried; cancel by dropping the future.
    pub async fn acquire(mut self) -> Leadership {
        info!(lease = %self.config.name, namespace = %self.config.namespace, identity = %self.config.identity, "waiting to become leader");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => debug!("another replica holds the lease"),
                Err(e) => warn!(error = %e, "leader election: cannot read or write the lease"),
            }
            tokio::time::sleep(self.config.retry_interval).await;
        }
        info!(identity = %self.config.identity, "became leader");
        self.metrics.is_leader.set(1);
        self.metrics.leader_transitions.inc();
        let (lost_tx, lost) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let identity = self.config.identity.clone();
        let task = tokio::spawn(self.renew_loop(lost_tx, stop_rx));
        Leadership { identity, lost, stop, task: Some(task) }
    }

    async fn renew_loop(mut self, lost: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.renew_interval) => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    self.release().await;
                    return;
                }
            }
            let remaining = self.config.renew_deadline.saturating_sub(last_renew.elapsed());
            let still = loop {
                // A hung request must not carry the leader past its deadline.
                match tokio::time::timeout(remaining.max(Duration::from_millis(1)), self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => {
                        last_renew = Instant::now();
                        break true;
                    }
                    Ok(Ok(false)) => {
                        warn!("the lease was taken by another replica");
                        break false;
                    }
                    Ok(Err(e)) => warn!(error = %e, "could not renew the lease"),
                    Err(_) => warn!("renewing the lease timed out"),
                }
                if last_renew.elapsed() >= self.config.renew_deadline {
                    break false;
                }
                tokio::time::sleep(self.config.retry_interval.min(self.config.renew_deadline.saturating_sub(last_renew.elapsed()))).await;
            };
            if !still {
                warn!(deadline = ?self.config.renew_deadline, "lost leadership");
                self.metrics.is_leader.set(0);
                let _ = lost.send(true);
                return;
            }
        }
    }

    /// Hands the Lease back so a standby need not wait for it to expire.
    async fn release(&mut self) {
        self.metrics.is_leader.set(0);
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            spec.lease_duration_seconds = Some(1);
            self.api.replace(&self.config.name, &PostParams::default(), &lease).await.map(|_| ())
        }
        .await;
        match result {
            Ok(()) => info!("released the lease"),
            Err(e) => warn!(error = %e, "could not release the lease; it will expire"),
        }
    }
}

/// Held while leader. Dropping it stops renewing without releasing, as a crash would; call
/// [`release`](Self::release) on a graceful stop.
pub struct Leadership {
    identity: String,
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Still leader (as far as renewals go).
    pub fn is_leader(&self) -> bool {
        !*self.lost.borrow()
    }

    /// Completes when leadership is lost; pending forever while it holds. Cloneable into
    /// every controller's shutdown.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.lost.clone();
        async move {
            // A dropped sender means the renew loop is gone, which is a loss too.
            let _ = rx.wait_for(|l| *l).await;
        }
    }

    /// Stops renewing and releases the Lease.
    pub async fn release(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
