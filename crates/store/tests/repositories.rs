//! Repository semantics on SQLite and on PostgreSQL: conditional task transitions, dispatch
//! order, idempotent GPU-server registration, settings, housekeeping, write transactions.

use std::time::Duration;

use purrify_api::{EnhanceParams, FaceRestoration, FailReason, JobResult, QualityLevel, TaskStatus};
use purrify_store::settings::keys as settings;
use purrify_store::testing::TestDb;
use purrify_store::{Db, DbKind, Guard, NewTask, StoreError as DbError, now_ms};
use sqlx::Row;

fn job_id_for(task: &str, attempt: u32) -> String {
    format!("{task}-{attempt}")
}

const DEADLINE: Duration = Duration::from_secs(300);

fn new_task(id: &str, user: Option<&str>, priority: i32) -> NewTask {
    let mut t = NewTask::new(
        id,
        format!("file:///data/in/{id}.jpg"),
        format!("file:///data/out/{id}.jpg"),
        EnhanceParams { quality_level: QualityLevel::Fast, scale: 4, tile_size: 256, ..EnhanceParams::default() },
    );
    t.user_id = user.map(str::to_owned);
    t.priority = priority;
    t.content_type = "image/jpeg".into();
    t.input_bytes = 12345;
    t.request_id = Some(format!("req-{id}"));
    t
}

fn result() -> JobResult {
    JobResult {
        output_uri: "file:///data/out/x.jpg".into(),
        content_type: "image/jpeg".into(),
        width: 800,
        height: 600,
        bytes: 99,
        faces: 2,
        face_restoration: FaceRestoration::Applied,
        model: "realesr-animevideov3-x4".into(),
        elapsed_ms: 1500,
    }
}

async fn status_of(db: &Db, id: &str) -> TaskStatus {
    db.get_task(id).await.unwrap().unwrap().status
}

purrify_store::on_both_databases!(
    insert_is_read_back_whole,
    duplicate_ids_are_refused,
    claim_only_moves_a_queued_task_once,
    finishing_needs_the_current_attempt,
    requeue_counts_or_refunds_the_attempt,
    fail_and_cancel_follow_their_guard,
    dispatch_order_is_priority_then_round_robin_by_user,
    a_late_user_waits_behind_one_task_of_a_burst,
    scans_find_processing_and_overdue_tasks,
    counts_and_housekeeping,
    gpu_server_registration_is_idempotent,
    settings_round_trip,
    reopening_keeps_data_and_migrations_are_idempotent,
);

async fn insert_is_read_back_whole(t: TestDb) {
    let db = &t.db;
    let before = now_ms();
    let inserted = db.insert_task(&new_task("a1", Some("alice"), 3), DEADLINE).await.unwrap();
    let got = db.get_task("a1").await.unwrap().expect("row exists");
    assert_eq!(got, inserted);
    assert_eq!(got.status, TaskStatus::Queued);
    assert_eq!(got.params.quality_level, QualityLevel::Fast);
    assert_eq!(got.params.scale, 4);
    assert_eq!(got.params.tile_size, 256);
    assert_eq!(got.user_id.as_deref(), Some("alice"));
    assert_eq!(got.priority, 3);
    assert_eq!(got.input_bytes, 12345);
    assert_eq!(got.request_id.as_deref(), Some("req-a1"));
    assert_eq!(got.attempts, 0);
    assert!(got.created_at >= before);
    assert_eq!(got.deadline_at, got.created_at + 300_000);
    assert!(got.worker.is_none() && got.job_id.is_none() && got.result.is_none());

    let mut custom = new_task("a2", None, 0);
    custom.deadline = Some(Duration::from_secs(10));
    let a2 = db.insert_task(&custom, DEADLINE).await.unwrap();
    assert_eq!(a2.deadline_at, a2.created_at + 10_000);
    assert!(db.get_task("missing").await.unwrap().is_none());
}

async fn duplicate_ids_are_refused(t: TestDb) {
    let db = &t.db;
    db.insert_task(&new_task("dup", None, 0), DEADLINE).await.unwrap();
    let again = db.insert_task(&new_task("dup", None, 0), DEADLINE).await;
    assert!(matches!(again, Err(DbError::Duplicate(_))), "{again:?}");
}

