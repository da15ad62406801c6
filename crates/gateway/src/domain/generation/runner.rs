//! The provider runner: takes queued provider tasks (`runner = 'provider'`) from the
//! database, runs each through the provider service (policy, breaker, fallback), follows
//! pending jobs by polling, copies results into storage and ends the task by the same
//! conditional updates the engine uses, publishing every change on the progress hub.
//!
//! - **Claiming** is the engine's conditional `UPDATE` (`claim_task`), so two replicas never
//!   run the same task; it is woken when a task is created and looks every `tick` for
//!   tasks other replicas created.
//! - **Take-over**: a running task's row is touched at every poll; one untouched for
//!   `stale_after` (its replica died) is taken over by another attempt id: with a provider
//!   job id it is polled again, without one it is submitted again (the provider may then
//!   have run it twice; nothing is charged twice). Workflow tasks wait for their callback and
//!   are never taken over; their deadline ends them.
//! - **Cancellation** passes on: the provider is asked to stop a pending job.
//! - **Deadlines**: the task's deadline bounds every call; a sweep fails what outlived it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use purrify_api::{FailReason, TaskStatus};
use purrify_store::{Db, Guard, Task, now_ms};
use tokio::sync::watch;
use tokio::time::Instant;

use super::JobSpec;
use super::outputs::{self, CopyRules, OutputError, StoredFile};
use crate::domain::providers::adapter::{InputImage, Output, Remote, Submitted, WorkflowJob};
use crate::domain::providers::policy::CallError;
use crate::domain::providers::{BUILTIN_ID, ChainError, Provider, ProviderService};
use crate::domain::tasks::{TaskService, TaskView};

/// Tunables of the runner.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Provider tasks run at once by this replica.
    pub concurrency: usize,
    /// How often the database is looked at without a wake-up (other replicas' tasks,
    /// deadlines, take-overs).
    pub tick: Duration,
    /// A running task untouched this long is taken over.
    pub stale_after: Duration,
    pub copy: CopyRules,
    /// The gateway's public base URL (workflow callbacks); without it workflow tasks fail.
    pub public_url: Option<String>,
    /// Largest input picture sent to a provider.
    pub max_input_bytes: u64,
}

/// How one run ended.
pub(crate) enum Ending {
    Done {
        files: Vec<StoredFile>,
        model: String,
        started: Instant,
    },
    Failed(FailReason, String),
    /// A workflow accepted it; its callback ends it.
    AwaitingCallback,
    Cancelled,
    /// The run recorded its end itself (a postcard: completion and postcard row together).
    Recorded,
}

/// Which provider job a run follows, shared with its cancellation path.
type Following = Arc<Mutex<Option<(Provider, String, String)>>>;

#[derive(Clone)]
struct Runner {
    tasks: TaskService,
    providers: ProviderService,
    http: reqwest::Client,
    settings: Arc<RunnerSettings>,
    replica: Arc<str>,
}

/// Starts the runner; it stops when `stop` changes (running tasks stay `processing` and are
/// taken over after a restart).
pub fn spawn(
    tasks: TaskService,
    providers: ProviderService,
    settings: RunnerSettings,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let runner = Runner {
        tasks,
        providers,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(3)).build().expect("a default HTTP client builds"),
        settings: Arc::new(settings),
        replica: format!("provider-runner-{}", uuid::Uuid::new_v4().simple()).into(),
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(runner.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = runner.tasks.provider_queue().notified() => {}
                _ = tick.tick() => runner.upkeep().await,
            }
            runner.claim().await;
        }
    })
}

impl Runner {
    fn db(&self) -> &Db {
        self.tasks.db()
    }

