//! Client webhooks: a task created with a `callback_url` has its outcome POSTed there, signed,
//! once it finishes.
//!
//! The body is JSON `{event: "task.completed" | "task.failed", task_id, status, result | error,
//! timestamp}` with `X-Purrify-Timestamp: <unix seconds>` and `X-Purrify-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` keyed by `PURRIFY_CALLBACK_SECRET`. A 2xx
//! answer delivers it; anything else (another status, a redirect, no answer within the
//! timeout) is retried with exponential backoff up to the configured attempts, then given up.
//! A URL whose host is or resolves to an address the `/webhook/register` policy refuses is
//! given up at once (see [`send`]).
//!
//! A delivery starts when the task's end is seen on this gateway's hub, and by a periodic
//! sweep of recently finished tasks that have none (ends seen by another replica, or before a
//! restart). Every attempt is claimed in the database first (`callback_deliveries`), so with
//! several gateways on one database each attempt is sent by one of them.

pub mod send;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use purrify_api::TaskStatus;
use purrify_store::{AttemptOutcome, CallbackDelivery, Db, Task, now_ms};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use self::send::{Sender, Sent};
use super::error::{DomainError, DomainResult};
use super::tasks::{PublicStatus, TaskSnapshot, TaskView};

/// How far back the sweep looks for finished tasks without a delivery.
const SWEEP_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Deliveries created per sweep, and attempts started per round.
const BATCH: u32 = 200;
/// Attempts in flight at once on one gateway.
const MAX_IN_FLIGHT: usize = 64;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The signing key (`PURRIFY_CALLBACK_SECRET`).
    pub secret: Vec<u8>,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; each further one doubles it.
    pub retry_base: Duration,
    /// Time one POST may take, connection included.
    pub timeout: Duration,
    /// Private and loopback addresses allowed (`--allow-private-workers`, development only).
    pub allow_private: bool,
}

struct Inner {
    db: Db,
    settings: CallbackSettings,
    sender: Sender,
    in_flight: Arc<Semaphore>,
}

/// Callback delivery. Cheap to clone.
#[derive(Clone)]
pub struct CallbackService {
    inner: Arc<Inner>,
}

impl CallbackService {
    pub fn new(db: Db, settings: CallbackSettings) -> DomainResult<Self> {
        let sender = Sender::new(settings.timeout, settings.allow_private).map_err(DomainError::Internal)?;
        Ok(Self { inner: Arc::new(Inner { db, settings, sender, in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }) })
    }

