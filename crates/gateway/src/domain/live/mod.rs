//! Live updates per user: the index that lets a task change wake only its owner's WebSocket
//! connections.
//!
//! One loop reads [`TaskService::watch_all`](crate::domain::tasks::TaskService::watch_all)
//! and hands each change of an owned task to that owner's broadcast channel, if the owner has a
//! connection open. A connection holds a [`UserFeed`] (a receiver of its user's channel), so
//! an idle connection costs one receiver and an update costs one map lookup plus one wake-up
//! per connection of its owner: ten thousand idle connections are not polled when another
//! user's task moves. A user's channel exists only while one of their connections is open.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::tasks::TaskSnapshot;

/// How WebSocket sessions behave.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Time between the server's WebSocket pings. A connection that sent nothing (a pong
    /// included) between one ping and the next is closed as dead.
    pub ping_interval: Duration,
    /// Time an unauthenticated connection has to authenticate (or to follow an anonymous task
    /// by id) before it is closed.
    pub auth_timeout: Duration,
    /// Changes buffered per connection before a slow one skips some (it sees the next).
    pub per_user_buffer: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self { ping_interval: Duration::from_secs(30), auth_timeout: Duration::from_secs(10), per_user_buffer: 32 }
    }
}

/// Enough shards that connects, disconnects and the feed loop rarely meet on one lock.
const SHARDS: usize = 16;

type Shard = Mutex<HashMap<Box<str>, broadcast::Sender<Arc<TaskSnapshot>>>>;

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    settings: LiveSettings,
}

/// The per-user index of live connections. Cheap to clone; clones share one index.
#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub").field("users", &self.users()).finish()
    }
}

impl LiveHub {
    pub fn new(settings: LiveSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: RandomState::new(),
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.inner.settings
    }

    fn shard(&self, user_id: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, broadcast::Sender<Arc<TaskSnapshot>>>> {
        let h = self.inner.hasher.hash_one(user_id) as usize;
        self.inner.shards[h % SHARDS].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The changes of `user_id`'s tasks from now on, for as long as the feed is held.
    pub fn subscribe(&self, user_id: &str) -> UserFeed {
        let rx = {
            let mut shard = self.shard(user_id);
            match shard.get(user_id) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = broadcast::channel(self.inner.settings.per_user_buffer.max(1));
                    shard.insert(user_id.into(), tx);
                    rx
                }
            }
        };
        UserFeed { hub: self.clone(), user_id: user_id.into(), rx }
    }

    /// Hands a change to its owner's connections; returns how many there are (0 for an
    /// anonymous task or an owner with none open).
    pub fn publish(&self, task: TaskSnapshot) -> usize {
        let Some(owner) = task.owner.as_deref() else { return 0 };
        let shard = self.shard(owner);
        match shard.get(owner) {
            Some(tx) => tx.send(Arc::new(task)).unwrap_or(0),
            None => 0,
        }
    }

    /// Users with at least one connection open.
    pub fn users(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    /// Feeds the index from `changes` (the task service's all-tasks stream) until it ends or
    /// `stop` turns true.
    pub fn spawn_feed(
        &self,
        changes: impl Stream<Item = TaskSnapshot> + Send + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            loop {
                tokio::select! {
                    change = changes.next() => match change {
                        Some(t) => { hub.publish(t); }
                        None => break,
                    },
                    _ = stop.changed() => break,
                }
            }
        })
    }
}

/// One connection's view of its user's task changes. Dropping the last feed of a user
/// removes the user from the index.
pub struct UserFeed {
    hub: LiveHub,
    user_id: Box<str>,
    rx: broadcast::Receiver<Arc<TaskSnapshot>>,
}

impl std::fmt::Debug for UserFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserFeed").field("user_id", &self.user_id).finish()
    }
}

impl UserFeed {
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The next change. A connection that fell more than the buffer behind skips what it
    /// missed (the next change of a task carries its whole state). `None` never happens while
    /// the hub lives.
    pub async fn recv(&mut self) -> Option<Arc<TaskSnapshot>> {
        loop {
            match self.rx.recv().await {
                Ok(t) => return Some(t),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for UserFeed {
    fn drop(&mut self) {
        // Under the shard lock no feed of this user can be created concurrently, so the count
        // is exact: 1 is this feed's own receiver, still alive here.
        let mut shard = self.hub.shard(&self.user_id);
        if shard.get(&*self.user_id).is_some_and(|tx| tx.receiver_count() <= 1) {
            shard.remove(&*self.user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::domain::tasks::PublicStatus;

    fn change(id: &str, owner: Option<&str>, progress: f64) -> TaskSnapshot {
        TaskSnapshot {
            id: id.into(),
            owner: owner.map(Into::into),
            status: PublicStatus::Processing,
            progress,
            error: None,
            error_code: None,
            result: None,
        }
    }

    #[tokio::test]
    async fn a_change_reaches_only_its_owners_feeds() {
        let hub = LiveHub::new(LiveSettings::default());
        let (mut alice1, mut alice2, mut bob) = (hub.subscribe("alice"), hub.subscribe("alice"), hub.subscribe("bob"));
        assert_eq!(hub.users(), 2);
        assert_eq!(hub.publish(change("t1", Some("alice"), 0.5)), 2, "both of alice's connections");
        assert_eq!(hub.publish(change("anon", None, 0.5)), 0, "anonymous tasks go to no feed");
        assert_eq!(hub.publish(change("t9", Some("carol"), 0.5)), 0, "carol has no connection");
        for feed in [&mut alice1, &mut alice2] {
            let t = feed.recv().now_or_never().flatten().expect("delivered at once");
            assert_eq!((t.id.as_str(), t.progress), ("t1", 0.5));
        }
        assert!(bob.recv().now_or_never().is_none(), "bob's connection is not woken");
        assert_eq!(bob.user_id(), "bob");
    }

    #[tokio::test]
    async fn the_last_feed_of_a_user_removes_the_user() {
        let hub = LiveHub::new(LiveSettings::default());
        let a = hub.subscribe("alice");
        let b = hub.subscribe("alice");
        drop(a);
        assert_eq!(hub.users(), 1, "one connection left");
        drop(b);
        assert_eq!(hub.users(), 0);
        assert_eq!(hub.publish(change("t1", Some("alice"), 0.1)), 0);
    }

    #[tokio::test]
    async fn a_slow_connection_skips_what_it_missed_and_sees_the_latest() {
        let hub = LiveHub::new(LiveSettings { per_user_buffer: 2, ..LiveSettings::default() });
        let mut feed = hub.subscribe("alice");
        for i in 0..10 {
            hub.publish(change("t1", Some("alice"), f64::from(i) / 10.0));
        }
        let first = feed.recv().await.unwrap();
        assert_eq!(first.progress, 0.8, "the two newest are kept");
        assert_eq!(feed.recv().await.unwrap().progress, 0.9);
    }

    #[tokio::test]
    async fn the_feed_loop_routes_the_task_stream() {
        let hub = LiveHub::new(LiveSettings::default());
        let mut feed = hub.subscribe("alice");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let changes = futures::stream::iter([change("b1", Some("bob"), 0.2), change("a1", Some("alice"), 0.3)]);
        let handle = hub.spawn_feed(changes, stop);
        let t = feed.recv().await.unwrap();
        assert_eq!(t.id, "a1", "bob's change was not delivered to alice");
        handle.await.unwrap();
        drop(stop_tx);
    }
}
