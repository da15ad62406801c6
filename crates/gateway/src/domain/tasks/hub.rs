//! `ProgressHub`: the in-memory view of tasks that status polls, SSE and WebSocket clients
//! read, so that tens of thousands of polls per second never reach the database.
//!
//! The dispatcher publishes every change (each worker progress event included); the
//! database only gets coarse progress. Finished views stay for a while (clients keep polling
//! until they see the end) and are then evicted; [`ProgressHub::get_or_load`] falls back to
//! the database for anything not here.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use purrify_api::{JobResult, TaskStatus};
use purrify_store::{Db, StoreError, Task, now_ms};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::model::TaskFailure;

/// What clients see of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub task_id: String,
    pub status: TaskStatus,
    /// 0..=1.
    pub progress: f32,
    /// What the worker is doing (`decode`, `faces`, `tiles`, `encode`, `upload`), while
    /// processing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// For filtering the all-tasks stream per user; not for clients.
    #[serde(skip)]
    pub user_id: Option<String>,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl TaskView {
    pub fn from_task(task: &Task) -> Self {
        Self {
            task_id: task.id.clone(),
            status: task.status,
            progress: task.progress as f32,
            stage: None,
            error: task.failure().map(|f| TaskFailure { code: f.code.to_owned(), message: f.message.to_owned() }),
            result: task.result.clone(),
            user_id: task.user_id.clone(),
            updated_at: task.updated_at,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long a finished view stays after it finished.
    pub finished_ttl: Duration,
    /// Most finished views kept; the oldest go first beyond it.
    pub max_finished: usize,
    /// Updates buffered per all-tasks subscriber before it lags.
    pub broadcast_capacity: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self { finished_ttl: Duration::from_secs(600), max_finished: 50_000, broadcast_capacity: 4096 }
    }
}

/// Enough shards that two cores polling and one dispatcher writing rarely meet on a lock.
const SHARDS: usize = 32;

struct Slot {
    tx: watch::Sender<Arc<TaskView>>,
    /// Set when the view became final; names the matching entry of the eviction queue.
    finished_seq: Option<u64>,
}

type Shard = RwLock<HashMap<Box<str>, Slot>>;

struct Finished {
    at: Instant,
    id: Box<str>,
    seq: u64,
}

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    finished: Mutex<VecDeque<Finished>>,
    seq: AtomicU64,
    all: broadcast::Sender<Arc<TaskView>>,
    config: HubConfig,
}

/// Cheap to clone; clones share one hub.
#[derive(Clone)]
pub struct ProgressHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProgressHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressHub").field("len", &self.len()).finish()
    }
}

impl Default for ProgressHub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

enum Mode {
    /// A change from the dispatcher: replaces what is there (unless that is final).
    Publish,
    /// A view read from the database: only fills a gap, never overwrites fresher news.
    Fill,
}

