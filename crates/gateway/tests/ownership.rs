//! Who sees which task, on SQLite and PostgreSQL: an upload with a Bearer token belongs to
//! that user; its status, download and live streams answer only its owner and admins (to
//! anyone else it does not exist); anonymous uploads stay possible behind a setting, and
//! their id is their capability.

mod support;

use axum::http::StatusCode;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

async fn user(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

fn admin_config(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some("root@example.com".into());
    c.bootstrap_admin_password = Some("root password 1".into());
}

on_both!(owned_tasks_are_visible_to_their_owner_and_admins_only, anonymous_uploads_follow_the_setting);

async fn owned_tasks_are_visible_to_their_owner_and_admins_only(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let (alice, alice_id) = user(&api, "alice@example.com").await;
    let (bob, _) = user(&api, "bob@example.com").await;
    let root = api.post_json("/api/auth/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    let root = root.body["data"]["access_token"].as_str().unwrap().to_owned();
    let photo = small_photo_png(64, 48);
    let up = api.upload_as(&alice, &[("file", Some("a.png"), &photo)]).await;
    assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
    let id = up.body["task_id"].as_str().unwrap().to_owned();
    let row = api.stack.state.tasks.db().get_task(&id).await.unwrap().unwrap();
    assert_eq!(row.user_id.as_deref(), Some(alice_id.as_str()), "the row names its owner");

    for (token, who) in [(Some(alice.as_str()), "owner"), (Some(root.as_str()), "admin")] {
        let r = api.call("GET", &format!("/api/v1/status/{id}"), token, None).await;
        assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("queued")), "{who}: {}", r.body);
    }
    for (token, who) in [(None, "anonymous"), (Some(bob.as_str()), "another user")] {
        for path in [format!("/api/v1/status/{id}"), format!("/api/v1/download/{id}"), format!("/api/v1/status/{id}/events")] {
            let r = api.call("GET", &path, token, None).await;
            assert_envelope(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", &format!("{who} on {path}"));
            assert_eq!(r.body["message"], format!("no task {id}"), "the same answer as for a task that does not exist");
        }
    }
    let bad = api.call("GET", &format!("/api/v1/status/{id}"), Some("garbage"), None).await;
    assert_envelope(&bad, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "an invalid token is refused, not ignored");

    let stats = api.call("GET", "/api/users/stats", Some(&alice), None).await;
    assert_eq!(stats.body["data"]["total_tasks"], 1);
    assert!(stats.body["data"]["last_task_date"].as_str().is_some());
    assert_eq!(api.call("GET", "/api/users/stats", Some(&bob), None).await.body["data"]["total_tasks"], 0);
    let me = api.call("GET", "/api/users/me", Some(&alice), None).await;
    assert_eq!(me.body["data"]["total_tasks"], 1);
}

async fn anonymous_uploads_follow_the_setting(backend: Backend) {
    let api = api(backend).await;
    let photo = small_photo_png(64, 48);
    let up = api.upload(&[("file", Some("a.png"), &photo)]).await;
    assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
    let id = up.body["task_id"].as_str().unwrap().to_owned();
    assert_eq!(api.stack.state.tasks.db().get_task(&id).await.unwrap().unwrap().user_id, None, "an anonymous task has no owner");
    let (someone, _) = user(&api, "someone@example.com").await;
    for token in [None, Some(someone.as_str())] {
        assert_eq!(api.call("GET", &format!("/api/v1/status/{id}"), token, None).await.status, StatusCode::OK, "the id is the capability");
    }

    let closed = api_with(backend, |c| c.allow_anonymous_uploads = false).await;
    let r = closed.upload(&[("file", Some("a.png"), &photo)]).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "anonymous upload where it is off");
    assert_eq!(closed.stored_uploads(), 0, "nothing was stored");
    let (t, _) = user(&closed, "member@example.com").await;
    assert_eq!(closed.upload_as(&t, &[("file", Some("a.png"), &photo)]).await.status, StatusCode::ACCEPTED);
}

/// `/ws` over a real socket: the token as `?token=` (seed 003) or as a first `auth` message
/// (seed 001) decides which tasks a subscription may follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscriptions_respect_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), None);
    c.addr = Some("127.0.0.1:0".parse().unwrap());
    let gw = purrify_gateway::app::start(c, std::future::pending()).await.unwrap();
    let base = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let register = |email: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r: Value = http
                .post(format!("{base}/api/auth/register"))
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["data"]["access_token"].as_str().unwrap().to_owned()
        }
    };
    let (alice, bob) = (register("alice@example.com").await, register("bob@example.com").await);
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(small_photo_png(64, 48)).file_name("a.png"));
    let up: Value =
        http.post(format!("{base}/api/v1/enhance")).bearer_auth(&alice).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = up["task_id"].as_str().unwrap().to_owned();

    let ws_url = format!("ws://{}/ws", gw.addr);
    let subscribe = json!({"type": "subscribe", "taskId": id}).to_string();
    async fn next_json(
        ws: &mut (impl StreamExt<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Value {
        loop {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = ws.next().await.unwrap().unwrap() {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
    // Bob, by query token: the task does not exist for him.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token={bob}")).await.unwrap();
    ws.send(subscribe.clone().into()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "no such task");
    // Alice, by auth message: subscribed, and the current state arrives first.
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(subscribe.clone().into()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"], "no such task", "before authenticating");
    ws.send(json!({"type": "auth", "token": alice}).to_string().into()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "auth_ok");
    ws.send(subscribe.into()).await.unwrap();
    let first = next_json(&mut ws).await;
    assert_eq!((first["type"].as_str(), first["taskId"].as_str()), (Some("task_progress"), Some(id.as_str())), "{first}");
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    ws.send(json!({"type": "auth", "token": "garbage"}).to_string().into()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "auth_failed");
    // A bad query token is refused before the upgrade.
    assert!(tokio_tungstenite::connect_async(format!("{ws_url}?token=garbage")).await.is_err());
}
