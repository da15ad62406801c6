//! Seed 004's postcards: one row per completed postcard task. [`Db::complete_postcard_task`]
//! completes the task and inserts its postcard in one transaction, so a postcard exists
//! exactly when its task completed: a task cancelled or expired at the last moment leaves no
//! postcard, and a postcard never belongs to a task that reads failed.

use purrify_api::JobResult;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Db, StoreError, now_ms};

/// Most postcards one list returns.
pub const MAX_LIST: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postcard {
    pub id: String,
    pub task_id: String,
    pub user_id: String,
    pub mood: String,
    pub style: String,
    pub theme: String,
    pub extra: Option<String>,
    /// The message the chat provider wrote.
    pub text: String,
    /// The postcard's own copy of its picture.
    pub image_uri: String,
    pub image_type: String,
    /// The capability key its picture is served under.
    pub media_key: String,
    pub frontend_code: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, task_id, user_id, mood, style, theme, extra, text, image_uri, image_type, media_key, frontend_code, created_at";

fn from_row(row: &AnyRow) -> Result<Postcard, StoreError> {
    Ok(Postcard {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        user_id: row.try_get("user_id")?,
        mood: row.try_get("mood")?,
        style: row.try_get("style")?,
        theme: row.try_get("theme")?,
        extra: row.try_get("extra")?,
        text: row.try_get("text")?,
        image_uri: row.try_get("image_uri")?,
        image_type: row.try_get("image_type")?,
        media_key: row.try_get("media_key")?,
        frontend_code: row.try_get("frontend_code")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Completes provider task `task_id` (processing under attempt `job_id`) with `result` and
    /// its stored files (`outputs`, JSON), and inserts `postcard`, together. `false`, with
    /// nothing written, when the task is no longer that attempt's (cancelled, expired, taken
    /// over). The task update is the provider runner's completion
    /// ([`Db::complete_provider_task`]) with the postcard riding in its transaction.
    pub async fn complete_postcard_task(
        &self,
        task_id: &str,
        job_id: &str,
        result: &JobResult,
        outputs: &str,
        postcard: &Postcard,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write(&format!("postcard:{task_id}")).await?;
        if !crate::generation::complete_provider_task_in(&mut tx, task_id, job_id, result, outputs, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let p = postcard;
        let inserted = sqlx::query(
            "INSERT INTO postcards \
             (id, task_id, user_id, mood, style, theme, extra, text, image_uri, image_type, media_key, frontend_code, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&p.id)
        .bind(task_id)
        .bind(&p.user_id)
        .bind(&p.mood)
        .bind(&p.style)
        .bind(&p.theme)
        .bind(p.extra.as_deref())
        .bind(&p.text)
        .bind(&p.image_uri)
        .bind(&p.image_type)
        .bind(&p.media_key)
        .bind(&p.frontend_code)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Err(StoreError::Duplicate(format!("the postcard of task {task_id}")));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn postcard(&self, id: &str) -> Result<Option<Postcard>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM postcards WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn postcard_of_task(&self, task_id: &str) -> Result<Option<Postcard>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM postcards WHERE task_id = $1")))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn postcard_by_media_key(&self, key: &str) -> Result<Option<Postcard>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM postcards WHERE media_key = $1")))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// `user_id`'s postcards, newest first (ties by id, descending): at most `limit` (capped
    /// at [`MAX_LIST`]), after postcard `before` of theirs when given (keyset: the next page
    /// starts after the last one seen). An unknown `before` gives an empty list.
    pub async fn user_postcards(&self, user_id: &str, before: Option<&str>, limit: u32) -> Result<Vec<Postcard>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_LIST));
        let rows = match before {
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM postcards WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
                )))
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(before) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM postcards p WHERE p.user_id = $1 AND EXISTS ( \
                       SELECT 1 FROM postcards b WHERE b.id = $2 AND b.user_id = $1 \
                         AND (p.created_at < b.created_at OR (p.created_at = b.created_at AND p.id < b.id))) \
                     ORDER BY p.created_at DESC, p.id DESC LIMIT $3"
                )))
                .bind(user_id)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(from_row).collect()
    }
}
