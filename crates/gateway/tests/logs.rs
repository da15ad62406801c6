//! Seed 002's logs through the router on SQLite and PostgreSQL: the gateway's own events
//! captured by a tracing layer (levels, dates, search, paging, request ids, secrets never
//! stored), user actions recorded for logins, admin changes, deletions and refused writes,
//! the timeline of a task a worker really ran (its owner and admins see it, nobody else),
//! a day's file, retention, and the admin-only routes.

mod support;

use axum::http::{StatusCode, header};
use purrify_gateway::domain::logs::system_log_channel;
use purrify_store::{Guard, NewSystemLog, NewUserAction, PageRequest, SystemLogFilter, TaskEvent};
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use serde_json::{Value, json};
use support::client::*;
use support::*;
use tracing_subscriber::layer::SubscriberExt;

const PASSWORD: &str = "correct horse 42";
const ROOT_PASSWORD: &str = "root password 1";

fn admin_config(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some("root@example.com".into());
    c.bootstrap_admin_password = Some(ROOT_PASSWORD.into());
}

async fn login(api: &Api, email: &str, password: &str) -> (String, String) {
    let r = api.post_json("/api/auth/login", json!({"email": email, "password": password}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

async fn register(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

fn items(r: &Reply) -> Vec<Value> {
    r.body["data"]["items"].as_array().unwrap_or_else(|| panic!("a page: {}", r.body)).clone()
}

on_both!(
    system_logs_are_captured_filtered_and_never_hold_secrets,
    user_actions_record_logins_admin_changes_and_deletions,
    a_finished_tasks_timeline,
    a_day_is_downloaded_as_a_file,
    retention_deletes_old_rows,
    log_routes_are_for_admins,
    events_past_a_full_queue_are_counted,
);

async fn system_logs_are_captured_filtered_and_never_hold_secrets(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (root, _) = login(&api, "root@example.com", ROOT_PASSWORD).await;
    // This test's own capture, attached to this stack only: other stacks in the process see
    // none of it.
    let (capture, feed) = system_log_channel();
    api.stack.state.logs.attach_system_logs(feed);
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "purrify_gateway::test", order = 7, "payment settled");
        tracing::warn!(target: "purrify_gateway::test", worker = "http://10.0.0.5:8000", "worker slow");
        tracing::error!(
            target: "purrify_gateway::test",
            password = "hunter2",
            access_token = %"tok-abc",
            code = "wx-login-code",
            apiv3_key = "k-123456",
            authorization = "Bearer sk-999",
            user_id = "u1",
            "login with secrets"
        );
        tracing::debug!(target: "purrify_gateway::test", "below INFO: not stored");
        let span = tracing::info_span!("request", request_id = "rid-42");
        let _inside = span.enter();
        tracing::info!(target: "purrify_gateway::test", "inside a request");
        tracing::info!(target: "purrify_gateway::test", "client sent Authorization: Bearer abc.def.ghi");
    });
    capture.flush().await;

    let all = api.call("GET", "/api/logs/system?page_size=2", Some(&root), None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        (&all.body["data"]["total"], &all.body["data"]["page_size"], &all.body["data"]["total_pages"]),
        (&json!(5), &json!(2), &json!(3)),
        "INFO and above only: {}",
        all.body
    );
    let page3 = api.call("GET", "/api/logs/system?page_size=2&page=3", Some(&root), None).await;
    assert_eq!(items(&page3).len(), 1);
    assert_eq!(items(&page3)[0]["message"], "payment settled", "newest first: the oldest is last");
    assert_eq!(items(&page3)[0]["fields"], json!({"order": 7}));
    assert_eq!(items(&page3)[0]["module"], "purrify_gateway::test");

    let errors = api.call("GET", "/api/logs/system?level=ERROR", Some(&root), None).await;
    assert_eq!(errors.body["data"]["total"], 1);
    let e = &items(&errors)[0];
    assert_eq!(e["fields"]["password"], "[REDACTED]");
    assert_eq!(e["fields"]["user_id"], "u1", "ordinary fields are kept");
    let warnings = api.call("GET", "/api/logs/system?level=warning", Some(&root), None).await;
    assert_eq!(items(&warnings)[0]["level"], "WARNING");
    let search = api.call("GET", "/api/logs/system?search=PAYMENT", Some(&root), None).await;
    assert_eq!(search.body["data"]["total"], 1);
    let by_field = api.call("GET", "/api/logs/system?search=10.0.0.5", Some(&root), None).await;
    assert_eq!(by_field.body["data"]["total"], 1, "fields are searched");
    let inside = api.call("GET", "/api/logs/system?search=inside", Some(&root), None).await;
    assert_eq!(items(&inside)[0]["request_id"], "rid-42", "the request span's id");

    let today = chrono::Utc::now().date_naive();
    let q = |from: chrono::NaiveDate, to: chrono::NaiveDate| format!("/api/logs/system?start_date={from}&end_date={to}");
    let day = api.call("GET", &q(today, today), Some(&root), None).await;
    assert_eq!(day.body["data"]["total"], 5, "end_date includes its whole day");
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(api.call("GET", &q(tomorrow, tomorrow), Some(&root), None).await.body["data"]["total"], 0);
    let reversed = api.call("GET", &q(tomorrow, today.pred_opt().unwrap()), Some(&root), None).await;
    assert_envelope(&reversed, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "end before start");
    let bad_level = api.call("GET", "/api/logs/system?level=FATAL", Some(&root), None).await;
    assert_envelope(&bad_level, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown level");
    let bad_date = api.call("GET", "/api/logs/system?start_date=15/01/2024", Some(&root), None).await;
    assert_envelope(&bad_date, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "not a date");

    // The table itself never holds a secret.
    let db = api.stack.state.tasks.db().clone();
    let stored = db.list_system_logs(&SystemLogFilter::default(), PageRequest::new(Some(1), Some(100))).await.unwrap();
    let text = format!("{:?}", stored.items);
    for secret in ["hunter2", "tok-abc", "wx-login-code", "k-123456", "sk-999", "abc.def.ghi"] {
        assert!(!text.contains(secret), "{secret} stored: {text}");
    }
}

async fn user_actions_record_logins_admin_changes_and_deletions(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (root, root_id) = login(&api, "root@example.com", ROOT_PASSWORD).await;
    let (_, alice_id) = register(&api, "alice@example.com").await;
    let (alice, _) = login(&api, "alice@example.com", PASSWORD).await;
    let wrong = api.post_json("/api/auth/login", json!({"email": "alice@example.com", "password": "not it at all"}), &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let edit = api.call("PUT", &format!("/api/admin/users/{alice_id}"), Some(&root), Some(json!({"balance": 5.0}))).await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    let refused = api.call("PUT", "/api/admin/config/price_enhance", Some(&alice), Some(json!({"value": 0}))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let deleted = api.call("DELETE", "/api/works/w-404", Some(&alice), None).await;
    assert!(deleted.status.is_client_error(), "{}", deleted.body);
    // Reads are not actions.
    api.call("GET", "/api/auth/me", Some(&alice), None).await;
    api.stack.state.audit.flush().await;

    let of = |user: &str| format!("/api/logs/user-actions?user_id={user}&page_size=50");
    let alices = items(&api.call("GET", &of(&alice_id), Some(&root), None).await);
    let actions: Vec<&str> = alices.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["delete", "update", "login"], "newest first: {alices:?}");
    let delete = &alices[0];
    assert_eq!(
        (&delete["method"], &delete["route"], &delete["target_id"]),
        (&json!("DELETE"), &json!("/api/works/{work_id}"), &json!("w-404"))
    );
    assert_eq!(delete["status_code"], deleted.status.as_u16());
    let update = &alices[1];
    assert_eq!((&update["route"], &update["status_code"]), (&json!("/api/admin/config/{config_key}"), &json!(403)), "refused writes too");
    assert_eq!(alices[2]["details"], json!({"method": "password", "email": "alice@example.com"}));
    assert_eq!(alices[2]["ip_address"], "127.0.0.1");

    let roots = items(&api.call("GET", &of(&root_id), Some(&root), None).await);
    let admin_edit = roots.iter().find(|a| a["action"] == "admin_update").unwrap_or_else(|| panic!("{roots:?}"));
    assert_eq!((&admin_edit["route"], &admin_edit["target_id"]), (&json!("/api/admin/users/{user_id}"), &json!(alice_id)));
    assert_eq!(admin_edit["status_code"], 200);
    assert!(admin_edit["request_id"].as_str().is_some_and(|r| !r.is_empty()));

    let failed = items(&api.call("GET", "/api/logs/user-actions?action=login_failed", Some(&root), None).await);
    assert_eq!(failed.len(), 1);
    assert_eq!((&failed[0]["user_id"], &failed[0]["details"]["reason"]), (&Value::Null, &json!("unauthorized")));
    let bad = api.call("GET", "/api/logs/user-actions?action=dance", Some(&root), None).await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown action");

    // No password, sent or stored, is in the table.
    let day = chrono::Utc::now().date_naive();
    let file = api.call("GET", &format!("/api/logs/download?log_type=user_actions&date={day}"), Some(&root), None).await;
    let text = String::from_utf8_lossy(&file.raw).to_string();
    assert_eq!(text.lines().count(), 6, "{text}");
    for secret in [PASSWORD, ROOT_PASSWORD, "not it at all", root.as_str(), alice.as_str()] {
        assert!(!text.contains(secret), "{secret} stored: {text}");
    }
}

async fn a_finished_tasks_timeline(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (root, _) = login(&api, "root@example.com", ROOT_PASSWORD).await;
    let (alice, _) = register(&api, "alice@example.com").await;
    let (bob, _) = register(&api, "bob@example.com").await;
    // A task that fails before any worker takes it; its events are later lost (say, to
    // retention): the timeline then shows what its row proves.
    let early = api.upload_as(&alice, &[("file", Some("a.png"), &small_photo_png(16, 16))]).await;
    let early = early.body["task_id"].as_str().unwrap_or_else(|| panic!("{}", early.body)).to_owned();
    let db = api.stack.state.tasks.db().clone();
    purrify_testkit::eventually(30, "the queued event is stored", || async {
        api.stack.state.logs.flush_timeline().await;
        (!db.task_events(&early, 10).await.unwrap().is_empty()).then_some(())
    })
    .await;
    assert!(db.fail_task(&early, Guard::Queued, purrify_api::FailReason::BadInput, "not an image").await.unwrap());
    db.purge_task_events(i64::MAX, 100).await.unwrap();
    let derived = api.call("GET", &format!("/api/logs/tasks/{early}"), Some(&alice), None).await;
    let derived = derived.body["data"].clone();
    assert_eq!(derived["status"], "failed", "{derived}");
    let events = derived["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(), ["queued", "failed"], "{derived}");
    assert_eq!(
        (&events[1]["error_code"], &events[1]["message"], &events[1]["attempt"]),
        (&json!("BAD_INPUT"), &json!("not an image"), &json!(0))
    );

    let worker = FakeWorker::start(2, Behavior::Succeed).await;
    let r = api.post_json("/api/v1/config/backend", json!({"backend_url": worker.url}), &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let up = api.upload_as(&alice, &[("file", Some("a.png"), &small_photo_png(16, 16))]).await;
    assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
    let id = up.body["task_id"].as_str().unwrap().to_owned();
    let uri = format!("/api/logs/tasks/{id}");
    let timeline = purrify_testkit::eventually(90, "the timeline shows the outcome", || async {
        let r = api.call("GET", &uri, Some(&alice), None).await;
        let events = r.body["data"]["events"].as_array()?.clone();
        events.iter().any(|e| e["event"] == "completed").then_some(r.body["data"].clone())
    })
    .await;
    assert_eq!(timeline["task_id"], id);
    assert_eq!(timeline["status"], "completed");
    let events = timeline["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["queued", "dispatched", "progress", "progress", "completed"], "{timeline}");
    assert_eq!(events[0]["attempt"], 0);
    let dispatched = &events[1];
    assert_eq!((&dispatched["attempt"], dispatched["worker"].as_str()), (&json!(1), Some(worker.url.trim_end_matches('/'))), "{timeline}");
    assert_eq!((&events[2]["progress"], &events[3]["progress"]), (&json!(25.0), &json!(50.0)), "the marks the worker's 50 % crossed");
    assert_eq!(events[4]["progress"], 100.0);

    // Seen again (another replica watching the same task): stored once.
    api.stack.state.logs.flush_timeline().await;
    let stored = db.task_events(&id, 100).await.unwrap();
    let again: Vec<TaskEvent> = stored.iter().map(|e| TaskEvent { created_at: e.created_at + 5, ..e.clone() }).collect();
    assert_eq!(db.insert_task_events(&again).await.unwrap(), 0);
    assert_eq!(db.task_events(&id, 100).await.unwrap(), stored);

    let admin_view = api.call("GET", &uri, Some(&root), None).await;
    assert_eq!(admin_view.body["data"]["events"], timeline["events"], "admins see every task's timeline");
    assert_envelope(&api.call("GET", &uri, Some(&bob), None).await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "another user's task");
    assert_envelope(&api.call("GET", &uri, None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "no token");
    let none = api.call("GET", "/api/logs/tasks/no-such-task", Some(&root), None).await;
    assert_envelope(&none, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "no such task");
}

/// 2024-01-15T00:00:00Z.
const DAY: i64 = 1_705_276_800_000;

async fn a_day_is_downloaded_as_a_file(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (root, _) = login(&api, "root@example.com", ROOT_PASSWORD).await;
    let db = api.stack.state.tasks.db().clone();
    // More rows than one read of the stream, plus one the day before and one the day after.
    let mut logs: Vec<NewSystemLog> = (0..2_500)
        .map(|i| NewSystemLog {
            id: format!("l{i:05}"),
            created_at: DAY + i * 1_000,
            level: "INFO".into(),
            target: "purrify_gateway::test".into(),
            message: format!("event {i}"),
            fields: "{}".into(),
            request_id: None,
        })
        .collect();
    for (id, at) in [("before", DAY - 1), ("after", DAY + 86_400_000)] {
        logs.push(NewSystemLog { id: id.into(), created_at: at, message: id.into(), ..logs[0].clone() });
    }
    db.insert_system_logs(&logs).await.unwrap();
    db.insert_user_actions(&[NewUserAction {
        id: "a1".into(),
        created_at: DAY + 5,
        user_id: Some("u1".into()),
        action: "admin_delete".into(),
        method: Some("DELETE".into()),
        route: Some("/api/works/{work_id}".into()),
        target_id: Some("w1".into()),
        status: Some(200),
        client_addr: Some("203.0.113.7".into()),
        detail: "{}".into(),
        request_id: None,
    }])
    .await
    .unwrap();

    let r = api.call("GET", "/api/logs/download?log_type=system&date=2024-01-15", Some(&root), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(r.headers[header::CONTENT_DISPOSITION], "attachment; filename=\"system-2024-01-15.log\"");
    let text = String::from_utf8(r.raw).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2_500, "the day and nothing else");
    assert_eq!(lines[0], "2024-01-15T00:00:00.000Z INFO purrify_gateway::test: event 0");
    assert!(lines[2_499].ends_with("event 2499"), "oldest first: {}", lines[2_499]);

    let r = api.call("GET", "/api/logs/download?log_type=user_actions&date=2024-01-15", Some(&root), None).await;
    assert_eq!(
        String::from_utf8(r.raw).unwrap(),
        "2024-01-15T00:00:00.005Z admin_delete user=u1 DELETE /api/works/{work_id} target=w1 status=200 addr=203.0.113.7\n"
    );
    let empty = api.call("GET", "/api/logs/download?log_type=system&date=2023-01-01", Some(&root), None).await;
    assert_eq!((empty.status, empty.raw.len()), (StatusCode::OK, 0), "a day without rows is an empty file");
    for (uri, what) in [
        ("/api/logs/download?log_type=debug&date=2024-01-15", "unknown log type"),
        ("/api/logs/download?date=2024-01-15", "no log type"),
        ("/api/logs/download?log_type=system", "no date"),
        ("/api/logs/download?log_type=system&date=2024-13-01", "not a day"),
    ] {
        assert_envelope(&api.call("GET", uri, Some(&root), None).await, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", what);
    }
}

async fn retention_deletes_old_rows(backend: Backend) {
    let api = api_with(backend, |c| {
        admin_config(c);
        c.log_retention_days = 2;
    })
    .await;
    let db = api.stack.state.tasks.db().clone();
    let now = purrify_store::now_ms();
    let old = now - 3 * 86_400_000;
    let log = |id: &str, at: i64| NewSystemLog {
        id: id.into(),
        created_at: at,
        level: "INFO".into(),
        target: "t".into(),
        message: id.into(),
        fields: "{}".into(),
        request_id: None,
    };
    let mut logs: Vec<_> = (0..2_100).map(|i| log(&format!("old{i}"), old + i)).collect();
    logs.push(log("fresh", now - 86_400_000));
    db.insert_system_logs(&logs).await.unwrap();
    let action = |id: &str, at: i64| NewUserAction {
        id: id.into(),
        created_at: at,
        user_id: None,
        action: "login_failed".into(),
        method: None,
        route: None,
        target_id: None,
        status: None,
        client_addr: None,
        detail: "{}".into(),
        request_id: None,
    };
    db.insert_user_actions(&[action("old", old), action("fresh", now)]).await.unwrap();
    let event = |key: &str, at: i64| TaskEvent {
        task_id: "t1".into(),
        event_key: key.into(),
        kind: "queued".into(),
        created_at: at,
        attempt: 0,
        worker: None,
        progress: None,
        error_code: None,
        message: None,
    };
    db.insert_task_events(&[event("queued:0", old), event("queued:1", now)]).await.unwrap();

    api.stack.state.logs.housekeeping().await;

    let left = db.list_system_logs(&SystemLogFilter::default(), PageRequest::default()).await.unwrap();
    assert_eq!((left.total, left.items[0].id.as_str()), (1, "fresh"), "2,100 old rows gone, in batches");
    let actions = db.list_user_actions(&Default::default(), PageRequest::default()).await.unwrap();
    assert_eq!(actions.items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["fresh"]);
    let events = db.task_events("t1", 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.event_key.as_str()).collect::<Vec<_>>(), ["queued:1"]);
}

async fn log_routes_are_for_admins(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (alice, _) = register(&api, "alice@example.com").await;
    for uri in ["/api/logs/system", "/api/logs/user-actions", "/api/logs/download?log_type=system&date=2024-01-15"] {
        assert_envelope(&api.call("GET", uri, Some(&alice), None).await, StatusCode::FORBIDDEN, "ACCESS_DENIED", uri);
        assert_envelope(&api.call("GET", uri, None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", uri);
    }
}

async fn events_past_a_full_queue_are_counted(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (capture, feed) = system_log_channel();
    let capacity = purrify_gateway::domain::logs::capture::CAPACITY;
    // No writer yet: the queue fills, and what does not fit is dropped, never waited for.
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..capacity + 25 {
            tracing::info!(target: "purrify_gateway::test", i, "burst");
        }
    });
    api.stack.state.logs.attach_system_logs(feed);
    capture.flush().await;
    let db = api.stack.state.tasks.db().clone();
    let stored = db.list_system_logs(&SystemLogFilter::default(), PageRequest::new(Some(1), Some(1))).await.unwrap();
    assert_eq!(stored.total, capacity as u64);
    assert_eq!(api.metric(r#"purrify_gateway_log_records_lost_total{table="system_logs",reason="queue_full"}"#).await, 25.0);
}