impl ProgressHub {
    pub fn new(config: HubConfig) -> Self {
        let (all, _) = broadcast::channel(config.broadcast_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                hasher: RandomState::new(),
                finished: Mutex::new(VecDeque::new()),
                seq: AtomicU64::new(0),
                all,
                config,
            }),
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        let h = self.inner.hasher.hash_one(id) as usize;
        &self.inner.shards[h % SHARDS]
    }

    /// The current view, if the hub has it. Two uncontended read locks and an `Arc` clone.
    pub fn get(&self, id: &str) -> Option<Arc<TaskView>> {
        let shard = self.shard(id).read().unwrap_or_else(PoisonError::into_inner);
        shard.get(id).map(|s| s.tx.borrow().clone())
    }

    /// The view from the hub, else from the database (kept in the hub from then on).
    pub async fn get_or_load(&self, db: &Db, id: &str) -> Result<Option<Arc<TaskView>>, StoreError> {
        if let Some(v) = self.get(id) {
            return Ok(Some(v));
        }
        let Some(task) = db.get_task(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.put(TaskView::from_task(&task), Mode::Fill).0))
    }

    /// Shows a view read from the database unless the hub already has news of that task;
    /// returns what the hub holds.
    pub fn fill(&self, view: TaskView) -> Arc<TaskView> {
        self.put(view, Mode::Fill).0
    }

    /// Changes of one task, starting with its current view (for SSE). `None` if the hub
    /// does not have it: call [`get_or_load`](Self::get_or_load) first. The channel closes
    /// when the view is evicted, which happens only after it is final.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<Arc<TaskView>>> {
        let shard = self.shard(id).read().unwrap_or_else(PoisonError::into_inner);
        shard.get(id).map(|s| s.tx.subscribe())
    }

    /// Every change of every task (for WebSocket clients, who filter by task or user). A
    /// slow subscriber gets `RecvError::Lagged` and should re-read what it follows.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<TaskView>> {
        self.inner.all.subscribe()
    }

    /// Records a change. Final views are never replaced: a late progress event of an
    /// attempt that was cancelled or timed out cannot revive the task. Returns whether the
    /// view was taken.
    pub fn publish(&self, view: TaskView) -> bool {
        self.put(view, Mode::Publish).1
    }

    /// Stores `view` per `mode`; returns what the hub holds afterwards and whether that is
    /// `view`.
    fn put(&self, view: TaskView, mode: Mode) -> (Arc<TaskView>, bool) {
        let finished = view.is_finished();
        let view = Arc::new(view);
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut shard = self.shard(&view.task_id).write().unwrap_or_else(PoisonError::into_inner);
            match shard.get_mut(view.task_id.as_str()) {
                Some(slot) => {
                    let current = slot.tx.borrow().clone();
                    if current.is_finished() || matches!(mode, Mode::Fill) {
                        return (current, false);
                    }
                    slot.tx.send_replace(view.clone());
                    if finished {
                        slot.finished_seq = Some(seq);
                    }
                }
                None => {
                    shard.insert(
                        view.task_id.as_str().into(),
                        Slot { tx: watch::Sender::new(view.clone()), finished_seq: finished.then_some(seq) },
                    );
                }
            }
        }
        if finished {
            let now = Instant::now();
            self.lock_finished().push_back(Finished { at: now, id: view.task_id.as_str().into(), seq });
            self.evict_at(now);
        }
        if matches!(mode, Mode::Publish) {
            // No subscriber is the normal case, not an error.
            let _ = self.inner.all.send(view.clone());
        }
        (view, true)
    }

    /// Removes a view (e.g. after the task was deleted).
    pub fn remove(&self, id: &str) -> bool {
        self.shard(id).write().unwrap_or_else(PoisonError::into_inner).remove(id).is_some()
    }

    /// Evicts finished views older than the TTL or beyond the cap. Also done on every
    /// finish; call it periodically so an idle hub shrinks too.
    pub fn evict_expired(&self) -> usize {
        self.evict_at(Instant::now())
    }

    fn evict_at(&self, now: Instant) -> usize {
        let ttl = self.inner.config.finished_ttl;
        let max = self.inner.config.max_finished;
        let mut evicted = 0;
        let mut queue = self.lock_finished();
        while let Some(front) = queue.front() {
            let expired = now.saturating_duration_since(front.at) >= ttl;
            if !expired && queue.len() <= max {
                break;
            }
            let Some(entry) = queue.pop_front() else {
                break;
            };
            let mut shard = self.shard(&entry.id).write().unwrap_or_else(PoisonError::into_inner);
            // A newer slot under the same id (re-loaded after an earlier eviction) has its
            // own queue entry.
            if shard.get(&*entry.id).is_some_and(|s| s.finished_seq == Some(entry.seq)) {
                shard.remove(&*entry.id);
                evicted += 1;
            }
        }
        evicted
    }

    fn lock_finished(&self) -> std::sync::MutexGuard<'_, VecDeque<Finished>> {
        self.inner.finished.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Views held (active and finished).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of `task` with fresh progress, as the dispatcher publishes it.
    pub(crate) fn progress_view(task: &Task, status: TaskStatus, progress: f32, stage: Option<String>) -> TaskView {
        TaskView {
            task_id: task.id.clone(),
            status,
            progress: progress.clamp(0.0, 1.0),
            stage,
            error: None,
            result: None,
            user_id: task.user_id.clone(),
            updated_at: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, status: TaskStatus, progress: f32) -> TaskView {
        TaskView { task_id: id.into(), status, progress, stage: None, error: None, result: None, user_id: None, updated_at: 0 }
    }

    #[test]
    fn final_views_are_never_replaced() {
        let hub = ProgressHub::default();
        assert!(hub.publish(view("a", TaskStatus::Processing, 0.5)));
        assert!(hub.publish(view("a", TaskStatus::Cancelled, 0.5)));
        assert!(!hub.publish(view("a", TaskStatus::Processing, 0.7)));
        let v = hub.get("a").unwrap();
        assert_eq!(v.status, TaskStatus::Cancelled);
        assert_eq!(v.progress, 0.5);
    }

    #[test]
    fn fill_does_not_overwrite_news() {
        let hub = ProgressHub::default();
        hub.publish(view("a", TaskStatus::Processing, 0.5));
        hub.put(view("a", TaskStatus::Queued, 0.0), Mode::Fill);
        assert_eq!(hub.get("a").unwrap().status, TaskStatus::Processing);
        hub.put(view("b", TaskStatus::Completed, 1.0), Mode::Fill);
        assert_eq!(hub.get("b").unwrap().status, TaskStatus::Completed);
    }

    #[tokio::test]
    async fn subscribers_see_changes_and_the_all_stream_sees_everything() {
        let hub = ProgressHub::default();
        let mut all = hub.subscribe_all();
        hub.publish(view("a", TaskStatus::Queued, 0.0));
        let mut one = hub.subscribe("a").unwrap();
        hub.publish(view("a", TaskStatus::Processing, 0.25));
        one.changed().await.unwrap();
        assert_eq!(one.borrow().progress, 0.25);
        assert_eq!(all.recv().await.unwrap().status, TaskStatus::Queued);
        assert_eq!(all.recv().await.unwrap().status, TaskStatus::Processing);
        assert!(hub.subscribe("missing").is_none());
    }

    #[test]
    fn finished_views_are_bounded_and_active_ones_stay() {
        let hub = ProgressHub::new(HubConfig { finished_ttl: Duration::from_secs(3600), max_finished: 3, broadcast_capacity: 4 });
        hub.publish(view("active", TaskStatus::Processing, 0.1));
        for i in 0..10 {
            hub.publish(view(&format!("done{i}"), TaskStatus::Completed, 1.0));
        }
        assert!(hub.get("active").is_some());
        assert_eq!(hub.len(), 4);
        assert!(hub.get("done9").is_some());
        assert!(hub.get("done0").is_none());
    }

    #[test]
    fn expired_views_go() {
        let hub = ProgressHub::new(HubConfig { finished_ttl: Duration::ZERO, ..HubConfig::default() });
        hub.publish(view("x", TaskStatus::Failed, 0.0));
        hub.evict_expired();
        assert!(hub.get("x").is_none());
    }
}
