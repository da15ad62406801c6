//! The `uploads` table (seeds 001 and 003): files users uploaded, each owned by one user and
//! counted against that user's storage quota. The insert that checks the quota runs under the
//! user's write lock ([`Db::begin_write`]), so concurrent uploads cannot overrun it together.
//! Deleting one queues its objects in [`storage_deletions`](crate::storage_deletions).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::storage_deletions::queue_deletion_in;
use crate::time::now_ms;
use crate::{Db, StoreError};

/// What an upload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadKind {
    Image,
    Video,
}

impl UploadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadKind::Image => "image",
            UploadKind::Video => "video",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image" => Some(UploadKind::Image),
            "video" => Some(UploadKind::Video),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub user_id: String,
    pub uri: String,
    pub thumbnail_uri: Option<String>,
    pub file_name: String,
    pub content_type: String,
    pub kind: UploadKind,
    /// Size of the file.
    pub bytes: u64,
    /// File plus thumbnail: what the quota counts.
    pub stored_bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, user_id, uri, thumbnail_uri, file_name, content_type, kind, bytes, stored_bytes, width, height, duration_ms, created_at";

fn unsigned<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<Option<T>, StoreError> {
    let v: Option<i64> = row.try_get(column)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("uploads.{column} = {v}")))).transpose()
}

fn from_row(row: &AnyRow) -> Result<Upload, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Upload {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        uri: row.try_get("uri")?,
        thumbnail_uri: row.try_get("thumbnail_uri")?,
        file_name: row.try_get("file_name")?,
        content_type: row.try_get("content_type")?,
        kind: UploadKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("uploads.kind = {kind:?}")))?,
        bytes: unsigned(row, "bytes")?.unwrap_or(0),
        stored_bytes: unsigned(row, "stored_bytes")?.unwrap_or(0),
        width: unsigned(row, "width")?,
        height: unsigned(row, "height")?,
        duration_ms: unsigned(row, "duration_ms")?,
        created_at: row.try_get("created_at")?,
    })
}

fn signed(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is out of range")))
}

impl Db {
    /// Inserts uploads of one user together, provided the user's stored bytes plus theirs
    /// stay within `quota_bytes`; [`StoreError::LimitReached`] (and nothing inserted)
    /// otherwise. All rows must belong to one user.
    pub async fn insert_uploads_within_quota(&self, rows: &[Upload], quota_bytes: u64) -> Result<(), StoreError> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let user = &first.user_id;
        if rows.iter().any(|r| &r.user_id != user) {
            return Err(StoreError::Invalid("uploads of several users in one insert".into()));
        }
        let adding = rows.iter().try_fold(0u64, |sum, r| sum.checked_add(r.stored_bytes));
        let adding = adding.ok_or_else(|| StoreError::Invalid("upload sizes overflow".into()))?;
        let mut tx = self.begin_write(&format!("uploads:{user}")).await?;
        let used: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS used FROM uploads WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?
            .try_get("used")?;
        let used = u64::try_from(used).unwrap_or(0);
        if used.saturating_add(adding) > quota_bytes {
            return Err(StoreError::LimitReached(format!("storage quota: {used} of {quota_bytes} bytes used, {adding} more requested")));
        }
        for r in rows {
            let done = sqlx::query(
                "INSERT INTO uploads (id, user_id, uri, thumbnail_uri, file_name, content_type, kind, bytes, stored_bytes, \
                 width, height, duration_ms, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&r.id)
            .bind(&r.user_id)
            .bind(&r.uri)
            .bind(r.thumbnail_uri.as_deref())
            .bind(&r.file_name)
            .bind(&r.content_type)
            .bind(r.kind.as_str())
            .bind(signed(r.bytes, "bytes")?)
            .bind(signed(r.stored_bytes, "stored_bytes")?)
            .bind(r.width.map(i64::from))
            .bind(r.height.map(i64::from))
            .bind(r.duration_ms.map(|d| signed(d, "duration_ms")).transpose()?)
            .bind(r.created_at)
            .execute(&mut *tx)
            .await;
            match done {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::Duplicate(format!("upload {}", r.id))),
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bytes a user's uploads occupy (files and thumbnails).
    pub async fn upload_bytes_used(&self, user_id: &str) -> Result<u64, StoreError> {
        let used: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT) AS used FROM uploads WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("used")?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// An upload by id, whoever owns it (capability-URL reads).
    pub async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM uploads WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// An upload by id if `user_id` owns it.
    pub async fn user_upload(&self, user_id: &str, id: &str) -> Result<Option<Upload>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM uploads WHERE id = $1 AND user_id = $2")))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A user's uploads, newest first, at most `limit`.
    pub async fn user_uploads(&self, user_id: &str, limit: u32) -> Result<Vec<Upload>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM uploads WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        )))
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes `user_id`'s upload `id` and queues its file and thumbnail for deletion from
    /// storage, in one transaction: the row is gone (and its bytes off the quota) at once, and
    /// its objects are never left unreferenced without being queued. Returns the row it was;
    /// `None` when there is no such upload of that user.
    pub async fn delete_user_upload(&self, user_id: &str, id: &str) -> Result<Option<Upload>, StoreError> {
        let mut tx = self.begin_write(&format!("uploads:{user_id}")).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM uploads WHERE id = $1 AND user_id = $2")))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(upload) = row.as_ref().map(from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM uploads WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&mut *tx).await?;
        let now = now_ms();
        for uri in std::iter::once(&upload.uri).chain(&upload.thumbnail_uri) {
            queue_deletion_in(&mut tx, uri, None, now).await?;
        }
        tx.commit().await?;
        Ok(Some(upload))
    }
}
