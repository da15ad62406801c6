//! Each task's timeline, from the progress hub's stream of task changes: queued, dispatched
//! (to which worker, which attempt), progress marks at 25, 50 and 75 %, and the outcome.
//! Snapshots carry no worker or attempt, so the task row is read when a task's status
//! changes (a handful of reads per task; progress updates in between cost a map lookup).
//!
//! Every event has a key unique within its task (see the migration), so what two replicas
//! both see, or what this listener derives twice, is stored once.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use purrify_api::TaskStatus;
use purrify_store::{Db, Task, TaskEvent};
use tokio::sync::watch;

use super::batch::Queue;
use crate::domain::tasks::{PublicStatus, TaskSnapshot};

/// Tasks followed at once at most; past that the map starts over (events seen again are
/// deduplicated by their keys, so forgetting costs a few reads, never a wrong timeline).
const MAX_FOLLOWED: usize = 50_000;

/// What the listener remembers of a task between snapshots.
#[derive(Debug, Clone, Copy)]
struct Seen {
    status: PublicStatus,
    attempt: u32,
    /// Progress marks (1 = 25 %, 2 = 50 %, 3 = 75 %) recorded for this attempt.
    marks: u8,
}

fn event(task: &Task, key: String, kind: &str, at: i64) -> TaskEvent {
    TaskEvent {
        task_id: task.id.clone(),
        event_key: key,
        kind: kind.to_owned(),
        created_at: at,
        attempt: i64::from(task.attempts),
        worker: None,
        progress: None,
        error_code: None,
        message: None,
    }
}

/// The events a task row proves happened: queued at creation, the current attempt's dispatch
/// once it started, and the outcome once finished. Used when a task's status changes, and
/// for timelines of tasks the listener never saw.
pub fn events_from_row(task: &Task, now: i64) -> Vec<TaskEvent> {
    let mut out = vec![TaskEvent { attempt: 0, ..event(task, "queued:0".into(), "queued", task.created_at) }];
    let worker = task.worker.clone();
    match task.status {
        TaskStatus::Queued if task.attempts > 0 => {
            out.push(event(task, format!("queued:{}", task.attempts), "queued", now));
        }
        TaskStatus::Queued => {}
        TaskStatus::Processing => {
            out.push(TaskEvent { worker, ..event(task, format!("dispatched:{}", task.attempts), "dispatched", now) });
        }
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
            let finished = task.finished_at.unwrap_or(now);
            if task.attempts > 0 {
                let started = task.started_at.unwrap_or(finished).min(finished);
                out.push(TaskEvent {
                    worker: worker.clone(),
                    ..event(task, format!("dispatched:{}", task.attempts), "dispatched", started)
                });
            }
            let (key, kind) = match task.status {
                TaskStatus::Completed => ("completed".to_owned(), "completed"),
                TaskStatus::Cancelled => ("cancelled".to_owned(), "cancelled"),
                _ => (format!("failed:{}", task.attempts), "failed"),
            };
            let mut end = event(task, key, kind, finished);
            if task.status == TaskStatus::Completed {
                end.progress = Some(1.0);
            }
            end.worker = worker;
            end.error_code = task.error_code.clone();
            end.message = task.error_message.clone();
            out.push(end);
        }
    }
    out
}

/// The outcome a finished snapshot reports, for a row that does not show it yet.
fn outcome_from_snapshot(task: &Task, s: &TaskSnapshot, now: i64) -> Option<TaskEvent> {
    let (key, kind) = match s.status {
        PublicStatus::Completed => ("completed".to_owned(), "completed"),
        PublicStatus::Failed if s.error_code.as_deref() == Some("CANCELLED") => ("cancelled".to_owned(), "cancelled"),
        PublicStatus::Failed => (format!("failed:{}", task.attempts), "failed"),
        PublicStatus::Queued | PublicStatus::Processing => return None,
    };
    let mut end = event(task, key, kind, now);
    end.worker = task.worker.clone();
    end.progress = (s.status == PublicStatus::Completed).then_some(1.0);
    end.error_code = s.error_code.clone();
    end.message = s.error.clone();
    Some(end)
}

/// Where an event stands in its task's story: the queueing before attempt n+1, attempt n's
/// dispatch, its progress marks, and last the outcome. Times alone cannot say it: an event is
/// stamped when a gateway observes it, and a busy listener may observe a progress mark after
/// the row already says the task finished.
pub fn sequence(e: &TaskEvent) -> (i64, u8, u32, i64) {
    match e.kind.as_str() {
        "queued" => (e.attempt + 1, 0, 0, e.created_at),
        "dispatched" => (e.attempt, 1, 0, e.created_at),
        "progress" => (e.attempt, 2, (e.progress.unwrap_or(0.0) * 100.0).round() as u32, e.created_at),
        _ => (i64::MAX, 3, 0, e.created_at),
    }
}

