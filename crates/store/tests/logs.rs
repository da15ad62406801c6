//! The log tables on SQLite and PostgreSQL: system events and user actions written in
//! batches (a retried batch stores nothing twice), filtered by level, action, user, dates and
//! text, paged newest first, walked a day at a time; task events stored once per key; and
//! retention deleting old rows in bounded batches.

use purrify_store::testing::TestDb;
use purrify_store::{NewSystemLog, NewUserAction, PageRequest, SystemLogFilter, TaskEvent, UserActionFilter};

/// 2024-01-15T00:00:00Z.
const DAY: i64 = 1_705_276_800_000;
const HOUR: i64 = 3_600_000;

fn log(id: &str, at: i64, level: &str, message: &str, fields: &str) -> NewSystemLog {
    NewSystemLog {
        id: id.into(),
        created_at: at,
        level: level.into(),
        target: "purrify_gateway::test".into(),
        message: message.into(),
        fields: fields.into(),
        request_id: None,
    }
}

fn action(id: &str, at: i64, user: Option<&str>, action: &str, route: &str) -> NewUserAction {
    NewUserAction {
        id: id.into(),
        created_at: at,
        user_id: user.map(Into::into),
        action: action.into(),
        method: Some("POST".into()),
        route: Some(route.into()),
        target_id: None,
        status: Some(200),
        client_addr: Some("203.0.113.7".into()),
        detail: "{}".into(),
        request_id: None,
    }
}

