//! The standalone database: tasks, webhook-registered GPU servers and settings, on SQLite or
//! PostgreSQL through `sqlx::any`.
//!
//! Portability rules: one SQL string per query, with `$N` placeholders (PostgreSQL's native
//! form; sqlx's SQLite driver binds `$N` by number too, so no per-backend strings are
//! needed); only TEXT, BIGINT and DOUBLE PRECISION columns (the types `Any` maps on both);
//! `ON CONFLICT ... DO UPDATE` and `RETURNING`, which both accept.
//!
//! Every state change is one conditional `UPDATE` whose `WHERE` names the state it expects
//! (and, while processing, the attempt's job id) and reports whether it applied. Two
//! dispatchers, a restarted one and a late follower of an old attempt therefore cannot both
//! move a task, and no read-then-write transaction is needed (SQLite would turn those into
//! busy errors under concurrency).

use std::str::FromStr;
use std::time::Duration;

use purrify_inference::protocol::{EnhanceParams, JobResult};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, ConnectOptions, Connection, Row, SqlSafeStr};
use tracing::{debug, info};

use super::model::{GpuServer, NewTask, Task, TaskErrorCode, TaskStatus, duration_ms, now_ms};

/// Migrations compiled into the binary, in version order. `sqlx::migrate!` needs sqlx's
/// `macros` feature (a second build of sqlx for the proc-macro), so the files are embedded
/// by hand; a test keeps this list equal to the directory. Versions, descriptions and
/// checksums follow sqlx's own rules, so `sqlx migrate` tooling sees the same history.
const MIGRATIONS: &[(&str, &str)] =
    &[("20251121000000_standalone_tasks.sql", include_str!("../../../../migrations/20251121000000_standalone_tasks.sql"))];

/// The migrator for `/migrations`.
pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(file, sql)| {
            let (version, rest) = file.split_once('_').expect("embedded migration names are <version>_<description>.sql");
            let version: i64 = version.parse().expect("embedded migration version");
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), sql.starts_with("-- no-transaction"))
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[doc(hidden)]
pub fn embedded_migration_files() -> Vec<&'static str> {
    MIGRATIONS.iter().map(|(f, _)| *f).collect()
}

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

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (expected sqlite:... or postgres://...)")]
    UnsupportedUrl,
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("stored row is not valid: {0}")]
    Corrupt(String),
}

impl DbError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedUrl => "url",
            Self::Connect(_) => "connect",
            Self::Migrate(_) => "migrate",
            Self::Duplicate(_) => "duplicate",
            Self::Invalid(_) => "invalid",
            Self::Query(_) => "query",
            Self::Corrupt(_) => "corrupt",
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(e)
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

/// Which rows a transition may move: the state the caller last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard<'a> {
    /// Still queued.
    Queued,
    /// Processing under this job id (the attempt the caller is following).
    Job(&'a str),
}

/// A task's state as another system reports it (see [`Db::mirror_task`]).
#[derive(Debug, Clone, Copy)]
pub struct Mirror<'a> {
    pub id: &'a str,
    pub status: TaskStatus,
    pub progress: f64,
    pub worker: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub attempts: u32,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub result: Option<&'a JobResult>,
}

/// Tasks per status, from one `GROUP BY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub queued: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Queued => self.queued,
            TaskStatus::Processing => self.processing,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, status: TaskStatus) -> &mut u64 {
        match status {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Processing => &mut self.processing,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// A finished task's storage objects, for housekeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedObjects {
    pub id: String,
    pub input_uri: String,
    pub output_uri: String,
}

/// The database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    kind: DbKind,
}

macro_rules! task_columns {
    () => {
        "id, status, progress, input_uri, output_uri, content_type, input_bytes, params, \
         priority, user_id, worker, job_id, attempts, error_code, error_message, result, \
         request_id, created_at, updated_at, started_at, finished_at, deadline_at"
    };
}

