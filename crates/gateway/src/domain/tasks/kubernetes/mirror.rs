//! The Kubernetes backend's watches: every EnhanceTask change into the progress hub and the
//! history database, deleted CRs ended, and the operator's progress stream.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use purrify_api::{EnhanceTask, FailReason, TaskStatus};
use purrify_store::{Mirror, now_ms};
use tracing::{debug, info, warn};

use super::resources::view_of;
use super::{CANCEL_ANNOTATION, CREATE_GRACE_MS, DELETED_MESSAGE, KubeBackend, MISSING_MESSAGE};
use crate::domain::tasks::hub::TaskView;
use crate::domain::tasks::model::TaskFailure;

impl KubeBackend {
    /// Watches the namespace's EnhanceTasks: every change goes to the hub; finished ones into
    /// the history database. Deletions end unfinished tasks; after every (re)list, unfinished
    /// rows whose CR is gone are ended too, since a watch that was down saw no delete.
    pub(super) async fn mirror_loop(&self) {
        let stream = watcher::watcher(self.tasks.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed: HashSet<String> = HashSet::new();
        let mut list_started = now_ms();
        loop {
            match stream.try_next().await {
                Ok(Some(Event::Apply(t))) => self.mirror(&t).await,
                Ok(Some(Event::InitApply(t))) => {
                    if let Some(name) = &t.metadata.name {
                        listed.insert(name.clone());
                    }
                    self.mirror(&t).await;
                }
                Ok(Some(Event::Delete(t))) => self.deleted(&t).await,
                Ok(Some(Event::Init)) => {
                    listed.clear();
                    list_started = now_ms();
                }
                Ok(Some(Event::InitDone)) => self.end_missing(&std::mem::take(&mut listed), list_started).await,
                Ok(None) => break,
                Err(e) => warn!(error = %e, "EnhanceTask watch error; retrying"),
            }
        }
    }

    /// A task CR is gone. A finished one (TTL) keeps its outcome, recorded once more in case
    /// the watch missed it; an unfinished one ends here, or it would stay queued forever.
    pub(super) async fn deleted(&self, t: &EnhanceTask) {
        let Some(id) = t.metadata.name.as_deref() else { return };
        let st = t.status.clone().unwrap_or_default();
        if st.phase.is_finished() {
            debug!(task = id, phase = st.phase.as_str(), "finished task CR deleted");
            self.mirror(t).await;
            return;
        }
        let cancel_asked = t.metadata.annotations.as_ref().and_then(|a| a.get(CANCEL_ANNOTATION)).is_some_and(|v| v == "true");
        info!(task = id, phase = st.phase.as_str(), cancel_asked, "task CR deleted before it finished");
        let user = t.spec.owner.as_ref().and_then(|o| crate::domain::tasks::model::account_owner(&o.user_id));
        self.end_task(id, cancel_asked, DELETED_MESSAGE, f64::from(st.progress), st.attempts, user).await;
    }

    /// Ends unfinished rows whose CR was not in the list that started at `list_started`.
    /// Each candidate is confirmed gone with a GET, so a CR created after the list began is
    /// never mistaken for a deleted one; candidates are rare, so that costs next to nothing.
    pub(super) async fn end_missing(&self, listed: &HashSet<String>, list_started: i64) {
        let rows = match (self.db.queued_tasks(u32::MAX).await, self.db.processing_tasks().await) {
            (Ok(q), Ok(p)) => q.into_iter().chain(p),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot read unfinished tasks to check them against the cluster");
                return;
            }
        };
        let candidates: Vec<_> = {
            let creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
            rows.filter(|r| !listed.contains(&r.id) && !creating.contains(&r.id))
                .filter(|r| r.status != TaskStatus::Queued || r.created_at < list_started - CREATE_GRACE_MS)
                .collect()
        };
        for row in candidates {
            match self.tasks.get_opt(&row.id).await {
                Ok(None) => {
                    info!(task = %row.id, status = row.status.as_str(), "unfinished task has no CR any more");
                    self.end_task(&row.id, false, MISSING_MESSAGE, row.progress, row.attempts, row.user_id.clone()).await;
                }
                Ok(Some(_)) => {}
                Err(e) => warn!(task = %row.id, error = %e, "cannot check whether the task CR still exists"),
            }
        }
    }