async fn claim_only_moves_a_queued_task_once(t: TestDb) {
    let db = &t.db;
    db.insert_task(&new_task("c", None, 0), DEADLINE).await.unwrap();
    let job = job_id_for("c", 1);
    // A dispatcher that read an older row (another attempt count) cannot claim.
    assert!(!db.claim_task("c", 7, "http://w1", &job).await.unwrap());
    assert!(db.claim_task("c", 0, "http://w1", &job).await.unwrap());
    // The second of two racing dispatchers loses.
    assert!(!db.claim_task("c", 0, "http://w2", &job).await.unwrap());
    let row = db.get_task("c").await.unwrap().unwrap();
    assert_eq!(row.status, TaskStatus::Processing);
    assert_eq!(row.worker.as_deref(), Some("http://w1"));
    assert_eq!(row.job_id.as_deref(), Some("c-1"));
    assert_eq!(row.attempts, 1);
    assert!(row.started_at.is_some());
    assert!(!db.claim_task("missing", 0, "http://w1", "missing-1").await.unwrap());
}

async fn finishing_needs_the_current_attempt(t: TestDb) {
    let db = &t.db;
    db.insert_task(&new_task("f", None, 0), DEADLINE).await.unwrap();
    assert!(db.claim_task("f", 0, "http://w1", "f-1").await.unwrap());
    // Progress and results of another attempt change nothing.
    assert!(!db.update_progress("f", "f-0", 0.9).await.unwrap());
    assert!(!db.complete_task("f", "f-2", &result()).await.unwrap());
    assert!(db.update_progress("f", "f-1", 0.4).await.unwrap());
    assert!((db.get_task("f").await.unwrap().unwrap().progress - 0.4).abs() < 1e-9);

    assert!(db.complete_task("f", "f-1", &result()).await.unwrap());
    // Exactly once: a second finisher, a late requeue or failure, a late progress.
    assert!(!db.complete_task("f", "f-1", &result()).await.unwrap());
    assert!(!db.requeue_task("f", "f-1", true).await.unwrap());
    assert!(!db.fail_task("f", Guard::Job("f-1"), FailReason::InternalError, "x").await.unwrap());
    assert!(!db.update_progress("f", "f-1", 0.5).await.unwrap());
    let row = db.get_task("f").await.unwrap().unwrap();
    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.result, Some(result()));
    assert_eq!(row.progress, 1.0);
    assert!(row.finished_at.is_some());
}

async fn requeue_counts_or_refunds_the_attempt(t: TestDb) {
    let db = &t.db;
    db.insert_task(&new_task("r", None, 0), DEADLINE).await.unwrap();
    assert!(db.claim_task("r", 0, "http://w1", "r-1").await.unwrap());
    // 429: nothing ran, the attempt is given back and the same job id is used again.
    assert!(db.requeue_task("r", "r-1", false).await.unwrap());
    let row = db.get_task("r").await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (TaskStatus::Queued, 0));
    assert!(row.worker.is_none() && row.job_id.is_none());

    assert!(db.claim_task("r", 0, "http://w1", "r-1").await.unwrap());
    assert!(db.requeue_task("r", "r-1", true).await.unwrap());
    let row = db.get_task("r").await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (TaskStatus::Queued, 1));
    assert!(db.claim_task("r", 1, "http://w2", "r-2").await.unwrap());
    assert_eq!(db.get_task("r").await.unwrap().unwrap().attempts, 2);
    // The old attempt's follower cannot requeue the new one.
    assert!(!db.requeue_task("r", "r-1", true).await.unwrap());
}

async fn fail_and_cancel_follow_their_guard(t: TestDb) {
    let db = &t.db;
    for id in ["q", "p", "x"] {
        db.insert_task(&new_task(id, None, 0), DEADLINE).await.unwrap();
    }
    // Queued: only the queued guard applies.
    assert!(!db.fail_task("q", Guard::Job("q-1"), FailReason::DeadlineExceeded, "late").await.unwrap());
    assert!(db.fail_task("q", Guard::Queued, FailReason::DeadlineExceeded, "no worker in time").await.unwrap());
    let row = db.get_task("q").await.unwrap().unwrap();
    assert_eq!(row.status, TaskStatus::Failed);
    let failure = row.failure().unwrap();
    assert_eq!(failure.code, "PROCESSING_TIMEOUT");
    assert_eq!(failure.message, "no worker in time");
    assert!(!db.cancel_task("q", Guard::Queued).await.unwrap());

    // Processing: the queued guard no longer applies; the job guard does.
    assert!(db.claim_task("p", 0, "http://w1", "p-1").await.unwrap());
    assert!(!db.cancel_task("p", Guard::Queued).await.unwrap());
    assert!(!db.cancel_task("p", Guard::Job("p-2")).await.unwrap());
    assert!(db.cancel_task("p", Guard::Job("p-1")).await.unwrap());
    assert_eq!(status_of(db, "p").await, TaskStatus::Cancelled);
    assert!(!db.complete_task("p", "p-1", &result()).await.unwrap());

    assert!(db.cancel_task("x", Guard::Queued).await.unwrap());
    assert!(!db.claim_task("x", 0, "http://w1", "x-1").await.unwrap());
    assert_eq!(status_of(db, "x").await, TaskStatus::Cancelled);
}

