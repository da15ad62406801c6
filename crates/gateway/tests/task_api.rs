//! Task management through the router on SQLite and PostgreSQL (seeds 001 and 002, issue 12):
//! lists with filters, sorts and pages; the 002 detail; owners and admins only; cancel, retry
//! (charged again only if it succeeds) and delete; queue statistics with the caller's place in
//! dispatch order; unknown task types; the per-user task limit (concurrent submissions
//! included); maintenance mode; admin configuration; callback URLs.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use purrify_store::Guard;
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";
const ROOT: (&str, &str) = ("root@example.com", "root password 1");

fn setup(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some(ROOT.0.into());
    c.bootstrap_admin_password = Some(ROOT.1.into());
    c.callback_secret = Some("callback-signing-key".into());
}

struct World {
    api: Arc<Api>,
    root: String,
    alice: String,
    alice_id: String,
    bob: String,
}

async fn login(api: &Api, email: &str, password: &str) -> String {
    let r = api.post_json("/api/auth/login", json!({"email": email, "password": password}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

async fn register(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

async fn world(backend: Backend) -> World {
    let api = Arc::new(api_with(backend, setup).await);
    let root = login(&api, ROOT.0, ROOT.1).await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let (bob, _) = register(&api, "bob@example.com").await;
    World { api, root, alice, alice_id, bob }
}

/// A task of `token`'s user through seed 000's upload; its id.
async fn submit(api: &Api, token: &str, extra: &[(&str, Option<&str>, &[u8])]) -> String {
    let r = submit_reply(api, token, extra).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    r.body["task_id"].as_str().unwrap().to_owned()
}

async fn submit_reply(api: &Api, token: &str, extra: &[(&str, Option<&str>, &[u8])]) -> Reply {
    let photo = small_photo_png(32, 24);
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("file", Some("a.png"), &photo)];
    parts.extend_from_slice(extra);
    api.upload_as(token, &parts).await
}

fn ids(r: &Reply) -> Vec<String> {
    r.body["data"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn finish(api: &Api, id: &str, ok: bool) {
    let db = api.stack.state.tasks.db();
    let job = format!("{id}-1");
    assert!(db.claim_task(id, 0, "http://10.1.2.3:8000", &job).await.unwrap());
    if ok {
        assert!(db.complete_task(id, &job, &job_result()).await.unwrap());
    } else {
        assert!(db.fail_task(id, Guard::Job(&job), purrify_api::FailReason::WorkerUnavailable, "the worker failed").await.unwrap());
    }
    // Settle holds now rather than at the next sweep tick.
    api.stack.state.credits.sweep().await;
}

async fn balance(api: &Api, token: &str) -> Value {
    api.call("GET", "/api/credits/balance", Some(token), None).await.body["data"].clone()
}

on_both!(
    lists_filter_sort_and_page,
    details_are_for_owners_and_admins,
    cancel_retry_and_delete,
    queue_position_follows_dispatch,
    task_limit_holds_under_concurrent_submissions,
    maintenance_mode_pauses_writes_of_non_admins,
    admin_config_is_typed_and_all_or_nothing,
    callback_urls_are_checked,
    tasks_are_created_from_uploaded_files,
);

async fn lists_filter_sort_and_page(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let a: Vec<String> = [submit(api, &w.alice, &[]).await, submit(api, &w.alice, &[]).await, submit(api, &w.alice, &[]).await].into();
    let b = submit(api, &w.bob, &[]).await;

    for path in ["/api/tasks", "/api/tasks/user/list"] {
        let r = api.call("GET", path, Some(&w.alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(ids(&r), [a[2].clone(), a[1].clone(), a[0].clone()], "{path}: newest first by default");
        assert_eq!((r.body["data"]["total"].as_u64(), r.body["data"]["total_pages"].as_u64()), (Some(3), Some(1)));
        assert_eq!(r.body["data"]["items"][0]["status"], "pending");
    }
    let page = api.call("GET", "/api/tasks?page=2&page_size=2&sort_order=asc", Some(&w.alice), None).await;
    assert_eq!(
        (ids(&page), page.body["data"]["page"].as_u64(), page.body["data"]["total_pages"].as_u64()),
        (vec![a[2].clone()], Some(2), Some(2))
    );

    // Status filters in 002's words (and the core's), updated_at order follows changes.
    finish(api, &a[0], true).await;
    let db = api.stack.state.tasks.db();
    assert!(db.claim_task(&a[1], 0, "http://10.1.2.3:8000", &format!("{}-1", a[1])).await.unwrap());
    let running = api.call("GET", "/api/tasks?status=running", Some(&w.alice), None).await;
    assert_eq!(ids(&running), [a[1].clone()]);
    assert_eq!(ids(&api.call("GET", "/api/tasks?status=processing", Some(&w.alice), None).await), [a[1].clone()]);
    assert_eq!(ids(&api.call("GET", "/api/tasks?status=completed", Some(&w.alice), None).await), [a[0].clone()]);
    assert_eq!(ids(&api.call("GET", "/api/tasks?status=pending&task_type=enhance", Some(&w.alice), None).await), [a[2].clone()]);
    let by_update = api.call("GET", "/api/tasks?sort_by=updated_at&sort_order=desc", Some(&w.alice), None).await;
    assert_eq!(ids(&by_update)[2], a[2], "the untouched task changed least recently: {}", by_update.body);

    for (q, field) in
        [("status=done", "status"), ("sort_by=name", "sort_by"), ("sort_order=up", "sort_order"), ("task_type=video_analysis", "task_type")]
    {
        let r = api.call("GET", &format!("/api/tasks?{q}"), Some(&w.alice), None).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", q);
        assert!(r.body["details"]["field_errors"][field].is_array(), "{q}: {}", r.body);
    }
    let unknown = api.call("GET", "/api/tasks?task_type=video_analysis", Some(&w.alice), None).await;
    assert!(unknown.body["message"].as_str().unwrap().contains("served: enhance"), "{}", unknown.body);

    // Admins see everyone's, or one user's.
    let all = api.call("GET", "/api/admin/tasks?page_size=100", Some(&w.root), None).await;
    assert_eq!(all.body["data"]["total"], 4, "{}", all.body);
    assert!(ids(&all).contains(&b));
    let one = api.call("GET", &format!("/api/admin/tasks?user_id={}", w.alice_id), Some(&w.root), None).await;
    assert_eq!(one.body["data"]["total"], 3);
    assert_envelope(
        &api.call("GET", "/api/admin/tasks", Some(&w.alice), None).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "user on admin list",
    );
    assert_envelope(&api.call("GET", "/api/tasks", None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "no token");
}

async fn details_are_for_owners_and_admins(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let id = submit(api, &w.alice, &[("quality_level", None, b"fast"), ("scale", None, b"4")]).await;
    let r = api.call("GET", &format!("/api/tasks/{id}"), Some(&w.alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d = &r.body["data"];
    for key in [
        "id",
        "title",
        "description",
        "task_type",
        "status",
        "progress",
        "priority",
        "gpu_server_id",
        "config",
        "result",
        "error_message",
        "cost",
        "estimated_duration",
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
    ] {
        assert!(d.get(key).is_some(), "002 detail field {key}: {d}");
    }
    assert_eq!((d["task_type"].as_str(), d["status"].as_str(), d["progress"].as_f64()), (Some("enhance"), Some("pending"), Some(0.0)));
    assert_eq!((d["config"]["quality_level"].as_str(), d["config"]["scale"].as_u64()), (Some("fast"), Some(4)));

    // Someone else's task is missing, for reads and for every change.
    for (method, path) in [
        ("GET", format!("/api/tasks/{id}")),
        ("POST", format!("/api/tasks/{id}/cancel")),
        ("POST", format!("/api/tasks/{id}/retry")),
        ("DELETE", format!("/api/tasks/{id}")),
    ] {
        let r = api.call(method, &path, Some(&w.bob), None).await;
        assert_envelope(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", &format!("bob {method} {path}"));
    }
    assert_envelope(
        &api.call("GET", "/api/tasks/nope", Some(&w.alice), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "unknown",
    );

    // Completed: percent progress, result, worker shown to admins only, times.
    finish(api, &id, true).await;
    let mine = api.call("GET", &format!("/api/tasks/{id}"), Some(&w.alice), None).await.body["data"].clone();
    assert_eq!((mine["status"].as_str(), mine["progress"].as_f64()), (Some("completed"), Some(100.0)), "{mine}");
    assert_eq!(mine["result"]["download_url"], format!("/api/v1/download/{id}"));
    assert!(mine["gpu_server_id"].is_null() && mine["completed_at"].is_string() && mine["started_at"].is_string(), "{mine}");
    let admin = api.call("GET", &format!("/api/tasks/{id}"), Some(&w.root), None).await.body["data"].clone();
    assert_eq!(admin["gpu_server_id"], "http://10.1.2.3:8000");
}

async fn cancel_retry_and_delete(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    api.call("PUT", "/api/admin/config/price_enhance", Some(&w.root), Some(json!({"value": 1}))).await;
    let set = api.call("PUT", &format!("/api/admin/users/{}", w.alice_id), Some(&w.root), Some(json!({"balance": 10}))).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);

    // Cancel a queued task: its hold is released.
    let id = submit(api, &w.alice, &[]).await;
    assert_eq!(balance(api, &w.alice).await["held"], 1.0);
    let c = api.call("POST", &format!("/api/tasks/{id}/cancel"), Some(&w.alice), None).await;
    assert_eq!(
        (c.status, c.body["data"]["outcome"].as_str(), c.body["data"]["task"]["status"].as_str()),
        (StatusCode::OK, Some("cancelled"), Some("cancelled")),
        "{}",
        c.body
    );
    let again = api.call("POST", &format!("/api/tasks/{id}/cancel"), Some(&w.alice), None).await;
    assert_eq!(again.body["data"]["outcome"], "already_finished");
    api.stack.state.credits.sweep().await;
    assert_eq!(balance(api, &w.alice).await, json!({"balance": 10.0, "held": 0.0, "spent": 0.0}));

    // Only failed or cancelled tasks are retried; a retry is a new task, held again.
    let r = api.call("POST", &format!("/api/tasks/{id}/retry"), Some(&w.alice), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let retry = r.body["data"]["id"].as_str().unwrap().to_owned();
    assert_ne!(retry, id);
    assert_eq!((r.body["data"]["retry_of"].as_str(), r.body["data"]["status"].as_str()), (Some(id.as_str()), Some("pending")));
    assert_eq!(balance(api, &w.alice).await["held"], 1.0);
    let twice = api.call("POST", &format!("/api/tasks/{id}/retry"), Some(&w.alice), None).await;
    assert_envelope(&twice, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "retried twice");
    let queued = api.call("POST", &format!("/api/tasks/{retry}/retry"), Some(&w.alice), None).await;
    assert_envelope(&queued, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "retrying a queued task");

    // The retry fails: released, nothing charged; its own retry succeeds: charged once.
    finish(api, &retry, false).await;
    assert_eq!(balance(api, &w.alice).await, json!({"balance": 10.0, "held": 0.0, "spent": 0.0}));
    let r2 = api.call("POST", &format!("/api/tasks/{retry}/retry"), Some(&w.alice), None).await;
    assert_eq!(r2.status, StatusCode::CREATED, "{}", r2.body);
    let third = r2.body["data"]["id"].as_str().unwrap().to_owned();
    finish(api, &third, true).await;
    assert_eq!(balance(api, &w.alice).await, json!({"balance": 9.0, "held": 0.0, "spent": 1.0}));
    assert_eq!(api.call("GET", &format!("/api/tasks/{third}"), Some(&w.alice), None).await.body["data"]["cost"], 1.0);
    assert!(api.stack.state.tasks.db().ledger_mismatches().await.unwrap().is_empty());
    // The retry runs on its own copy of the input.
    let db = api.stack.state.tasks.db();
    let (first, last) = (db.get_task(&id).await.unwrap().unwrap(), db.get_task(&third).await.unwrap().unwrap());
    assert_ne!(first.input_uri, last.input_uri);
    assert!(api.stack.state.storage.get(&last.input_uri, 1 << 20).await.is_ok());

    // Delete: finished only; then gone from lists and details.
    let running = submit(api, &w.alice, &[]).await;
    let refused = api.call("DELETE", &format!("/api/tasks/{running}"), Some(&w.alice), None).await;
    assert_envelope(&refused, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "deleting a queued task");
    let del = api.call("DELETE", &format!("/api/tasks/{third}"), Some(&w.alice), None).await;
    assert_eq!((del.status, del.body["data"]["deleted"].as_bool()), (StatusCode::OK, Some(true)), "{}", del.body);
    assert_envelope(
        &api.call("GET", &format!("/api/tasks/{third}"), Some(&w.alice), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "deleted",
    );
    assert!(!ids(&api.call("GET", "/api/tasks?page_size=100", Some(&w.alice), None).await).contains(&third));
    assert_envelope(
        &api.call("DELETE", &format!("/api/tasks/{third}"), Some(&w.alice), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "deleted twice",
    );
    // An admin may cancel anyone's task.
    let c = api.call("POST", &format!("/api/tasks/{running}/cancel"), Some(&w.root), None).await;
    assert_eq!(c.body["data"]["outcome"], "cancelled", "{}", c.body);
}

async fn queue_position_follows_dispatch(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let stats = |token: String| {
        let api = api.clone();
        async move { api.call("GET", "/api/tasks/stats/queue", Some(&token), None).await.body["data"].clone() }
    };
    assert_eq!(stats(w.alice.clone()).await["position"], Value::Null, "nothing queued");
    // Alice bursts three, then Bob submits one: fair queuing puts Bob's second.
    for _ in 0..3 {
        submit(api, &w.alice, &[]).await;
    }
    submit(api, &w.bob, &[]).await;
    let order: Vec<Option<String>> = api.stack.state.tasks.db().queued_tasks(100).await.unwrap().into_iter().map(|t| t.user_id).collect();
    let (a, b) = (stats(w.alice.clone()).await, stats(w.bob.clone()).await);
    assert_eq!((a["position"].as_u64(), b["position"].as_u64()), (Some(0), Some(1)), "dispatch order {order:?}");
    assert_eq!((a["queue_length"].as_u64(), a["running"].as_u64(), a["my_active_tasks"].as_u64()), (Some(4), Some(0), Some(3)));
    let first = api.stack.state.tasks.db().queued_tasks(1).await.unwrap().remove(0);
    finish(api, &first.id, true).await;
    let a = stats(w.alice.clone()).await;
    assert_eq!((a["queue_length"].as_u64(), a["position"].as_u64()), (Some(3), Some(1)), "{a}");
    assert!(a["average_wait_seconds"].as_f64().is_some(), "one task started recently: {a}");
}

async fn task_limit_holds_under_concurrent_submissions(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let set = api.call("PUT", "/api/admin/config/max_concurrent_tasks_per_user", Some(&w.root), Some(json!({"value": 2}))).await;
    assert_eq!((set.status, set.body["data"]["value"].as_u64()), (StatusCode::OK, Some(2)), "{}", set.body);
    let uploads_before = api.stored_uploads();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (api, token) = (api.clone(), w.alice.clone());
            tokio::spawn(async move { submit_reply(&api, &token, &[]).await })
        })
        .collect();
    let mut accepted = Vec::new();
    for r in runs {
        let r = r.await.unwrap();
        match r.status {
            StatusCode::ACCEPTED => accepted.push(r.body["task_id"].as_str().unwrap().to_owned()),
            _ => assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "TASK_LIMIT_EXCEEDED", "over the limit"),
        }
    }
    assert_eq!(accepted.len(), 2, "exactly the limit passes");
    assert_eq!(api.stored_uploads(), uploads_before + 2, "refused uploads left no object");
    // Other users are not limited by Alice's tasks; a finished task frees a slot, and a
    // retry counts like any submission.
    submit(api, &w.bob, &[]).await;
    finish(api, &accepted[0], false).await;
    let retry = api.call("POST", &format!("/api/tasks/{}/retry", accepted[0]), Some(&w.alice), None).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_envelope(&submit_reply(api, &w.alice, &[]).await, StatusCode::TOO_MANY_REQUESTS, "TASK_LIMIT_EXCEEDED", "full again");
    api.call("PUT", "/api/admin/config/max_concurrent_tasks_per_user", Some(&w.root), Some(json!({"value": 0}))).await;
    submit(api, &w.alice, &[]).await;
}

async fn maintenance_mode_pauses_writes_of_non_admins(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let id = submit(api, &w.alice, &[]).await;
    let on = api.call("PUT", "/api/admin/config", Some(&w.root), Some(json!({"maintenance_mode": true}))).await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);

    let refused = submit_reply(api, &w.alice, &[]).await;
    assert_envelope(&refused, StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE", "upload in maintenance");
    assert!(refused.body["message"].as_str().unwrap().contains("maintenance"));
    assert_envelope(
        &api.call("POST", &format!("/api/tasks/{id}/cancel"), Some(&w.alice), None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_UNAVAILABLE",
        "cancel in maintenance",
    );
    assert_envelope(
        &api.upload(&[("file", Some("a.png"), &small_photo_png(8, 8))]).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_UNAVAILABLE",
        "anonymous",
    );
    // Reads and logins keep working; admins keep writing.
    assert_eq!(api.call("GET", "/api/tasks", Some(&w.alice), None).await.status, StatusCode::OK);
    assert_eq!(api.call("GET", &format!("/api/tasks/{id}"), Some(&w.alice), None).await.status, StatusCode::OK);
    login(api, "alice@example.com", PASSWORD).await;
    // GPU servers keep registering (their webhook secret), whatever the answer.
    let hook = api.post_json("/webhook/register", json!({"ip": "203.0.113.5", "port": 8000, "secret": "test-secret"}), &[]).await;
    assert_ne!(hook.status, StatusCode::SERVICE_UNAVAILABLE, "{}", hook.body);
    let admin_cancel = api.call("POST", &format!("/api/tasks/{id}/cancel"), Some(&w.root), None).await;
    assert_eq!(admin_cancel.status, StatusCode::OK, "{}", admin_cancel.body);
    let off = api.call("PUT", "/api/admin/config/maintenance_mode", Some(&w.root), Some(json!({"value": false}))).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    submit(api, &w.alice, &[]).await;
}

async fn admin_config_is_typed_and_all_or_nothing(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let get = api.call("GET", "/api/admin/config", Some(&w.root), None).await;
    let keys: Vec<&str> = get.body["data"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    for k in ["price_enhance", "max_concurrent_tasks_per_user", "default_task_timeout", "maintenance_mode", "packages"] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    let value =
        |r: &Reply, key: &str| r.body["data"].as_array().unwrap().iter().find(|i| i["key"] == key).map(|i| i["value"].clone()).unwrap();
    assert_eq!(value(&get, "default_task_timeout"), 300, "the configured deadline");

    // One bad key: nothing changes, each bad key named.
    let bad = api
        .call(
            "PUT",
            "/api/admin/config",
            Some(&w.root),
            Some(json!({"default_task_timeout": 3600, "maintenance_mode": "yes", "colour": 1})),
        )
        .await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "mixed");
    assert!(
        bad.body["details"]["field_errors"]["maintenance_mode"].is_array() && bad.body["details"]["field_errors"]["colour"].is_array(),
        "{}",
        bad.body
    );
    assert_eq!(value(&api.call("GET", "/api/admin/config", Some(&w.root), None).await, "default_task_timeout"), 300);
    assert_envelope(
        &api.call("PUT", "/api/admin/config/colour", Some(&w.root), Some(json!({"value": 1}))).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "unknown key",
    );
    assert_envelope(
        &api.call("PUT", "/api/admin/config", Some(&w.alice), Some(json!({"maintenance_mode": true}))).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "user",
    );

    // Several keys at once; the timeout is the deadline of new tasks.
    let ok = api
        .call(
            "PUT",
            "/api/admin/config",
            Some(&w.root),
            Some(json!({"default_task_timeout": 3600, "max_concurrent_tasks_per_user": 5, "price_enhance": "0.50"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        (value(&ok, "default_task_timeout"), value(&ok, "max_concurrent_tasks_per_user"), value(&ok, "price_enhance")),
        (json!(3600), json!(5), json!(0.5))
    );
    let free = api.call("PUT", "/api/admin/config/price_enhance", Some(&w.root), Some(json!({"value": 0}))).await;
    assert_eq!(free.body["data"]["value"], 0.0, "{}", free.body);
    let id = submit(api, &w.root, &[]).await;
    let t = api.stack.state.tasks.db().get_task(&id).await.unwrap().unwrap();
    assert_eq!(t.deadline_at - t.created_at, 3_600_000);

    // Packages are edited as a whole list: the ones left out go off sale.
    let packages = json!([{"id": "basic", "name": "60 credits", "price": 6, "credits": 60}, {"id": "mega", "name": "2000 credits", "price": "188.00", "credits": 2000, "bonus": 300, "sort": 40}]);
    let p = api.call("PUT", "/api/admin/config/packages", Some(&w.root), Some(json!({"value": packages}))).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let on_sale = api.call("GET", "/api/credits/packages", None, None).await;
    let names: Vec<&str> = on_sale.body["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(names, ["basic", "mega"], "{}", on_sale.body);
    assert_eq!(on_sale.body["data"][1]["price_fen"], 18800);
    let bad_pkg = api
        .call(
            "PUT",
            "/api/admin/config/packages",
            Some(&w.root),
            Some(json!({"value": [{"id": "x", "name": "x", "price": 0, "credits": 1}]})),
        )
        .await;
    assert_envelope(&bad_pkg, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "free package");
}

async fn callback_urls_are_checked(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let id = submit(api, &w.alice, &[("callback_url", None, b"https://hooks.example.com/done")]).await;
    let d = api.call("GET", &format!("/api/tasks/{id}"), Some(&w.alice), None).await;
    assert_eq!(d.body["data"]["callback_url"], "https://hooks.example.com/done");
    let uploads_before = api.stored_uploads();
    for bad in [
        "ftp://hooks.example.com/x",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:8080/x",
        "http://[::ffff:127.0.0.1]/x",
        "nonsense",
    ] {
        let r = submit_reply(api, &w.alice, &[("callback_url", None, bad.as_bytes())]).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", bad);
        assert!(r.body["details"]["field_errors"]["callback_url"].is_array(), "{bad}: {}", r.body);
    }
    assert_eq!(api.stored_uploads(), uploads_before, "refused uploads left nothing");

    // Without a signing key no callback is accepted.
    let plain = api_with(backend, |c| c.callback_secret = None).await;
    let (token, _) = register(&plain, "carol@example.com").await;
    let r = submit_reply(&plain, &token, &[("callback_url", None, b"https://hooks.example.com/done")]).await;
    assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "no signing key");
    assert!(r.body["message"].as_str().unwrap().contains("not enabled"), "{}", r.body);
}

/// Uploads a file through seed 001's `/api/upload/single`; its file id and stored URI.
async fn upload_file(api: &Api, token: &str, bytes: &[u8]) -> String {
    let body = multipart(&[("file", Some("photo.png"), bytes)]);
    let req = axum::http::Request::post("/api/upload/single")
        .header(axum::http::header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(axum::body::Body::from(body))
        .unwrap();
    let r = api.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["file_id"].as_str().unwrap().to_owned()
}

async fn tasks_are_created_from_uploaded_files(backend: Backend) {
    let w = world(backend).await;
    let api = &w.api;
    let photo = small_photo_png(40, 30);
    let file = upload_file(api, &w.alice, &photo).await;

    // 001: a file and explicit parameters; users cannot raise their priority.
    let r = api
        .call("POST", "/api/tasks/create", Some(&w.alice),
              Some(json!({"file_id": file, "params": {"scale": 4, "quality_level": "fast", "face_enhance": false}, "priority": 5, "title": "cat"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = r.body["data"].clone();
    assert_eq!((d["status"].as_str(), d["priority"].as_i64(), d["title"].as_str()), (Some("pending"), Some(0), Some("cat")), "{d}");
    assert_eq!((d["config"]["scale"].as_u64(), d["config"]["face_enhance"].as_bool()), (Some(4), Some(false)));
    let id = d["id"].as_str().unwrap().to_owned();
    // The task has its own input object: the user's upload survives the task's housekeeping.
    let t = api.stack.state.tasks.db().get_task(&id).await.unwrap().unwrap();
    assert!(t.input_uri.contains(&id), "{}", t.input_uri);
    api.stack.state.storage.delete(&t.input_uri).await.unwrap();
    let again = api.call("POST", "/api/tasks/create", Some(&w.alice), Some(json!({"file_id": file}))).await;
    assert_eq!(again.status, StatusCode::CREATED, "the upload is still there: {}", again.body);

    // 002: title, description, task_type, priority, config; admins may raise priority.
    let admin_file = upload_file(api, &w.root, &photo).await;
    let r = api
        .call(
            "POST",
            "/api/tasks",
            Some(&w.root),
            Some(json!({"title": "batch", "description": "d", "task_type": "enhance", "priority": 50, "estimated_duration": 30,
                          "config": {"file_id": admin_file, "scale": 2}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (r.body["data"]["priority"].as_i64(), r.body["data"]["estimated_duration"].as_i64()),
        (Some(10), Some(30)),
        "clamped to the admin ceiling"
    );

    // Refusals: unknown kind (listing those served), another user's file, no file, bad params.
    let unknown =
        api.call("POST", "/api/tasks", Some(&w.alice), Some(json!({"task_type": "video_analysis", "config": {"file_id": file}}))).await;
    assert_envelope(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown task_type");
    assert!(unknown.body["message"].as_str().unwrap().contains("served: enhance"), "{}", unknown.body);
    for (body, field) in [
        (json!({"file_id": admin_file}), "file_id"),
        (json!({}), "file_id"),
        (json!({"file_id": file, "params": {"scale": 3}}), "scale"),
        (json!({"file_id": file, "scene_id": "nope"}), "scene_id"),
        (json!({"file_id": file, "callback_url": "http://169.254.169.254/"}), "callback_url"),
    ] {
        let r = api.call("POST", "/api/tasks/create", Some(&w.alice), Some(body.clone())).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", &body.to_string());
        assert!(r.body["details"]["field_errors"][field].is_array(), "{body}: {}", r.body);
    }
    let with_hook = api
        .call(
            "POST",
            "/api/tasks",
            Some(&w.alice),
            Some(json!({"config": {"file_id": file}, "callback_url": "https://hooks.example.com/x"})),
        )
        .await;
    assert_eq!(with_hook.body["data"]["callback_url"], "https://hooks.example.com/x", "{}", with_hook.body);

    // The limit applies here too.
    api.call("PUT", "/api/admin/config/max_concurrent_tasks_per_user", Some(&w.root), Some(json!({"value": 3}))).await;
    let over = api.call("POST", "/api/tasks/create", Some(&w.alice), Some(json!({"file_id": file}))).await;
    assert_envelope(&over, StatusCode::TOO_MANY_REQUESTS, "TASK_LIMIT_EXCEEDED", "fourth task");
}
