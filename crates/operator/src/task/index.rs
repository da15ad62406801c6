//! The watch-fed view of every `EnhanceTask` and, per pool, the queue of tasks waiting for a
//! worker. Pure: the controller feeds it watch events and the objects its own writes return,
//! and asks it what to run next; the index never performs I/O or reads a clock.
//!
//! Dispatch order within a pool: priority (higher first), then start-time fair queuing across
//! users (`spec.owner.userId`), then creation time, then name. Fairness uses start tags
//! computed when a task is chosen rather than when it arrives, so the order does not depend
//! on the order in which a relist delivers objects, and a user who shows up late starts at
//! the current virtual time: neither starved by an earlier burst nor owed a burst of their
//! own.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use purrify_api::{EnhanceTask, TaskPhase};

use super::model::{TaskKey, cancel_requested, created_at, deadline_after, is_deleting, is_older, phase_of, pool_of, user_of};
use crate::registry::PoolKey;

/// One task as the controller sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: TaskKey,
    pub task: Arc<EnhanceTask>,
    pub uid: String,
    pub pool: PoolKey,
    pub phase: TaskPhase,
    pub user: String,
    pub priority: i32,
    pub created: SystemTime,
    pub deadline: SystemTime,
    /// When the current wait began, for the dispatch-latency metric: the creation time for
    /// tasks found by a (re)list, the arrival of the watch event otherwise (creation
    /// timestamps have one-second resolution).
    pub queued_since: SystemTime,
    /// When it finished: `status.completionTime`, or when this index first saw it finished.
    pub finished_at: Option<SystemTime>,
    pub cancel_requested: bool,
    pub deleting: bool,
    /// We deleted it and wait for the watch to confirm. Kept across updates: the watch may
    /// still replay older versions of it, which must not look like a task to delete again.
    pub delete_sent: bool,
}

impl Entry {
    fn new(key: TaskKey, task: Arc<EnhanceTask>, seen: Option<SystemTime>, previous: Option<&Entry>) -> Self {
        let created = created_at(&task).or(seen).unwrap_or(SystemTime::UNIX_EPOCH);
        let phase = phase_of(&task);
        let same = previous.filter(|p| Some(p.uid.as_str()) == task.metadata.uid.as_deref());
        let queued_since = match same {
            Some(p) if p.phase == TaskPhase::Queued && phase == TaskPhase::Queued => p.queued_since,
            _ => seen.unwrap_or(created),
        };
        let finished_at = if phase.is_finished() {
            let recorded =
                task.status.as_ref().and_then(|s| s.completion_time.as_deref()).and_then(purrify_inference::client::parse_rfc3339);
            recorded.or_else(|| same.and_then(|p| p.finished_at)).or(seen).or(Some(created))
        } else {
            None
        };
        Self {
            uid: task.metadata.uid.clone().unwrap_or_default(),
            pool: pool_of(&task),
            phase,
            user: user_of(&task),
            priority: task.spec.priority,
            created,
            deadline: deadline_after(created, &task.spec),
            queued_since,
            finished_at,
            cancel_requested: cancel_requested(&task),
            deleting: is_deleting(&task),
            delete_sent: same.is_some_and(|p| p.delete_sent),
            key,
            task,
        }
    }

    /// Whether the scheduler may start it (ignoring deadlines and local ownership).
    pub fn waiting(&self) -> bool {
        self.phase == TaskPhase::Queued && !self.cancel_requested && !self.deleting && !self.delete_sent
    }
}

/// One user's waiting tasks at one priority: (creation, key), oldest first.
type UserQueue = BTreeSet<(SystemTime, TaskKey)>;

/// Tasks of one pool waiting for a worker.
#[derive(Debug, Default)]
struct PoolQueue {
    /// Priority (highest first) -> user -> their tasks.
    levels: BTreeMap<Reverse<i32>, HashMap<String, UserQueue>>,
    len: usize,
    /// Start tag of the last task chosen.
    vtime: u64,
    /// Finish tag of each user's last chosen task; users at or below `vtime` are dropped,
    /// being indistinguishable from users never seen.
    finish: HashMap<String, u64>,
}

