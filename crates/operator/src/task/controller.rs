//! The controller loop. It alone owns the [`Index`]: watch events, the objects our own writes
//! return and the end of each spawned worker (follower or chore) arrive here, are applied,
//! and then one round runs: chores for tasks that changed (every task on a tick), then
//! dispatch for pools with waiting tasks and free workers.
//!
//! Ownership: a task is worked on by at most one spawned worker at a time, registered in
//! `owners` before it starts and released (even on panic) when it ends; the index keeps
//! owned tasks out of the queue. Every write is guarded anyway (see `kubeio`), so a mistake
//! here costs a conflict, not a double transition.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::events::Reporter;
use kube::runtime::{WatchStreamExt, watcher};
use purrify_api::{EnhanceTask, TaskPhase};
use purrify_inference::client::{Fleet, Lease};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::index::{Applied, Entry, Index};
use super::kubeio::Kube;
use super::model::TaskKey;
use super::policy::{StopReason, plan};
use super::progress::{Progress, ProgressHub};
use super::{TaskConfig, attempt};
use crate::context::{Context, FIELD_MANAGER};
use crate::metrics::{PhaseLabels, PoolLabels, ReconcileLabels};
use crate::registry::PoolKey;

const CONTROLLER: &str = "enhancetask";

/// What the spawned workers share.
pub(super) struct Shared {
    pub ctx: Arc<Context>,
    pub config: TaskConfig,
    pub hub: ProgressHub,
    pub kube: Kube,
    msgs: mpsc::UnboundedSender<Msg>,
}

impl Shared {
    /// Hands an object one of our writes returned to the loop, so the index does not wait
    /// for the watch to learn what we already know.
    pub fn observed(&self, task: Arc<EnhanceTask>) {
        let _ = self.msgs.send(Msg::Observed(task));
    }

    pub fn transition(&self, phase: TaskPhase) {
        self.ctx.metrics.task_transitions.get_or_create(&PhaseLabels { phase: phase.as_str() }).inc();
    }
}

pub(super) enum Msg {
    Observed(Arc<EnhanceTask>),
    Released { key: TaskKey, token: u64, note: Note },
}

/// What a worker tells the loop when it lets go of a task.
#[derive(Debug, Default)]
pub(super) struct Note {
    /// The attempt failed on this worker: retries go elsewhere when they can.
    pub failed_on: Option<String>,
    /// The task reached a final phase: forget its retry history.
    pub finished: bool,
    /// The object was deleted by us.
    pub deleted: bool,
    /// An API call failed: leave the task alone this long.
    pub backoff: Option<Duration>,
}

/// How the loop tells a worker to stop.
pub(super) struct RunControl {
    tx: watch::Sender<Option<StopReason>>,
}

impl RunControl {
    fn new() -> Self {
        Self { tx: watch::Sender::new(None) }
    }

    /// The first reason wins, except that a deletion overrides everything: there is nothing
    /// left to write a cancellation or a failure to.
    pub fn request(&self, reason: StopReason) {
        self.tx.send_if_modified(|cur| match cur {
            None => {
                *cur = Some(reason);
                true
            }
            Some(r) if reason == StopReason::Deleted && *r != StopReason::Deleted => {
                *cur = Some(reason);
                true
            }
            Some(_) => false,
        });
    }

    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.tx.subscribe();
        let reason = rx.wait_for(Option::is_some).await.ok().and_then(|r| *r);
        match reason {
            Some(r) => r,
            // The sender lives in `self`: unreachable, but never resolve rather than guess.
            None => std::future::pending().await,
        }
    }
}

/// Held by the worker that owns a task; releases it when dropped, panics included.
pub(super) struct OwnerGuard {
    pub key: TaskKey,
    token: u64,
    pub control: Arc<RunControl>,
    pub note: Note,
    msgs: mpsc::UnboundedSender<Msg>,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let note = std::mem::take(&mut self.note);
        let _ = self.msgs.send(Msg::Released { key: self.key.clone(), token: self.token, note });
    }
}

struct Owner {
    token: u64,
    control: Arc<RunControl>,
}

