//! Settles task holds: at once when a task's end is seen on the progress hub, and every few
//! seconds from the database, which also covers ends this replica missed (a crash between a
//! task's success and its capture, a lagging broadcast, another replica's tasks) and holds
//! whose task was never created.

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::CreditService;
use crate::domain::tasks::{PublicStatus, TaskSnapshot};

/// How often the database is swept for holds to settle.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A hold without a task row is released after this long (its upload failed after the hold).
pub const ORPHAN_AFTER: Duration = Duration::from_secs(600);

/// Runs until `stop` changes. `finished` is the hub's stream of task changes.
pub fn spawn_settler(
    credits: CreditService,
    finished: impl Stream<Item = TaskSnapshot> + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut finished = Box::pin(finished);
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => credits.sweep().await,
                next = finished.next() => {
                    let Some(t) = next else { break };
                    if matches!(t.status, PublicStatus::Completed | PublicStatus::Failed)
                        && t.owner.is_some()
                        && let Err(e) = credits.settle_task(&t.id, t.status == PublicStatus::Completed).await
                    {
                        tracing::warn!(task = %t.id, error = %e, "cannot settle a task's hold now; the sweep retries");
                    }
                }
            }
        }
    })
}

impl CreditService {
    /// One pass over the holds the database says are due.
    pub async fn sweep(&self) {
        let due = match self.db.holds_to_settle(ORPHAN_AFTER.as_millis() as i64, 500).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list holds to settle");
                return;
            }
        };
        for h in due {
            let completed = h.task_status.as_deref() == Some("completed");
            match self.settle_task(&h.task_id, completed).await {
                Ok(true) => tracing::info!(task = %h.task_id, captured = completed, "hold settled by the sweep"),
                Ok(false) => {}
                Err(e) => tracing::warn!(task = %h.task_id, error = %e, "cannot settle a hold"),
            }
        }
    }
}
