//! Seed 002's logs: the gateway's own events (`capture`), each task's timeline (`timeline`),
//! and reading them back with what users did (`domain::audit`): filtered pages, one task's
//! timeline for its owner or an admin, a day's file, and retention.

pub mod batch;
pub mod capture;
pub mod redact;
pub mod timeline;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{NaiveDate, NaiveTime};
use futures::Stream;
use purrify_api::TaskStatus;
use purrify_store::Db;
pub use purrify_store::{Page, PageRequest, SystemLog, SystemLogFilter, TaskEvent, UserAction, UserActionFilter};
use tokio::sync::watch;

pub use capture::{SystemLogCapture, SystemLogFeed, system_log_channel};

use self::batch::{Queue, queue, spawn_writer};
use crate::domain::accounts::Principal;
use crate::domain::tasks::TaskSnapshot;
use crate::domain::{DomainError, DomainResult};
use crate::metrics::Metrics;

/// Rows deleted per statement by the retention sweep, and statements per table per sweep.
const PURGE_BATCH: u32 = 1000;
const PURGE_ROUNDS: u32 = 100;
/// Rows read per query while streaming a day's file.
const DOWNLOAD_BATCH: u32 = 1000;
/// Events shown of one task at most.
const MAX_TIMELINE: u32 = 1000;

/// Seed 002's level words.
pub const LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    /// Rows older than this are deleted.
    pub retention: Duration,
}

/// One of the day files `/api/logs/download` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    System,
    UserActions,
}

impl LogKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Self::System),
            "user_actions" => Some(Self::UserActions),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::UserActions => "user_actions",
        }
    }
}

/// A task's timeline.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub task_id: String,
    pub status: TaskStatus,
    pub events: Vec<TaskEvent>,
}

/// Reading and keeping the logs. Cheap to clone.
#[derive(Clone)]
pub struct LogService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    metrics: Arc<Metrics>,
    settings: LogSettings,
    timeline: Queue<TaskEvent>,
    stop: watch::Receiver<bool>,
}

/// `s` as a day (`2024-01-15`) or an instant (RFC 3339), in unix ms: the day's first
/// millisecond, or with `end` the first millisecond after the day (an instant: the next ms).
pub fn parse_date(field: &'static str, s: &str, end: bool) -> DomainResult<i64> {
    let s = s.trim();
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = if end { day.succ_opt().ok_or_else(|| DomainError::invalid(field, "is out of range"))? } else { day };
        return Ok(day.and_time(NaiveTime::MIN).and_utc().timestamp_millis());
    }
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => Ok(t.timestamp_millis() + i64::from(end)),
        Err(_) => Err(DomainError::invalid(field, format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))),
    }
}

/// A level word in any case, as stored.
pub fn parse_level(s: &str) -> DomainResult<&'static str> {
    let upper = s.trim().to_ascii_uppercase();
    let upper = if upper == "WARN" { "WARNING".to_owned() } else { upper };
    LEVELS
        .iter()
        .copied()
        .find(|l| *l == upper)
        .ok_or_else(|| DomainError::invalid("level", format!("{s:?} is not one of {}", LEVELS.join(", "))))
}

