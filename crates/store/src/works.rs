//! The `works` table (what users keep of their tasks); a deleted work's objects go to the
//! [`storage_deletions`](crate::storage_deletions) queue. A work's row is written once per task
//! (`task_id` is unique), follows its task's status by conditional updates, and is hidden the
//! moment it is deleted: every read here skips rows with `deleted_at` set. Deleting queues the
//! work's objects in the same transaction, so a row is never hidden without its objects
//! queued, and never purged while one is left.

use std::str::FromStr;

use purrify_api::TaskStatus;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::storage_deletions::queue_deletion_in;
use crate::time::now_ms;
use crate::users::escape_like;
use crate::{Db, StoreError};

/// What a work holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkKind {
    Image,
    Video,
}

impl WorkKind {
    pub const ALL: [WorkKind; 2] = [Self::Image, Self::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One row of `works`.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub id: String,
    pub user_id: String,
    pub task_id: String,
    pub kind: WorkKind,
    pub title: String,
    /// Its task's status; `completed` only once the file is stored.
    pub status: TaskStatus,
    pub error_message: Option<String>,
    /// The unguessable key of its media URLs.
    pub media_key: String,
    pub output_uri: Option<String>,
    pub content_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: Option<u64>,
    pub thumbnail_uri: Option<String>,
    pub thumb_attempts: u32,
    pub is_favorite: bool,
    pub is_public: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A work to record for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWork {
    pub id: String,
    pub user_id: String,
    pub task_id: String,
    pub kind: WorkKind,
    pub title: String,
    pub status: TaskStatus,
    pub error_message: Option<String>,
    pub media_key: String,
    /// The task's creation time: the work is as old as what the user asked for.
    pub created_at: i64,
}

/// A completed work's stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkFile {
    pub uri: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
}

/// Which works a list shows; every field narrows it. Deleted works are never listed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkFilter {
    pub user_id: Option<String>,
    /// Any of these statuses (empty: all).
    pub statuses: Vec<TaskStatus>,
    pub kind: Option<WorkKind>,
    /// Created at or after (unix ms).
    pub created_from: Option<i64>,
    /// Created before (unix ms).
    pub created_before: Option<i64>,
    /// Substring of the title, case-insensitive.
    pub keyword: Option<String>,
    pub favorite: Option<bool>,
}

/// An edit of a work; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkChange {
    pub title: Option<String>,
    pub is_favorite: Option<bool>,
    pub is_public: Option<bool>,
}

/// What deleting a set of works did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteWorks {
    /// All of them are hidden and their objects queued; how many objects.
    Deleted { works: usize, objects: usize },
    /// Nothing was deleted: these ids are not the user's visible works.
    Missing(Vec<String>),
}

/// A value bound to a list query.
enum Bind {
    Text(String),
    Int(i64),
}

pub(crate) const COLUMNS: &str = "id, user_id, task_id, kind, title, status, error_message, media_key, output_uri, content_type, \
     width, height, file_size, thumbnail_uri, thumb_attempts, is_favorite, is_public, created_at, updated_at";

/// Statuses of works still waiting for their task (or for their file to be stored).
const OPEN: &str = "('queued', 'processing')";

/// Largest set one delete takes; callers bound requests by it.
pub const MAX_DELETE_BATCH: usize = 100;

