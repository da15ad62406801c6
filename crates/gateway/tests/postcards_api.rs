//! Seed 004's postcards through the real router on SQLite and PostgreSQL, with a fake
//! OpenAI-compatible server as both the chat and the image provider (configured through the
//! admin API) and, for the built-in photo path, a fake GPU worker: create answers 202 with a
//! task id; the task's events end it; status, detail and the caller's list show the postcard
//! with our picture URL (served without a token, never the provider's); the card escapes
//! what the chat provider wrote; a chat provider that breaks off or is down fails the task
//! with the reason; others read 404; bad requests are refused before anything is counted.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use purrify_gateway::domain::tasks::PublicStatus;
use purrify_testkit::eventually;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use purrify_testkit::providers::openai::{ChatEnd, ChatReply, FakeOpenAi};
use purrify_testkit::providers::png;
use serde_json::{Value, json};
use support::client::*;
use support::*;

on_both!(
    a_postcard_is_made_shown_and_listed,
    others_read_nothing_of_it,
    what_the_chat_provider_writes_is_escaped_on_the_card,
    a_failing_chat_provider_fails_the_postcard,
    a_photo_goes_to_the_image_provider,
    a_photo_goes_through_the_engine_with_the_builtin_provider,
    bad_requests_are_refused,
    lists_are_newest_first_and_bounded,
);

const PASSWORD: &str = "correct horse 42";
const ADMIN: (&str, &str) = ("root@example.com", "root password 1");
const KEY: &str = "sk-postcards";

