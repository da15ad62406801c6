//! Purrify's database (DESIGN section 1): connect, migrate, write transactions, and one
//! repository module per table, on SQLite and PostgreSQL alike through `sqlx::any`. No HTTP,
//! Kubernetes or inference types: callers speak to it in the shared vocabulary of
//! `purrify-api` and the row types defined here.
//!
//! Portability rules: one SQL string per query, with `$N` placeholders (PostgreSQL's native
//! form; sqlx's SQLite driver binds `$N` by number too, so no per-backend strings are
//! needed); only TEXT, BIGINT and DOUBLE PRECISION columns (the types `Any` maps on both);
//! `ON CONFLICT ... DO UPDATE` and `RETURNING`, which both accept.
//!
//! Single-row state changes are one conditional `UPDATE` whose `WHERE` names the state it
//! expects and reports whether it applied, so no read-then-write transaction is needed.
//! Where one is (several rows, or a read that decides a write), [`Db::begin_write`] takes
//! the write lock up front on SQLite: a deferred transaction that reads and then writes fails
//! with "database is locked" under WAL when another writer got there first.

pub mod callbacks;
pub mod conversations;
mod error;
pub mod generation;
pub mod gpu_servers;
pub mod holds;
pub mod ledger;
mod migrate;
pub mod orders;
pub mod page;
pub mod postcards;
pub mod providers;
pub mod quotas;
pub mod recharge_codes;
pub mod refresh_tokens;
pub mod refunds;
pub mod scenes;
pub mod settings;
pub mod square;
pub mod stats;
pub mod storage_deletions;
pub mod system_logs;
pub mod task_events;
pub mod task_history;
pub mod task_lists;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
pub mod uploads;
pub mod user_actions;
pub mod users;
pub mod works;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, ConnectOptions, Connection};
use tracing::{debug, info};

pub use callbacks::{AttemptOutcome, CallbackDelivery};
pub use error::StoreError;
pub use gpu_servers::GpuServer;
pub use holds::{HoldOutcome, OpenHold, Settlement};
pub use ledger::{Applied, Entry, EntryKind, LedgerTotals, NewEntry};
pub use migrate::{embedded_migration_files, migrator};
pub use orders::{MarkPaid, NewOrder, Order, OrderStatus, Package};
pub use page::{Page, PageRequest};
pub use providers::{ProviderChange, ProviderRow};
pub use quotas::{Consumed, QuotaUsage, VipState, Window};
pub use recharge_codes::{Batch, CodeFilter, CodeStatus, NewBatch, RechargeCode, Redemption, RedemptionRecord};
pub use refresh_tokens::{NewRefreshToken, Rotation};
pub use refunds::{BeginRefund, RefundRow, SettledRefund};
pub use scenes::{Scene, SceneFields};
pub use square::{Author, FeedFilter, FeedSort, NewPost, Post, Publish, Reaction, ReactionKind, ReactionOp, SquareItem};
pub use stats::{Revenue, UserCounts};
pub use storage_deletions::PendingDeletion;
pub use system_logs::{NewSystemLog, SystemLog, SystemLogFilter};
pub use task_events::TaskEvent;
pub use task_history::UserTaskStats;
pub use task_lists::{Generation, QueueFigures, Runner, TaskFilter, TaskMeta, TaskRecord, TaskSort};
pub use tasks::{Failure, FinishedObjects, Guard, Mirror, NewTask, StatusCounts, Task};
pub use time::{duration_ms, now_ms};
pub use uploads::{Upload, UploadKind};
pub use user_actions::{NewUserAction, UserAction, UserActionFilter};
pub use users::{AdminChange, NewUser, ProfileChange, Role, TokenState, User, UserFilter, WeChatIdentity};
pub use works::{DeleteWorks, NewWork, Work, WorkChange, WorkFile, WorkFilter, WorkKind};

/// A write transaction; commit it, or it rolls back when dropped.
pub type WriteTx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Pool settings; the defaults suit one gateway process.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// How long a SQLite writer waits for the write lock before failing.
    pub sqlite_busy_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { max_connections: 10, acquire_timeout: Duration::from_secs(10), sqlite_busy_timeout: Duration::from_secs(10) }
    }
}