    /// The wait after failed attempt number `attempt` (1-based): base, 2 x base, 4 x base...
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.inner.settings.retry_base.saturating_mul(factor).min(MAX_BACKOFF)
    }

    /// How often the sweep runs: often enough that a retry is not late by much.
    fn sweep_interval(&self) -> Duration {
        self.inner.settings.retry_base.clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// A task finished: creates its delivery (if it has a callback URL) and starts what is due.
    pub async fn task_finished(&self, task_id: &str) -> DomainResult<()> {
        if self.inner.db.enqueue_callback(task_id, now_ms()).await? {
            self.start_due().await?;
        }
        Ok(())
    }

    /// Creates the deliveries of finished tasks that have none, then starts what is due.
    pub async fn sweep(&self) -> DomainResult<usize> {
        let now = now_ms();
        let since = now - i64::try_from(SWEEP_WINDOW.as_millis()).unwrap_or(i64::MAX);
        self.inner.db.enqueue_finished_callbacks(since, now, BATCH).await?;
        self.start_due().await
    }

    /// Starts the attempts due now, each in its own task (at most [`MAX_IN_FLIGHT`] at
    /// once); how many were started.
    async fn start_due(&self) -> DomainResult<usize> {
        let due = self.inner.db.due_callbacks(now_ms(), BATCH).await?;
        let mut started = 0;
        for d in due {
            let Ok(permit) = self.inner.in_flight.clone().try_acquire_owned() else { break };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.attempt(d).await {
                    tracing::warn!(error = %e, "callback attempt not recorded");
                }
                drop(permit);
            });
            started += 1;
        }
        Ok(started)
    }

    /// Claims and makes one attempt of `d`; whether this gateway made it.
    async fn attempt(&self, d: CallbackDelivery) -> DomainResult<bool> {
        let s = &self.inner.settings;
        let now = now_ms();
        let lease = now + duration_ms(s.timeout.saturating_mul(2) + Duration::from_secs(5));
        if !self.inner.db.claim_callback(&d, now, lease).await? {
            return Ok(false);
        }
        let attempt = d.attempts + 1;
        let retry_at = || (attempt < s.max_attempts).then(|| now_ms() + duration_ms(self.retry_delay(attempt)));
        let outcome = match self.inner.db.get_task(&d.task_id).await? {
            None => AttemptOutcome::Failed { status: None, error: "the task no longer exists".into(), retry_at: None },
            Some(task) => {
                let timestamp = now / 1000;
                let body = payload(&task, timestamp).to_string().into_bytes();
                match self.inner.sender.post(&d.url, &s.secret, timestamp, body).await {
                    Sent::Answered(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
                    Sent::Answered(status) => {
                        AttemptOutcome::Failed { status: Some(status), error: format!("HTTP {status}"), retry_at: retry_at() }
                    }
                    Sent::Refused(why) => AttemptOutcome::Failed { status: None, error: why, retry_at: None },
                    Sent::Failed(why) => AttemptOutcome::Failed { status: None, error: why, retry_at: retry_at() },
                }
            }
        };
        match &outcome {
            AttemptOutcome::Delivered { status } => tracing::info!(task_id = %d.task_id, attempt, status, "callback delivered"),
            AttemptOutcome::Failed { status, error, retry_at } => {
                tracing::warn!(task_id = %d.task_id, attempt, ?status, %error, retry = retry_at.is_some(), "callback attempt failed")
            }
        }
        self.inner.db.record_callback_attempt(&d.task_id, attempt, &outcome, now_ms()).await?;
        Ok(true)
    }

    /// Delivers callbacks until `stop` turns true: on each task end seen in `changes`, and on
    /// every sweep.
    pub fn spawn(
        &self,
        changes: impl Stream<Item = TaskSnapshot> + Send + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            let mut tick = tokio::time::interval(this.sweep_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let done = tokio::select! {
                    change = changes.next() => match change {
                        Some(t) if matches!(t.status, PublicStatus::Completed | PublicStatus::Failed) => this.task_finished(&t.id).await.map(drop),
                        Some(_) => Ok(()),
                        None => break,
                    },
                    _ = tick.tick() => this.sweep().await.map(drop),
                    _ = stop.changed() => break,
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, "callback delivery round failed");
                }
            }
        })
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The callback body of a finished task.
pub fn payload(task: &Task, timestamp: i64) -> Value {
    let snap = TaskSnapshot::from(&TaskView::from_task(task));
    let completed = task.status == TaskStatus::Completed;
    let mut body = json!({
        "event": if completed { "task.completed" } else { "task.failed" },
        "task_id": task.id,
        "status": task.status.as_str(),
        "timestamp": timestamp,
    });
    if completed {
        body["result"] = match &task.result {
            Some(r) => json!({
                // The seed 000 download path of the result (the client adds its API origin).
                "download_url": format!("/api/v1/download/{}", task.id),
                "width": r.width,
                "height": r.height,
                "bytes": r.bytes,
                "faces": r.faces,
                "face_restoration": r.face_restoration.as_str(),
            }),
            None => Value::Null,
        };
    } else {
        body["error"] = json!({
            "code": snap.error_code.unwrap_or_else(|| "INTERNAL_ERROR".into()),
            "message": snap.error.unwrap_or_else(|| "the task failed".into()),
        });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_doubles_from_the_base_and_is_capped() {
        let db = purrify_store::Db::connect("sqlite::memory:").await.unwrap();
        let settings = CallbackSettings {
            secret: b"k".to_vec(),
            max_attempts: 5,
            retry_base: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            allow_private: false,
        };
        let s = CallbackService::new(db, settings).unwrap();
        let waits: Vec<u64> = (1..=5).map(|a| s.retry_delay(a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160]);
        assert_eq!(s.retry_delay(40), MAX_BACKOFF, "capped, no overflow");
        assert_eq!(s.sweep_interval(), Duration::from_secs(5));
    }
}