async fn system_logs_filter_and_page(t: TestDb) {
    let db = &t.db;
    let mut logs = Vec::new();
    for i in 0..250 {
        let level = if i % 10 == 0 { "ERROR" } else { "INFO" };
        logs.push(log(&format!("l{i:04}"), DAY + i64::from(i) * 60_000, level, &format!("event {i}"), "{}"));
    }
    logs.push(log("w1", DAY - HOUR, "WARNING", "Disk 50%_full", r#"{"volume":"/data"}"#));
    assert_eq!(db.insert_system_logs(&logs).await.unwrap(), 251, "several chunks of one statement each");
    assert_eq!(db.insert_system_logs(&logs[..3]).await.unwrap(), 0, "a retried batch stores nothing twice");

    let all = db.list_system_logs(&SystemLogFilter::default(), PageRequest::new(Some(1), Some(50))).await.unwrap();
    assert_eq!((all.total, all.items.len(), all.total_pages()), (251, 50, 6));
    assert_eq!(all.items[0].id, "l0249", "newest first");
    let second = db.list_system_logs(&SystemLogFilter::default(), PageRequest::new(Some(2), Some(50))).await.unwrap();
    assert_eq!(second.items[0].id, "l0199");

    let errors = SystemLogFilter { level: Some("ERROR".into()), ..Default::default() };
    let page = db.list_system_logs(&errors, PageRequest::new(Some(1), Some(100))).await.unwrap();
    assert_eq!(page.total, 25);
    assert!(page.items.iter().all(|l| l.level == "ERROR"));

    // Dates: [from, until).
    let window = SystemLogFilter { from: Some(DAY), until: Some(DAY + 10 * 60_000), ..Default::default() };
    assert_eq!(db.list_system_logs(&window, PageRequest::default()).await.unwrap().total, 10);

    // Search: case-insensitive, in message, target or fields; LIKE wildcards are literal.
    let s = |q: &str| SystemLogFilter { search: Some(q.into()), ..Default::default() };
    assert_eq!(db.list_system_logs(&s("DISK 50%_"), PageRequest::default()).await.unwrap().total, 1);
    assert_eq!(db.list_system_logs(&s("50%x"), PageRequest::default()).await.unwrap().total, 0);
    assert_eq!(db.list_system_logs(&s("/DATA"), PageRequest::default()).await.unwrap().total, 1, "fields are searched");
    assert_eq!(db.list_system_logs(&s("event 24"), PageRequest::default()).await.unwrap().total, 11, "event 24, 240..249");

    // The day's walk: every row of the day once, oldest first, in pages of 7.
    let mut seen = Vec::new();
    let mut after: Option<(i64, String)> = None;
    loop {
        let batch = db.system_logs_between(DAY, DAY + 24 * HOUR, after.as_ref().map(|(t, id)| (*t, id.as_str())), 7).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        seen.extend(batch.into_iter().map(|l| l.id));
    }
    assert_eq!(seen.len(), 250, "the warning of the day before is not in the day");
    assert_eq!(seen.first().map(String::as_str), Some("l0000"));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

async fn user_actions_filter_and_page(t: TestDb) {
    let db = &t.db;
    let actions = vec![
        action("a1", DAY, Some("alice"), "login", "/api/auth/login"),
        action("a2", DAY + 1, None, "login_failed", "/api/auth/login"),
        action("a3", DAY + 2, Some("alice"), "delete", "/api/works/{id}"),
        action("a4", DAY + 3, Some("root"), "admin_update", "/api/admin/users/{user_id}"),
        action("a5", DAY + 24 * HOUR, Some("alice"), "update", "/api/users/me"),
    ];
    assert_eq!(db.insert_user_actions(&actions).await.unwrap(), 5);
    assert_eq!(db.insert_user_actions(&actions).await.unwrap(), 0);
    let alice = UserActionFilter { user_id: Some("alice".into()), ..Default::default() };
    let page = db.list_user_actions(&alice, PageRequest::default()).await.unwrap();
    assert_eq!(page.items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a5", "a3", "a1"]);
    let failed = UserActionFilter { action: Some("login_failed".into()), ..Default::default() };
    let page = db.list_user_actions(&failed, PageRequest::default()).await.unwrap();
    assert_eq!((page.total, page.items[0].user_id.as_deref()), (1, None));
    assert_eq!(page.items[0].client_addr.as_deref(), Some("203.0.113.7"));
    let day = UserActionFilter { from: Some(DAY), until: Some(DAY + 24 * HOUR), ..Default::default() };
    assert_eq!(db.list_user_actions(&day, PageRequest::default()).await.unwrap().total, 4);
    let admin = UserActionFilter { search: Some("/ADMIN/".into()), ..Default::default() };
    assert_eq!(db.list_user_actions(&admin, PageRequest::default()).await.unwrap().items[0].id, "a4");
    let walked = db.user_actions_between(DAY, DAY + 24 * HOUR, Some((DAY + 1, "a2")), 10).await.unwrap();
    assert_eq!(walked.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a3", "a4"]);
}

fn event(task: &str, key: &str, kind: &str, at: i64, attempt: i64) -> TaskEvent {
    TaskEvent {
        task_id: task.into(),
        event_key: key.into(),
        kind: kind.into(),
        created_at: at,
        attempt,
        worker: (kind == "dispatched").then(|| "http://10.0.0.5:8000".into()),
        progress: (kind == "progress").then_some(0.5),
        error_code: None,
        message: None,
    }
}

async fn task_events_are_stored_once_per_key(t: TestDb) {
    let db = &t.db;
    let first = vec![event("t1", "queued:0", "queued", DAY, 0), event("t1", "dispatched:1", "dispatched", DAY + 5, 1)];
    assert_eq!(db.insert_task_events(&first).await.unwrap(), 2);
    // A second replica saw the same changes, a little later, plus one more.
    let replica = vec![
        event("t1", "queued:0", "queued", DAY + 1, 0),
        event("t1", "dispatched:1", "dispatched", DAY + 6, 1),
        event("t1", "progress:1:50", "progress", DAY + 9, 1),
        event("t2", "queued:0", "queued", DAY + 2, 0),
    ];
    assert_eq!(db.insert_task_events(&replica).await.unwrap(), 2, "only the new keys");
    let timeline = db.task_events("t1", 100).await.unwrap();
    assert_eq!(timeline.iter().map(|e| e.event_key.as_str()).collect::<Vec<_>>(), ["queued:0", "dispatched:1", "progress:1:50"]);
    assert_eq!(timeline[0].created_at, DAY, "the first write wins");
    assert_eq!(timeline[1].worker.as_deref(), Some("http://10.0.0.5:8000"));
    assert_eq!(timeline[2].progress, Some(0.5));
    assert!(db.task_events("nope", 100).await.unwrap().is_empty());
}

async fn retention_deletes_in_bounded_batches(t: TestDb) {
    let db = &t.db;
    let old: Vec<_> = (0..25).map(|i| log(&format!("old{i}"), DAY - 40 * 24 * HOUR + i, "INFO", "old", "{}")).collect();
    db.insert_system_logs(&old).await.unwrap();
    db.insert_system_logs(&[log("new", DAY, "INFO", "new", "{}")]).await.unwrap();
    let cutoff = DAY - 30 * 24 * HOUR;
    assert_eq!(db.purge_system_logs(cutoff, 10).await.unwrap(), 10);
    assert_eq!(db.purge_system_logs(cutoff, 10).await.unwrap(), 10);
    assert_eq!(db.purge_system_logs(cutoff, 10).await.unwrap(), 5);
    assert_eq!(db.purge_system_logs(cutoff, 10).await.unwrap(), 0);
    assert_eq!(db.list_system_logs(&SystemLogFilter::default(), PageRequest::default()).await.unwrap().total, 1);

    db.insert_user_actions(&[action("old", cutoff - 1, None, "login", "/x"), action("new", cutoff, None, "login", "/x")]).await.unwrap();
    assert_eq!(db.purge_user_actions(cutoff, 10).await.unwrap(), 1);
    assert_eq!(db.list_user_actions(&UserActionFilter::default(), PageRequest::default()).await.unwrap().items[0].id, "new");

    let events: Vec<_> = (0..5).map(|i| event("t", &format!("progress:1:{i}"), "progress", cutoff - 10 + i, 1)).collect();
    db.insert_task_events(&events).await.unwrap();
    db.insert_task_events(&[event("t", "completed", "completed", cutoff, 1)]).await.unwrap();
    assert_eq!(db.purge_task_events(cutoff, 3).await.unwrap(), 3);
    assert_eq!(db.purge_task_events(cutoff, 3).await.unwrap(), 2);
    assert_eq!(db.task_events("t", 10).await.unwrap().len(), 1);
}

purrify_store::on_both_databases!(
    system_logs_filter_and_page,
    user_actions_filter_and_page,
    task_events_are_stored_once_per_key,
    retention_deletes_in_bounded_batches,
);