/// The database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

impl Db {
    /// Opens (SQLite: creates if missing, WAL mode) and migrates the database at `url`
    /// (`sqlite:///path/app.db`, `sqlite:app.db`, `sqlite::memory:`, `postgres://...`).
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        Self::connect_with(url, DbOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = DbKind::from_url(url).ok_or(StoreError::UnsupportedUrl)?;
        let mut pool_options =
            AnyPoolOptions::new().max_connections(options.max_connections.max(1)).acquire_timeout(options.acquire_timeout);
        if kind == DbKind::Sqlite {
            let memory = prepare_sqlite(url, &options).await?;
            if memory {
                // Every connection to `:memory:` is its own empty database: keep exactly one.
                pool_options = pool_options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            }
            let busy_ms = options.sqlite_busy_timeout.as_millis();
            pool_options = pool_options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    let pragma = format!("PRAGMA busy_timeout = {busy_ms}");
                    sqlx::query(sqlx::AssertSqlSafe(pragma)).execute(conn).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect(url).await.map_err(StoreError::Connect)?;
        migrator().run(&pool).await?;
        info!(database = kind.as_str(), "database ready");
        Ok(Db { pool, kind })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The pool, for modules with their own tables.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction for read-then-write work on `scope` (e.g. one account): write
    /// transactions of the same scope never interleave, so what one reads is still true when
    /// it writes. SQLite: `BEGIN IMMEDIATE`, the database's one write lock taken up front (a
    /// deferred transaction that reads and then writes fails with "database is locked" when
    /// another writer got there first). PostgreSQL: `BEGIN`, then a transaction-scoped
    /// advisory lock on the scope, so other scopes proceed in parallel.
    pub async fn begin_write(&self, scope: &str) -> Result<WriteTx, StoreError> {
        match self.kind {
            DbKind::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            DbKind::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(scope_key(scope)).execute(&mut *tx).await?;
                Ok(tx)
            }
        }
    }

    /// A round trip, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The advisory-lock key of a write scope: FNV-1a, stable across processes and versions (two
/// gateways on one database must agree on it).
fn scope_key(scope: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scope.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Creates the SQLite file (and its directory) if missing and switches it to WAL, which
/// persists in the file: readers (status fallbacks) then never block the dispatcher's writes.
/// Returns whether the URL names an in-memory database.
async fn prepare_sqlite(url: &str, options: &DbOptions) -> Result<bool, StoreError> {
    let opts = SqliteConnectOptions::from_str(url).map_err(StoreError::Connect)?;
    let file = opts.get_filename().to_path_buf();
    let memory = file.as_os_str().is_empty() || file.as_os_str() == ":memory:" || url.contains(":memory:") || url.contains("mode=memory");
    if memory {
        return Ok(true);
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Connect(sqlx::Error::Configuration(format!("cannot create {}: {e}", dir.display()).into())))?;
    }
    let conn = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(options.sqlite_busy_timeout)
        .connect()
        .await
        .map_err(StoreError::Connect)?;
    conn.close().await.map_err(StoreError::Connect)?;
    debug!(path = %file.display(), "sqlite database prepared (WAL)");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_are_stable_and_distinct() {
        assert_eq!(scope_key("user:1"), scope_key("user:1"));
        assert_ne!(scope_key("user:1"), scope_key("user:2"));
        // FNV-1a of the empty input is its offset basis: the function is the published one.
        assert_eq!(scope_key(""), i64::from_ne_bytes(0xcbf2_9ce4_8422_2325_u64.to_ne_bytes()));
    }

    #[test]
    fn kinds_from_urls() {
        assert_eq!(DbKind::from_url("sqlite::memory:"), Some(DbKind::Sqlite));
        assert_eq!(DbKind::from_url("sqlite:///tmp/x.db"), Some(DbKind::Sqlite));
        assert_eq!(DbKind::from_url("postgres://u@h/db"), Some(DbKind::Postgres));
        assert_eq!(DbKind::from_url("postgresql://u@h/db"), Some(DbKind::Postgres));
        assert_eq!(DbKind::from_url("mysql://u@h/db"), None);
    }
}
