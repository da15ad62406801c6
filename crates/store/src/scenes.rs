//! The `scenes` table (seed 001): named presets of task parameters that the mini-program shows
//! as cards with a cover image. A task made from a scene runs its parameters at its price (or
//! the kind's price when the scene names none).

use purrify_api::EnhanceParams;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::time::now_ms;
use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub id: String,
    pub name: String,
    pub description: String,
    pub cover_url: Option<String>,
    pub kind: String,
    pub params: EnhanceParams,
    /// Hundredths of a credit per task; `None`: the kind's price.
    pub price: Option<i64>,
    pub sort_order: i64,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A scene's editable fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneFields {
    pub name: String,
    pub description: String,
    pub cover_url: Option<String>,
    pub kind: String,
    pub params: EnhanceParams,
    pub price: Option<i64>,
    pub sort_order: i64,
    pub active: bool,
}

const SCENE_COLUMNS: &str = "id, name, description, cover_url, kind, params, price, sort_order, active, created_at, updated_at";

fn scene_from_row(row: &AnyRow) -> Result<Scene, StoreError> {
    let id: String = row.try_get("id")?;
    let params: String = row.try_get("params")?;
    let params = serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(format!("scene {id}: params: {e}")))?;
    let active: i64 = row.try_get("active")?;
    Ok(Scene {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        cover_url: row.try_get("cover_url")?,
        kind: row.try_get("kind")?,
        params,
        price: row.try_get("price")?,
        sort_order: row.try_get("sort_order")?,
        active: active == 1,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

fn params_json(params: &EnhanceParams) -> Result<String, StoreError> {
    serde_json::to_string(params).map_err(|e| StoreError::Invalid(format!("params: {e}")))
}

impl Db {
    /// Scenes by sort order (then age); only active ones when `active_only`.
    pub async fn scenes(&self, active_only: bool) -> Result<Vec<Scene>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCENE_COLUMNS} FROM scenes WHERE ($1 = 0 OR active = 1) ORDER BY sort_order, created_at, id"
        )))
        .bind(i64::from(active_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(scene_from_row).collect()
    }

    pub async fn scene(&self, id: &str) -> Result<Option<Scene>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCENE_COLUMNS} FROM scenes WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(scene_from_row).transpose()
    }

    pub async fn insert_scene(&self, id: &str, f: &SceneFields) -> Result<Scene, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO scenes (id, name, description, cover_url, kind, params, price, sort_order, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id)
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.cover_url.as_deref())
        .bind(&f.kind)
        .bind(params_json(&f.params)?)
        .bind(f.price)
        .bind(f.sort_order)
        .bind(i64::from(f.active))
        .bind(now)
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::Duplicate(format!("scene {id}"))),
            Err(e) => return Err(e.into()),
        }
        self.scene(id).await?.ok_or_else(|| StoreError::Corrupt(format!("scene {id} vanished after its insert")))
    }

    /// Replaces a scene's fields; `None` when there is no such scene.
    pub async fn update_scene(&self, id: &str, f: &SceneFields) -> Result<Option<Scene>, StoreError> {
        let done = sqlx::query(
            "UPDATE scenes SET name = $2, description = $3, cover_url = $4, kind = $5, params = $6, price = $7, \
             sort_order = $8, active = $9, updated_at = $10 WHERE id = $1",
        )
        .bind(id)
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.cover_url.as_deref())
        .bind(&f.kind)
        .bind(params_json(&f.params)?)
        .bind(f.price)
        .bind(f.sort_order)
        .bind(i64::from(f.active))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.scene(id).await
    }

    /// Deletes a scene (tasks made from it keep its id). `false`: there was none.
    pub async fn delete_scene(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM scenes WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}
