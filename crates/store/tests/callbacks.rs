//! Callback deliveries on SQLite and PostgreSQL: a delivery is created once, only for a
//! finished task with a callback_url; the sweep finds the finished ones without a delivery;
//! an attempt is claimed by exactly one of many concurrent claimers; failures are retried at
//! the given time, then given up; a delivered callback is never due again; an outcome of an
//! attempt that is no longer current is ignored.

use std::time::Duration;

use purrify_api::{EnhanceParams, TaskStatus};
use purrify_store::testing::TestDb;
use purrify_store::{AttemptOutcome, Db, NewTask};

/// A fixed instant, so no test depends on the wall clock.
const NOW: i64 = 1_706_276_710_500;

async fn task(db: &Db, id: &str, status: TaskStatus, finished_at: Option<i64>, callback: Option<&str>) {
    let t = NewTask::new(id, format!("file:///in/{id}.jpg"), format!("file:///out/{id}.jpg"), EnhanceParams::default());
    db.insert_task_at(&t, Duration::from_secs(300), NOW - 60_000).await.unwrap();
    sqlx::query("UPDATE tasks SET status = $2, finished_at = $3, callback_url = $4 WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .bind(finished_at)
        .bind(callback)
        .execute(db.pool())
        .await
        .unwrap();
}

async fn created_once_for_finished_tasks_with_a_url(t: TestDb) {
    let db = &t.db;
    task(db, "done", TaskStatus::Completed, Some(NOW - 10), Some("https://client.example/hook")).await;
    task(db, "failed", TaskStatus::Failed, Some(NOW - 5), Some("https://client.example/f")).await;
    task(db, "cancelled", TaskStatus::Cancelled, Some(NOW - 1), Some("https://client.example/c")).await;
    task(db, "running", TaskStatus::Processing, None, Some("https://client.example/r")).await;
    task(db, "no-url", TaskStatus::Completed, Some(NOW - 10), None).await;

    assert!(db.enqueue_callback("done", NOW).await.unwrap());
    assert!(!db.enqueue_callback("done", NOW + 1).await.unwrap(), "once per task");
    assert!(!db.enqueue_callback("running", NOW).await.unwrap(), "not before the task ends");
    assert!(!db.enqueue_callback("no-url", NOW).await.unwrap(), "nothing to call");
    assert!(!db.enqueue_callback("missing", NOW).await.unwrap());
    let d = db.callback_delivery("done").await.unwrap().unwrap();
    assert_eq!((d.url.as_str(), d.attempts, d.next_attempt_at, d.created_at), ("https://client.example/hook", 0, NOW, NOW));
    assert!(!d.is_settled() && d.last_status.is_none() && d.last_error.is_none());

    // The sweep: finished since the cutoff, with a URL and no delivery yet, at most `limit`.
    assert_eq!(db.enqueue_finished_callbacks(NOW - 6, NOW, 100).await.unwrap(), 2, "failed and cancelled; done has one");
    assert_eq!(db.enqueue_finished_callbacks(NOW - 6, NOW, 100).await.unwrap(), 0, "nothing left");
    task(db, "old", TaskStatus::Completed, Some(NOW - 1_000), Some("https://client.example/o")).await;
    task(db, "new1", TaskStatus::Completed, Some(NOW - 3), Some("https://client.example/n")).await;
    task(db, "new2", TaskStatus::Completed, Some(NOW - 2), Some("https://client.example/n")).await;
    assert_eq!(db.enqueue_finished_callbacks(NOW - 6, NOW, 1).await.unwrap(), 1, "bounded");
    assert!(db.callback_delivery("new1").await.unwrap().is_some(), "oldest first");
    assert_eq!(db.enqueue_finished_callbacks(NOW - 6, NOW, 10).await.unwrap(), 1);
    assert!(db.callback_delivery("old").await.unwrap().is_none(), "before the cutoff");
    assert!(db.callback_delivery("running").await.unwrap().is_none());
}

async fn attempts_are_claimed_retried_and_settled(t: TestDb) {
    let db = &t.db;
    task(db, "a", TaskStatus::Completed, Some(NOW), Some("https://client.example/a")).await;
    task(db, "b", TaskStatus::Failed, Some(NOW), Some("https://client.example/b")).await;
    db.enqueue_callback("a", NOW).await.unwrap();
    db.enqueue_callback("b", NOW + 5).await.unwrap();
    assert!(db.due_callbacks(NOW - 1, 10).await.unwrap().is_empty(), "not due yet");
    let due = db.due_callbacks(NOW + 5, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.task_id.as_str()).collect::<Vec<_>>(), ["a", "b"], "soonest first");
    let a = due[0].clone();

    // Claimed once: the second claim of the same read fails, and the lease hides it.
    assert!(db.claim_callback(&a, NOW + 5, NOW + 20_000).await.unwrap());
    assert!(!db.claim_callback(&a, NOW + 5, NOW + 20_000).await.unwrap());
    assert_eq!(db.due_callbacks(NOW + 10, 10).await.unwrap().len(), 1, "only b is due during a's lease");
    let claimed = db.callback_delivery("a").await.unwrap().unwrap();
    assert_eq!((claimed.attempts, claimed.next_attempt_at), (1, NOW + 20_000));

    // A failure is retried when told; the next attempt is claimed from the new state.
    let failed = AttemptOutcome::Failed { status: Some(503), error: "HTTP 503".into(), retry_at: Some(NOW + 1_000) };
    assert!(db.record_callback_attempt("a", 1, &failed, NOW + 6).await.unwrap());
    let a = db.callback_delivery("a").await.unwrap().unwrap();
    assert_eq!((a.last_status, a.last_error.as_deref(), a.next_attempt_at), (Some(503), Some("HTTP 503"), NOW + 1_000));
    assert!(db.due_callbacks(NOW + 999, 10).await.unwrap().iter().all(|d| d.task_id != "a"));
    assert!(db.claim_callback(&a, NOW + 1_000, NOW + 30_000).await.unwrap());
    // The outcome of an attempt that is no longer the current one changes nothing.
    let stale = AttemptOutcome::Delivered { status: 200 };
    assert!(!db.record_callback_attempt("a", 1, &stale, NOW + 1_001).await.unwrap());
    assert!(db.record_callback_attempt("a", 2, &AttemptOutcome::Delivered { status: 204 }, NOW + 1_002).await.unwrap());
    let a = db.callback_delivery("a").await.unwrap().unwrap();
    assert_eq!((a.delivered_at, a.last_status, a.last_error.as_deref(), a.attempts), (Some(NOW + 1_002), Some(204), None, 2));
    assert!(a.is_settled());
    assert!(!db.claim_callback(&a, NOW + 100_000, NOW + 200_000).await.unwrap(), "delivered: never again");
    assert!(db.due_callbacks(NOW + 100_000, 10).await.unwrap().iter().all(|d| d.task_id != "a"));

    // Given up: no response, no retry.
    let b = db.callback_delivery("b").await.unwrap().unwrap();
    assert!(db.claim_callback(&b, NOW + 5, NOW + 20_000).await.unwrap());
    let refused = AttemptOutcome::Failed { status: None, error: "address refused".into(), retry_at: None };
    assert!(db.record_callback_attempt("b", 1, &refused, NOW + 7).await.unwrap());
    let b = db.callback_delivery("b").await.unwrap().unwrap();
    assert_eq!((b.given_up_at, b.last_status, b.last_error.as_deref()), (Some(NOW + 7), None, Some("address refused")));
    assert!(db.due_callbacks(NOW + 100_000, 10).await.unwrap().is_empty(), "nothing due after both settled");
}

async fn one_of_many_concurrent_claimers_gets_an_attempt(t: TestDb) {
    let db = &t.db;
    task(db, "a", TaskStatus::Completed, Some(NOW), Some("https://client.example/a")).await;
    db.enqueue_callback("a", NOW).await.unwrap();
    let seen = db.callback_delivery("a").await.unwrap().unwrap();
    let claims = (0..16).map(|_| {
        let (db, seen) = (db.clone(), seen.clone());
        tokio::spawn(async move { db.claim_callback(&seen, NOW, NOW + 10_000).await.unwrap() })
    });
    let won = futures::future::join_all(claims).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1, "two gateways never send the same attempt");
    assert_eq!(db.callback_delivery("a").await.unwrap().unwrap().attempts, 1);
}

purrify_store::on_both_databases!(
    created_once_for_finished_tasks_with_a_url,
    attempts_are_claimed_retried_and_settled,
    one_of_many_concurrent_claimers_gets_an_attempt
);