    /// Records the terminal state of a task whose CR is gone: cancelled when the gateway
    /// asked for that, failed otherwise.
    pub(super) async fn end_task(&self, id: &str, cancelled: bool, message: &str, progress: f64, attempts: u32, user_id: Option<String>) {
        let (status, code, message) = if cancelled {
            (TaskStatus::Cancelled, FailReason::Cancelled.code(), FailReason::Cancelled.public_message())
        } else {
            // No operator reason applies; the bounded codes have no better word for it.
            (TaskStatus::Failed, FailReason::InternalError.code(), message)
        };
        let m = Mirror {
            id,
            status,
            progress,
            worker: None,
            job_id: None,
            attempts,
            error_code: Some(code),
            error_message: Some(message),
            result: None,
        };
        if let Err(e) = self.db.mirror_task(&m).await {
            warn!(task = id, error = %e, "cannot record the end of a deleted task");
        }
        self.hub.publish(TaskView {
            task_id: id.to_string(),
            status,
            progress: progress as f32,
            stage: None,
            error: Some(TaskFailure { code: code.to_string(), message: message.to_string() }),
            result: None,
            user_id,
            updated_at: now_ms(),
        });
    }

    pub(super) async fn mirror(&self, t: &EnhanceTask) {
        let Some(view) = view_of(t) else { return };
        let st = t.status.clone().unwrap_or_default();
        if view.status != TaskStatus::Queued {
            let m = Mirror {
                id: &view.task_id,
                status: view.status,
                progress: f64::from(view.progress),
                worker: st.worker.as_deref(),
                job_id: st.job_id.as_deref(),
                attempts: st.attempts,
                error_code: view.error.as_ref().map(|e| e.code.as_str()),
                error_message: view.error.as_ref().map(|e| e.message.as_str()),
                result: view.result.as_ref(),
            };
            if let Err(e) = self.db.mirror_task(&m).await {
                warn!(task = %view.task_id, error = %e, "cannot record task state");
            }
        }
        self.hub.publish(view);
    }

    /// Follows the operator's progress stream (SSE of `{namespace, name, phase, progress}`),
    /// reconnecting with a pause; progress between CR writes comes only from here.
    pub(super) async fn progress_loop(&self, base: String) {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/progress", base.trim_end_matches('/'));
        loop {
            match http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let mut parser = purrify_inference::client::SseParser::new();
                    let mut body = resp.bytes_stream();
                    while let Some(Ok(chunk)) = body.next().await {
                        let Ok(events) = parser.feed(&chunk) else { break };
                        for ev in events {
                            self.progress_event(&ev.data);
                        }
                    }
                }
                Ok(resp) => debug!(status = %resp.status(), "operator progress stream refused"),
                Err(e) => debug!(error = %e, "operator progress stream unreachable"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    pub(super) fn progress_event(&self, data: &str) {
        #[derive(serde::Deserialize)]
        struct Update {
            namespace: String,
            name: String,
            progress: f32,
        }
        let Ok(u) = serde_json::from_str::<Update>(data) else { return };
        if u.namespace != self.namespace {
            return;
        }
        if let Some(current) = self.hub.get(&u.name)
            && current.status == TaskStatus::Processing
            && (u.progress - current.progress).abs() > f32::EPSILON
        {
            let mut v = (*current).clone();
            v.progress = u.progress.clamp(0.0, 1.0);
            v.updated_at = now_ms();
            self.hub.publish(v);
        }
    }
}