async fn dispatch_order_is_priority_then_round_robin_by_user(t: TestDb) {
    let db = &t.db;
    let base = now_ms() - 60_000;
    let tasks = [
        ("a1", Some("alice"), 0),
        ("a2", Some("alice"), 0),
        ("a3", Some("alice"), 0),
        ("a4", Some("alice"), 0),
        ("b1", Some("bob"), 0),
        ("n1", None, 0),
        ("c1", Some("carol"), 0),
        ("b2", Some("bob"), 0),
        ("n2", None, 0),
        ("v1", Some("bob"), 5),
        ("v2", Some("bob"), 5),
        ("w1", Some("alice"), 5),
    ];
    for (i, (id, user, priority)) in tasks.iter().enumerate() {
        db.insert_task_at(&new_task(id, *user, *priority), DEADLINE, base + i as i64).await.unwrap();
    }
    // A task already taken is not offered.
    db.insert_task_at(&new_task("gone", Some("dave"), 9), DEADLINE, base).await.unwrap();
    assert!(db.claim_task("gone", 0, "http://w", "gone-1").await.unwrap());

    let order: Vec<String> = db.queued_tasks(100).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(
        order,
        [
            // priority 5: bob's first, alice's first, bob's second
            "v1", "w1", "v2", // priority 0, round 1: each group's oldest, by age (anonymous tasks are one group)
            "a1", "b1", "n1", "c1", // round 2
            "a2", "b2", "n2", // alice's burst waits for everyone else
            "a3", "a4",
        ]
    );
    let first_two: Vec<String> = db.queued_tasks(2).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(first_two, ["v1", "w1"]);
}

