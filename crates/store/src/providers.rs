//! The `providers` table: outside AI services an admin configures (built-in rows are
//! ensured at start-up, custom ones added through the API). The API key is stored sealed by
//! the caller (the gateway's key box); this module never sees it in the clear.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::time::now_ms;
use crate::{Db, StoreError};

/// One row of `providers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRow {
    pub id: String,
    /// image, video, assistant or workflow.
    pub kind: String,
    pub name: String,
    /// purrify, openai, stability, runway or webhook.
    pub protocol: String,
    pub base_url: String,
    /// JSON list of model names.
    pub models: String,
    pub enabled: bool,
    pub fallback: Option<String>,
    /// Sealed API key (nonce and ciphertext, base64).
    pub api_key_sealed: Option<String>,
    /// JSON object.
    pub options: String,
    pub builtin: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An edit of a provider; `None` leaves a field as it is. `fallback: Some(None)` clears it,
/// `api_key_sealed: Some(None)` removes the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderChange {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub models: Option<String>,
    pub enabled: Option<bool>,
    pub fallback: Option<Option<String>>,
    pub api_key_sealed: Option<Option<String>>,
    pub options: Option<String>,
}

const COLUMNS: &str =
    "id, kind, name, protocol, base_url, models, enabled, fallback, api_key_sealed, options, builtin, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ProviderRow, StoreError> {
    Ok(ProviderRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        protocol: row.try_get("protocol")?,
        base_url: row.try_get("base_url")?,
        models: row.try_get("models")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        fallback: row.try_get("fallback")?,
        api_key_sealed: row.try_get("api_key_sealed")?,
        options: row.try_get("options")?,
        builtin: row.try_get::<i64, _>("builtin")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Db {
    /// Inserts a provider; [`StoreError::Duplicate`] when the id is taken.
    pub async fn insert_provider(&self, p: &ProviderRow) -> Result<(), StoreError> {
        self.write_provider(p, false).await.map(|_| ())
    }

    /// Inserts a built-in provider unless a row with its id exists (an admin's edits of it
    /// survive restarts). Returns whether it was inserted.
    pub async fn ensure_provider(&self, p: &ProviderRow) -> Result<bool, StoreError> {
        self.write_provider(p, true).await
    }

    async fn write_provider(&self, p: &ProviderRow, if_absent: bool) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO providers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12){}",
            if if_absent { " ON CONFLICT (id) DO NOTHING" } else { "" }
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&p.id)
            .bind(&p.kind)
            .bind(&p.name)
            .bind(&p.protocol)
            .bind(&p.base_url)
            .bind(&p.models)
            .bind(i64::from(p.enabled))
            .bind(p.fallback.as_deref())
            .bind(p.api_key_sealed.as_deref())
            .bind(&p.options)
            .bind(i64::from(p.builtin))
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match done {
            Ok(d) => Ok(d.rows_affected() == 1),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Duplicate(format!("provider {}", p.id))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn provider(&self, id: &str) -> Result<Option<ProviderRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM providers WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every provider, built-in first, then by kind and id.
    pub async fn providers(&self) -> Result<Vec<ProviderRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM providers ORDER BY builtin DESC, kind, id")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Applies `change` to a provider in one statement; `None` when there is no such id.
    pub async fn update_provider(&self, id: &str, change: &ProviderChange) -> Result<Option<ProviderRow>, StoreError> {
        let done = sqlx::query(
            "UPDATE providers SET \
               name = COALESCE($2, name), base_url = COALESCE($3, base_url), models = COALESCE($4, models), \
               enabled = COALESCE($5, enabled), \
               fallback = CASE WHEN $6 = 1 THEN $7 ELSE fallback END, \
               api_key_sealed = CASE WHEN $8 = 1 THEN $9 ELSE api_key_sealed END, \
               options = COALESCE($10, options), updated_at = $11 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(change.name.as_deref())
        .bind(change.base_url.as_deref())
        .bind(change.models.as_deref())
        .bind(change.enabled.map(i64::from))
        .bind(i64::from(change.fallback.is_some()))
        .bind(change.fallback.clone().flatten())
        .bind(i64::from(change.api_key_sealed.is_some()))
        .bind(change.api_key_sealed.clone().flatten())
        .bind(change.options.as_deref())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.provider(id).await
    }
}
