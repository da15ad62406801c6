//! The road from whoever logs something to a log table: a bounded queue that never blocks the
//! caller (when it is full the row is dropped and counted), drained by one writer task per
//! table in batches of one statement. A failed batch is retried twice, then counted as lost:
//! rows are never lost silently, and `purrify_gateway_log_records_lost{table, reason}` says
//! how many were.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use purrify_store::{Db, NewSystemLog, NewUserAction, StoreError, TaskEvent};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{LogLossLabels, Metrics};

/// Rows written per statement at most.
pub const MAX_BATCH: usize = 500;

/// A row of one of the log tables.
pub trait LogRow: Send + Sync + 'static + Sized {
    const TABLE: &'static str;
    fn write<'a>(db: &'a Db, rows: &'a [Self]) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;
}

impl LogRow for NewSystemLog {
    const TABLE: &'static str = "system_logs";
    fn write<'a>(db: &'a Db, rows: &'a [Self]) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        db.insert_system_logs(rows)
    }
}

impl LogRow for NewUserAction {
    const TABLE: &'static str = "user_actions";
    fn write<'a>(db: &'a Db, rows: &'a [Self]) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        db.insert_user_actions(rows)
    }
}

impl LogRow for TaskEvent {
    const TABLE: &'static str = "task_events";
    fn write<'a>(db: &'a Db, rows: &'a [Self]) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a {
        db.insert_task_events(rows)
    }
}

/// A row id that sorts as the rows were made: the time, then a process-wide sequence (events
/// of one millisecond keep their order in pages and files), then random bits so replicas
/// sharing a database never collide.
pub fn row_id(created_at: i64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000_000;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{created_at:013}-{seq:09}-{}", &random[..12])
}

enum Msg<T> {
    Row(T),
    /// Answered once every row queued before it is written (or counted lost).
    Flush(oneshot::Sender<()>),
}

/// The sending end. Cheap to clone.
pub struct Queue<T> {
    tx: mpsc::Sender<Msg<T>>,
    dropped: Arc<AtomicU64>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), dropped: self.dropped.clone() }
    }
}

/// The receiving end, for one writer.
pub struct Feed<T> {
    rx: mpsc::Receiver<Msg<T>>,
    dropped: Arc<AtomicU64>,
}

/// A queue of `capacity` rows.
pub fn queue<T>(capacity: usize) -> (Queue<T>, Feed<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (Queue { tx, dropped: dropped.clone() }, Feed { rx, dropped })
}

impl<T> Queue<T> {
    /// Queues `row` without waiting; false (and counted) when the queue is full or its writer
    /// has stopped.
    pub fn push(&self, row: T) -> bool {
        let sent = self.tx.try_send(Msg::Row(row)).is_ok();
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Waits until every row queued before this call is written or counted lost.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Writes what arrives on `feed` until `stop` changes (then what is already queued) or every
/// sender is gone.
pub fn spawn_writer<T: LogRow>(
    db: Db,
    metrics: Arc<Metrics>,
    feed: Feed<T>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Feed { mut rx, dropped } = feed;
        let mut msgs = Vec::with_capacity(MAX_BATCH);
        loop {
            let stopping = tokio::select! {
                n = rx.recv_many(&mut msgs, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    false
                }
                _ = stop.changed() => {
                    rx.close();
                    while let Ok(m) = rx.try_recv() {
                        msgs.push(m);
                    }
                    true
                }
            };
            write_batch(&db, &metrics, std::mem::take(&mut msgs)).await;
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                metrics.log_records_lost.get_or_create(&LogLossLabels { table: T::TABLE, reason: "queue_full" }).inc_by(lost);
            }
            if stopping {
                break;
            }
        }
    })
}

async fn write_batch<T: LogRow>(db: &Db, metrics: &Metrics, msgs: Vec<Msg<T>>) {
    let mut rows = Vec::with_capacity(msgs.len());
    let mut waiters = Vec::new();
    for m in msgs {
        match m {
            Msg::Row(r) => rows.push(r),
            Msg::Flush(w) => waiters.push(w),
        }
    }
    if !rows.is_empty() {
        let mut attempt = 0;
        loop {
            match T::write(db, &rows).await {
                Ok(_) => break,
                Err(e) if attempt < 2 => {
                    attempt += 1;
                    tracing::debug!(table = T::TABLE, error = %e, attempt, "log batch not written; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    let n = u64::try_from(rows.len()).unwrap_or(u64::MAX);
                    metrics.log_records_lost.get_or_create(&LogLossLabels { table: T::TABLE, reason: "write_failed" }).inc_by(n);
                    // Not stored itself: its own target is never captured (no feedback loop).
                    tracing::warn!(table = T::TABLE, rows = n, error = %e, "log rows lost: the database refused the batch");
                    break;
                }
            }
        }
    }
    for w in waiters {
        let _ = w.send(());
    }
}