impl PoolQueue {
    fn insert(&mut self, e: &Entry) {
        let users = self.levels.entry(Reverse(e.priority)).or_default();
        if users.entry(e.user.clone()).or_default().insert((e.created, e.key.clone())) {
            self.len += 1;
        }
    }

    fn remove(&mut self, e: &Entry) {
        let level = Reverse(e.priority);
        let Some(users) = self.levels.get_mut(&level) else { return };
        let Some(set) = users.get_mut(&e.user) else { return };
        if set.remove(&(e.created, e.key.clone())) {
            self.len -= 1;
        }
        if set.is_empty() {
            users.remove(&e.user);
        }
        if users.is_empty() {
            self.levels.remove(&level);
        }
    }

    fn start_tag(&self, user: &str) -> u64 {
        self.vtime.max(self.finish.get(user).copied().unwrap_or(0))
    }

    fn charge(&mut self, user: &str) {
        let start = self.start_tag(user);
        self.finish.insert(user.to_owned(), start + 1);
        self.vtime = start;
        if self.finish.len() > 1024 {
            let v = self.vtime;
            self.finish.retain(|_, f| *f > v);
        }
    }
}

/// Tasks per phase, for the `tasks` gauge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PhaseCounts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl PhaseCounts {
    fn slot(&mut self, p: TaskPhase) -> &mut i64 {
        match p {
            TaskPhase::Queued => &mut self.queued,
            TaskPhase::Running => &mut self.running,
            TaskPhase::Succeeded => &mut self.succeeded,
            TaskPhase::Failed => &mut self.failed,
            TaskPhase::Cancelled => &mut self.cancelled,
        }
    }

    pub fn get(&self, p: TaskPhase) -> i64 {
        let mut c = *self;
        *c.slot(p)
    }
}

#[derive(Debug, Default)]
pub struct Index {
    tasks: HashMap<TaskKey, Entry>,
    queues: HashMap<PoolKey, PoolQueue>,
    queued: HashSet<TaskKey>,
    /// Tasks some local worker (follower, chore) owns: kept out of the queue until released.
    taken: HashSet<TaskKey>,
    counts: PhaseCounts,
    /// Uids of deleted tasks: an object one of our writes returned can reach the index after
    /// the watch reported the deletion, and must not bring the task back. Bounded, oldest
    /// first out; by then no write of ours about it is still in flight.
    tombstones: HashSet<String>,
    tomb_order: VecDeque<String>,
}

const MAX_TOMBSTONES: usize = 65_536;

