//! Credits through the router on SQLite and PostgreSQL: task prices, holds taken at upload,
//! captured on success and released on failure exactly once, admin balance edits as ledger
//! entries, the balance, records and stats of seed 001 and seed 003's compute power, and
//! concurrent uploads that never overdraw.

mod support;

use axum::http::StatusCode;
use purrify_store::{EntryKind, Guard};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

fn admin_config(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some("root@example.com".into());
    c.bootstrap_admin_password = Some("root password 1".into());
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

async fn balance(api: &Api, token: &str) -> Value {
    api.call("GET", "/api/credits/balance", Some(token), None).await.body["data"].clone()
}

on_both!(tasks_are_held_then_captured_or_released_once, concurrent_uploads_never_overdraw);

async fn tasks_are_held_then_captured_or_released_once(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (root, _) = login(&api, "root@example.com", "root password 1").await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let photo = small_photo_png(64, 48);

    // Free until an admin sets a price.
    assert_eq!(api.upload_as(&alice, &[("file", Some("a.png"), &photo)]).await.status, StatusCode::ACCEPTED);
    let set = api.call("PUT", "/api/admin/config/price_enhance", Some(&root), Some(json!({"value": "1.50"}))).await;
    assert_eq!((set.status, set.body["data"]["value"].as_f64()), (StatusCode::OK, Some(1.5)), "{}", set.body);
    let bad = api.call("PUT", "/api/admin/config/price_enhance", Some(&root), Some(json!({"value": 0.001}))).await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "three decimals");
    assert_envelope(
        &api.call("PUT", "/api/admin/config/price_enhance", Some(&alice), Some(json!({"value": 0}))).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "a user setting prices",
    );
    assert_eq!(
        api.call("GET", "/api/admin/config", Some(&root), None).await.body["data"][0],
        json!({"key": "price_enhance", "value": 1.5, "description": "credits charged per task (0: free)"})
    );

    let uploads_before = api.stored_uploads();
    let poor = api.upload_as(&alice, &[("file", Some("a.png"), &photo)]).await;
    assert_envelope(&poor, StatusCode::BAD_REQUEST, "INSUFFICIENT_BALANCE", "upload without credits");
    assert_eq!((poor.body["details"]["balance"].as_f64(), poor.body["details"]["price"].as_f64()), (Some(0.0), Some(1.5)));
    assert_eq!(api.stored_uploads(), uploads_before, "the refused upload left nothing");

    // The admin's balance edit is one `adjust` entry naming the admin.
    let edit = api.call("PUT", &format!("/api/admin/users/{alice_id}"), Some(&root), Some(json!({"balance": 5.0}))).await;
    assert_eq!((edit.status, edit.body["data"]["balance"].as_f64()), (StatusCode::OK, Some(5.0)), "{}", edit.body);
    let db = api.stack.state.tasks.db().clone();
    let adjust = db.ledger_page(&alice_id, Some(EntryKind::Adjust), Default::default()).await.unwrap();
    assert_eq!((adjust.total, adjust.items[0].delta, adjust.items[0].actor.is_some()), (1, 500, true));
    let neg = api.call("PUT", &format!("/api/admin/users/{alice_id}"), Some(&root), Some(json!({"balance": -1}))).await;
    assert_envelope(&neg, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "a negative balance");

    let mut ids = Vec::new();
    for _ in 0..2 {
        let up = api.upload_as(&alice, &[("file", Some("a.png"), &photo)]).await;
        assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
        ids.push(up.body["task_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(balance(&api, &alice).await, json!({"balance": 2.0, "held": 3.0, "spent": 0.0}));

    // One succeeds, one fails; the settler captures and releases, once each.
    assert!(db.claim_task(&ids[0], 0, "http://w", &format!("{}-1", ids[0])).await.unwrap());
    assert!(db.complete_task(&ids[0], &format!("{}-1", ids[0]), &support::client::job_result()).await.unwrap());
    assert!(db.fail_task(&ids[1], Guard::Queued, purrify_api::FailReason::BadInput, "not an image").await.unwrap());
    for _ in 0..2 {
        api.stack.state.credits.sweep().await;
    }
    assert_eq!(balance(&api, &alice).await, json!({"balance": 3.5, "held": 0.0, "spent": 1.5}));
    let records = api.call("GET", "/api/credits/records?page_size=50", Some(&alice), None).await;
    let mut kinds: Vec<&str> = records.body["data"]["items"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"adjust"), "newest first: {}", records.body);
    kinds.sort();
    assert_eq!(kinds, ["adjust", "capture", "hold", "hold", "release"], "{}", records.body);
    let holds = api.call("GET", "/api/credits/records?type=hold", Some(&alice), None).await;
    assert_eq!(holds.body["data"]["total"], 2);
    let stats = api.call("GET", "/api/credits/stats", Some(&alice), None).await.body["data"].clone();
    assert_eq!(
        (stats["total_spent"].as_f64(), stats["total_adjusted"].as_f64(), stats["balance"].as_f64()),
        (Some(1.5), Some(5.0), Some(3.5))
    );
    let user_stats = api.call("GET", "/api/users/stats", Some(&alice), None).await.body["data"].clone();
    assert_eq!((user_stats["total_cost"].as_f64(), user_stats["current_balance"].as_f64()), (Some(1.5), Some(3.5)));
    let cp = api.call("GET", "/api/v1/user/compute-power", Some(&alice), None).await;
    assert_eq!(cp.body["data"], json!({"total": 4, "used": 1, "remaining": 3, "gifted": 0, "hdCount": 0}), "whole credits");
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

async fn concurrent_uploads_never_overdraw(backend: Backend) {
    let api = std::sync::Arc::new(api_with(backend, admin_config).await);
    let (root, _) = login(&api, "root@example.com", "root password 1").await;
    let (bob, bob_id) = register(&api, "bob@example.com").await;
    api.call("PUT", "/api/admin/config/price_enhance", Some(&root), Some(json!({"value": 1}))).await;
    api.call("PUT", &format!("/api/admin/users/{bob_id}"), Some(&root), Some(json!({"balance": 10}))).await;
    let photo = std::sync::Arc::new(small_photo_png(32, 32));
    let uploads: Vec<_> = (0..30)
        .map(|_| {
            let (api, bob, photo) = (api.clone(), bob.clone(), photo.clone());
            tokio::spawn(async move { api.upload_as(&bob, &[("file", Some("a.png"), &photo)]).await.status })
        })
        .collect();
    let mut accepted = 0;
    for u in uploads {
        match u.await.unwrap() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 10, "exactly what the balance pays for");
    assert_eq!(balance(&api, &bob).await, json!({"balance": 0.0, "held": 10.0, "spent": 0.0}));
    assert!(api.stack.state.tasks.db().ledger_mismatches().await.unwrap().is_empty());
}
