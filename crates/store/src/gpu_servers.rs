//! The `gpu_servers` table: GPU servers registered through the seed 000 webhook.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::time::now_ms;
use crate::{Db, StoreError};

/// A GPU server registered through the seed 000 webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuServer {
    /// Assigned by us on first registration (`gpu-` + 8 hex digits), stable across
    /// re-registrations of the same ip and port.
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub url: String,
    pub registered_at: i64,
    pub last_seen: i64,
}

impl Db {
    /// Registers a GPU server, or refreshes it when `(ip, port)` is already registered: the
    /// id assigned at first registration is kept, so a server re-registering after its own
    /// restart stays the same server.
    pub async fn upsert_gpu_server(&self, ip: &str, port: u16, url: &str) -> Result<GpuServer, StoreError> {
        let candidate = format!("gpu-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let row = sqlx::query(
            "INSERT INTO gpu_servers (id, ip, port, url, registered_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (ip, port) DO UPDATE SET url = excluded.url, last_seen = excluded.last_seen \
             RETURNING id, ip, port, url, registered_at, last_seen",
        )
        .bind(&candidate)
        .bind(ip)
        .bind(i64::from(port))
        .bind(url)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok(row) => server_from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Duplicate(format!("a GPU server with URL {url} but another address")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unregisters the server at `(ip, port)`; its id, or `None` if it was not registered.
    pub async fn delete_gpu_server(&self, ip: &str, port: u16) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("DELETE FROM gpu_servers WHERE ip = $1 AND port = $2 RETURNING id")
            .bind(ip)
            .bind(i64::from(port))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn list_gpu_servers(&self) -> Result<Vec<GpuServer>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ip, port, url, registered_at, last_seen FROM gpu_servers \
             ORDER BY registered_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(server_from_row).collect()
    }

    /// Records that the server was seen alive (e.g. by a health probe).
    pub async fn touch_gpu_server(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE gpu_servers SET last_seen = $2 WHERE id = $1").bind(id).bind(now_ms()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

fn server_from_row(row: &AnyRow) -> Result<GpuServer, StoreError> {
    let id: String = row.try_get("id")?;
    let port: i64 = row.try_get("port")?;
    Ok(GpuServer {
        port: u16::try_from(port).map_err(|e| StoreError::Corrupt(format!("server {id}: {e}")))?,
        ip: row.try_get("ip")?,
        url: row.try_get("url")?,
        registered_at: row.try_get("registered_at")?,
        last_seen: row.try_get("last_seen")?,
        id,
    })
}