    async fn publish(&self, id: &str) {
        match self.db().get_task(id).await {
            Ok(Some(t)) => {
                self.tasks.hub().publish(TaskView::from_task(&t));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(task = %id, error = %e, "cannot read a provider task back"),
        }
    }

    /// Claims queued tasks while this replica has room.
    async fn claim(&self) {
        let free = self.settings.concurrency.saturating_sub(self.tasks.provider_queue().running());
        if free == 0 {
            return;
        }
        let due = match self.db().queued_provider_tasks(free as u32).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list queued provider tasks");
                return;
            }
        };
        for t in due {
            let job_id = uuid::Uuid::new_v4().simple().to_string();
            match self.db().claim_task(&t.id, t.attempts, &self.replica, &job_id).await {
                Ok(true) => self.start(t.id, job_id, None),
                Ok(false) => {}
                Err(e) => tracing::warn!(task = %t.id, error = %e, "cannot claim a provider task"),
            }
        }
    }

    /// Deadlines and take-overs.
    async fn upkeep(&self) {
        if let Ok(due) = self.db().provider_tasks_past_deadline(now_ms(), 100).await {
            for t in due {
                self.expire(&t).await;
            }
        }
        let stale_before = now_ms() - self.settings.stale_after.as_millis() as i64;
        let Ok(running) = self.db().processing_provider_tasks().await else { return };
        for t in running.into_iter().filter(|t| t.updated_at < stale_before) {
            let Ok(Some(rec)) = self.db().task_record(&t.id).await else { continue };
            let Some(g) = rec.meta.generation else { continue };
            let provider = match g.served_by.as_deref() {
                Some(p) => self.providers.provider(p).await.ok(),
                None => None,
            };
            if provider.as_ref().is_some_and(|p| g.remote_id.is_some() && !self.providers.polls(p)) {
                continue; // a workflow waiting for its callback
            }
            let (Some(old), new) = (t.job_id.as_deref(), uuid::Uuid::new_v4().simple().to_string()) else { continue };
            if self.db().take_over_provider_task(&t.id, old, &new, &self.replica, stale_before).await.unwrap_or(false) {
                tracing::warn!(task = %t.id, "taking over a provider task whose runner went silent");
                let follow = match (provider, g.remote_id) {
                    (Some(p), Some(remote)) => Some((p, g.model.clone(), remote)),
                    _ => None,
                };
                self.start(t.id, new, follow);
            }
        }
    }

    async fn expire(&self, t: &Task) {
        let guard = match (t.status, t.job_id.as_deref()) {
            (TaskStatus::Queued, _) => Guard::Queued,
            (_, Some(job)) => Guard::Job(job),
            _ => return,
        };
        if self
            .db()
            .fail_task(&t.id, guard, FailReason::DeadlineExceeded, "the provider did not finish before the task's deadline")
            .await
            .unwrap_or(false)
        {
            tracing::warn!(task = %t.id, "provider task past its deadline");
            self.tasks.provider_queue().cancel(&t.id);
            if let Ok(Some(rec)) = self.db().task_record(&t.id).await
                && let Some(g) = rec.meta.generation
                && let (Some(p), Some(remote)) = (g.served_by, g.remote_id)
                && let Ok(p) = self.providers.provider(&p).await
            {
                self.providers.cancel(&p, &g.model, &remote).await;
            }
            self.publish(&t.id).await;
        }
    }

    fn start(&self, id: String, job_id: String, follow: Option<(Provider, String, String)>) {
        let token = self.tasks.provider_queue().track(&id);
        let me = self.clone();
        tokio::spawn(async move {
            me.publish(&id).await;
            let following: Following = Arc::new(Mutex::new(follow));
            let ending = tokio::select! {
                e = me.execute(&id, &job_id, following.clone()) => e,
                _ = token.cancelled() => Ending::Cancelled,
            };
            me.tasks.provider_queue().untrack(&id);
            me.finish(&id, &job_id, ending, &following).await;
        });
    }

    async fn finish(&self, id: &str, job_id: &str, ending: Ending, following: &Following) {
        let db = self.db();
        let changed = match ending {
            Ending::Done { files, model, started } => {
                let result = outputs::job_result(&files[0], model, started.elapsed().as_millis() as u64);
                let list = serde_json::to_string(&files).unwrap_or_else(|_| "[]".into());
                let done = db.complete_provider_task(id, job_id, &result, &list).await;
                if !matches!(done, Ok(true)) {
                    // Cancelled or expired meanwhile: the files are nobody's.
                    for f in &files {
                        let _ = self.tasks.storage().delete(&f.uri).await;
                    }
                }
                done
            }
            Ending::Failed(reason, message) => db.fail_task(id, Guard::Job(job_id), reason, &message).await,
            Ending::AwaitingCallback | Ending::Recorded => return self.publish(id).await,
            Ending::Cancelled => {
                let pending = following.lock().expect("following lock").clone();
                if let Some((p, model, remote)) = pending {
                    self.providers.cancel(&p, &model, &remote).await;
                }
                db.cancel_task(id, Guard::Job(job_id)).await
            }
        };
        if let Err(e) = changed {
            tracing::warn!(task = %id, error = %e, "cannot record a provider task's end");
        }
        self.publish(id).await;
    }

    async fn execute(&self, id: &str, job_id: &str, following: Following) -> Ending {
        match self.try_execute(id, job_id, following).await {
            Ok(e) => e,
            Err(e) => e,
        }
    }

    async fn try_execute(&self, id: &str, job_id: &str, following: Following) -> Result<Ending, Ending> {
        let internal = |what: String| Ending::Failed(FailReason::InternalError, what);
        let rec = self.db().task_record(id).await.map_err(|e| internal(e.to_string()))?.ok_or_else(|| internal("task vanished".into()))?;
        let g = rec.meta.generation.ok_or_else(|| internal("not a generation task".into()))?;
        let spec: JobSpec = serde_json::from_str(&g.job).map_err(|e| internal(format!("stored request unreadable: {e}")))?;
        let deadline = Instant::now() + Duration::from_millis(u64::try_from(rec.task.deadline_at - now_ms()).unwrap_or(0));
        let started = Instant::now();
        if let JobSpec::Postcard(p) = &spec {
            use crate::domain::postcards::run::{RunCtx, run};
            let cx = RunCtx { tasks: &self.tasks, providers: &self.providers, http: &self.http, settings: &self.settings };
            return Ok(run(cx, id, job_id, &rec.task, &g, p, deadline).await);
        }

        let resumed = following.lock().expect("following lock").clone();
        let (provider, model, remote) = match resumed {
            Some(f) => f,
            None => {
                let job = self.job_for(id, &rec.task, &spec).await?;
                let mut chain = self.providers.chain(spec.provider_kind(), Some(&g.provider)).await.map_err(|e| internal(e.to_string()))?;
                chain.retain(|p| p.id != BUILTIN_ID);
                let accepted = self.providers.submit(&chain, &g.model, &job, deadline).await.map_err(|e| match e {
                    ChainError::Refused(m) => Ending::Failed(FailReason::InvalidParams, m),
                    ChainError::Unavailable(m) => Ending::Failed(FailReason::WorkerUnavailable, m),
                })?;
                let remote = match &accepted.submitted {
                    Submitted::Pending { remote_id } => Some(remote_id.as_str()),
                    Submitted::Finished(_) => None,
                };
                let _ = self.db().set_provider_job(id, job_id, &accepted.provider.id, remote).await;
                match accepted.submitted {
                    Submitted::Finished(outs) => return self.store(id, &rec.task.output_uri, outs, accepted.model, started).await,
                    Submitted::Pending { remote_id } => {
                        if !self.providers.polls(&accepted.provider) {
                            return Ok(Ending::AwaitingCallback);
                        }
                        *following.lock().expect("following lock") =
                            Some((accepted.provider.clone(), accepted.model.clone(), remote_id.clone()));
                        (accepted.provider, accepted.model, remote_id)
                    }
                }
            }
        };
        loop {
            tokio::time::sleep(self.providers.settings().poll_interval).await;
            if Instant::now() >= deadline {
                return Ok(Ending::Failed(FailReason::DeadlineExceeded, "the provider did not finish before the task's deadline".into()));
            }
            match self.providers.poll(&provider, &model, &remote, deadline).await {
                Ok(Remote::Running { progress }) => {
                    let p = progress.unwrap_or(0.0).clamp(0.0, 0.99);
                    let _ = self.db().update_progress(id, job_id, p).await;
                    self.publish(id).await;
                }
                Ok(Remote::Finished(outs)) => return self.store(id, &rec.task.output_uri, outs, model, started).await,
                Ok(Remote::Failed(m)) => return Ok(Ending::Failed(FailReason::InferenceFailed, m)),
                Err(CallError::Open { .. }) => {}
                Err(CallError::Failed(e)) if e.retryable() => {
                    tracing::info!(task = %id, error = %e, "polling the provider failed; polling on")
                }
                Err(CallError::Failed(e)) => return Ok(Ending::Failed(FailReason::WorkerUnavailable, e.to_string())),
            }
        }
    }

    /// The adapter's job: the input picture read back, the workflow's callback URLs.
    async fn job_for(&self, id: &str, task: &Task, spec: &JobSpec) -> Result<crate::domain::providers::adapter::Job, Ending> {
        let input = if spec.needs_input() {
            let bytes = self
                .tasks
                .storage()
                .get(&task.input_uri, self.settings.max_input_bytes)
                .await
                .map_err(|e| Ending::Failed(FailReason::StorageError, format!("the input picture cannot be read: {e}")))?;
            Some(InputImage { bytes, content_type: task.content_type.clone() })
        } else {
            None
        };
        let workflow = match spec {
            JobSpec::Workflow { workflow, params } => {
                let base = self.settings.public_url.as_deref().ok_or_else(|| {
                    Ending::Failed(FailReason::InternalError, "workflows need PURRIFY_PUBLIC_URL (where the workflow calls back)".into())
                })?;
                let base = base.trim_end_matches('/');
                Some(WorkflowJob {
                    task_id: id.to_string(),
                    workflow: workflow.clone(),
                    params: params.clone(),
                    input_url: None,
                    complete_url: format!("{base}/api/callback/task-complete"),
                    failed_url: format!("{base}/api/callback/task-failed"),
                })
            }
            _ => None,
        };
        spec.to_job(input, workflow).map_err(|e| Ending::Failed(FailReason::InternalError, e.to_string()))
    }

    async fn store(&self, id: &str, output_uri: &str, outs: Vec<Output>, model: String, started: Instant) -> Result<Ending, Ending> {
        match outputs::store(self.tasks.storage(), &self.http, id, output_uri, outs, self.settings.copy).await {
            Ok(files) => Ok(Ending::Done { files, model, started }),
            Err(OutputError::Bad(m)) => Ok(Ending::Failed(FailReason::InferenceFailed, m)),
            Err(OutputError::Storage(m)) => Ok(Ending::Failed(FailReason::StorageError, m)),
        }
    }
}
