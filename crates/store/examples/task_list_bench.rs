//! Task list latency (`make bench`, issue 12): 100,000 tasks over 1,000 users, then p50/p99 of
//! the pages the task-management endpoints ask for, on SQLite and PostgreSQL side by side:
//!
//! - a user's tasks of one status, newest change first (`GET /api/tasks?status=completed&sort_by=updated_at`);
//! - a user's tasks, newest first (`GET /api/tasks/user/list`);
//! - every user's tasks, newest change first (`GET /api/admin/tasks?sort_by=updated_at`);
//! - every user's failed tasks, newest first (`GET /api/admin/tasks?status=failed`);
//! - a user's queue position (`GET /api/tasks/stats/queue`).
//!
//! Each page is one `COUNT(*)` and one `SELECT ... LIMIT 20`, as `Db::task_page` runs them.
//! The query plans are printed first, so an index that stopped serving shows here.
//!
//! `PURRIFY_TEST_POSTGRES_URL` names a PostgreSQL admin URL (tools/postgres/start.sh prints
//! one); without it only SQLite runs.

use std::time::{Duration, Instant};

use purrify_api::TaskStatus;
use purrify_store::testing::{Backend, TestDb};
use purrify_store::{Db, DbKind, PageRequest, TaskFilter, TaskSort};
use sqlx::Row;

const TASKS: usize = 100_000;
const USERS: usize = 1_000;
const SAMPLES: usize = 300;
const BATCH: usize = 500;
const DAY_MS: i64 = 86_400_000;

/// A deterministic pseudo-random sequence (xorshift), so both databases get the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn status_of(roll: u64) -> &'static str {
    match roll {
        0..=4 => "queued",
        5..=6 => "processing",
        7..=16 => "failed",
        17..=19 => "cancelled",
        _ => "completed",
    }
}

async fn load(db: &Db) -> Duration {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let now = purrify_store::now_ms();
    let mut tx = db.pool().begin().await.expect("begin");
    for chunk in 0..TASKS / BATCH {
        let mut sql = String::from(
            "INSERT INTO tasks (id, status, progress, input_uri, output_uri, content_type, input_bytes, params, priority, \
             user_id, fair_group, fair_tag, attempts, created_at, updated_at, started_at, finished_at, deadline_at, kind) VALUES ",
        );
        let mut rows = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let n = chunk * BATCH + i;
            let user = format!("user-{:04}", rng.below(USERS as u64));
            let status = status_of(rng.below(100));
            let created = now - 30 * DAY_MS + (n as i64) * (30 * DAY_MS / TASKS as i64);
            let updated = created + rng.below(600_000) as i64;
            let p = i * 7;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, 0, 'file:///in', 'file:///out', 'image/jpeg', 1000, '{{}}', ${}, ${}, ${}, ${}, 1, ${}, ${}, NULL, NULL, 0, 'enhance')",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            ));
            rows.push((format!("task-{n:06}"), status, i64::from(rng.below(10) == 0), user, n as i64, created, updated));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, status, priority, user, tag, created, updated) in rows {
            q = q.bind(id).bind(status).bind(priority).bind(user).bind(tag).bind(created).bind(updated);
        }
        q.execute(&mut *tx).await.expect("insert batch");
    }
    tx.commit().await.expect("commit");
    // Start and finish times where the lifecycle sets them.
    sqlx::query("UPDATE tasks SET started_at = created_at + 1000 WHERE status <> 'queued'").execute(db.pool()).await.expect("started");
    sqlx::query("UPDATE tasks SET finished_at = updated_at WHERE status IN ('completed', 'failed', 'cancelled')")
        .execute(db.pool())
        .await
        .expect("finished");
    // What a running database has: SQLite's statistics (`PRAGMA optimize` keeps them), and
    // PostgreSQL's autovacuum (statistics and the visibility map index-only scans need).
    let analyze = match db.kind() {
        DbKind::Sqlite => "ANALYZE",
        DbKind::Postgres => "VACUUM ANALYZE tasks",
    };
    sqlx::query(analyze).execute(db.pool()).await.expect("analyze");
    started.elapsed()
}