impl Db {
    /// Opens (SQLite: creates if missing, WAL mode) and migrates the database at `url`
    /// (`sqlite:///path/app.db`, `sqlite:app.db`, `sqlite::memory:`, `postgres://...`).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Self::connect_with(url, DbOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let kind = DbKind::from_url(url).ok_or(DbError::UnsupportedUrl)?;
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
        let pool = pool_options.connect(url).await.map_err(DbError::Connect)?;
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

    /// A round trip, for health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tasks ----

    /// Inserts a queued task. Returns once committed: on PostgreSQL and on SQLite (WAL,
    /// `synchronous=FULL`) the row survives a crash from then on, so the HTTP layer may
    /// answer 2xx.
    pub async fn insert_task(&self, task: &NewTask, deadline: Duration) -> Result<Task, DbError> {
        self.insert_task_at(task, deadline, now_ms()).await
    }

    /// As [`insert_task`](Self::insert_task) with an explicit creation time (imports, tests
    /// that need a known age order).
    pub async fn insert_task_at(&self, task: &NewTask, deadline: Duration, now: i64) -> Result<Task, DbError> {
        let params = serde_json::to_string(&task.params).map_err(|e| DbError::Invalid(format!("params: {e}")))?;
        let input_bytes = i64::try_from(task.input_bytes).map_err(|_| DbError::Invalid("input_bytes out of range".into()))?;
        let deadline_at = now.saturating_add(duration_ms(task.deadline.unwrap_or(deadline)));
        // The fair tag is computed in the same statement (see the migration): the virtual
        // time of this priority is its smallest queued tag, or its largest tag when nothing
        // is queued, so an idle group cannot bank credit and a busy one cannot jump ahead.
        let inserted = sqlx::query(
            "INSERT INTO tasks (id, status, progress, input_uri, output_uri, content_type, \
             input_bytes, params, priority, user_id, fair_group, fair_tag, attempts, request_id, \
             created_at, updated_at, deadline_at) \
             SELECT $1, 'queued', 0, $2, $3, $4, $5, $6, $7, $8, $12, \
                    CASE WHEN v.vt > v.ut THEN v.vt ELSE v.ut END, 0, $9, $10, $10, $11 \
             FROM (SELECT \
                 COALESCE((SELECT MIN(fair_tag) FROM tasks WHERE status = 'queued' AND priority = $7), \
                          (SELECT MAX(fair_tag) FROM tasks WHERE priority = $7), 0) AS vt, \
                 COALESCE((SELECT MAX(fair_tag) FROM tasks \
                           WHERE fair_group = $12 AND priority = $7), -1) + 1 AS ut) AS v",
        )
        .bind(&task.id)
        .bind(&task.input_uri)
        .bind(&task.output_uri)
        .bind(&task.content_type)
        .bind(input_bytes)
        .bind(&params)
        .bind(i64::from(task.priority))
        .bind(task.user_id.as_deref())
        .bind(task.request_id.as_deref())
        .bind(now)
        .bind(deadline_at)
        .bind(task.user_id.as_deref().unwrap_or(""))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DbError::Duplicate(format!("task {}", task.id)));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Task {
            id: task.id.clone(),
            status: TaskStatus::Queued,
            progress: 0.0,
            input_uri: task.input_uri.clone(),
            output_uri: task.output_uri.clone(),
            content_type: task.content_type.clone(),
            input_bytes: task.input_bytes,
            params: task.params,
            priority: task.priority,
            user_id: task.user_id.clone(),
            worker: None,
            job_id: None,
            attempts: 0,
            error_code: None,
            error_message: None,
            result: None,
            request_id: task.request_id.clone(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            deadline_at,
        })
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, DbError> {
        let row = sqlx::query(concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Queued tasks in dispatch order: priority (highest first), then fair tag, then age.
    /// Within a priority this interleaves users: each group's tasks carry consecutive tags
    /// from where the queue stood when they arrived, so one user's burst waits behind other
    /// users' tasks instead of in front of them, while a retried task keeps its place.
    pub async fn queued_tasks(&self, limit: u32) -> Result<Vec<Task>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE status = 'queued' \
             ORDER BY priority DESC, fair_tag, created_at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks being processed (to re-attach to after a restart), oldest attempt first.
    pub async fn processing_tasks(&self) -> Result<Vec<Task>, DbError> {
        let rows = sqlx::query(concat!("SELECT ", task_columns!(), " FROM tasks WHERE status = 'processing' ORDER BY started_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Queued or processing tasks whose deadline is at or before `now`.
    pub async fn tasks_past_deadline(&self, now: i64, limit: u32) -> Result<Vec<Task>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE status IN ('queued', 'processing') AND deadline_at <= $1 \
             ORDER BY deadline_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Queued -> processing on `worker` as attempt `attempts_seen + 1` under `job_id`, only
    /// if the task is still queued with `attempts_seen` attempts. `false`: someone else
    /// moved it first.
    pub async fn claim_task(&self, id: &str, attempts_seen: u32, worker: &str, job_id: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE tasks SET status = 'processing', worker = $2, job_id = $3, \
             attempts = attempts + 1, progress = 0, started_at = COALESCE(started_at, $4), \
             updated_at = $4 \
             WHERE id = $1 AND status = 'queued' AND attempts = $5",
        )
        .bind(id)
        .bind(worker)
        .bind(job_id)
        .bind(now)
        .bind(i64::from(attempts_seen))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Processing (`job_id`) -> completed with `result`.
    pub async fn complete_task(&self, id: &str, job_id: &str, result: &JobResult) -> Result<bool, DbError> {
        let result = serde_json::to_string(result).map_err(|e| DbError::Invalid(format!("result: {e}")))?;
        let done = sqlx::query(
            "UPDATE tasks SET status = 'completed', progress = 1, result = $3, \
             error_code = NULL, error_message = NULL, finished_at = $4, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(&result)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Processing (`job_id`) -> queued for another attempt. `count_attempt: false` gives the
    /// attempt back (the worker refused with 429, so nothing was tried).
    pub async fn requeue_task(&self, id: &str, job_id: &str, count_attempt: bool) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE tasks SET status = 'queued', worker = NULL, job_id = NULL, progress = 0, \
             attempts = attempts - $3, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(if count_attempt { 0_i64 } else { 1_i64 })
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queued or processing (per `guard`) -> failed with a client-safe message.
    pub async fn fail_task(&self, id: &str, guard: Guard<'_>, code: TaskErrorCode, message: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let done = match guard {
            Guard::Queued => {
                sqlx::query(
                    "UPDATE tasks SET status = 'failed', error_code = $2, error_message = $3, \
                     finished_at = $4, updated_at = $4 WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(code.as_str())
                .bind(message)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Guard::Job(job_id) => {
                sqlx::query(
                    "UPDATE tasks SET status = 'failed', error_code = $2, error_message = $3, \
                     finished_at = $4, updated_at = $4 \
                     WHERE id = $1 AND status = 'processing' AND job_id = $5",
                )
                .bind(id)
                .bind(code.as_str())
                .bind(message)
                .bind(now)
                .bind(job_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Queued or processing (per `guard`) -> cancelled.
    pub async fn cancel_task(&self, id: &str, guard: Guard<'_>) -> Result<bool, DbError> {
        let now = now_ms();
        let done = match guard {
            Guard::Queued => {
                sqlx::query(
                    "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2 \
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?
            }
            Guard::Job(job_id) => {
                sqlx::query(
                    "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2 \
                     WHERE id = $1 AND status = 'processing' AND job_id = $3",
                )
                .bind(id)
                .bind(now)
                .bind(job_id)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Coarse progress of the attempt `job_id` (the hub has the fine-grained one).
    pub async fn update_progress(&self, id: &str, job_id: &str, progress: f64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE tasks SET progress = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'processing' AND job_id = $2",
        )
        .bind(id)
        .bind(job_id)
        .bind(progress.clamp(0.0, 1.0))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Tasks per status over the whole table (admin statistics; a scan on big tables).
    pub async fn count_by_status(&self) -> Result<StatusCounts, DbError> {
        self.counts("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status").await
    }

    /// Queued and processing counts only (queue depth metric): index-only, cheap.
    pub async fn count_active(&self) -> Result<StatusCounts, DbError> {
        self.counts(
            "SELECT status, COUNT(*) AS n FROM tasks \
             WHERE status IN ('queued', 'processing') GROUP BY status",
        )
        .await
    }

    async fn counts(&self, sql: &'static str) -> Result<StatusCounts, DbError> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        let mut counts = StatusCounts::default();
        for row in &rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            let status = TaskStatus::from_str(&status).map_err(DbError::Corrupt)?;
            *counts.slot(status) = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    /// Deletes finished tasks that finished more than `age` ago. Returns how many.
    pub async fn delete_finished_older_than(&self, age: Duration) -> Result<u64, DbError> {
        let cutoff = now_ms().saturating_sub(duration_ms(age));
        let done = sqlx::query(
            "DELETE FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') \
             AND finished_at < $1",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Oldest finished tasks that finished before `cutoff` (unix ms), with their objects, for
    /// housekeeping that also deletes from storage.
    pub async fn finished_before(&self, cutoff: i64, limit: u32) -> Result<Vec<FinishedObjects>, DbError> {
        let rows = sqlx::query(
            "SELECT id, input_uri, output_uri FROM tasks \
             WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1 \
             ORDER BY finished_at, id LIMIT $2",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(FinishedObjects { id: r.try_get("id")?, input_uri: r.try_get("input_uri")?, output_uri: r.try_get("output_uri")? }))
            .collect()
    }

    /// Records the state another system decided (Kubernetes mode: the operator drives tasks
    /// and the gateway keeps their history). A finished row is never changed again, so a
    /// late or replayed watch event cannot undo an outcome.
    pub async fn mirror_task(&self, m: &Mirror<'_>) -> Result<bool, DbError> {
        let result = match m.result {
            Some(r) => Some(serde_json::to_string(r).map_err(|e| DbError::Invalid(format!("result: {e}")))?),
            None => None,
        };
        let now = now_ms();
        let finished = m.status.is_finished().then_some(now);
        let done = sqlx::query(
            "UPDATE tasks SET status = $2, progress = $3, worker = $4, job_id = $5, attempts = $6, \
             error_code = $7, error_message = $8, result = $9, \
             started_at = CASE WHEN $2 = 'processing' THEN COALESCE(started_at, $10) ELSE started_at END, \
             finished_at = COALESCE($11, finished_at), updated_at = $10 \
             WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        )
        .bind(m.id)
        .bind(m.status.as_str())
        .bind(m.progress)
        .bind(m.worker)
        .bind(m.job_id)
        .bind(i64::from(m.attempts))
        .bind(m.error_code)
        .bind(m.error_message)
        .bind(result.as_deref())
        .bind(now)
        .bind(finished)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes one task if it is finished.
    pub async fn delete_finished_task(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM tasks WHERE id = $1 AND status IN ('completed', 'failed', 'cancelled')")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- gpu_servers ----

    /// Registers a GPU server, or refreshes it when `(ip, port)` is already registered: the
    /// id assigned at first registration is kept, so a server re-registering after its own
    /// restart stays the same server.
    pub async fn upsert_gpu_server(&self, ip: &str, port: u16, url: &str) -> Result<GpuServer, DbError> {
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
                Err(DbError::Duplicate(format!("a GPU server with URL {url} but another address")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unregisters the server at `(ip, port)`; its id, or `None` if it was not registered.
    pub async fn delete_gpu_server(&self, ip: &str, port: u16) -> Result<Option<String>, DbError> {
        let row = sqlx::query("DELETE FROM gpu_servers WHERE ip = $1 AND port = $2 RETURNING id")
            .bind(ip)
            .bind(i64::from(port))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn list_gpu_servers(&self) -> Result<Vec<GpuServer>, DbError> {
        let rows = sqlx::query(
            "SELECT id, ip, port, url, registered_at, last_seen FROM gpu_servers \
             ORDER BY registered_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(server_from_row).collect()
    }

    /// Records that the server was seen alive (e.g. by a health probe).
    pub async fn touch_gpu_server(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE gpu_servers SET last_seen = $2 WHERE id = $1").bind(id).bind(now_ms()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- settings ----

    pub async fn get_setting(&self, name: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), DbError> {
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
    pub async fn get_bool_setting(&self, name: &str) -> Result<Option<bool>, DbError> {
        match self.get_setting(name).await? {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                other => Err(DbError::Corrupt(format!("setting {name} = {other:?}"))),
            },
        }
    }

    pub async fn set_bool_setting(&self, name: &str, value: bool) -> Result<(), DbError> {
        self.set_setting(name, if value { "true" } else { "false" }).await
    }

    /// Every setting, by name.
    pub async fn settings(&self) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query("SELECT name, value FROM settings ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("value")?))).collect()
    }

    pub async fn delete_setting(&self, name: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM settings WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Creates the SQLite file (and its directory) if missing and switches it to WAL, which
/// persists in the file: readers (status fallbacks) then never block the dispatcher's writes.
/// Returns whether the URL names an in-memory database.
async fn prepare_sqlite(url: &str, options: &DbOptions) -> Result<bool, DbError> {
    let opts = SqliteConnectOptions::from_str(url).map_err(DbError::Connect)?;
    let file = opts.get_filename().to_path_buf();
    let memory = file.as_os_str().is_empty() || file.as_os_str() == ":memory:" || url.contains(":memory:") || url.contains("mode=memory");
    if memory {
        return Ok(true);
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Connect(sqlx::Error::Configuration(format!("cannot create {}: {e}", dir.display()).into())))?;
    }
    let conn = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(options.sqlite_busy_timeout)
        .connect()
        .await
        .map_err(DbError::Connect)?;
    conn.close().await.map_err(DbError::Connect)?;
    debug!(path = %file.display(), "sqlite database prepared (WAL)");
    Ok(false)
}

fn corrupt(id: &str, what: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("task {id}: {what}"))
}

fn task_from_row(row: &AnyRow) -> Result<Task, DbError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let status = TaskStatus::from_str(&status).map_err(|e| corrupt(&id, e))?;
    let params: String = row.try_get("params")?;
    let params: EnhanceParams = serde_json::from_str(&params).map_err(|e| corrupt(&id, format!("params: {e}")))?;
    let result: Option<String> = row.try_get("result")?;
    let result = result.map(|r| serde_json::from_str::<JobResult>(&r)).transpose().map_err(|e| corrupt(&id, format!("result: {e}")))?;
    let input_bytes: i64 = row.try_get("input_bytes")?;
    let priority: i64 = row.try_get("priority")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Task {
        status,
        progress: row.try_get("progress")?,
        input_uri: row.try_get("input_uri")?,
        output_uri: row.try_get("output_uri")?,
        content_type: row.try_get("content_type")?,
        input_bytes: u64::try_from(input_bytes).map_err(|e| corrupt(&id, e))?,
        params,
        priority: i32::try_from(priority).map_err(|e| corrupt(&id, e))?,
        user_id: row.try_get("user_id")?,
        worker: row.try_get("worker")?,
        job_id: row.try_get("job_id")?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt(&id, e))?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        result,
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        deadline_at: row.try_get("deadline_at")?,
        id,
    })
}

fn server_from_row(row: &AnyRow) -> Result<GpuServer, DbError> {
    let id: String = row.try_get("id")?;
    let port: i64 = row.try_get("port")?;
    Ok(GpuServer {
        port: u16::try_from(port).map_err(|e| DbError::Corrupt(format!("server {id}: {e}")))?,
        ip: row.try_get("ip")?,
        url: row.try_get("url")?,
        registered_at: row.try_get("registered_at")?,
        last_seen: row.try_get("last_seen")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_match_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = embedded_migration_files().into_iter().map(str::to_owned).collect();
        assert_eq!(embedded, on_disk, "add every file of migrations/ to MIGRATIONS in tasks/db.rs");
        for (file, sql) in MIGRATIONS {
            let disk = std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(*sql, disk);
        }
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "migration versions must be unique");
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