async fn a_late_user_waits_behind_one_task_of_a_burst(t: TestDb) {
    let db = &t.db;
    let base = now_ms() - 60_000;
    for (i, id) in ["a1", "a2", "a3", "a4", "a5"].iter().enumerate() {
        db.insert_task_at(&new_task(id, Some("alice"), 0), DEADLINE, base + i as i64).await.unwrap();
    }
    // Two of the burst ran (and finished) before bob showed up.
    for id in ["a1", "a2"] {
        let job = job_id_for(id, 1);
        assert!(db.claim_task(id, 0, "http://w", &job).await.unwrap());
        assert!(db.complete_task(id, &job, &result()).await.unwrap());
    }
    db.insert_task_at(&new_task("b1", Some("bob"), 0), DEADLINE, base + 10).await.unwrap();
    db.insert_task_at(&new_task("b2", Some("bob"), 0), DEADLINE, base + 11).await.unwrap();
    let order: Vec<String> = db.queued_tasks(10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(order, ["a3", "b1", "a4", "b2", "a5"]);

    // A retried task keeps its place at the front.
    assert!(db.claim_task("a3", 0, "http://w", "a3-1").await.unwrap());
    assert!(db.requeue_task("a3", "a3-1", true).await.unwrap());
    assert_eq!(db.queued_tasks(1).await.unwrap()[0].id, "a3");
}

async fn scans_find_processing_and_overdue_tasks(t: TestDb) {
    let db = &t.db;
    let now = now_ms();
    for (id, at) in [("old", now - 400_000), ("old2", now - 350_000), ("new", now)] {
        db.insert_task_at(&new_task(id, None, 0), DEADLINE, at).await.unwrap();
    }
    assert!(db.claim_task("old2", 0, "http://w1", "old2-1").await.unwrap());
    assert!(db.claim_task("new", 0, "http://w1", "new-1").await.unwrap());
    let processing: Vec<String> = db.processing_tasks().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(processing.len(), 2);
    assert!(processing.contains(&"old2".to_owned()) && processing.contains(&"new".to_owned()));

    let overdue: Vec<(String, TaskStatus)> =
        db.tasks_past_deadline(now_ms(), 10).await.unwrap().into_iter().map(|t| (t.id, t.status)).collect();
    assert_eq!(overdue, [("old".to_owned(), TaskStatus::Queued), ("old2".to_owned(), TaskStatus::Processing)]);
}

async fn counts_and_housekeeping(t: TestDb) {
    let db = &t.db;
    for id in ["k1", "k2", "k3", "k4", "k5"] {
        db.insert_task(&new_task(id, None, 0), DEADLINE).await.unwrap();
    }
    assert!(db.claim_task("k2", 0, "http://w", "k2-1").await.unwrap());
    assert!(db.claim_task("k3", 0, "http://w", "k3-1").await.unwrap());
    assert!(db.complete_task("k3", "k3-1", &result()).await.unwrap());
    assert!(db.fail_task("k4", Guard::Queued, FailReason::BadInput, "nope").await.unwrap());
    assert!(db.cancel_task("k5", Guard::Queued).await.unwrap());

    let all = db.count_by_status().await.unwrap();
    assert_eq!((all.queued, all.processing, all.completed, all.failed, all.cancelled), (1, 1, 1, 1, 1));
    let active = db.count_active().await.unwrap();
    assert_eq!((active.queued, active.processing, active.completed), (1, 1, 0));
    assert_eq!(active.get(TaskStatus::Queued), 1);

    // Recent ones stay.
    assert_eq!(db.delete_finished_older_than(Duration::from_secs(3600)).await.unwrap(), 0);
    let old = db.finished_before(now_ms() + 1, 10).await.unwrap();
    let mut old_ids: Vec<String> = old.iter().map(|o| o.id.clone()).collect();
    old_ids.sort();
    assert_eq!(old_ids, ["k3", "k4", "k5"]);
    assert_eq!(old[0].input_uri, format!("file:///data/in/{}.jpg", old[0].id));
    assert!(db.delete_finished_task("k3").await.unwrap());
    assert!(!db.delete_finished_task("k2").await.unwrap(), "active tasks are never deleted");

    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(db.delete_finished_older_than(Duration::ZERO).await.unwrap(), 2);
    let left = db.count_by_status().await.unwrap();
    assert_eq!((left.queued, left.processing, left.completed, left.failed), (1, 1, 0, 0));
}

async fn gpu_server_registration_is_idempotent(t: TestDb) {
    let db = &t.db;
    let first = db.upsert_gpu_server("10.0.0.1", 8000, "http://10.0.0.1:8000").await.unwrap();
    assert!(first.id.starts_with("gpu-") && first.id.len() == 12, "{}", first.id);
    assert_eq!((first.ip.as_str(), first.port), ("10.0.0.1", 8000));
    assert_eq!(first.registered_at, first.last_seen);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = db.upsert_gpu_server("10.0.0.1", 8000, "http://10.0.0.1:8000").await.unwrap();
    assert_eq!(again.id, first.id, "re-registering keeps the id");
    assert_eq!(again.registered_at, first.registered_at);
    assert!(again.last_seen > first.last_seen);

    let other = db.upsert_gpu_server("10.0.0.1", 8001, "http://10.0.0.1:8001").await.unwrap();
    assert_ne!(other.id, first.id);
    let clash = db.upsert_gpu_server("10.0.0.2", 8000, "http://10.0.0.1:8000").await;
    assert!(matches!(clash, Err(DbError::Duplicate(_))), "{clash:?}");

    let listed: Vec<String> = db.list_gpu_servers().await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, [first.id.clone(), other.id.clone()]);
    assert!(db.touch_gpu_server(&other.id).await.unwrap());

    assert_eq!(db.delete_gpu_server("10.0.0.1", 8000).await.unwrap(), Some(first.id.clone()));
    assert_eq!(db.delete_gpu_server("10.0.0.1", 8000).await.unwrap(), None);
    assert_eq!(db.list_gpu_servers().await.unwrap().len(), 1);
    // A server that comes back after unregistering is a new registration.
    let back = db.upsert_gpu_server("10.0.0.1", 8000, "http://10.0.0.1:8000").await.unwrap();
    assert_ne!(back.id, first.id);
}