impl LogService {
    /// The service, its timeline listener on `changes` and their writer; the loops run until
    /// `stop` changes.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        settings: LogSettings,
        changes: impl Stream<Item = TaskSnapshot> + Send + 'static,
        stop: watch::Receiver<bool>,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (timeline, feed) = queue(capture::CAPACITY);
        let writer = spawn_writer(db.clone(), metrics.clone(), feed, stop.clone());
        let listener = timeline::spawn_timeline(db.clone(), timeline.clone(), changes, stop.clone());
        (Self { inner: Arc::new(Inner { db, metrics, settings, timeline, stop }) }, vec![writer, listener])
    }

    /// Stores what `feed`'s capture layer captures, until the stack stops.
    pub fn attach_system_logs(&self, feed: SystemLogFeed) -> tokio::task::JoinHandle<()> {
        spawn_writer(self.inner.db.clone(), self.inner.metrics.clone(), feed, self.inner.stop.clone())
    }

    pub async fn system_logs(&self, filter: &SystemLogFilter, page: PageRequest) -> DomainResult<Page<SystemLog>> {
        check_range(filter.from, filter.until)?;
        Ok(self.inner.db.list_system_logs(filter, page).await?)
    }

    pub async fn user_actions(&self, filter: &UserActionFilter, page: PageRequest) -> DomainResult<Page<UserAction>> {
        check_range(filter.from, filter.until)?;
        Ok(self.inner.db.list_user_actions(filter, page).await?)
    }

    /// The task's timeline, for its owner or an admin; anyone else is told it does not exist.
    /// A task the listener never saw (finished before this gateway started, say) gets the
    /// events its row proves.
    pub async fn task_timeline(&self, who: &Principal, task_id: &str) -> DomainResult<Timeline> {
        let not_found = || DomainError::NotFound(format!("no task {task_id}"));
        if !crate::domain::tasks::valid_task_id(task_id) {
            return Err(not_found());
        }
        let task = self.inner.db.get_task(task_id).await?.ok_or_else(not_found)?;
        if !who.is_admin() && task.user_id.as_deref() != Some(who.user_id.as_str()) {
            return Err(not_found());
        }
        let mut events = self.inner.db.task_events(task_id, MAX_TIMELINE).await?;
        if events.is_empty() {
            events = timeline::events_from_row(&task, purrify_store::now_ms());
        }
        events.sort_by_key(timeline::sequence);
        Ok(Timeline { task_id: task.id, status: task.status, events })
    }

    /// Waits until the timeline events queued so far are stored.
    pub async fn flush_timeline(&self) {
        self.inner.timeline.flush().await;
    }

    /// The day's rows of `kind` as text lines, oldest first, read in batches as the stream
    /// is consumed.
    pub fn download(&self, kind: LogKind, day: NaiveDate) -> impl Stream<Item = Result<Bytes, DomainError>> + Send + 'static {
        let db = self.inner.db.clone();
        let from = day.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
        let until = from + 86_400_000;
        async_stream::try_stream! {
            let mut after: Option<(i64, String)> = None;
            loop {
                let position = after.as_ref().map(|(t, id)| (*t, id.as_str()));
                let (chunk, last) = match kind {
                    LogKind::System => {
                        let rows = db.system_logs_between(from, until, position, DOWNLOAD_BATCH).await?;
                        let last = rows.last().map(|r| (r.created_at, r.id.clone()));
                        (rows.iter().map(system_line).collect::<String>(), last)
                    }
                    LogKind::UserActions => {
                        let rows = db.user_actions_between(from, until, position, DOWNLOAD_BATCH).await?;
                        let last = rows.last().map(|r| (r.created_at, r.id.clone()));
                        (rows.iter().map(action_line).collect::<String>(), last)
                    }
                };
                let Some(last) = last else { break };
                after = Some(last);
                yield Bytes::from(chunk);
            }
        }
    }

    /// Deletes rows past the retention period, a bounded batch per statement.
    pub async fn housekeeping(&self) {
        let before = purrify_store::now_ms() - purrify_store::duration_ms(self.inner.settings.retention);
        let db = &self.inner.db;
        for table in ["system_logs", "user_actions", "task_events"] {
            let mut deleted = 0;
            for _ in 0..PURGE_ROUNDS {
                let n = match table {
                    "system_logs" => db.purge_system_logs(before, PURGE_BATCH).await,
                    "user_actions" => db.purge_user_actions(before, PURGE_BATCH).await,
                    _ => db.purge_task_events(before, PURGE_BATCH).await,
                };
                match n {
                    Ok(n) => {
                        deleted += n;
                        if n < u64::from(PURGE_BATCH) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(table, error = %e, "log retention: delete failed; the next sweep retries");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::debug!(table, deleted, "log retention: old rows deleted");
            }
        }
    }
}

fn check_range(from: Option<i64>, until: Option<i64>) -> DomainResult<()> {
    match (from, until) {
        (Some(f), Some(u)) if f >= u => Err(DomainError::invalid("end_date", "is before start_date")),
        _ => Ok(()),
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `2024-01-15T10:30:00.123Z INFO purrify_gateway::x: message {"field":1} request_id=...`
fn system_line(l: &SystemLog) -> String {
    let mut line = format!("{} {} {}: {}", iso(l.created_at), l.level, l.target, l.message.replace('\n', "\\n"));
    if l.fields != "{}" {
        line.push(' ');
        line.push_str(&l.fields);
    }
    if let Some(r) = &l.request_id {
        line.push_str(" request_id=");
        line.push_str(r);
    }
    line.push('\n');
    line
}

/// `2024-01-15T10:30:00.123Z admin_update user=... PUT /api/admin/users/{user_id} target=... status=200 addr=... {detail}`
fn action_line(a: &UserAction) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{} {} user={} {} {} target={} status={} addr={}",
        iso(a.created_at),
        a.action,
        opt(&a.user_id),
        opt(&a.method),
        opt(&a.route),
        opt(&a.target_id),
        a.status.map_or_else(|| "-".into(), |s| s.to_string()),
        opt(&a.client_addr),
    );
    if a.detail != "{}" {
        line.push(' ');
        line.push_str(&a.detail);
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_or_instants() {
        assert_eq!(parse_date("start_date", "2024-01-15", false).unwrap(), 1_705_276_800_000);
        assert_eq!(parse_date("end_date", "2024-01-15", true).unwrap(), 1_705_363_200_000, "the end of the day");
        assert_eq!(parse_date("start_date", "2024-01-15T10:30:00Z", false).unwrap(), 1_705_314_600_000);
        assert!(parse_date("start_date", "15/01/2024", false).is_err());
    }

    #[test]
    fn levels_are_seed_words() {
        assert_eq!(parse_level("error").unwrap(), "ERROR");
        assert_eq!(parse_level("warn").unwrap(), "WARNING");
        assert!(parse_level("FATAL").is_err());
    }
}
