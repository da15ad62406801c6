//! The `settings` table: named values an admin changes at run time (`/api/v1/config/*`).

use sqlx::Row;

use crate::time::now_ms;
use crate::{Db, StoreError};

/// Keys of the `settings` table behind `/api/v1/config/*`.
pub mod keys {
    /// Default backend URL set through `POST /api/v1/config/backend`.
    pub const BACKEND_URL: &str = "backend_url";
    /// `"true"`/`"false"`: multi-GPU mode (`POST /api/v1/config/multi-backend`).
    pub const MULTI_BACKEND_ENABLED: &str = "multi_backend_enabled";
    /// `"true"`/`"false"`: fall back to the default backend when no registered server is up.
    pub const FALLBACK_TO_DEFAULT: &str = "fallback_to_default";
    /// Kubernetes mode: the GpuPool new tasks go to (`POST /api/v1/config/backend`).
    pub const POOL: &str = "pool";

    /// Price of one task of `kind`, in hundredths of a credit (absent: free).
    pub fn price(kind: &str) -> String {
        format!("price_{kind}")
    }
}

impl Db {
    pub async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A boolean setting stored as `"true"`/`"false"`.
    pub async fn get_bool_setting(&self, name: &str) -> Result<Option<bool>, StoreError> {
        match self.get_setting(name).await? {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(StoreError::Corrupt(format!("setting {name} = {other:?}"))),
            },
        }
    }

    pub async fn set_bool_setting(&self, name: &str, value: bool) -> Result<(), StoreError> {
        self.set_setting(name, if value { "true" } else { "false" }).await
    }

    /// Every setting, by name.
    pub async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, value FROM settings ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("value")?))).collect()
    }

    /// Writes several settings, and optionally the recharge packages, in one transaction:
    /// all of them or none (an admin's multi-key configuration change).
    pub async fn save_settings(&self, pairs: &[(String, String)], packages: Option<&[crate::Package]>) -> Result<(), StoreError> {
        let mut tx = self.begin_write("settings").await?;
        let now = now_ms();
        for (name, value) in pairs {
            sqlx::query(
                "INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(packages) = packages {
            crate::orders::replace_packages_in(&mut tx, packages).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM settings WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}