impl Db {
    /// Records a work for its task. `false`: the task already has one (or had one that was
    /// deleted), and nothing changed.
    pub async fn insert_work(&self, w: &NewWork) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO works (id, user_id, task_id, kind, title, status, error_message, media_key, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (task_id) DO NOTHING",
        )
        .bind(&w.id)
        .bind(&w.user_id)
        .bind(&w.task_id)
        .bind(w.kind.as_str())
        .bind(&w.title)
        .bind(w.status.as_str())
        .bind(w.error_message.as_deref())
        .bind(&w.media_key)
        .bind(w.created_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A visible work.
    pub async fn work(&self, id: &str) -> Result<Option<Work>, StoreError> {
        self.one_work("id", id).await
    }

    /// The visible work of a task.
    pub async fn work_of_task(&self, task_id: &str) -> Result<Option<Work>, StoreError> {
        self.one_work("task_id", task_id).await
    }

    /// The visible work whose media URLs carry `key`.
    pub async fn work_by_media_key(&self, key: &str) -> Result<Option<Work>, StoreError> {
        self.one_work("media_key", key).await
    }

    async fn one_work(&self, column: &'static str, value: &str) -> Result<Option<Work>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM works WHERE {column} = $1 AND deleted_at IS NULL");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value).fetch_optional(&self.pool).await?;
        row.as_ref().map(work_from_row).transpose()
    }

    /// A page of visible works, newest first.
    pub async fn works(&self, filter: &WorkFilter, page: PageRequest) -> Result<Page<Work>, StoreError> {
        // Only the filters given reach the SQL, so each query is one the indexes serve (a
        // catch-all `($1 IS NULL OR user_id = $1)` would scan every work).
        let mut clauses = vec!["deleted_at IS NULL".to_owned()];
        let mut binds: Vec<Bind> = Vec::new();
        let mut arg = |value: Bind| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(user) = &filter.user_id {
            clauses.push(format!("user_id = {}", arg(Bind::Text(user.clone()))));
        }
        if !filter.statuses.is_empty() {
            let list: Vec<String> = filter.statuses.iter().map(|s| arg(Bind::Text(s.as_str().to_owned()))).collect();
            clauses.push(format!("status IN ({})", list.join(", ")));
        }
        if let Some(kind) = filter.kind {
            clauses.push(format!("kind = {}", arg(Bind::Text(kind.as_str().to_owned()))));
        }
        if let Some(from) = filter.created_from {
            clauses.push(format!("created_at >= {}", arg(Bind::Int(from))));
        }
        if let Some(before) = filter.created_before {
            clauses.push(format!("created_at < {}", arg(Bind::Int(before))));
        }
        if let Some(k) = filter.keyword.as_deref().filter(|k| !k.is_empty()) {
            let pattern = format!("%{}%", escape_like(&k.to_lowercase()));
            clauses.push(format!("LOWER(title) LIKE {} ESCAPE '\\'", arg(Bind::Text(pattern))));
        }
        if let Some(favorite) = filter.favorite {
            clauses.push(format!("is_favorite = {}", arg(Bind::Int(i64::from(favorite)))));
        }
        let cond = clauses.join(" AND ");
        let n = binds.len() + 1;
        let bind_all = |mut q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
            for b in &binds {
                q = match b {
                    Bind::Text(t) => q.bind(t.clone()),
                    Bind::Int(i) => q.bind(*i),
                };
            }
            q
        };
        let total: i64 = bind_all(sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM works WHERE {cond}"))))
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let sql = format!("SELECT {COLUMNS} FROM works WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT ${n} OFFSET ${}", n + 1);
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql))).bind(page.limit()).bind(page.offset()).fetch_all(&self.pool).await?;
        let items = rows.iter().map(work_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Moves a visible work that is not completed to its task's `status` (a failed task that
    /// is retried takes its work along); `completed` is [`complete_work`](Self::complete_work),
    /// once the file is stored. `false`: nothing to change.
    pub async fn set_work_status(&self, task_id: &str, status: TaskStatus, error: Option<&str>) -> Result<bool, StoreError> {
        if status == TaskStatus::Completed {
            return Err(StoreError::Invalid("a work is completed with its file".into()));
        }
        let done = sqlx::query(
            "UPDATE works SET status = $2, error_message = $3, updated_at = $4 \
             WHERE task_id = $1 AND deleted_at IS NULL AND status <> 'completed' AND status <> $2",
        )
        .bind(task_id)
        .bind(status.as_str())
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Completes a visible work with its stored file, due for a thumbnail now. `false`: it
    /// was deleted or completed meanwhile.
    pub async fn complete_work(&self, id: &str, file: &WorkFile) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE works SET status = 'completed', error_message = NULL, output_uri = $2, content_type = $3, \
             width = $4, height = $5, file_size = $6, thumb_retry_at = $7, updated_at = $7 \
             WHERE id = $1 AND deleted_at IS NULL AND status <> 'completed'",
        )
        .bind(id)
        .bind(&file.uri)
        .bind(&file.content_type)
        .bind(i64::from(file.width))
        .bind(i64::from(file.height))
        .bind(i64::try_from(file.size).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a visible work's thumbnail, once. `false`: it has one, or was deleted.
    pub async fn set_work_thumbnail(&self, id: &str, uri: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE works SET thumbnail_uri = $2, thumb_retry_at = NULL, updated_at = $3 \
             WHERE id = $1 AND thumbnail_uri IS NULL AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(uri)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts a failed thumbnail attempt; `retry_at` is the next one (`None`: give up).
    pub async fn thumbnail_failed(&self, id: &str, retry_at: Option<i64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE works SET thumb_attempts = thumb_attempts + 1, thumb_retry_at = $2 WHERE id = $1 AND thumbnail_uri IS NULL")
            .bind(id)
            .bind(retry_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Visible completed works whose thumbnail is due at `now`, oldest attempt first.
    pub async fn thumbnails_due(&self, now: i64, limit: u32) -> Result<Vec<Work>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM works WHERE thumb_retry_at <= $1 AND thumbnail_uri IS NULL \
             AND deleted_at IS NULL AND status = 'completed' ORDER BY thumb_retry_at, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(work_from_row).collect()
    }

    /// Edits a visible work of `user_id` (any user's when `None`). `None`: no such work. An
    /// `is_public` change shares the work on the square or withdraws it, in the same
    /// transaction (see [`crate::square`]).
    pub async fn update_work(&self, user_id: Option<&str>, id: &str, change: &WorkChange) -> Result<Option<Work>, StoreError> {
        let now = now_ms();
        let update = sqlx::query(
            "UPDATE works SET title = COALESCE($3, title), is_favorite = COALESCE($4, is_favorite), \
             is_public = COALESCE($5, is_public), updated_at = $6 \
             WHERE id = $1 AND ($2 IS NULL OR user_id = $2) AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(user_id)
        .bind(change.title.as_deref())
        .bind(change.is_favorite.map(i64::from))
        .bind(change.is_public.map(i64::from))
        .bind(now);
        let done = match change.is_public {
            None => update.execute(&self.pool).await?,
            Some(public) => {
                let mut tx = self.begin_write(&format!("square:{id}")).await?;
                let done = update.execute(&mut *tx).await?;
                if done.rows_affected() == 1 {
                    crate::square::set_public_in(&mut tx, id, public, now).await?;
                }
                tx.commit().await?;
                done
            }
        };
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.work(id).await
    }

    /// Deletes `ids` (at most [`MAX_DELETE_BATCH`]), all or none: each must be a visible work
    /// of `user_id`. They are hidden at once and their objects queued for the sweeper, in one
    /// transaction.
    pub async fn delete_works(&self, user_id: &str, ids: &[String]) -> Result<DeleteWorks, StoreError> {
        let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() || ids.len() > MAX_DELETE_BATCH {
            return Err(StoreError::Invalid(format!("delete 1 to {MAX_DELETE_BATCH} works at a time")));
        }
        let mut tx = self.begin_write(&format!("works:{user_id}")).await?;
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id, output_uri, thumbnail_uri FROM works WHERE user_id = $1 AND deleted_at IS NULL AND id IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
        for id in &ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let output: Option<String> = r.try_get("output_uri")?;
            let thumb: Option<String> = r.try_get("thumbnail_uri")?;
            found.push((id, output, thumb));
        }
        if found.len() != ids.len() {
            let missing = ids.iter().filter(|id| !found.iter().any(|(f, _, _)| f == *id)).map(|s| (*s).to_owned()).collect();
            return Ok(DeleteWorks::Missing(missing));
        }
        let now = now_ms();
        let mut objects = 0;
        for (id, output, thumb) in &found {
            sqlx::query("UPDATE works SET deleted_at = $2, updated_at = $2 WHERE id = $1").bind(id).bind(now).execute(&mut *tx).await?;
            // Off the square with it (the work's row is locked first, as every square writer does).
            crate::square::remove_post_in(&mut tx, id).await?;
            for uri in [output, thumb].into_iter().flatten() {
                queue_deletion_in(&mut tx, uri, Some(id), now).await?;
                objects += 1;
            }
        }
        tx.commit().await?;
        Ok(DeleteWorks::Deleted { works: found.len(), objects })
    }

    /// Removes the rows of works deleted before `settled_before` whose objects are all gone
    /// and whose task the recorder can no longer see (unfinished, or finished at or after
    /// `settled_before`): a purged work's task must not be recorded again.
    pub async fn purge_deleted_works(&self, settled_before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM works WHERE deleted_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM storage_deletions d WHERE d.work_id = works.id) \
             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = works.task_id \
                             AND (t.status IN ('queued', 'processing') OR t.finished_at >= $1))",
        )
        .bind(settled_before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ids of logged-in users' tasks that have no work (deleted ones count) and that are
    /// unfinished or finished at or after `finished_since`: what the recorder missed.
    pub async fn tasks_without_work(&self, finished_since: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id FROM tasks t JOIN users u ON u.id = t.user_id \
             WHERE (t.status IN ('queued', 'processing') \
                    OR (t.status IN ('completed', 'failed', 'cancelled') AND t.finished_at >= $1)) \
             AND NOT EXISTS (SELECT 1 FROM works w WHERE w.task_id = t.id) \
             ORDER BY t.created_at, t.id LIMIT $2",
        )
        .bind(finished_since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Ids of tasks whose visible work shows another status than the task and still has to
    /// follow it: a waiting work (its task moved on, or its file is still to be stored), or a
    /// failed or cancelled one whose task changed since (it was retried). A work that failed
    /// after its task (the task's output could not be kept) is not behind.
    pub async fn works_behind_tasks(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT w.task_id FROM works w JOIN tasks t ON t.id = w.task_id \
             WHERE w.deleted_at IS NULL AND w.status <> 'completed' AND t.status <> w.status \
             AND (w.status IN {OPEN} OR t.updated_at > w.updated_at) \
             ORDER BY w.created_at, w.id LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("task_id")?)).collect()
    }
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("work {id}: {what}"))
}