/// A gateway whose admin configured the fake as the assistant and the image provider.
async fn postcard_api(backend: Backend) -> (Api, FakeOpenAi) {
    let fake = FakeOpenAi::start(KEY).await;
    let api = api_with(backend, |c| {
        c.allow_private_workers = true;
        c.providers.provider_key = Some("5c".repeat(32));
        c.providers.provider_retry_base_ms = 5;
        c.bootstrap_admin_email = Some(ADMIN.0.into());
        c.bootstrap_admin_password = Some(ADMIN.1.into());
    })
    .await;
    let admin = admin(&api).await;
    let mut ids = Vec::new();
    for (kind, name, model) in [("assistant", "Fake chat", "gpt-4o-mini"), ("image", "Fake images", "dall-e-3")] {
        let r = api
            .call(
                "POST",
                "/api/v1/config/providers/custom",
                Some(&admin),
                Some(json!({"type": kind, "name": name, "apiUrl": fake.base_url(), "apiKey": KEY,
                            "config": {"protocol": "openai", "models": [model]}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.push(r.body["data"]["id"].as_str().unwrap().to_owned());
    }
    let r = api
        .call(
            "PUT",
            "/api/v1/config/providers",
            Some(&admin),
            Some(json!({"assistantProvider": ids[0], "assistantModel": "gpt-4o-mini", "imageProvider": ids[1], "imageModel": "dall-e-3"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (api, fake)
}

async fn admin(api: &Api) -> String {
    let r = api.post_json("/api/auth/login", json!({"email": ADMIN.0, "password": ADMIN.1}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

async fn user(api: &Api, name: &str) -> String {
    let r = api
        .post_json("/api/v1/auth/register", json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["data"]["token"].as_str().unwrap().to_owned()
}

/// Creates a postcard; its task id.
async fn create(api: &Api, token: &str, body: Value) -> String {
    let r = api.call("POST", "/api/v1/postcards/create", Some(token), Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body.as_object().map(|o| o.len()), Some(1), "only the task id: {}", r.body);
    r.body["task_id"].as_str().unwrap().to_owned()
}

/// Waits on the task's events (the progress hub) until it has ended; bounded so a broken
/// runner fails the test instead of hanging it.
async fn ended(api: &Api, task_id: &str) {
    let tasks = &api.stack.state.tasks;
    let done = |s: &purrify_gateway::domain::tasks::TaskSnapshot| matches!(s.status, PublicStatus::Completed | PublicStatus::Failed);
    let wait = async {
        loop {
            let now = tasks.task(task_id).await.unwrap().expect("the task exists");
            if done(&now) {
                return;
            }
            if let Some(events) = tasks.watch_task(task_id) {
                futures::pin_mut!(events);
                while let Some(s) = events.next().await {
                    if done(&s) {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.expect("the postcard task ends within a minute");
}

/// The status once the task ended.
async fn final_status(api: &Api, token: &str, task_id: &str) -> Value {
    ended(api, task_id).await;
    let r = api.call("GET", &format!("/api/v1/postcards/status/{task_id}"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

fn chat_requests(fake: &FakeOpenAi) -> Vec<Value> {
    fake.requests_to("/chat/completions").iter().map(|r| r.json().expect("a JSON request")).collect()
}

/// An image upload of `token`'s (seed 003); its id.
async fn upload_photo(api: &Api, token: &str, photo: &[u8]) -> String {
    let body = multipart(&[("file", Some("photo.png"), photo)]);
    let req = Request::post("/api/v1/upload/image")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body))
        .unwrap();
    let r = api.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["id"].as_str().unwrap().to_owned()
}

fn assert_error(r: &Reply, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.body["success"], false, "{what}");
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
}

async fn a_postcard_is_made_shown_and_listed(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["祝你", "生日快乐，", "天天开心！"], ChatEnd::Done));
    let task_id = create(&api, &alice, json!({"mood": " 开心 ", "style": "赛博朋克", "theme": "生日", "extra": "给妈妈"})).await;

    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert!(s.get("error").is_none(), "{s}");
    let d = &s["data"];
    assert_eq!(
        (d["text"].as_str(), d["mood"].as_str(), d["style"].as_str(), d["theme"].as_str(), d["extra"].as_str(), d["task_id"].as_str()),
        (Some("祝你生日快乐，天天开心！"), Some("开心"), Some("赛博朋克"), Some("生日"), Some("给妈妈"), Some(task_id.as_str()))
    );
    let id = d["postcard_id"].as_str().unwrap().to_owned();
    let url = d["image_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/api/v1/postcards/media/") && url.len() == "/api/v1/postcards/media/".len() + 64, "our URL: {url}");
    let code = d["frontend_code"].as_str().unwrap();
    assert!(code.starts_with("<!DOCTYPE html>") && code.contains("祝你生日快乐，天天开心！"), "{code}");
    assert!(code.contains(&format!("<img src=\"{url}\"")), "the card shows our picture: {code}");
    assert!(code.contains("Content-Security-Policy") && !code.contains("<script"), "{code}");
    assert!(chrono::DateTime::parse_from_rfc3339(d["created_at"].as_str().unwrap()).is_ok(), "{d}");

    // What the providers were asked.
    let chats = chat_requests(&fake);
    assert_eq!(chats.len(), 1);
    assert_eq!((chats[0]["stream"].as_bool(), chats[0]["messages"][0]["role"].as_str()), (Some(true), Some("system")));
    assert_eq!(chats[0]["messages"][1]["content"], "心情：开心\n风格：赛博朋克\n主题：生日\n补充：给妈妈");
    let images = fake.requests_to("/images/generations");
    assert_eq!(images.len(), 1, "text-to-image without a photo");
    let prompt = images[0].json().unwrap()["prompt"].as_str().unwrap().to_owned();
    assert!(prompt.contains("生日") && prompt.contains("祝你生日快乐"), "{prompt}");

    // The picture is ours, served without a token.
    let pic = api.get(&url).await;
    assert_eq!((pic.status, pic.headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/png"));
    assert!(pic.raw.starts_with(b"\x89PNG"));
    assert_eq!(api.get(&format!("/api/v1/postcards/media/{}", "0".repeat(64))).await.status, StatusCode::NOT_FOUND);

    // Detail and list.
    let r = api.call("GET", &format!("/api/v1/postcards/{id}"), Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, *d, "the detail is the status' data");
    let r = api.call("GET", "/api/v1/postcards/me", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["postcard_id"].as_str(), list[0]["image_url"].as_str()), (Some(id.as_str()), Some(url.as_str())));
    assert!(list[0].get("frontend_code").is_none(), "lists stay small");

    // The task is like every task: one work, completed, with the picture.
    let work = eventually(30, "the postcard's work is completed", || async {
        let w = api.call("GET", "/api/v1/works", Some(&alice), None).await;
        let item = w.body["data"]["list"][0].clone();
        (item["status"] == "completed").then_some(w.body["data"].clone())
    })
    .await;
    assert_eq!(work["total"], 1, "{work}");
    assert_eq!(work["list"][0]["title"], "明信片 · 生日");
}

async fn others_read_nothing_of_it(backend: Backend) {
    let (api, _fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    let bob = user(&api, "bob").await;
    let task_id = create(&api, &alice, json!({"mood": "平静", "style": "水彩", "theme": "海边"})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "completed", "{s}");
    let id = s["data"]["postcard_id"].as_str().unwrap();

    for path in [format!("/api/v1/postcards/status/{task_id}"), format!("/api/v1/postcards/{id}")] {
        let r = api.call("GET", &path, Some(&bob), None).await;
        assert_error(&r, StatusCode::NOT_FOUND, &path);
        assert_eq!(r.body["error_code"], "RESOURCE_NOT_FOUND");
    }
    let r = api.call("GET", "/api/v1/postcards/me", Some(&bob), None).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])));
    // Another kind of task of one's own is no postcard; made-up ids are missing too.
    let r = api.call("GET", "/api/v1/postcards/status/not-a-task", Some(&alice), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "unknown task");
    let r = api.call("GET", &format!("/api/v1/postcards/{task_id}"), Some(&alice), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "a task id is no postcard id");
    for path in [format!("/api/v1/postcards/status/{task_id}"), format!("/api/v1/postcards/{id}"), "/api/v1/postcards/me".into()] {
        assert_error(&api.call("GET", &path, None, None).await, StatusCode::UNAUTHORIZED, "no token");
    }
}

async fn what_the_chat_provider_writes_is_escaped_on_the_card(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["<script>alert(1)</script>", " & \"hi\" 'x'"], ChatEnd::Done));
    let task_id = create(&api, &alice, json!({"mood": "开心", "style": "<b>bold</b>", "theme": "\"><img src=x onerror=alert(2)>"})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "completed", "{s}");
    let d = &s["data"];
    assert_eq!(d["text"], "<script>alert(1)</script> & \"hi\" 'x'", "the JSON keeps the text as written");
    let code = d["frontend_code"].as_str().unwrap();
    assert!(code.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;hi&quot; &#39;x&#39;"), "{code}");
    assert!(code.contains("&lt;b&gt;bold&lt;/b&gt;") && code.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"), "{code}");
    assert!(!code.contains("<script") && !code.contains("<b>") && !code.contains("<img src=x"), "{code}");
    assert_eq!(code.matches("<img ").count(), 1, "only the picture: {code}");
}

async fn a_failing_chat_provider_fails_the_postcard(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;

    // The answer breaks off with an error event.
    fake.script_chat(ChatReply::new(&["祝你"], ChatEnd::Error("the model is overloaded".into())));
    let task_id = create(&api, &alice, json!({"mood": "开心", "style": "水墨", "theme": "新年"})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "failed", "{s}");
    let error = s["error"].as_str().unwrap();
    assert!(error.contains("text step") && error.contains("overloaded"), "{error}");
    assert!(s.get("data").is_none(), "{s}");
    assert!(fake.requests_to("/images/generations").is_empty(), "no picture without a text");

    // The provider is down (503 on every call, retried, then given up).
    fake.set_down(true);
    let task_id = create(&api, &alice, json!({"mood": "开心", "style": "水墨", "theme": "新年"})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(s["error"].as_str().unwrap().contains("text step"), "{s}");

    // Neither left a postcard; the detail of a failed task is its status.
    let r = api.call("GET", "/api/v1/postcards/me", Some(&alice), None).await;
    assert_eq!(r.body, json!([]));
    let detail = api.call("GET", &format!("/api/tasks/{task_id}"), Some(&alice), None).await;
    assert_eq!(detail.body["data"]["status"], "failed", "{}", detail.body);
}

async fn a_photo_goes_to_the_image_provider(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    let bob = user(&api, "bob").await;
    let photo = upload_photo(&api, &alice, &png(48, 32, 90)).await;
    // Someone else's upload is not a photo one may use.
    let r = api
        .call("POST", "/api/v1/postcards/create", Some(&bob), Some(json!({"mood": "a", "style": "b", "theme": "c", "photoId": photo})))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "bob with alice's photo");
    assert!(r.body["details"]["field_errors"]["photoId"].is_array(), "{}", r.body);

    let task_id = create(&api, &alice, json!({"mood": "怀旧", "style": "胶片", "theme": "老家", "photo_id": photo})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "completed", "{s}");
    let edits = fake.requests_to("/images/edits");
    assert_eq!(edits.len(), 1, "image-to-image with the photo");
    assert!(fake.requests_to("/images/generations").is_empty());
    assert!(edits[0].text().contains("老家"), "the prompt went along");
    let pic = api.get(s["data"]["image_url"].as_str().unwrap()).await;
    assert_eq!(pic.status, StatusCode::OK);
    assert!(pic.raw.starts_with(b"\x89PNG"), "the provider's picture, stored by us");
}

async fn a_photo_goes_through_the_engine_with_the_builtin_provider(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let admin = admin(&api).await;
    let r = api.call("PUT", "/api/v1/config/providers", Some(&admin), Some(json!({"imageProvider": "purrify"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The worker writes its output where the job says, as real workers do.
    let output = purrify_testkit::providers::picture(64, 48, 30, image::ImageFormat::Jpeg);
    let worker = FakeWorker::start(2, Behavior::Succeed).await;
    let written = output.clone();
    worker.rule(move |req| {
        let path = url::Url::parse(&req.output_uri).unwrap().to_file_path().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &written).unwrap();
        None
    });
    let r = api.post_json("/api/v1/config/backend", json!({"backend_url": worker.url}), &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let alice = user(&api, "alice").await;
    let photo = upload_photo(&api, &alice, &png(40, 30, 10)).await;
    let task_id = create(&api, &alice, json!({"mood": "温馨", "style": "写实", "theme": "全家福", "photoId": photo})).await;
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(worker.submits().len(), 1, "the photo ran once on the engine");
    assert!(
        fake.requests_to("/images/generations").is_empty() && fake.requests_to("/images/edits").is_empty(),
        "no outside image provider was asked"
    );
    assert_eq!(chat_requests(&fake).len(), 1, "the text still came from the chat provider");
    let pic = api.get(s["data"]["image_url"].as_str().unwrap()).await;
    assert_eq!((pic.status, pic.headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
    assert_eq!(pic.raw, output, "the engine's picture");

    // The photo step is part of the postcard: one work, the postcard's.
    let works = eventually(30, "the postcard's work is completed", || async {
        let w = api.call("GET", "/api/v1/works", Some(&alice), None).await;
        (w.body["data"]["list"][0]["status"] == "completed").then_some(w.body["data"].clone())
    })
    .await;
    assert_eq!(works["total"], 1, "{works}");

    // Cancelling the postcard while its photo is on the engine cancels the photo's task.
    worker.script([Behavior::Hold]);
    let task_id = create(&api, &alice, json!({"mood": "温馨", "style": "写实", "theme": "重逢", "photoId": photo})).await;
    worker.wait_started(2).await;
    let child = worker.started().last().unwrap().rsplit_once('-').unwrap().0.to_owned();
    let r = api.call("POST", &format!("/api/tasks/{task_id}/cancel"), Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let s = final_status(&api, &alice, &task_id).await;
    assert_eq!(s["status"], "failed", "{s}");
    ended(&api, &child).await;
    let c = api.stack.state.tasks.task(&child).await.unwrap().unwrap();
    assert_eq!((c.status, c.error_code.as_deref()), (PublicStatus::Failed, Some("CANCELLED")), "the photo step was cancelled too");
    assert!(worker.deletes().iter().any(|j| j.starts_with(&child)), "the worker was told to stop");
    let r = api.call("GET", "/api/v1/postcards/me", Some(&alice), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1, "no postcard of the cancelled one");
}

async fn bad_requests_are_refused(backend: Backend) {
    let (api, fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    let r = api.call("POST", "/api/v1/postcards/create", None, Some(json!({"mood": "a", "style": "b", "theme": "c"}))).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "no token");

    let r = api.call("POST", "/api/v1/postcards/create", Some(&alice), Some(json!({"style": "b", "theme": "   "}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "missing and blank");
    let fields = r.body["details"]["field_errors"].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["mood", "theme"], "{}", r.body);

    let long = "长".repeat(101);
    let r = api
        .call(
            "POST",
            "/api/v1/postcards/create",
            Some(&alice),
            Some(json!({"mood": "a", "style": long, "theme": "c", "extra": "x".repeat(501)})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "too long");
    let fields = r.body["details"]["field_errors"].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["extra", "style"], "{}", r.body);

    let r = api.call("POST", "/api/v1/postcards/create", Some(&alice), Some(json!({"mood": 1, "style": "b", "theme": "c"}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "not a string");
    let r = api
        .call("POST", "/api/v1/postcards/create", Some(&alice), Some(json!({"mood": "a", "style": "b", "theme": "c", "photoId": "nope"})))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unknown photo");
    for q in ["?limit=0", "?limit=101", "?limit=x"] {
        assert_error(&api.call("GET", &format!("/api/v1/postcards/me{q}"), Some(&alice), None).await, StatusCode::UNPROCESSABLE_ENTITY, q);
    }

    // Without a chat provider, or without an outside image provider for a postcard without
    // a photo (the built-in provider only transforms photos), nothing can be made: refused
    // before anything is counted.
    let admin = admin(&api).await;
    let current = api.call("GET", "/api/v1/config/current", Some(&admin), None).await;
    let chat = current.body["data"]["assistantProvider"].as_str().unwrap().to_owned();
    let r = api.call("PUT", &format!("/api/v1/config/providers/{chat}"), Some(&admin), Some(json!({"enabled": false}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.call("POST", "/api/v1/postcards/create", Some(&alice), Some(json!({"mood": "a", "style": "b", "theme": "c"}))).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no chat provider");
    assert!(r.body["message"].as_str().unwrap().contains("assistant"), "{}", r.body);
    api.call("PUT", &format!("/api/v1/config/providers/{chat}"), Some(&admin), Some(json!({"enabled": true}))).await;
    api.call("PUT", "/api/v1/config/providers", Some(&admin), Some(json!({"imageProvider": "purrify"}))).await;
    let r = api.call("POST", "/api/v1/postcards/create", Some(&alice), Some(json!({"mood": "a", "style": "b", "theme": "c"}))).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "no image provider");
    assert!(fake.requests().is_empty(), "no provider was called for a refused request");
    let c = api.stack.state.tasks.counts().await.unwrap();
    assert_eq!(c.queued + c.processing + c.completed + c.failed + c.cancelled, 0, "no task was made");
}

async fn lists_are_newest_first_and_bounded(backend: Backend) {
    let (api, _fake) = postcard_api(backend).await;
    let alice = user(&api, "alice").await;
    let mut ids = Vec::new();
    for theme in ["一", "二", "三"] {
        let task_id = create(&api, &alice, json!({"mood": "开心", "style": "水彩", "theme": theme})).await;
        let s = final_status(&api, &alice, &task_id).await;
        ids.push(s["data"]["postcard_id"].as_str().unwrap().to_owned());
    }
    let page = |q: &'static str| {
        let api = &api;
        let alice = &alice;
        async move {
            let r = api.call("GET", &format!("/api/v1/postcards/me{q}"), Some(alice), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body.as_array().unwrap().iter().map(|p| p["postcard_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(page("").await, newest_first);
    assert_eq!(page("?limit=2").await, newest_first[..2]);
    let after = api.call("GET", &format!("/api/v1/postcards/me?limit=2&before={}", newest_first[1]), Some(&alice), None).await;
    let rest: Vec<&str> = after.body.as_array().unwrap().iter().map(|p| p["postcard_id"].as_str().unwrap()).collect();
    assert_eq!(rest, [newest_first[2].as_str()]);
}
