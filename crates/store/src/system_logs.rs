//! The gateway's own log events (seed 002's `/api/logs/system`): written in batches by the
//! gateway's log sink, listed newest first with filters, read back a day at a time for the
//! download, and deleted after the retention period in bounded batches.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::users::escape_like;
use crate::{Db, Page, PageRequest, StoreError};

/// One event to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSystemLog {
    pub id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL.
    pub level: String,
    pub target: String,
    pub message: String,
    /// JSON object of the structured fields (secrets already removed by the caller).
    pub fields: String,
    pub request_id: Option<String>,
}

/// A stored event.
pub type SystemLog = NewSystemLog;

/// Which events a list shows; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemLogFilter {
    pub level: Option<String>,
    /// From this instant (unix ms, inclusive).
    pub from: Option<i64>,
    /// Before this instant (unix ms, exclusive).
    pub until: Option<i64>,
    /// Case-insensitive text in the message, the target or the fields.
    pub search: Option<String>,
}

const COLUMNS: &str = "id, created_at, level, target, message, fields, request_id";

/// Rows per multi-row INSERT: 7 parameters each stays far below SQLite's 32,766.
pub(crate) const INSERT_CHUNK: usize = 200;

/// `($1, $2, ...), ($8, ...)`: `rows` tuples of `columns` numbered placeholders.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * columns + c + 1));
        }
        out.push(')');
    }
    out
}

/// A `%text%` pattern for `LOWER(column) LIKE $n ESCAPE '\'`.
pub(crate) fn contains_pattern(search: Option<&str>) -> Option<String> {
    search.map(str::trim).filter(|s| !s.is_empty()).map(|s| format!("%{}%", escape_like(&s.to_lowercase())))
}

fn log_from_row(row: &AnyRow) -> Result<SystemLog, StoreError> {
    Ok(SystemLog {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        level: row.try_get("level")?,
        target: row.try_get("target")?,
        message: row.try_get("message")?,
        fields: row.try_get("fields")?,
        request_id: row.try_get("request_id")?,
    })
}

impl Db {
    /// Stores `logs` (any number; written in chunks, each one statement). An id already
    /// stored is skipped, so a retried batch never doubles an event.
    pub async fn insert_system_logs(&self, logs: &[NewSystemLog]) -> Result<u64, StoreError> {
        let mut written = 0;
        for chunk in logs.chunks(INSERT_CHUNK) {
            let sql =
                format!("INSERT INTO system_logs ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING", values_placeholders(chunk.len(), 7));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(&l.id)
                    .bind(l.created_at)
                    .bind(&l.level)
                    .bind(&l.target)
                    .bind(&l.message)
                    .bind(&l.fields)
                    .bind(l.request_id.as_deref());
            }
            written += q.execute(self.pool()).await?.rows_affected();
        }
        Ok(written)
    }

    /// Events newest first.
    pub async fn list_system_logs(&self, filter: &SystemLogFilter, page: PageRequest) -> Result<Page<SystemLog>, StoreError> {
        let pattern = contains_pattern(filter.search.as_deref());
        let cond = "($1 IS NULL OR level = $1) AND ($2 IS NULL OR created_at >= $2) AND ($3 IS NULL OR created_at < $3) \
                    AND ($4 IS NULL OR LOWER(message) LIKE $4 ESCAPE '\\' OR LOWER(target) LIKE $4 ESCAPE '\\' \
                         OR LOWER(fields) LIKE $4 ESCAPE '\\')";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM system_logs WHERE {cond}")))
            .bind(filter.level.as_deref())
            .bind(filter.from)
            .bind(filter.until)
            .bind(pattern.as_deref())
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM system_logs WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(filter.level.as_deref())
        .bind(filter.from)
        .bind(filter.until)
        .bind(pattern.as_deref())
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(log_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Up to `limit` events of `[from, until)` oldest first, after the position `after`
    /// (`(created_at, id)` of the last row of the previous call): a keyset walk, so a day's
    /// download reads each row once however large the day is.
    pub async fn system_logs_between(
        &self,
        from: i64,
        until: i64,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<SystemLog>, StoreError> {
        let rows = rows_between(self, "system_logs", COLUMNS, (from, until), after, limit).await?;
        rows.iter().map(log_from_row).collect()
    }

    /// Deletes up to `limit` events older than `before` (unix ms); returns how many. Callers
    /// repeat until it returns less than `limit`, so no statement holds locks for long.
    pub async fn purge_system_logs(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        purge_before(self, "system_logs", "id", before, limit).await
    }
}

/// Rows of `table` (with `id` and `created_at` columns) in `[from, until)` oldest first,
/// after the keyset position `after`.
pub(crate) async fn rows_between(
    db: &Db,
    table: &'static str,
    columns: &'static str,
    (from, until): (i64, i64),
    after: Option<(i64, &str)>,
    limit: u32,
) -> Result<Vec<AnyRow>, StoreError> {
    let (after_at, after_id) = after.map_or((from - 1, ""), |(t, id)| (t, id));
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE created_at >= $1 AND created_at < $2 \
         AND (created_at > $3 OR (created_at = $3 AND id > $4)) ORDER BY created_at, id LIMIT $5"
    )))
    .bind(from)
    .bind(until)
    .bind(after_at)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?)
}

/// Deletes up to `limit` rows of `table` created before `before`, oldest first; `key` is the
/// table's primary key (its columns: `id`, `task_id, event_key`).
pub(crate) async fn purge_before(db: &Db, table: &'static str, key: &'static str, before: i64, limit: u32) -> Result<u64, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
    )))
    .bind(before)
    .bind(i64::from(limit))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_row() {
        assert_eq!(values_placeholders(1, 2), "($1, $2)");
        assert_eq!(values_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn search_patterns_are_escaped_and_folded() {
        assert_eq!(contains_pattern(Some(" 50%_Done ")).as_deref(), Some("%50\\%\\_done%"));
        assert_eq!(contains_pattern(Some("  ")), None);
        assert_eq!(contains_pattern(None), None);
    }
}
