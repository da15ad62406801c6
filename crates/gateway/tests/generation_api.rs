//! Providers and generation through the router on SQLite and PostgreSQL, against the local
//! fakes of the providers' APIs: admin-only provider settings with write-only, sealed keys;
//! generation requests checked, counted and paid, a refused one costing nothing; a video
//! through a Runway-style task API with progress and cancellation passed on; image-to-image
//! on the built-in provider queued for the engine; and workflow callbacks that are
//! authentic, fresh, accepted once and idempotent.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use purrify_api::TaskStatus;
use purrify_gateway::domain::tasks::PublicStatus;
use purrify_testkit::providers::n8n::FakeN8n;
use purrify_testkit::providers::openai::FakeOpenAi;
use purrify_testkit::providers::runway::FakeRunway;
use purrify_testkit::providers::{Outcome, Plan, png};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const ROOT: (&str, &str) = ("root@example.com", "root password 1");
const PASSWORD: &str = "correct horse 42";
const SEALING_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

fn setup(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some(ROOT.0.into());
    c.bootstrap_admin_password = Some(ROOT.1.into());
    c.allow_private_workers = true;
    c.providers.provider_key = Some(SEALING_KEY.into());
    c.providers.provider_retry_base_ms = 5;
    c.providers.provider_poll_ms = 20;
    c.providers.public_url = Some("http://127.0.0.1:9".into());
}

async fn admin(api: &Api) -> String {
    let r = api.post_json("/api/auth/login", json!({"email": ROOT.0, "password": ROOT.1}), &[]).await;
    r.body["data"]["access_token"].as_str().unwrap_or_else(|| panic!("{}", r.body)).to_owned()
}

