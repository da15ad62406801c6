//! The `storage_deletions` table: storage objects still to be deleted, whoever owned them (a
//! deleted work's file and thumbnail, a deleted upload's, a copy nobody references). Owners
//! queue their objects in the same transaction as the row change that orphans them
//! ([`queue_deletion_in`]), so no object is ever unreferenced without being queued; the
//! gateway's sweeper deletes them, recording failures for a later retry, and a row leaves the
//! queue only once its object is gone.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::time::now_ms;
use crate::{Db, StoreError};

/// A storage object waiting to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    pub uri: String,
    /// The deleted work it belonged to (its row is purged once none is left); `None` for
    /// objects of anything else.
    pub work_id: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Queues `uri` for deletion, due at `now`, inside the caller's transaction. An object queued
/// already stays queued once.
pub(crate) async fn queue_deletion_in(
    conn: &mut sqlx::AnyConnection,
    uri: &str,
    work_id: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO storage_deletions (uri, work_id, attempts, next_attempt_at, created_at) VALUES ($1, $2, 0, $3, $3) \
         ON CONFLICT (uri) DO NOTHING",
    )
    .bind(uri)
    .bind(work_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    /// Queues an object for deletion on its own (one that no row references: a deleted work's
    /// late copy, an upload refused after it was stored whose direct delete failed).
    pub async fn queue_deletion(&self, uri: &str, work_id: Option<&str>) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        queue_deletion_in(&mut conn, uri, work_id, now_ms()).await
    }

    /// Deletions due at `now`, longest waiting first.
    pub async fn deletions_due(&self, now: i64, limit: u32) -> Result<Vec<PendingDeletion>, StoreError> {
        let rows = sqlx::query(
            "SELECT uri, work_id, attempts, next_attempt_at, last_error FROM storage_deletions \
             WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, uri LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deletion_from_row).collect()
    }

    /// Every pending deletion (tests, admin views).
    pub async fn pending_deletions(&self) -> Result<Vec<PendingDeletion>, StoreError> {
        self.deletions_due(i64::MAX, u32::MAX).await
    }

    /// The object is gone.
    pub async fn deletion_done(&self, uri: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM storage_deletions WHERE uri = $1").bind(uri).execute(&self.pool).await?;
        Ok(())
    }

    /// Deleting the object failed; try again at `retry_at`.
    pub async fn deletion_failed(&self, uri: &str, retry_at: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE storage_deletions SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE uri = $1")
            .bind(uri)
            .bind(retry_at)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn deletion_from_row(row: &AnyRow) -> Result<PendingDeletion, StoreError> {
    let attempts: i64 = row.try_get("attempts")?;
    Ok(PendingDeletion {
        uri: row.try_get("uri")?,
        work_id: row.try_get("work_id")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
    })
}