/// What [`Index::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Updated,
    /// An older version than the one held (e.g. a watch event overtaken by the object a
    /// write of ours returned): ignored.
    Stale,
    /// No name or namespace.
    Invalid,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn get(&self, key: &TaskKey) -> Option<&Entry> {
        self.tasks.get(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.tasks.values()
    }

    pub fn keys(&self) -> Vec<TaskKey> {
        self.tasks.keys().cloned().collect()
    }

    pub fn counts(&self) -> PhaseCounts {
        self.counts
    }

    /// Takes in an object from the watch or from a write. `seen` is when the watch delivered
    /// it; `None` for objects of an initial list, whose waits count from their creation.
    pub fn apply(&mut self, task: Arc<EnhanceTask>, seen: Option<SystemTime>) -> Applied {
        let Some(key) = TaskKey::of(&task) else { return Applied::Invalid };
        if task.metadata.uid.as_ref().is_some_and(|u| self.tombstones.contains(u)) {
            return Applied::Stale;
        }
        let previous = self.tasks.get(&key);
        if previous.is_some_and(|p| is_older(&task, &p.task)) {
            return Applied::Stale;
        }
        let entry = Entry::new(key.clone(), task, seen, previous);
        let outcome = if let Some(old) = self.tasks.remove(&key) {
            self.unqueue(&old);
            *self.counts.slot(old.phase) -= 1;
            Applied::Updated
        } else {
            Applied::Inserted
        };
        *self.counts.slot(entry.phase) += 1;
        self.tasks.insert(key.clone(), entry);
        self.requeue(&key);
        outcome
    }

    /// Forgets a deleted task for good (see `tombstones`).
    pub fn remove(&mut self, key: &TaskKey) -> Option<Entry> {
        let old = self.tasks.remove(key)?;
        self.unqueue(&old);
        *self.counts.slot(old.phase) -= 1;
        if !old.uid.is_empty() && self.tombstones.insert(old.uid.clone()) {
            self.tomb_order.push_back(old.uid.clone());
            if self.tomb_order.len() > MAX_TOMBSTONES
                && let Some(oldest) = self.tomb_order.pop_front()
            {
                self.tombstones.remove(&oldest);
            }
        }
        Some(old)
    }

    /// Replaces everything with a fresh list; returns the entries that are gone.
    pub fn replace_all(&mut self, tasks: Vec<Arc<EnhanceTask>>, seen: Option<SystemTime>) -> Vec<Entry> {
        let listed: HashSet<TaskKey> = tasks.iter().filter_map(|t| TaskKey::of(t)).collect();
        let gone: Vec<TaskKey> = self.tasks.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        let removed = gone.iter().filter_map(|k| self.remove(k)).collect();
        for t in tasks {
            self.apply(t, seen);
        }
        removed
    }

    /// The task the pool should run next, skipping those `skip` rejects (deadline passed,
    /// no worker it has not failed on). Does not take it.
    pub fn next_queued(&self, pool: &PoolKey, skip: impl Fn(&Entry) -> bool) -> Option<&Entry> {
        let q = self.queues.get(pool)?;
        for users in q.levels.values() {
            let mut best: Option<(u64, SystemTime, &TaskKey)> = None;
            for (user, set) in users {
                let Some((created, key)) = set.iter().find(|(_, k)| self.tasks.get(k).is_some_and(|e| !skip(e))) else {
                    continue;
                };
                let candidate = (q.start_tag(user), *created, key);
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
            if let Some((_, _, key)) = best {
                return self.tasks.get(key);
            }
        }
        None
    }

    /// Takes a task chosen by [`next_queued`](Self::next_queued) for dispatch, charging its
    /// user's fair share.
    pub fn dispatch(&mut self, key: &TaskKey) {
        if let Some(e) = self.tasks.get(key) {
            let (pool, user) = (e.pool.clone(), e.user.clone());
            if let Some(q) = self.queues.get_mut(&pool) {
                q.charge(&user);
            }
        }
        self.take(key);
    }

    /// Marks a task as owned locally (a follower or a chore works on it): out of the queue.
    pub fn take(&mut self, key: &TaskKey) {
        self.taken.insert(key.to_owned());
        if let Some(e) = self.tasks.get(key).cloned() {
            self.unqueue(&e);
        }
    }

    /// Ends local ownership; the task queues again if it is still waiting.
    pub fn release(&mut self, key: &TaskKey) {
        self.taken.remove(key);
        self.requeue(key);
    }

    /// Records that we deleted the task; it stays (inert) until the watch reports it gone.
    pub fn mark_deleted(&mut self, key: &TaskKey) {
        if let Some(e) = self.tasks.get(key).cloned() {
            self.unqueue(&e);
        }
        if let Some(e) = self.tasks.get_mut(key) {
            e.delete_sent = true;
        }
    }

    pub fn is_taken(&self, key: &TaskKey) -> bool {
        self.taken.contains(key)
    }

    pub fn queue_len(&self, pool: &PoolKey) -> usize {
        self.queues.get(pool).map_or(0, |q| q.len)
    }

    /// Pools with at least one waiting task, in a stable order.
    pub fn pools_with_queue(&self) -> Vec<PoolKey> {
        let mut pools: Vec<PoolKey> = self.queues.iter().filter(|(_, q)| q.len > 0).map(|(p, _)| p.clone()).collect();
        pools.sort();
        pools
    }

    /// Every pool the index has queued tasks for now or had before (for zeroing gauges).
    pub fn known_pools(&self) -> Vec<PoolKey> {
        self.queues.keys().cloned().collect()
    }

    fn requeue(&mut self, key: &TaskKey) {
        if self.taken.contains(key) || self.queued.contains(key) {
            return;
        }
        let Some(e) = self.tasks.get(key) else { return };
        if !e.waiting() {
            return;
        }
        self.queues.entry(e.pool.clone()).or_default().insert(e);
        self.queued.insert(key.clone());
    }

    fn unqueue(&mut self, e: &Entry) {
        if self.queued.remove(&e.key)
            && let Some(q) = self.queues.get_mut(&e.pool)
        {
            q.remove(e);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::task::model::CANCEL_ANNOTATION;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::ResourceExt;
    use purrify_api::{EnhanceTaskSpec, EnhanceTaskStatus, TaskInput, TaskOutput, TaskOwner, TaskParams};
    use std::time::Duration;

    pub(crate) fn task(name: &str, user: &str, priority: i32, created_s: u64) -> EnhanceTask {
        let spec = EnhanceTaskSpec {
            pool: "default".into(),
            input: TaskInput { uri: "file:///in".into(), content_type: None, bytes: None },
            output: TaskOutput { uri: "file:///out".into() },
            params: TaskParams::default(),
            priority,
            deadline_seconds: 300,
            ttl_seconds_after_finished: None,
            owner: (!user.is_empty()).then(|| TaskOwner { user_id: user.into() }),
        };
        let mut t = EnhanceTask::new(name, spec);
        t.metadata.namespace = Some("ns".into());
        t.metadata.uid = Some(format!("uid-{name}"));
        t.metadata.resource_version = Some("1".into());
        let ts = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created_s as i64).unwrap();
        t.metadata.creation_timestamp = Some(Time(ts));
        t
    }

    fn pool() -> PoolKey {
        PoolKey::new("ns", "default")
    }

    /// Dispatches everything in order, as a scheduler with unlimited workers would.
    fn drain(ix: &mut Index) -> Vec<String> {
        let mut out = vec![];
        while let Some(e) = ix.next_queued(&pool(), |_| false) {
            let k = e.key.clone();
            ix.dispatch(&k);
            out.push(k.name);
        }
        out
    }

    #[test]
    fn priority_first_then_fair_users_then_age() {
        let mut ix = Index::new();
        for i in 0..6 {
            ix.apply(Arc::new(task(&format!("a{i}"), "alice", 0, i)), None);
        }
        ix.apply(Arc::new(task("b0", "bob", 0, 10)), None);
        ix.apply(Arc::new(task("b1", "bob", 0, 11)), None);
        ix.apply(Arc::new(task("c0", "carol", 0, 12)), None);
        ix.apply(Arc::new(task("urgent", "alice", 5, 20)), None);
        assert_eq!(ix.queue_len(&pool()), 10);
        let order = drain(&mut ix);
        assert_eq!(order[0], "urgent", "priority beats fairness and age");
        // After alice's urgent task, bob and carol (never served) come first, then the
        // users alternate while each has work; each user's own tasks go oldest first.
        assert_eq!(&order[1..], ["b0", "c0", "a0", "b1", "a1", "a2", "a3", "a4", "a5"]);
        assert_eq!(ix.queue_len(&pool()), 0);
    }

    #[test]
    fn a_burst_does_not_starve_a_late_user() {
        let mut ix = Index::new();
        for i in 0..100 {
            ix.apply(Arc::new(task(&format!("a{i:03}"), "alice", 0, 0)), None);
        }
        let first: Vec<String> = (0..10)
            .map(|_| {
                let k = ix.next_queued(&pool(), |_| false).unwrap().key.clone();
                ix.dispatch(&k);
                k.name
            })
            .collect();
        assert!(first.iter().all(|n| n.starts_with('a')));
        // Bob arrives after alice has been served ten times: he is next, not after alice's
        // remaining 90, and he gets no credit for the time he was away either.
        ix.apply(Arc::new(task("b0", "bob", 0, 30)), Some(SystemTime::now()));
        ix.apply(Arc::new(task("b1", "bob", 0, 31)), Some(SystemTime::now()));
        let next = drain(&mut ix);
        assert_eq!(&next[..4], ["b0", "a010", "b1", "a011"]);
    }

    #[test]
    fn skipped_tasks_let_others_run_and_ownership_hides_tasks() {
        let mut ix = Index::new();
        ix.apply(Arc::new(task("x", "u", 0, 0)), None);
        ix.apply(Arc::new(task("y", "u", 0, 1)), None);
        let next = ix.next_queued(&pool(), |e| e.key.name == "x").unwrap();
        assert_eq!(next.key.name, "y");
        let x = TaskKey::new("ns", "x");
        ix.take(&x);
        assert_eq!(ix.queue_len(&pool()), 1);
        // Updates while taken do not bring it back...
        ix.apply(Arc::new(task("x", "u", 0, 0)), None);
        assert_eq!(ix.queue_len(&pool()), 1);
        // ...releasing does, while it is still waiting.
        ix.release(&x);
        assert_eq!(ix.queue_len(&pool()), 2);
        assert_eq!(ix.next_queued(&pool(), |_| false).unwrap().key.name, "x");
    }

    #[test]
    fn phases_cancellation_and_stale_versions() {
        let mut ix = Index::new();
        let mut t = task("t", "u", 0, 0);
        t.metadata.resource_version = Some("5".into());
        assert_eq!(ix.apply(Arc::new(t.clone()), None), Applied::Inserted);
        assert_eq!(ix.counts().queued, 1);

        let mut running = t.clone();
        running.metadata.resource_version = Some("7".into());
        running.status = Some(EnhanceTaskStatus { phase: TaskPhase::Running, attempts: 1, ..Default::default() });
        assert_eq!(ix.apply(Arc::new(running.clone()), None), Applied::Updated);
        assert_eq!(ix.queue_len(&pool()), 0, "running tasks are not queued");
        assert_eq!((ix.counts().queued, ix.counts().running), (0, 1));

        // The watch delivers version 6 after our write returned version 7.
        let mut stale = t.clone();
        stale.metadata.resource_version = Some("6".into());
        assert_eq!(ix.apply(Arc::new(stale), None), Applied::Stale);
        assert_eq!(ix.get(&TaskKey::new("ns", "t")).unwrap().phase, TaskPhase::Running);

        let mut queued = running.clone();
        queued.metadata.resource_version = Some("8".into());
        queued.status.as_mut().unwrap().phase = TaskPhase::Queued;
        queued.annotations_mut().insert(CANCEL_ANNOTATION.into(), "true".into());
        ix.apply(Arc::new(queued), Some(SystemTime::now()));
        assert_eq!(ix.queue_len(&pool()), 0, "a cancelled task is never dispatched");

        let mut done = running.clone();
        done.metadata.resource_version = Some("9".into());
        done.status.as_mut().unwrap().phase = TaskPhase::Succeeded;
        done.status.as_mut().unwrap().completion_time = Some("2023-11-14T22:13:30Z".into());
        ix.apply(Arc::new(done), None);
        let e = ix.get(&TaskKey::new("ns", "t")).unwrap();
        assert_eq!(e.finished_at, purrify_inference::client::parse_rfc3339("2023-11-14T22:13:30Z"));
        assert_eq!(e.deadline, e.created + Duration::from_secs(300));
        assert_eq!(ix.counts().succeeded, 1);
        // Deleted by us: replays of the last version stay marked until the watch says gone.
        let key = TaskKey::new("ns", "t");
        ix.mark_deleted(&key);
        let replay = ix.get(&key).unwrap().task.clone();
        assert_eq!(ix.apply(replay, None), Applied::Updated);
        assert!(ix.get(&key).unwrap().delete_sent);
        let last = ix.get(&key).unwrap().task.clone();
        assert!(ix.remove(&key).is_some());
        assert_eq!(ix.counts(), PhaseCounts::default());
        assert_eq!(ix.apply(last, None), Applied::Stale, "a late object of a deleted task stays out");
        assert!(ix.is_empty());
        let mut again = task("t", "u", 0, 0);
        again.metadata.uid = Some("a-new-uid".into());
        assert_eq!(ix.apply(Arc::new(again), None), Applied::Inserted, "a new task of the same name is welcome");
    }

    #[test]
    fn relist_drops_what_is_gone_and_keeps_ordering_deterministic() {
        let mut ix = Index::new();
        ix.apply(Arc::new(task("old", "u", 0, 0)), None);
        let removed = ix.replace_all(vec![Arc::new(task("b", "u", 0, 2)), Arc::new(task("a", "u", 0, 1))], None);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].key.name, "old");
        assert_eq!(ix.len(), 2);
        assert_eq!(drain(&mut ix), ["a", "b"]);
    }
}