/// Progress marks crossed by `progress` (0..=1) beyond those already recorded: 1..=3.
fn marks_crossed(progress: f64, recorded: u8) -> std::ops::RangeInclusive<u8> {
    let reached = ((progress.clamp(0.0, 1.0) * 4.0).floor() as u8).min(3);
    (recorded + 1)..=reached
}

/// Follows `changes` until `stop` changes, queueing timeline events.
pub fn spawn_timeline(
    db: Db,
    queue: Queue<TaskEvent>,
    changes: impl Stream<Item = TaskSnapshot> + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = Box::pin(changes);
        let mut followed: HashMap<String, Seen> = HashMap::new();
        loop {
            let snapshot = tokio::select! {
                _ = stop.changed() => break,
                next = changes.next() => match next {
                    Some(s) => s,
                    None => break,
                },
            };
            observe(&db, &queue, &mut followed, snapshot).await;
        }
    })
}

async fn observe(db: &Db, queue: &Queue<TaskEvent>, followed: &mut HashMap<String, Seen>, s: TaskSnapshot) {
    let known = followed.get(&s.id).copied();
    let seen = match known {
        Some(k) if k.status == s.status => k,
        _ => {
            let task = match db.get_task(&s.id).await {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(task = %s.id, error = %e, "task timeline: cannot read the task");
                    return;
                }
            };
            let now = purrify_store::now_ms();
            for e in events_from_row(&task, now) {
                queue.push(e);
            }
            if !task.status.is_finished()
                && let Some(end) = outcome_from_snapshot(&task, &s, now)
            {
                // The stream saw the end before the row says it (a mirror that lags the
                // custom resource): the snapshot is the witness.
                queue.push(end);
            }
            let same_attempt = known.filter(|k| k.attempt == task.attempts);
            Seen { status: s.status, attempt: task.attempts, marks: same_attempt.map_or(0, |k| k.marks) }
        }
    };
    if matches!(s.status, PublicStatus::Completed | PublicStatus::Failed) {
        followed.remove(&s.id);
        return;
    }
    let mut seen = seen;
    if s.status == PublicStatus::Processing {
        let now = purrify_store::now_ms();
        for mark in marks_crossed(s.progress, seen.marks) {
            let pct = u32::from(mark) * 25;
            queue.push(TaskEvent {
                task_id: s.id.clone(),
                event_key: format!("progress:{}:{pct}", seen.attempt),
                kind: "progress".into(),
                created_at: now,
                attempt: i64::from(seen.attempt),
                worker: None,
                progress: Some(f64::from(pct) / 100.0),
                error_code: None,
                message: None,
            });
            seen.marks = mark;
        }
    }
    if followed.len() >= MAX_FOLLOWED && !followed.contains_key(&s.id) {
        followed.clear();
    }
    followed.insert(s.id, seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_follow_the_story_not_the_clock() {
        let e = |kind: &str, key: &str, attempt: i64, at: i64, progress: Option<f64>| TaskEvent {
            task_id: "t".into(),
            event_key: key.into(),
            kind: kind.into(),
            created_at: at,
            attempt,
            worker: None,
            progress,
            error_code: None,
            message: None,
        };
        let mut events = [
            e("completed", "completed", 2, 50, Some(1.0)),
            e("progress", "progress:2:50", 2, 60, Some(0.5)),
            e("queued", "queued:1", 1, 30, None),
            e("dispatched", "dispatched:2", 2, 40, None),
            e("dispatched", "dispatched:1", 1, 20, None),
            e("queued", "queued:0", 0, 10, None),
        ];
        events.sort_by_key(sequence);
        let keys: Vec<&str> = events.iter().map(|x| x.event_key.as_str()).collect();
        assert_eq!(keys, ["queued:0", "dispatched:1", "queued:1", "dispatched:2", "progress:2:50", "completed"]);
    }

    #[test]
    fn marks_are_crossed_once_each() {
        assert_eq!(marks_crossed(0.1, 0).collect::<Vec<_>>(), Vec::<u8>::new());
        assert_eq!(marks_crossed(0.6, 0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(marks_crossed(0.6, 2).collect::<Vec<_>>(), Vec::<u8>::new());
        assert_eq!(marks_crossed(1.0, 2).collect::<Vec<_>>(), vec![3]);
    }
}