pub(super) async fn run(
    ctx: Arc<Context>,
    config: TaskConfig,
    hub: ProgressHub,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: config.instance.clone() };
    let kube = Kube::new(ctx.client.clone(), ctx.metrics.clone(), reporter, config.events, config.max_concurrent_writes);
    let api: Api<EnhanceTask> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // A new term starts from what the API says, not from a previous term's views.
    hub.clear();
    let shared = Arc::new(Shared { ctx, config, hub, kube, msgs: tx });
    let events = watcher(api, watcher::Config::default()).default_backoff();
    info!(namespace = shared.ctx.namespace.as_deref().unwrap_or("*"), "EnhanceTask controller starting");
    Loop::new(shared).run(events, rx, shutdown).await;
    info!("EnhanceTask controller stopped; running jobs stay on their workers");
    Ok(())
}

struct Loop {
    sh: Arc<Shared>,
    index: Index,
    owners: HashMap<TaskKey, Owner>,
    next_token: u64,
    /// Workers each task failed on, so its retry goes elsewhere. In memory only: after a
    /// restart a retry may land on the same worker, which is merely less ideal.
    tried: HashMap<TaskKey, Vec<String>>,
    not_before: HashMap<TaskKey, Instant>,
    dirty: HashSet<TaskKey>,
    sweep: bool,
    synced: bool,
    relist: Option<Vec<Arc<EnhanceTask>>>,
    started: Instant,
    /// Pools where a task with no retry history found no worker: skipped until a slot frees
    /// up here or the poll interval passes.
    full: HashSet<PoolKey>,
    work: JoinSet<()>,
}

impl Loop {
    fn new(sh: Arc<Shared>) -> Self {
        Self {
            sh,
            index: Index::new(),
            owners: HashMap::new(),
            next_token: 0,
            tried: HashMap::new(),
            not_before: HashMap::new(),
            dirty: HashSet::new(),
            sweep: false,
            synced: false,
            relist: None,
            started: Instant::now(),
            full: HashSet::new(),
            work: JoinSet::new(),
        }
    }