async fn settings_round_trip(t: TestDb) {
    let db = &t.db;
    assert_eq!(db.get_setting(settings::BACKEND_URL).await.unwrap(), None);
    db.set_setting(settings::BACKEND_URL, "http://gpu-a:8000").await.unwrap();
    db.set_setting(settings::BACKEND_URL, "http://gpu-b:8000").await.unwrap();
    assert_eq!(db.get_setting(settings::BACKEND_URL).await.unwrap().as_deref(), Some("http://gpu-b:8000"));
    assert_eq!(db.get_bool_setting(settings::MULTI_BACKEND_ENABLED).await.unwrap(), None);
    db.set_bool_setting(settings::MULTI_BACKEND_ENABLED, false).await.unwrap();
    db.set_bool_setting(settings::FALLBACK_TO_DEFAULT, true).await.unwrap();
    assert_eq!(db.get_bool_setting(settings::MULTI_BACKEND_ENABLED).await.unwrap(), Some(false));
    assert_eq!(
        db.settings().await.unwrap(),
        [
            ("backend_url".to_owned(), "http://gpu-b:8000".to_owned()),
            ("fallback_to_default".to_owned(), "true".to_owned()),
            ("multi_backend_enabled".to_owned(), "false".to_owned()),
        ]
    );
    db.set_setting(settings::FALLBACK_TO_DEFAULT, "maybe").await.unwrap();
    assert!(matches!(db.get_bool_setting(settings::FALLBACK_TO_DEFAULT).await, Err(DbError::Corrupt(_))));
    assert!(db.delete_setting(settings::FALLBACK_TO_DEFAULT).await.unwrap());
    assert!(!db.delete_setting(settings::FALLBACK_TO_DEFAULT).await.unwrap());
}

async fn reopening_keeps_data_and_migrations_are_idempotent(t: TestDb) {
    t.db.insert_task(&new_task("keep", None, 0), DEADLINE).await.unwrap();
    let again = t.reopen().await;
    assert_eq!(status_of(&again, "keep").await, TaskStatus::Queued);
    again.ping().await.unwrap();
    let applied: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations").fetch_one(again.pool()).await.unwrap().try_get("n").unwrap();
    assert_eq!(applied, purrify_store::migrator().iter().count() as i64);
    if again.kind() == DbKind::Sqlite {
        let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(again.pool()).await.unwrap().try_get(0).unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
    }
}

#[tokio::test]
async fn in_memory_sqlite_works_for_quick_runs() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    db.insert_task(&new_task("m", None, 0), DEADLINE).await.unwrap();
    assert_eq!(status_of(&db, "m").await, TaskStatus::Queued);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(matches!(Db::connect("mysql://localhost/x").await, Err(DbError::UnsupportedUrl)));
}

purrify_store::on_both_databases!(write_transactions_serialise_read_then_write, a_dropped_write_transaction_leaves_nothing);

/// Read-then-write under contention on one scope: every increment lands (a deferred SQLite
/// transaction would fail some with "database is locked"; a plain PostgreSQL one would lose
/// some to interleaving).
async fn write_transactions_serialise_read_then_write(t: TestDb) {
    t.db.set_setting("counter", "0").await.unwrap();
    let writers = (0..16).map(|_| {
        let db = t.db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin_write("counter").await.expect("write transaction begins");
            let row = sqlx::query("SELECT value FROM settings WHERE name = 'counter'").fetch_one(&mut *tx).await.unwrap();
            let n: i64 = row.get::<String, _>("value").parse().unwrap();
            // Give the other writers time to try to interleave.
            tokio::task::yield_now().await;
            sqlx::query("UPDATE settings SET value = $1 WHERE name = 'counter'")
                .bind((n + 1).to_string())
                .execute(&mut *tx)
                .await
                .expect("the write after the read succeeds");
            tx.commit().await.expect("commit");
        })
    });
    for w in futures::future::join_all(writers).await {
        w.unwrap();
    }
    assert_eq!(t.db.get_setting("counter").await.unwrap().as_deref(), Some("16"));
}

async fn a_dropped_write_transaction_leaves_nothing(t: TestDb) {
    {
        let mut tx = t.db.begin_write("settings").await.unwrap();
        sqlx::query("INSERT INTO settings (name, value, updated_at) VALUES ('half', 'written', 0)").execute(&mut *tx).await.unwrap();
        // Dropped without commit: rolled back.
    }
    assert_eq!(t.db.get_setting("half").await.unwrap(), None);
    let mut tx = t.db.begin_write("settings").await.unwrap();
    sqlx::query("INSERT INTO settings (name, value, updated_at) VALUES ('whole', 'written', 0)").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(t.db.get_setting("whole").await.unwrap().as_deref(), Some("written"));
}
