//! What users did (seed 002's `/api/logs/user-actions`): logins, admin actions, payments,
//! deletions and every other authenticated write, written in batches by the gateway's audit
//! log, listed newest first, read back a day at a time, and deleted after the retention period.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::system_logs::{INSERT_CHUNK, contains_pattern, purge_before, rows_between, values_placeholders};
use crate::{Db, Page, PageRequest, StoreError};

/// One action to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUserAction {
    pub id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub user_id: Option<String>,
    pub action: String,
    pub method: Option<String>,
    /// The route template, never the raw path.
    pub route: Option<String>,
    pub target_id: Option<String>,
    pub status: Option<i64>,
    pub client_addr: Option<String>,
    /// JSON object (secrets already removed by the caller).
    pub detail: String,
    pub request_id: Option<String>,
}

/// A stored action.
pub type UserAction = NewUserAction;

/// Which actions a list shows; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserActionFilter {
    pub user_id: Option<String>,
    pub action: Option<String>,
    /// From this instant (unix ms, inclusive).
    pub from: Option<i64>,
    /// Before this instant (unix ms, exclusive).
    pub until: Option<i64>,
    /// Case-insensitive text in the route or the details.
    pub search: Option<String>,
}

const COLUMNS: &str = "id, created_at, user_id, action, method, route, target_id, status, client_addr, detail, request_id";

fn action_from_row(row: &AnyRow) -> Result<UserAction, StoreError> {
    Ok(UserAction {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        user_id: row.try_get("user_id")?,
        action: row.try_get("action")?,
        method: row.try_get("method")?,
        route: row.try_get("route")?,
        target_id: row.try_get("target_id")?,
        status: row.try_get("status")?,
        client_addr: row.try_get("client_addr")?,
        detail: row.try_get("detail")?,
        request_id: row.try_get("request_id")?,
    })
}

impl Db {
    /// Stores `actions` in chunks of one statement each; an id already stored is skipped, so
    /// a retried batch never doubles an action.
    pub async fn insert_user_actions(&self, actions: &[NewUserAction]) -> Result<u64, StoreError> {
        let mut written = 0;
        for chunk in actions.chunks(INSERT_CHUNK) {
            let sql =
                format!("INSERT INTO user_actions ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING", values_placeholders(chunk.len(), 11));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                q = q
                    .bind(&a.id)
                    .bind(a.created_at)
                    .bind(a.user_id.as_deref())
                    .bind(&a.action)
                    .bind(a.method.as_deref())
                    .bind(a.route.as_deref())
                    .bind(a.target_id.as_deref())
                    .bind(a.status)
                    .bind(a.client_addr.as_deref())
                    .bind(&a.detail)
                    .bind(a.request_id.as_deref());
            }
            written += q.execute(self.pool()).await?.rows_affected();
        }
        Ok(written)
    }

    /// Actions newest first.
    pub async fn list_user_actions(&self, filter: &UserActionFilter, page: PageRequest) -> Result<Page<UserAction>, StoreError> {
        let pattern = contains_pattern(filter.search.as_deref());
        let cond = "($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR created_at >= $3) \
                    AND ($4 IS NULL OR created_at < $4) \
                    AND ($5 IS NULL OR LOWER(route) LIKE $5 ESCAPE '\\' OR LOWER(detail) LIKE $5 ESCAPE '\\')";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM user_actions WHERE {cond}")))
            .bind(filter.user_id.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.from)
            .bind(filter.until)
            .bind(pattern.as_deref())
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM user_actions WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
        )))
        .bind(filter.user_id.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.from)
        .bind(filter.until)
        .bind(pattern.as_deref())
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(action_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Up to `limit` actions of `[from, until)` oldest first, after `(created_at, id)` of the
    /// previous call's last row (a keyset walk, as [`Db::system_logs_between`]).
    pub async fn user_actions_between(
        &self,
        from: i64,
        until: i64,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<UserAction>, StoreError> {
        let rows = rows_between(self, "user_actions", COLUMNS, (from, until), after, limit).await?;
        rows.iter().map(action_from_row).collect()
    }

    /// Deletes up to `limit` actions older than `before` (unix ms); returns how many.
    pub async fn purge_user_actions(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        purge_before(self, "user_actions", "id", before, limit).await
    }
}