    async fn run<S>(mut self, events: S, mut msgs: mpsc::UnboundedReceiver<Msg>, shutdown: impl Future<Output = ()> + Send)
    where
        S: Stream<Item = Result<watcher::Event<EnhanceTask>, watcher::Error>> + Send,
    {
        tokio::pin!(events);
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.sh.config.tick_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.sh.config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                // Watch before messages: messages are drained completely below, so they
                // cannot starve, while a busy stream of them could starve the watch.
                event = events.next() => match event {
                    Some(Ok(e)) => self.on_watch(e),
                    Some(Err(e)) => warn!(error = %e, "watching EnhanceTasks failed; retrying with back-off"),
                    None => {
                        error!("the EnhanceTask watch ended");
                        break;
                    }
                },
                Some(msg) = msgs.recv() => self.on_msg(msg),
                Some(joined) = self.work.join_next(), if !self.work.is_empty() => {
                    if let Err(e) = joined && e.is_panic() {
                        // Its guard released the task; the next sweep picks it up again.
                        error!(error = %e, "task worker panicked");
                    }
                }
                _ = tick.tick() => self.sweep = true,
                _ = poll.tick() => self.full.clear(),
            }
            while let Ok(msg) = msgs.try_recv() {
                self.on_msg(msg);
            }
            if self.synced {
                self.round();
            }
        }
        self.stop().await;
    }

    fn on_watch(&mut self, event: watcher::Event<EnhanceTask>) {
        match event {
            watcher::Event::Init => self.relist = Some(Vec::new()),
            watcher::Event::InitApply(t) => self.relist.get_or_insert_default().push(slim(Arc::new(t))),
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                // The first list's waits count from creation; a relist's new arrivals from now.
                let seen = self.synced.then(SystemTime::now);
                let n = listed.len();
                for gone in self.index.replace_all(listed, seen) {
                    self.gone(gone);
                }
                for e in self.index.entries() {
                    self.sh.hub.observe(progress_of(e));
                }
                if !self.synced {
                    let c = self.index.counts();
                    info!(tasks = n, queued = c.queued, running = c.running, "EnhanceTasks listed");
                }
                self.synced = true;
                self.sweep = true;
            }
            watcher::Event::Apply(t) => self.observe(Arc::new(t)),
            watcher::Event::Delete(t) => {
                if let Some(key) = TaskKey::of(&t)
                    && self.index.get(&key).is_some_and(|e| Some(e.uid.as_str()) == t.metadata.uid.as_deref())
                    && let Some(e) = self.index.remove(&key)
                {
                    self.gone(e);
                }
            }
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Observed(t) => self.observe(t),
            Msg::Released { key, token, note } => {
                if self.owners.get(&key).is_some_and(|o| o.token == token) {
                    self.owners.remove(&key);
                    self.index.release(&key);
                }
                if let Some(w) = note.failed_on {
                    let tried = self.tried.entry(key.clone()).or_default();
                    if !tried.contains(&w) {
                        tried.push(w);
                    }
                }
                if note.finished {
                    self.tried.remove(&key);
                }
                if note.deleted {
                    self.index.mark_deleted(&key);
                    self.sh.hub.remove(&key);
                    self.tried.remove(&key);
                }
                match note.backoff {
                    Some(d) => {
                        self.not_before.insert(key, Instant::now() + d);
                    }
                    None => {
                        self.dirty.insert(key);
                    }
                }
                // A slot may have freed up.
                self.full.clear();
            }
        }
    }

    fn observe(&mut self, task: Arc<EnhanceTask>) {
        let Some(key) = TaskKey::of(&task) else { return };
        let task = slim(task);
        if matches!(self.index.apply(task, Some(SystemTime::now())), Applied::Stale | Applied::Invalid) {
            return;
        }
        let Some(e) = self.index.get(&key) else { return };
        self.sh.hub.observe(progress_of(e));
        if (e.cancel_requested || e.deleting)
            && let Some(owner) = self.owners.get(&key)
        {
            owner.control.request(StopReason::Cancel);
        }
        self.dirty.insert(key);
    }

    /// The task object is gone (deleted by anyone, or missing from a relist).
    fn gone(&mut self, e: Entry) {
        self.sh.hub.remove(&e.key);
        self.tried.remove(&e.key);
        self.not_before.remove(&e.key);
        self.dirty.remove(&e.key);
        if let Some(owner) = self.owners.get(&e.key) {
            owner.control.request(StopReason::Deleted);
        } else if e.phase == TaskPhase::Running
            && let Some(status) = e.task.status.as_ref()
            && let (Some(worker), Some(job_id)) = (status.worker.clone(), status.job_id.clone())
        {
            // Nobody here follows it (it was deleted before we adopted it): stop its job.
            info!(task = %e.key, %job_id, "running task deleted; cancelling its job");
            let client = attempt::client_for(&self.sh, &e.pool, &worker);
            if let Some(client) = client {
                attempt::spawn_cancel(client, job_id, self.sh.config.cancel_timeout);
            }
        }
    }

    fn round(&mut self) {
        let start = Instant::now();
        let swept = self.sweep;
        self.chores();
        self.dispatch();
        if swept {
            self.gauges();
        }
        let m = &self.sh.ctx.metrics;
        m.reconciles.get_or_create(&ReconcileLabels { controller: CONTROLLER, outcome: "ok" }).inc();
        m.reconcile_duration
            .get_or_create(&crate::metrics::ControllerLabels { controller: CONTROLLER })
            .observe(start.elapsed().as_secs_f64());
    }

    fn own(&mut self, key: &TaskKey) -> OwnerGuard {
        self.next_token += 1;
        let control = Arc::new(RunControl::new());
        self.owners.insert(key.clone(), Owner { token: self.next_token, control: control.clone() });
        self.index.take(key);
        OwnerGuard { key: key.clone(), token: self.next_token, control, note: Note::default(), msgs: self.sh.msgs.clone() }
    }

    fn chores(&mut self) {
        let now = SystemTime::now();
        let instant = Instant::now();
        let grace_over = self.started.elapsed() >= self.sh.config.reattach_grace;
        let keys: Vec<TaskKey> = if std::mem::take(&mut self.sweep) {
            self.dirty.clear();
            self.not_before.retain(|_, t| *t > instant);
            self.index.keys()
        } else {
            self.dirty.drain().collect()
        };
        for key in keys {
            if self.owners.contains_key(&key) || self.not_before.get(&key).is_some_and(|t| *t > instant) {
                continue;
            }
            let Some(e) = self.index.get(&key) else { continue };
            let registry = &self.sh.ctx.registry;
            let known = |w: &str| registry.fleet(&e.pool).is_some_and(|f| f.client(w).is_some());
            let Some(chore) = plan(e, now, self.sh.config.default_ttl, known, grace_over) else { continue };
            let (task, pool) = (e.task.clone(), e.pool.clone());
            let guard = self.own(&key);
            let span = info_span!("task", task = %key);
            self.work.spawn(attempt::chore(self.sh.clone(), guard, task, pool, chore).instrument(span));
        }
    }

    fn dispatch(&mut self) {
        let now = SystemTime::now();
        let instant = Instant::now();
        for pool in self.index.pools_with_queue() {
            if self.full.contains(&pool) {
                continue;
            }
            let Some(fleet) = self.sh.ctx.registry.fleet(&pool) else { continue };
            let mut skipped: HashSet<TaskKey> = HashSet::new();
            loop {
                let not_before = &self.not_before;
                let next = self.index.next_queued(&pool, |e| {
                    e.deadline <= now || skipped.contains(&e.key) || not_before.get(&e.key).is_some_and(|t| *t > instant)
                });
                let Some(e) = next else { break };
                let (key, task, queued_since) = (e.key.clone(), e.task.clone(), e.queued_since);
                let tried = self.tried.get(&key).cloned().unwrap_or_default();
                match pick_for(&fleet, &tried) {
                    Some(lease) => {
                        self.index.dispatch(&key);
                        let guard = self.own(&key);
                        let span = info_span!("task", task = %key);
                        let fut = attempt::dispatch(self.sh.clone(), guard, task, fleet.clone(), lease, tried, queued_since);
                        self.work.spawn(fut.instrument(span));
                    }
                    None if tried.is_empty() => {
                        self.full.insert(pool.clone());
                        break;
                    }
                    // Waits for a worker it has not failed on; others may still fit.
                    None => {
                        skipped.insert(key);
                    }
                }
            }
        }
    }

    fn gauges(&self) {
        let m = &self.sh.ctx.metrics;
        let c = self.index.counts();
        for phase in [TaskPhase::Queued, TaskPhase::Running, TaskPhase::Succeeded, TaskPhase::Failed, TaskPhase::Cancelled] {
            m.tasks_by_phase.get_or_create(&PhaseLabels { phase: phase.as_str() }).set(c.get(phase));
        }
        for pool in self.index.known_pools() {
            let depth = i64::try_from(self.index.queue_len(&pool)).unwrap_or(i64::MAX);
            m.queue_depth.get_or_create(&PoolLabels { pool: pool.to_string() }).set(depth);
        }
    }

    /// Tells every worker to stop and waits (bounded) for them: followers stop following at
    /// once, chores finish the write they are doing.
    async fn stop(mut self) {
        for owner in self.owners.values() {
            owner.control.request(StopReason::Shutdown);
        }
        let bound = tokio::time::sleep(self.sh.config.shutdown_grace);
        tokio::pin!(bound);
        loop {
            tokio::select! {
                joined = self.work.join_next() => if joined.is_none() { break },
                () = &mut bound => {
                    warn!(left = self.work.len(), "task workers did not stop in time; abandoning them");
                    self.work.abort_all();
                    break;
                }
            }
        }
        self.gauges();
        debug!("task loop stopped");
    }
}

/// Drops what the controller never reads and that dominates an object's size: finished
/// tasks stay in the index for their whole TTL.
fn slim(task: Arc<EnhanceTask>) -> Arc<EnhanceTask> {
    if task.metadata.managed_fields.is_none() {
        return task;
    }
    let mut t = Arc::unwrap_or_clone(task);
    t.metadata.managed_fields = None;
    Arc::new(t)
}

fn progress_of(e: &Entry) -> Progress {
    let progress = e.task.status.as_ref().map_or(0.0, |s| s.progress);
    Progress::new(&e.key, e.phase, progress, None)
}

/// A worker for a task that already failed on `tried`: an untried one if any is healthy
/// (waiting for it if it is full), else any, since one worker must then be retried on.
fn pick_for(fleet: &Fleet, tried: &[String]) -> Option<Lease> {
    if let Some(lease) = fleet.pick_excluding(tried) {
        return Some(lease);
    }
    if tried.is_empty() {
        return None;
    }
    let untried_healthy = fleet.snapshot().workers.iter().any(|w| w.healthy && !tried.contains(&w.endpoint));
    if untried_healthy { None } else { fleet.pick() }
}