/// A seed 003 user: (token, id).
async fn user(api: &Api, name: &str) -> (String, String) {
    let r = api
        .post_json("/api/v1/auth/register", json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

async fn add(api: &Api, admin: &str, body: Value) -> String {
    let r = api.call("POST", "/api/v1/config/providers/custom", Some(admin), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["data"]["id"].as_str().unwrap().to_owned()
}

/// Waits on the task's own change events (no polling) until it has ended.
async fn ended(api: &Api, id: &str) -> TaskStatus {
    use futures::StreamExt;
    if let Some(stream) = api.stack.state.tasks.watch_task(id) {
        let mut stream = Box::pin(stream);
        while let Some(s) = stream.next().await {
            if matches!(s.status, PublicStatus::Completed | PublicStatus::Failed) {
                break;
            }
        }
    }
    api.stack.state.tasks.db().get_task(id).await.unwrap().unwrap().status
}

fn v1_error(r: &Reply, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!(r.body["code"].as_u64(), Some(u64::from(status.as_u16())), "{what}: {}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", r.body);
}

on_both!(
    provider_settings_are_for_admins_and_keys_are_write_only,
    refused_generations_cost_nothing,
    videos_follow_the_providers_task_and_cancellation_is_passed_on,
    image_to_image_on_the_builtin_provider_goes_to_the_engine,
    workflow_callbacks_are_authentic_fresh_once_and_idempotent
);

async fn provider_settings_are_for_admins_and_keys_are_write_only(backend: Backend) {
    let api = api_with(backend, setup).await;
    let root = admin(&api).await;
    let (alice, _) = user(&api, "alice").await;
    v1_error(&api.call("GET", "/api/v1/config/providers", Some(&alice), None).await, StatusCode::FORBIDDEN, "users may not read settings");
    v1_error(&api.call("GET", "/api/v1/config/current", None, None).await, StatusCode::UNAUTHORIZED, "anonymous");

    let list = api.call("GET", "/api/v1/config/providers", Some(&root), None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let image = list.body["data"]["image"].as_array().unwrap();
    let builtin = image.iter().find(|p| p["id"] == "purrify").unwrap();
    assert_eq!((builtin["enabled"].as_bool(), builtin["builtin"].as_bool()), (Some(true), Some(true)));
    let stability = image.iter().find(|p| p["id"] == "stability").unwrap();
    assert_eq!((stability["enabled"].as_bool(), stability["hasKey"].as_bool()), (Some(false), Some(false)), "no key yet");
    assert!(list.body["data"]["video"].as_array().unwrap().iter().any(|p| p["id"] == "runway"));
    // Seed 004's health: UP while the database answers, with workers and providers reported
    // (no worker here: that does not make the gateway DOWN).
    let health = api.get("/actuator/health").await;
    assert_eq!((health.status, health.body["status"].as_str()), (StatusCode::OK, Some("UP")), "{}", health.body);
    assert_eq!(health.body["components"]["db"]["status"], "UP");
    assert_eq!(health.body["components"]["workers"]["status"], "DOWN");
    assert_eq!(health.body["components"]["providers"]["details"]["usable"], 1, "the built-in one: {}", health.body);
    let current = api.call("GET", "/api/v1/config/current", Some(&root), None).await;
    assert_eq!(current.body["data"]["imageProvider"], "purrify", "the built-in serves images out of the box");

    let fake = FakeOpenAi::start("sk-live-abcdef").await;
    let body = json!({"type": "assistant", "name": "Deep Seek", "apiUrl": fake.base_url(), "apiKey": "sk-live-abcdef",
                      "config": {"protocol": "openai", "models": ["deepseek-chat", "deepseek-reasoner"]}});
    v1_error(
        &api.call("POST", "/api/v1/config/providers/custom", Some(&alice), Some(body.clone())).await,
        StatusCode::FORBIDDEN,
        "users may not add",
    );
    let created = api.call("POST", "/api/v1/config/providers/custom", Some(&root), Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!((created.body["data"]["id"].as_str(), created.body["data"]["hasKey"].as_bool()), (Some("deep-seek"), Some(true)));
    let again = api.call("POST", "/api/v1/config/providers/custom", Some(&root), Some(body)).await;
    v1_error(&again, StatusCode::UNPROCESSABLE_ENTITY, "the same id twice");
    for r in [&created, &api.call("GET", "/api/v1/config/providers", Some(&root), None).await] {
        assert!(!String::from_utf8_lossy(&r.raw).contains("sk-live-abcdef"), "keys are never returned");
    }
    let row = api.stack.state.tasks.db().provider("deep-seek").await.unwrap().unwrap();
    assert!(row.api_key_sealed.as_deref().is_some_and(|s| !s.contains("sk-live")), "sealed at rest");

    let chosen = api
        .call(
            "PUT",
            "/api/v1/config/providers",
            Some(&root),
            Some(json!({"assistantProvider": "deep-seek", "assistantModel": "deepseek-reasoner"})),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::OK, "{}", chosen.body);
    assert_eq!(
        (chosen.body["data"]["assistantProvider"].as_str(), chosen.body["data"]["assistantModel"].as_str()),
        (Some("deep-seek"), Some("deepseek-reasoner"))
    );
    for (bad, what) in [
        (json!({"imageProvider": "deep-seek"}), "a provider of another kind"),
        (json!({"assistantProvider": "deep-seek", "assistantModel": "gpt-9"}), "a model it does not have"),
        (json!({"videoProvider": "nobody"}), "an unknown provider"),
        (json!({}), "nothing chosen"),
    ] {
        v1_error(&api.call("PUT", "/api/v1/config/providers", Some(&root), Some(bad)).await, StatusCode::UNPROCESSABLE_ENTITY, what);
    }
    for (bad, what) in [
        (json!({"type": "image", "name": "x", "apiUrl": "http://169.254.169.254/v1", "config": {"models": ["m"]}}), "metadata address"),
        (json!({"type": "image", "name": "x", "apiUrl": "ftp://example.com", "config": {"models": ["m"]}}), "not http"),
        (
            json!({"type": "video", "name": "x", "apiUrl": "https://example.com", "config": {"protocol": "stability", "models": ["m"]}}),
            "a protocol that cannot make videos",
        ),
        (json!({"type": "image", "name": "x", "apiUrl": "https://example.com", "config": {}}), "no models"),
        (json!({"type": "music", "name": "x", "apiUrl": "https://example.com", "config": {"models": ["m"]}}), "an unknown type"),
    ] {
        v1_error(
            &api.call("POST", "/api/v1/config/providers/custom", Some(&root), Some(bad)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
        );
    }

    // The built-in providers take a key, a fallback, or are turned off.
    let edit =
        api.call("PUT", "/api/v1/config/providers/stability", Some(&root), Some(json!({"apiKey": "sk-stab", "fallback": "purrify"}))).await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    assert_eq!((edit.body["data"]["hasKey"].as_bool(), edit.body["data"]["fallback"].as_str()), (Some(true), Some("purrify")));
    let off = api.call("PUT", "/api/v1/config/providers/stability", Some(&root), Some(json!({"enabled": false, "apiKey": ""}))).await;
    assert_eq!((off.body["data"]["enabled"].as_bool(), off.body["data"]["hasKey"].as_bool()), (Some(false), Some(false)), "{}", off.body);
    v1_error(
        &api.call("PUT", "/api/v1/config/providers/stability", Some(&root), Some(json!({"fallback": "runway"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a fallback of another kind",
    );
    v1_error(
        &api.call("PUT", "/api/v1/config/providers/nobody", Some(&root), Some(json!({"enabled": true}))).await,
        StatusCode::NOT_FOUND,
        "no such provider",
    );

    // Without a sealing key configured, no key can be stored.
    let plain = api_with(backend, |c| {
        setup(c);
        c.providers.provider_key = None;
    })
    .await;
    let root2 = admin(&plain).await;
    let refused = plain
        .call(
            "POST",
            "/api/v1/config/providers/custom",
            Some(&root2),
            Some(json!({"type": "image", "name": "y", "apiUrl": "https://example.com", "apiKey": "k", "config": {"models": ["m"]}})),
        )
        .await;
    v1_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "no PURRIFY_PROVIDER_KEY");
}

async fn refused_generations_cost_nothing(backend: Backend) {
    let api = api_with(backend, setup).await;
    let root = admin(&api).await;
    let (alice, alice_id) = user(&api, "alice").await;
    let quota = |token: String| {
        let api = &api;
        async move { api.call("GET", "/api/v1/user/quota", Some(&token), None).await.body["data"]["image"]["used"].as_i64().unwrap() }
    };
    // Text-to-image needs an outside provider; the built-in one only transforms pictures.
    let r = api.call("POST", "/api/v1/generate/text-to-image", Some(&alice), Some(json!({"prompt": "a cat"}))).await;
    v1_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no provider can make it");
    for (bad, what) in [
        (json!({"prompt": ""}), "an empty prompt"),
        (json!({"prompt": "x", "width": 99999}), "too wide"),
        (json!({"prompt": "x", "numImages": 9}), "too many images"),
    ] {
        v1_error(
            &api.call("POST", "/api/v1/generate/text-to-image", Some(&alice), Some(bad)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            what,
        );
    }
    assert_eq!(quota(alice.clone()).await, 0, "nothing was counted");

    let fake = FakeOpenAi::start("sk-img").await;
    let id = add(
        &api,
        &root,
        json!({"type": "image", "name": "img", "apiUrl": fake.base_url(), "apiKey": "sk-img", "config": {"models": ["gpt-image-1"]}}),
    )
    .await;
    api.call("PUT", "/api/v1/config/providers", Some(&root), Some(json!({"imageProvider": id}))).await;
    let price = api.call("PUT", "/api/admin/config/price_text_to_image", Some(&root), Some(json!({"value": 2}))).await;
    assert_eq!(price.status, StatusCode::OK, "{}", price.body);
    let broke = api.call("POST", "/api/v1/generate/text-to-image", Some(&alice), Some(json!({"prompt": "a cat"}))).await;
    assert!(broke.status.is_client_error(), "{}", broke.body);
    assert_eq!(quota(alice.clone()).await, 0, "the quota is given back when the balance refuses");
    assert_eq!(fake.request_count(), 0);

    // Paid and counted, it runs: the hold is captured when it succeeds.
    api.call("PUT", &format!("/api/admin/users/{alice_id}"), Some(&root), Some(json!({"balance": 10}))).await;
    let ok = api
        .call(
            "POST",
            "/api/v1/generate/text-to-image",
            Some(&alice),
            Some(json!({"prompt": "a cat", "numImages": 2, "width": 512, "height": 512})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let task = ok.body["data"]["taskId"].as_str().unwrap().to_owned();
    assert_eq!(ended(&api, &task).await, TaskStatus::Completed);
    assert_eq!(quota(alice.clone()).await, 1);
    let view = api.call("GET", &format!("/api/v1/generate/task/{task}"), Some(&alice), None).await;
    assert_eq!(
        (view.body["data"]["status"].as_str(), view.body["data"]["progress"].as_u64()),
        (Some("completed"), Some(100)),
        "{}",
        view.body
    );
    let images = view.body["data"]["result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (n, img) in images.iter().enumerate() {
        let file = api.call("GET", img["url"].as_str().unwrap(), Some(&alice), None).await;
        assert_eq!(file.status, StatusCode::OK, "file {n}");
        assert!(file.raw.starts_with(b"\x89PNG"));
    }
    let (bob, _) = user(&api, "bob").await;
    v1_error(
        &api.call("GET", &format!("/api/v1/generate/task/{task}"), Some(&bob), None).await,
        StatusCode::NOT_FOUND,
        "another user's task",
    );
    v1_error(&api.call("GET", images[0]["url"].as_str().unwrap(), Some(&bob), None).await, StatusCode::NOT_FOUND, "another user's file");
    api.stack.state.credits.sweep().await;
    let balance = api.stack.state.credits.balance(&alice_id).await.unwrap();
    assert_eq!((balance.balance, balance.held), (800, 0), "10 credits less the price of 2, captured");
}

async fn videos_follow_the_providers_task_and_cancellation_is_passed_on(backend: Backend) {
    let api = api_with(backend, setup).await;
    let root = admin(&api).await;
    let (alice, _) = user(&api, "alice").await;
    let runway = FakeRunway::start("key_runway").await;
    api.call("PUT", "/api/v1/config/providers/runway", Some(&root), Some(json!({"apiUrl": runway.base_url(), "apiKey": "key_runway"})))
        .await;
    runway.plan_task(Plan { queued_polls: 1, running_polls: 3, outcome: Outcome::Succeed }, true);
    let r = api
        .call("POST", "/api/v1/generate/text-to-video", Some(&alice), Some(json!({"prompt": "waves", "model": "runway", "duration": 5})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["estimatedTime"], 120, "the seed's figure until durations are measured");
    let task = r.body["data"]["taskId"].as_str().unwrap().to_owned();
    let outcome = ended(&api, &task).await;
    let view = api.call("GET", &format!("/api/v1/generate/video-task/{task}"), Some(&alice), None).await;
    assert_eq!(outcome, TaskStatus::Completed, "{}", view.body);
    let video = &view.body["data"]["result"]["video"];
    assert_eq!((video["duration"].as_u64(), video["resolution"].as_str()), (Some(5), Some("720p")), "{}", view.body);
    let file = api.call("GET", video["url"].as_str().unwrap(), Some(&alice), None).await;
    assert_eq!(file.headers[header::CONTENT_TYPE], "video/mp4");
    assert_eq!(video["fileSize"].as_u64(), Some(file.raw.len() as u64));
    assert!(!String::from_utf8_lossy(&view.raw).contains(&runway.base_url()), "provider URLs never reach clients");
    let calls = api.metric(r#"purrify_gateway_provider_calls_total{provider="runway",outcome="ok"}"#).await;
    assert!(calls >= 2.0, "the submission and the polls are counted: {calls}");
    let again = api.call("POST", "/api/v1/generate/text-to-video", Some(&alice), Some(json!({"prompt": "rain", "model": "runway"}))).await;
    assert!(again.body["data"]["estimatedTime"].as_u64().unwrap() >= 1, "now from the measured duration: {}", again.body);
    assert_eq!(ended(&api, again.body["data"]["taskId"].as_str().unwrap()).await, TaskStatus::Completed);

    // A job that keeps running: cancelling the task cancels it at the provider.
    runway.plan_task(Plan { queued_polls: 0, running_polls: 100_000, outcome: Outcome::Succeed }, false);
    let r = api.call("POST", "/api/v1/generate/text-to-video", Some(&alice), Some(json!({"prompt": "slow"}))).await;
    let slow = r.body["data"]["taskId"].as_str().unwrap().to_owned();
    let remote = purrify_testkit::eventually(30, "the provider took the job", || async {
        let rec = api.stack.state.tasks.db().task_record(&slow).await.ok()??;
        rec.meta.generation?.remote_id
    })
    .await;
    let cancel = api.call("POST", &format!("/api/tasks/{slow}/cancel"), Some(&alice), None).await;
    assert!(cancel.status.is_success(), "{}", cancel.body);
    assert_eq!(ended(&api, &slow).await, TaskStatus::Cancelled);
    purrify_testkit::eventually(30, "the provider's job is cancelled", || async { runway.cancelled(&remote).then_some(()) }).await;
    let bad = api.call("POST", "/api/v1/generate/text-to-video", Some(&alice), Some(json!({"prompt": "x", "resolution": "8k"}))).await;
    v1_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "an unknown resolution");
    v1_error(
        &api.call("POST", "/api/v1/generate/text-to-video", Some(&alice), Some(json!({"prompt": "x", "model": "stability"}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an image provider for a video",
    );
}

async fn image_to_image_on_the_builtin_provider_goes_to_the_engine(backend: Backend) {
    let api = api_with(backend, setup).await;
    let (alice, _) = user(&api, "alice").await;
    let send = |parts: Vec<(&'static str, Option<&'static str>, Vec<u8>)>| {
        let api = &api;
        let alice = alice.clone();
        async move {
            let parts: Vec<(&str, Option<&str>, &[u8])> = parts.iter().map(|(n, f, d)| (*n, *f, d.as_slice())).collect();
            let req = Request::post("/api/v1/generate/image-to-image")
                .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
                .header(header::AUTHORIZATION, format!("Bearer {alice}"))
                .body(Body::from(multipart(&parts)))
                .unwrap();
            api.send(req).await
        }
    };
    let r =
        send(vec![("prompt", None, b"sharper".to_vec()), ("strength", None, b"0.5".to_vec()), ("image", Some("cat.png"), png(64, 48, 3))])
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["provider"], "purrify");
    let task = r.body["data"]["taskId"].as_str().unwrap();
    let queued = api.stack.state.tasks.db().queued_tasks(10).await.unwrap();
    assert!(queued.iter().any(|t| t.id == task), "the engine's dispatcher sees it");
    let rec = api.stack.state.tasks.db().task_record(task).await.unwrap().unwrap();
    assert_eq!(rec.meta.kind, "image_to_image");
    assert!(api.stack.state.tasks.db().queued_provider_tasks(10).await.unwrap().is_empty(), "the provider runner does not");

    let none = send(vec![("prompt", None, b"sharper".to_vec())]).await;
    v1_error(&none, StatusCode::UNPROCESSABLE_ENTITY, "no picture");
    let not_image = send(vec![("prompt", None, b"x".to_vec()), ("image", Some("a.txt"), b"hello there, not a picture".to_vec())]).await;
    assert!(not_image.status.is_client_error(), "{}", not_image.body);
    let strength =
        send(vec![("prompt", None, b"x".to_vec()), ("strength", None, b"2".to_vec()), ("image", Some("c.png"), png(8, 8, 1))]).await;
    v1_error(&strength, StatusCode::UNPROCESSABLE_ENTITY, "strength above 1");
    let inputs = api.stack.state.storage.list(&api.stack.state.storage.uri_for("inputs/")).await.unwrap_or_default();
    assert_eq!(inputs.len(), 1, "a refused request leaves no picture behind: {inputs:?}");
}

async fn workflow_callbacks_are_authentic_fresh_once_and_idempotent(backend: Backend) {
    let api = api_with(backend, setup).await;
    let root = admin(&api).await;
    let (alice, _) = user(&api, "alice").await;
    let n8n = FakeN8n::start("wf-secret").await;
    let id = add(
        &api,
        &root,
        json!({"type": "workflow", "name": "flows", "apiUrl": n8n.base_url(), "apiKey": "wf-secret", "config": {"models": ["default"]}}),
    )
    .await;
    api.call("PUT", "/api/v1/config/providers", Some(&root), Some(json!({"workflowProvider": id}))).await;
    let generation = &api.stack.state.generation;
    let principal = api.stack.state.accounts.authenticate(&alice).await.unwrap();
    let make = |n: u32| {
        let principal = principal.clone();
        async move {
            let req = purrify_gateway::domain::generation::GenerateRequest {
                spec: purrify_gateway::domain::generation::JobSpec::Workflow { workflow: "cards".into(), params: json!({"n": n}) },
                input: None,
                provider: None,
                model: None,
                task_id: format!("wf-task-{n}"),
                request_id: "r".into(),
                title: None,
                scene_id: None,
                price: None,
            };
            generation.create(&principal, req).await.unwrap().task_id
        }
    };
    let one = make(1).await;
    let two = make(2).await;
    for t in [&one, &two] {
        purrify_testkit::eventually(30, "the workflow received it", || async { n8n.received(t).map(|_| ()) }).await;
        purrify_testkit::eventually(30, "the task waits for its callback", || async {
            (api.stack.state.tasks.db().get_task(t).await.ok()??.status == TaskStatus::Processing).then_some(())
        })
        .await;
    }
    let post = |path: &'static str, body: Value, ts: i64, secret: &'static str| {
        let api = &api;
        async move {
            let raw = serde_json::to_vec(&body).unwrap();
            let sig = purrify_testkit::providers::n8n::sign(secret, ts, &raw);
            let req = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header("X-Purrify-Timestamp", ts.to_string())
                .header("X-Purrify-Signature", sig)
                .body(Body::from(raw))
                .unwrap();
            api.send(req).await
        }
    };
    let now = chrono::Utc::now().timestamp();
    let failed = json!({"taskId": one, "error": "the workflow's model crashed"});
    let r = post("/api/callback/task-failed", failed.clone(), now, "not-the-secret").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a wrong key: {}", r.body);
    let r = post("/api/callback/task-failed", failed.clone(), now - 3600, "wf-secret").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "an hour-old timestamp: {}", r.body);
    let r = post("/api/callback/task-failed", json!({"taskId": "no-such-task", "error": "x"}), now, "wf-secret").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "unknown tasks read as a bad signature: {}", r.body);
    let r = post("/api/callback/task-failed", failed.clone(), now, "wf-secret").await;
    assert_eq!((r.status, r.body["data"]["status"].as_str()), (StatusCode::OK, Some("failed")), "{}", r.body);
    let replay = post("/api/callback/task-failed", failed.clone(), now, "wf-secret").await;
    assert_eq!(replay.status, StatusCode::UNPROCESSABLE_ENTITY, "the same signed call twice is a replay: {}", replay.body);
    let later =
        post("/api/callback/task-complete", json!({"taskId": one, "outputUrl": "http://127.0.0.1:9/x.png"}), now + 1, "wf-secret").await;
    assert_eq!(
        (later.status, later.body["data"]["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "an ended task stays as it is: {}",
        later.body
    );
    let rec = api.stack.state.tasks.db().get_task(&one).await.unwrap().unwrap();
    assert_eq!(rec.error_message.as_deref(), Some("the workflow's model crashed"));

    let no_output = post("/api/callback/task-complete", json!({"taskId": two}), now, "wf-secret").await;
    assert_eq!(no_output.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", no_output.body);
    let unreachable =
        post("/api/callback/task-complete", json!({"taskId": two, "outputUrl": "http://127.0.0.1:9/x.png"}), now + 2, "wf-secret").await;
    assert_eq!((unreachable.status, unreachable.body["data"]["status"].as_str()), (StatusCode::OK, Some("failed")), "{}", unreachable.body);
}