async fn plan(db: &Db, sql: &str) -> Vec<String> {
    let explain = match db.kind() {
        DbKind::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        DbKind::Postgres => format!("EXPLAIN {sql}"),
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain)).fetch_all(db.pool()).await.expect("explain");
    rows.iter()
        .map(|r| match db.kind() {
            DbKind::Sqlite => r.try_get::<String, _>("detail").unwrap_or_default(),
            DbKind::Postgres => r.try_get::<String, _>(0).unwrap_or_default(),
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure<F, Fut>(mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..20 {
        f(i).await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let t = Instant::now();
        f(i).await;
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn user(i: usize) -> String {
    format!("user-{:04}", (i * 7919) % USERS)
}

async fn page(db: &Db, filter: TaskFilter, sort: TaskSort) {
    let p = db.task_page(&filter, sort, false, PageRequest::new(Some(1), Some(20))).await.expect("page");
    assert!(p.items.len() <= 20);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut backends = vec![Backend::Sqlite];
    if std::env::var(purrify_store::testing::PG_ENV).is_ok_and(|v| !v.is_empty()) {
        backends.push(Backend::Postgres);
    } else {
        eprintln!("task list bench: {} is not set; PostgreSQL skipped", purrify_store::testing::PG_ENV);
    }
    println!("task list bench: {TASKS} tasks over {USERS} users; pages of 20 (COUNT + SELECT), {SAMPLES} samples each");
    let mut results = Vec::new();
    for backend in backends {
        let t = TestDb::new(backend).await;
        let loaded = load(&t.db).await;
        println!("\n{backend:?}: loaded in {:.1} s; plans:", loaded.as_secs_f64());
        let cols = "id, status, updated_at";
        for (what, sql) in [
            (
                "user+status by updated_at",
                format!(
                    "SELECT {cols} FROM tasks WHERE hidden_at IS NULL AND user_id = 'user-0001' AND status = 'completed' ORDER BY updated_at DESC, id DESC LIMIT 20"
                ),
            ),
            ("admin by updated_at", format!("SELECT {cols} FROM tasks WHERE hidden_at IS NULL ORDER BY updated_at DESC, id DESC LIMIT 20")),
            (
                "admin failed by created_at",
                format!(
                    "SELECT {cols} FROM tasks WHERE hidden_at IS NULL AND status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 20"
                ),
            ),
            ("admin count", "SELECT COUNT(*) FROM tasks WHERE hidden_at IS NULL".to_string()),
            ("admin failed count", "SELECT COUNT(*) FROM tasks WHERE hidden_at IS NULL AND status = 'failed'".to_string()),
        ] {
            println!("  {what}:");
            for line in plan(&t.db, &sql).await {
                println!("    {line}");
            }
        }
        let db = &t.db;
        let mine = |status: Option<TaskStatus>| move |i: usize| TaskFilter { user_id: Some(user(i)), status, kind: None };
        let cases: Vec<(&str, (f64, f64))> = vec![
            (
                "user, status=completed, updated_at desc",
                measure(|i| page(db, mine(Some(TaskStatus::Completed))(i), TaskSort::UpdatedAt)).await,
            ),
            ("user, created_at desc", measure(|i| page(db, mine(None)(i), TaskSort::CreatedAt)).await),
            ("admin all users, updated_at desc", measure(|_| page(db, TaskFilter::default(), TaskSort::UpdatedAt)).await),
            (
                "admin status=failed, created_at desc",
                measure(|_| page(db, TaskFilter { status: Some(TaskStatus::Failed), ..TaskFilter::default() }, TaskSort::CreatedAt)).await,
            ),
            (
                "queue position of a user",
                measure(|i| async move {
                    db.queue_position(&user(i)).await.expect("position");
                })
                .await,
            ),
        ];
        for (what, (p50, p99)) in cases {
            results.push((format!("{backend:?}"), what, p50, p99));
        }
    }
    println!("\n{:>10}  {:<40} {:>9} {:>9}", "database", "page", "p50 ms", "p99 ms");
    for (db, what, p50, p99) in results {
        println!("{db:>10}  {what:<40} {p50:>9.2} {p99:>9.2}");
    }
}