pub(crate) fn work_from_row(row: &AnyRow) -> Result<Work, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let kind = WorkKind::parse(&kind).ok_or_else(|| corrupt(&id, format!("kind {kind:?}")))?;
    let status: String = row.try_get("status")?;
    let status = TaskStatus::from_str(&status).map_err(|e| corrupt(&id, e))?;
    let dim = |name: &str| -> Result<Option<u32>, StoreError> {
        let v: Option<i64> = row.try_get(name)?;
        v.map(|v| u32::try_from(v).map_err(|e| corrupt(&id, e))).transpose()
    };
    let file_size: Option<i64> = row.try_get("file_size")?;
    let attempts: i64 = row.try_get("thumb_attempts")?;
    let favorite: i64 = row.try_get("is_favorite")?;
    let public: i64 = row.try_get("is_public")?;
    Ok(Work {
        user_id: row.try_get("user_id")?,
        task_id: row.try_get("task_id")?,
        kind,
        title: row.try_get("title")?,
        status,
        error_message: row.try_get("error_message")?,
        media_key: row.try_get("media_key")?,
        output_uri: row.try_get("output_uri")?,
        content_type: row.try_get("content_type")?,
        width: dim("width")?,
        height: dim("height")?,
        file_size: file_size.map(|s| u64::try_from(s).map_err(|e| corrupt(&id, e))).transpose()?,
        thumbnail_uri: row.try_get("thumbnail_uri")?,
        thumb_attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        is_favorite: favorite != 0,
        is_public: public != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}
