//! Fine-grained progress, kept in memory and served to the gateway (DESIGN section 2: etcd
//! is not a progress bus). The controller publishes every worker progress event here; the
//! CR only gets a coarse mark.
//!
//! `GET /v1/tasks/{namespace}/{name}/progress` answers the current view of one task;
//! `GET /v1/progress` is a server-sent event stream of every update (event `progress`, data
//! `{namespace, name, phase, progress, stage?}`), starting with a snapshot of the tasks not
//! finished yet so a reconnecting gateway catches up. A subscriber that falls behind gets a
//! `lagged` event with the number of updates it missed and should re-read what it needs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use purrify_api::TaskPhase;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::model::TaskKey;

/// What the gateway sees of a task's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub namespace: String,
    pub name: String,
    pub phase: TaskPhase,
    /// 0..=1.
    pub progress: f32,
    /// What the worker is doing (`decode`, `faces`, `tiles`, `encode`, `upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

impl Progress {
    pub fn new(key: &TaskKey, phase: TaskPhase, progress: f32, stage: Option<String>) -> Self {
        Self { namespace: key.namespace.clone(), name: key.name.clone(), phase, progress, stage }
    }

    fn key(&self) -> TaskKey {
        TaskKey::new(self.namespace.clone(), self.name.clone())
    }
}

struct HubInner {
    tasks: RwLock<HashMap<TaskKey, Progress>>,
    updates: broadcast::Sender<Progress>,
}

/// Shared by the controller (writer) and the HTTP routes (readers). Cheap to clone.
#[derive(Clone)]
pub struct ProgressHub {
    inner: Arc<HubInner>,
}

impl Default for ProgressHub {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProgressHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressHub").field("tasks", &self.len()).finish()
    }
}

impl ProgressHub {
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// `capacity`: updates buffered per stream subscriber before it lags.
    pub fn with_capacity(capacity: usize) -> Self {
        let (updates, _) = broadcast::channel(capacity.max(1));
        Self { inner: Arc::new(HubInner { tasks: RwLock::new(HashMap::new()), updates }) }
    }

    /// The process-wide hub that [`run`](super::run) publishes to: the HTTP server mounts
    /// [`router`](super::router) over it without the two having to meet.
    pub fn global() -> ProgressHub {
        static GLOBAL: OnceLock<ProgressHub> = OnceLock::new();
        GLOBAL.get_or_init(ProgressHub::new).clone()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Progress> {
        self.read().get(&TaskKey::new(namespace, name)).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A live update from a follower: always wins.
    pub fn publish(&self, p: Progress) {
        let mut tasks = self.write();
        if tasks.get(&p.key()).is_some_and(|old| *old == p) {
            return;
        }
        tasks.insert(p.key(), p.clone());
        // Sent under the lock so that a subscriber's snapshot and its stream line up.
        let _ = self.inner.updates.send(p);
    }

    /// What the CR says. Coarse, and may lag a follower's live view: it only replaces the
    /// view when the phase differs (or there is none).
    pub fn observe(&self, p: Progress) {
        let mut tasks = self.write();
        if tasks.get(&p.key()).is_some_and(|old| old.phase == p.phase) {
            return;
        }
        tasks.insert(p.key(), p.clone());
        let _ = self.inner.updates.send(p);
    }

    pub fn remove(&self, key: &TaskKey) {
        self.write().remove(key);
    }

    pub fn clear(&self) {
        self.write().clear();
    }

    /// The unfinished tasks now, and every update after that.
    pub fn subscribe(&self) -> (Vec<Progress>, broadcast::Receiver<Progress>) {
        let tasks = self.read();
        let rx = self.inner.updates.subscribe();
        let mut snapshot: Vec<Progress> = tasks.values().filter(|p| !p.phase.is_finished()).cloned().collect();
        snapshot.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        (snapshot, rx)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TaskKey, Progress>> {
        self.inner.tasks.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<TaskKey, Progress>> {
        self.inner.tasks.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The progress routes, to be mounted on the operator's HTTP server.
pub fn router(hub: ProgressHub) -> Router {
    Router::new()
        .route("/v1/tasks/{namespace}/{name}/progress", get(task_progress))
        .route("/v1/progress", get(progress_stream))
        .with_state(hub)
}

#[derive(Serialize)]
struct NotFound {
    error: &'static str,
    message: &'static str,
}

async fn task_progress(State(hub): State<ProgressHub>, Path((namespace, name)): Path<(String, String)>) -> Response {
    match hub.get(&namespace, &name) {
        Some(p) => Json(p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(NotFound { error: "not_found", message: "this operator does not know the task (not the leader, or the task is gone)" }),
        )
            .into_response(),
    }
}

fn sse_event(p: &Progress) -> Event {
    Event::default().event("progress").json_data(p).unwrap_or_else(|_| Event::default().event("progress"))
}

async fn progress_stream(State(hub): State<ProgressHub>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (snapshot, mut rx) = hub.subscribe();
    let stream = async_stream::stream! {
        for p in &snapshot {
            yield Ok(sse_event(p));
        }
        drop(snapshot);
        loop {
            match rx.recv().await {
                Ok(p) => yield Ok(sse_event(&p)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    yield Ok(Event::default().event("lagged").data(n.to_string()));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_progress_is_not_overwritten_by_the_coarse_cr_view() {
        let hub = ProgressHub::new();
        let k = TaskKey::new("ns", "t");
        let (_, mut rx) = hub.subscribe();
        hub.observe(Progress::new(&k, TaskPhase::Running, 0.0, None));
        hub.publish(Progress::new(&k, TaskPhase::Running, 0.7, Some("tiles".into())));
        hub.observe(Progress::new(&k, TaskPhase::Running, 0.5, None));
        assert_eq!(hub.get("ns", "t").unwrap().progress, 0.7);
        hub.observe(Progress::new(&k, TaskPhase::Succeeded, 1.0, None));
        assert_eq!(hub.get("ns", "t").unwrap().phase, TaskPhase::Succeeded);
        let seen: Vec<f32> = std::iter::from_fn(|| rx.try_recv().ok()).map(|p| p.progress).collect();
        assert_eq!(seen, [0.0, 0.7, 1.0]);
        let (snapshot, _) = hub.subscribe();
        assert!(snapshot.is_empty(), "finished tasks are not replayed");
        hub.remove(&k);
        assert!(hub.is_empty());
    }
}
