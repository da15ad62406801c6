//! Works through the router on SQLite and PostgreSQL: a real task (the dispatcher and a
//! worker over HTTP) becomes exactly one work with a thumbnail; seed 001's and seed 003's
//! lists with their filters and pages; edits; deletion that hides at once while the sweeper
//! removes the objects, retrying when storage fails; other users get 404; the admin list.

mod support;

use axum::http::StatusCode;
use purrify_api::{FaceRestoration, FailReason, JobResult};
use purrify_store::{Guard, NewTask};
use purrify_testkit::eventually;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

fn admin_config(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some("root@example.com".into());
    c.bootstrap_admin_password = Some("root password 1".into());
}

async fn register(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

async fn root(api: &Api) -> String {
    let r = api.post_json("/api/auth/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

/// A photo-like JPEG of `w` x `h`.
fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn path_of(uri: &str) -> std::path::PathBuf {
    url::Url::parse(uri).unwrap().to_file_path().unwrap()
}

/// A task of `user` finished by hand: completed with a stored JPEG output (`garbage`: with
/// bytes that are no image), failed, cancelled, or left queued. Returns its id.
async fn hand_task(api: &Api, user: &str, outcome: &str) -> String {
    let state = &api.stack.state;
    let id = uuid::Uuid::new_v4().to_string();
    let output = state.storage.uri_for(&format!("results/{id}.jpg"));
    let mut t = NewTask::new(&id, state.storage.uri_for("uploads/x.png"), &output, Default::default());
    t.user_id = Some(user.to_owned());
    if outcome == "queued" {
        // Seed 002's tasks carry a title; the generation kinds make videos.
        t.meta.title = Some("Grandma, 1962".into());
        t.meta.kind = "image-to-video".into();
    }
    let db = state.tasks.db();
    db.insert_task(&t, std::time::Duration::from_secs(300)).await.unwrap();
    match outcome {
        "completed" | "garbage" => {
            let bytes = if outcome == "garbage" { b"not an image at all".to_vec() } else { jpeg(640, 480) };
            state.storage.put(&output, bytes.clone().into()).await.unwrap();
            let result = JobResult {
                output_uri: output,
                content_type: "image/jpeg".into(),
                width: 640,
                height: 480,
                bytes: bytes.len() as u64,
                faces: 0,
                face_restoration: FaceRestoration::NotConfigured,
                model: "test".into(),
                elapsed_ms: 1,
            };
            assert!(db.claim_task(&id, 0, "http://w", &format!("{id}-1")).await.unwrap());
            assert!(db.complete_task(&id, &format!("{id}-1"), &result).await.unwrap());
        }
        "failed" => assert!(db.fail_task(&id, Guard::Queued, FailReason::BadInput, "not an image").await.unwrap()),
        "cancelled" => assert!(db.cancel_task(&id, Guard::Queued).await.unwrap()),
        _ => {}
    }
    id
}

async fn works_of(api: &Api, token: &str, query: &str) -> Value {
    let r = api.call("GET", &format!("/api/works{query}"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
    assert_eq!(r.body["success"], true);
    r.body["data"].clone()
}

on_both!(
    a_finished_task_becomes_one_work_with_a_thumbnail,
    thumbnails_are_retried_and_never_hold_a_work_back,
    lists_filter_page_and_edit,
    deleting_hides_at_once_and_the_sweeper_removes_the_objects
);

async fn a_finished_task_becomes_one_work_with_a_thumbnail(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    // The worker writes its output where the job says, as real workers do.
    let output = jpeg(1200, 900);
    let worker = FakeWorker::start(2, Behavior::Succeed).await;
    let written = output.clone();
    worker.rule(move |req| {
        let path = path_of(&req.output_uri);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &written).unwrap();
        None
    });
    let r = api.post_json("/api/v1/config/backend", json!({"backend_url": worker.url}), &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let up = api.upload_as(&alice, &[("file", Some("a.png"), &small_photo_png(64, 48))]).await;
    assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
    let task_id = up.body["task_id"].as_str().unwrap().to_owned();
    // An anonymous task is nobody's work.
    assert_eq!(api.upload(&[("file", Some("b.png"), &small_photo_png(32, 32))]).await.status, StatusCode::ACCEPTED);

    let work = eventually(60, "the task's work is completed with a thumbnail", || async {
        let page = works_of(&api, &alice, "").await;
        let w = page["items"][0].clone();
        (w["status"] == "completed" && w["thumbnail_url"].is_string()).then_some(w)
    })
    .await;
    assert_eq!(
        (work["task_id"].as_str(), work["user_id"].as_str(), work["type"].as_str()),
        (Some(task_id.as_str()), Some(alice_id.as_str()), Some("image"))
    );
    assert_eq!(
        (work["width"].as_u64(), work["height"].as_u64(), work["file_size"].as_u64()),
        (Some(64), Some(48), Some(output.len() as u64))
    );
    assert!(work["title"].as_str().unwrap().starts_with("Photo "), "{work}");

    // Recording again (events, sweeps, an explicit record) changes nothing.
    let state = &api.stack.state;
    state.works.record(&task_id).await.unwrap();
    state.works.sweep().await;
    state.works.sweep().await;
    let page = works_of(&api, &alice, "").await;
    assert_eq!((page["total"].as_u64(), page["items"][0]["id"].clone()), (Some(1), work["id"].clone()), "exactly one work");
    let root = root(&api).await;
    let all = api.call("GET", "/api/admin/works", Some(&root), None).await;
    assert_eq!(all.body["data"]["total"], 1, "the anonymous task has no work: {}", all.body);

    // The media URLs need no token; the thumbnail is a small JPEG made from the output.
    let thumb = api.get(work["thumbnail_url"].as_str().unwrap()).await;
    assert_eq!((thumb.status, thumb.headers["content-type"].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
    let small = image::load_from_memory(&thumb.raw).unwrap();
    assert_eq!((small.width(), small.height()), (320, 240), "longest side 320, aspect kept");
    let file = api.get(work["file_url"].as_str().unwrap()).await;
    assert_eq!((file.status, file.raw == output), (StatusCode::OK, true), "the work's file is the task's output");
    let stored = std::fs::read_dir(api._dir.path().join("storage/works").join(work["id"].as_str().unwrap())).unwrap().count();
    assert_eq!(stored, 2, "file and thumbnail stored next to each other");

    // Seed 003's surface.
    let v1 = api.call("GET", "/api/v1/works", Some(&alice), None).await;
    assert_eq!((v1.status, v1.body["code"].as_u64()), (StatusCode::OK, Some(200)), "{}", v1.body);
    let item = &v1.body["data"]["list"][0];
    assert_eq!(
        *item,
        json!({"id": work["id"], "type": "image", "title": work["title"], "thumbnail": work["thumbnail_url"],
               "status": "completed", "createdAt": work["created_at"], "fileUrl": work["file_url"]})
    );
    assert_eq!(
        (v1.body["data"]["total"].as_u64(), v1.body["data"]["page"].as_u64(), v1.body["data"]["pageSize"].as_u64()),
        (Some(1), Some(1), Some(20))
    );
    let id = work["id"].as_str().unwrap();
    let detail = api.call("GET", &format!("/api/v1/works/{id}"), Some(&alice), None).await;
    assert_eq!(
        (detail.body["data"]["taskId"].as_str(), detail.body["data"]["fileSize"].as_u64()),
        (Some(task_id.as_str()), Some(output.len() as u64))
    );
    let dl = api.call("GET", &format!("/api/v1/works/{id}/download"), Some(&alice), None).await;
    assert_eq!((dl.status, dl.raw == output), (StatusCode::OK, true));
    assert_eq!(dl.headers["content-disposition"].to_str().unwrap(), format!("attachment; filename=\"purrify-{id}.jpg\""));
    assert_eq!(dl.headers["content-length"].to_str().unwrap(), output.len().to_string());
    assert_eq!(dl.headers["cache-control"], "private, max-age=3600");

    // Someone else's work does not exist for them, on either surface.
    let (bob, _) = register(&api, "bob@example.com").await;
    for (method, uri) in [("GET", format!("/api/works/{id}")), ("DELETE", format!("/api/works/{id}")), ("PUT", format!("/api/works/{id}"))]
    {
        let body = (method == "PUT").then(|| json!({"title": "mine now"}));
        assert_envelope(&api.call(method, &uri, Some(&bob), body).await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", &uri);
    }
    for (method, uri) in
        [("GET", format!("/api/v1/works/{id}")), ("DELETE", format!("/api/v1/works/{id}")), ("GET", format!("/api/v1/works/{id}/download"))]
    {
        let r = api.call(method, &uri, Some(&bob), None).await;
        assert_eq!(
            (r.status, r.body["code"].as_u64(), r.body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some(404), Some("RESOURCE_NOT_FOUND")),
            "{uri}"
        );
    }
    let batch = api.call("POST", "/api/works/batch/delete", Some(&bob), Some(json!({"work_ids": [id]}))).await;
    assert_envelope(&batch, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "bob's batch");
    assert_eq!(works_of(&api, &bob, "").await["total"], 0);
    assert_eq!(works_of(&api, &alice, "").await["total"], 1, "still alice's");
    assert_envelope(&api.call("GET", "/api/works", None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "no token");

    // The admin list: everyone's, or one user's; admins only.
    let only_bob = api.call("GET", &format!("/api/admin/works?user_id={}", "nobody"), Some(&root), None).await;
    assert_eq!(only_bob.body["data"]["total"], 0);
    let alices = api.call("GET", &format!("/api/admin/works?user_id={alice_id}&status=completed"), Some(&root), None).await;
    assert_eq!((alices.body["data"]["total"].as_u64(), alices.body["data"]["items"][0]["id"].as_str()), (Some(1), Some(id)));
    assert_envelope(&api.call("GET", "/api/admin/works", Some(&alice), None).await, StatusCode::FORBIDDEN, "ACCESS_DENIED", "user");
}

async fn thumbnails_are_retried_and_never_hold_a_work_back(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    hand_task(&api, &alice_id, "garbage").await;
    let state = &api.stack.state;
    state.works.sweep().await;
    let work = works_of(&api, &alice, "").await["items"][0].clone();
    assert_eq!(
        (work["status"].as_str(), work["thumbnail_url"].is_null(), work["file_url"].is_string()),
        (Some("completed"), true, true),
        "{work}"
    );
    let id = work["id"].as_str().unwrap();
    let stored = state.works.get(&alice_id, id).await.unwrap();
    assert!(stored.thumb_attempts >= 1, "the failure is counted: {stored:?}");
    let v1 = api.call("GET", "/api/v1/works", Some(&alice), None).await;
    assert!(v1.body["data"]["list"][0]["thumbnail"].is_null(), "{}", v1.body);
    assert_eq!(api.get(&format!("/api/works/media/{}/thumbnail", stored.media_key)).await.status, StatusCode::NOT_FOUND);

    // The stored file is repaired: the sweep's next attempt makes the thumbnail.
    std::fs::write(api._dir.path().join(format!("storage/works/{id}/output.jpg")), jpeg(900, 600)).unwrap();
    let thumb = eventually(30, "the sweep retries the thumbnail", || async {
        state.works.sweep().await;
        works_of(&api, &alice, "").await["items"][0]["thumbnail_url"].as_str().map(str::to_owned)
    })
    .await;
    let small = image::load_from_memory(&api.get(&thumb).await.raw).unwrap();
    assert_eq!((small.width(), small.height()), (320, 213));
}

async fn lists_filter_page_and_edit(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let mut tasks = Vec::new();
    for outcome in ["completed", "completed", "completed", "failed", "cancelled", "queued"] {
        tasks.push(hand_task(&api, &alice_id, outcome).await);
    }
    api.stack.state.works.sweep().await;
    let page = works_of(&api, &alice, "?page_size=4").await;
    assert_eq!(
        (page["total"].as_u64(), page["total_pages"].as_u64(), page["page_size"].as_u64(), page["items"].as_array().unwrap().len()),
        (Some(6), Some(2), Some(4), 4)
    );
    let second = works_of(&api, &alice, "?page_size=4&page=2").await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    let newest: Vec<&str> = page["items"].as_array().unwrap().iter().map(|w| w["task_id"].as_str().unwrap()).collect();
    assert_eq!(newest[0], tasks[5], "newest first");

    let count = |q: &'static str| {
        let (api, alice) = (&api, &alice);
        async move { works_of(api, alice, q).await["total"].as_u64().unwrap() }
    };
    assert_eq!(count("?status=completed").await, 3);
    assert_eq!(count("?status=failed").await, 1);
    assert_eq!(count("?status=cancelled").await, 1);
    assert_eq!(count("?status=pending").await, 1);
    assert_eq!(count("?type=image").await, 5);
    assert_eq!(count("?type=video").await, 1);
    let titled = works_of(&api, &alice, "?keyword=grandma").await;
    assert_eq!((titled["total"].as_u64(), titled["items"][0]["title"].as_str()), (Some(1), Some("Grandma, 1962")), "the task's title");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let q = format!("?start_date={today}&end_date={today}");
    assert_eq!(works_of(&api, &alice, &q).await["total"], 6, "a day includes all of it");
    assert_eq!(count("?end_date=2020-01-01").await, 0);
    for (q, field) in [
        ("?status=done", "status"),
        ("?type=gif", "type"),
        ("?start_date=yesterday", "start_date"),
        ("?start_date=2024-02-01&end_date=2024-01-01", "end_date"),
    ] {
        let r = api.call("GET", &format!("/api/works{q}"), Some(&alice), None).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", q);
        assert!(r.body["details"]["field_errors"][field].is_array(), "{q}: {}", r.body);
    }

    // Edits: title and favourite; bad input changes nothing.
    let done = works_of(&api, &alice, "?status=completed").await;
    let id = done["items"][0]["id"].as_str().unwrap().to_owned();
    let put = api
        .call("PUT", &format!("/api/works/{id}"), Some(&alice), Some(json!({"title": "  Cat on 100% zoom ", "is_favorite": true})))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(
        (put.body["data"]["title"].as_str(), put.body["data"]["is_favorite"].as_bool(), put.body["data"]["is_public"].as_bool()),
        (Some("Cat on 100% zoom"), Some(true), Some(false))
    );
    for bad in [
        json!({"title": ""}),
        json!({"title": "x".repeat(101)}),
        json!({"title": "a\u{7}b"}),
        json!({"colour": "red"}),
        json!({"is_favorite": "yes"}),
    ] {
        let r = api.call("PUT", &format!("/api/works/{id}"), Some(&alice), Some(bad.clone())).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", &bad.to_string());
    }
    let detail = api.call("GET", &format!("/api/works/{id}"), Some(&alice), None).await;
    assert_eq!(detail.body["data"]["title"], "Cat on 100% zoom", "unchanged by the refused edits");
    assert_eq!(count("?keyword=100%25").await, 1, "% is a literal");
    assert_eq!(count("?keyword=CAT").await, 1);
    assert_eq!(count("?is_favorite=true").await, 1);
    assert_eq!(count("?is_favorite=false").await, 5);

    // Seed 003: its three status words (queued is processing, cancelled is failed) and pages.
    let v1 = |q: &'static str| {
        let (api, alice) = (&api, &alice);
        async move {
            let r = api.call("GET", &format!("/api/v1/works{q}"), Some(alice), None).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
            r.body["data"].clone()
        }
    };
    assert_eq!(v1("?status=processing").await["total"], 1);
    assert_eq!(v1("?status=completed&type=image").await["total"], 3);
    assert_eq!(v1("?status=failed").await["total"], 2);
    assert_eq!(v1("?status=all&type=all").await["total"], 6);
    let paged = v1("?page=2&pageSize=5").await;
    assert_eq!((paged["page"].as_u64(), paged["pageSize"].as_u64(), paged["list"].as_array().unwrap().len()), (Some(2), Some(5), 1));
    let failed = v1("?status=failed").await;
    assert!(
        failed["list"].as_array().unwrap().iter().all(|w| w["status"] == "failed" && w["fileUrl"].is_null() && w["thumbnail"].is_null())
    );
    let r = api.call("GET", "/api/v1/works?status=running", Some(&alice), None).await;
    assert_eq!(
        (r.status, r.body["code"].as_u64(), r.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(422), Some("VALIDATION_ERROR"))
    );
    // A work without a file has nothing to download.
    let pending = v1("?status=processing").await["list"][0]["id"].as_str().unwrap().to_owned();
    let r = api.call("GET", &format!("/api/v1/works/{pending}/download"), Some(&alice), None).await;
    assert_eq!((r.status, r.body["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("VALIDATION_ERROR")), "{}", r.body);

    // The queued task runs and fails: its work follows.
    let db = api.stack.state.tasks.db();
    assert!(db.fail_task(&tasks[5], Guard::Queued, FailReason::BadInput, "not an image").await.unwrap());
    api.stack.state.works.sweep().await;
    assert_eq!(v1("?status=processing").await["total"], 0);
    assert_eq!(count("?status=failed").await, 2);
}

async fn deleting_hides_at_once_and_the_sweeper_removes_the_objects(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let (bob, bob_id) = register(&api, "bob@example.com").await;
    for _ in 0..3 {
        hand_task(&api, &alice_id, "completed").await;
    }
    hand_task(&api, &bob_id, "completed").await;
    let state = &api.stack.state;
    state.works.sweep().await;
    let page = works_of(&api, &alice, "").await;
    let ids: Vec<String> = page["items"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3);
    let first = &page["items"][0];
    assert!(first["thumbnail_url"].is_string(), "{first}");
    let dir = api._dir.path().join("storage/works").join(&ids[0]);
    let (output, thumbnail) = (dir.join("output.jpg"), dir.join("thumbnail.jpg"));
    assert!(output.is_file() && thumbnail.is_file());

    // Storage refuses to delete the output: it is a non-empty directory now.
    std::fs::remove_file(&output).unwrap();
    std::fs::create_dir_all(output.join("stuck")).unwrap();
    let del = api.call("DELETE", &format!("/api/works/{}", ids[0]), Some(&alice), None).await;
    assert_eq!((del.status, del.body["data"]["deleted"].as_u64()), (StatusCode::OK, Some(1)), "{}", del.body);
    // Hidden at once, everywhere.
    assert_envelope(
        &api.call("GET", &format!("/api/works/{}", ids[0]), Some(&alice), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "deleted",
    );
    assert_eq!(api.get(first["thumbnail_url"].as_str().unwrap()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get(first["file_url"].as_str().unwrap()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(works_of(&api, &alice, "").await["total"], 2);
    assert_eq!(api.call("GET", "/api/v1/works", Some(&alice), None).await.body["data"]["total"], 2);
    assert_envelope(
        &api.call("DELETE", &format!("/api/works/{}", ids[0]), Some(&alice), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "twice",
    );

    // The sweeper deletes the thumbnail; the output fails and waits for a retry.
    let db = state.tasks.db();
    let failing = eventually(30, "a failed attempt on the output", || async {
        state.works.sweep().await;
        let pending = db.pending_deletions().await.unwrap();
        (!thumbnail.exists() && pending.len() == 1 && pending[0].attempts >= 1).then(|| pending[0].clone())
    })
    .await;
    assert!(failing.uri.ends_with(&format!("works/{}/output.jpg", ids[0])), "{failing:?}");
    assert!(failing.last_error.is_some());
    assert!(output.exists(), "storage refused: the object is still there");

    // Storage recovers; the retry deletes it and the queue empties.
    std::fs::remove_dir_all(&output).unwrap();
    std::fs::write(&output, b"still here").unwrap();
    eventually(30, "the retry deletes the output", || async {
        state.works.sweep().await;
        (db.pending_deletions().await.unwrap().is_empty() && !output.exists()).then_some(())
    })
    .await;

    // Batch: all or nothing, bounded, duplicates count once.
    let bobs = works_of(&api, &bob, "").await["items"][0]["id"].as_str().unwrap().to_owned();
    let mixed = api.call("POST", "/api/works/batch/delete", Some(&alice), Some(json!({"work_ids": [ids[1], bobs]}))).await;
    assert_envelope(&mixed, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "someone else's id in the batch");
    assert_eq!(works_of(&api, &alice, "").await["total"], 2, "nothing was deleted");
    assert_eq!(works_of(&api, &bob, "").await["total"], 1);
    for body in [json!({"work_ids": []}), json!({"work_ids": vec!["x"; 101]}), json!({"work_ids": "w1"})] {
        let r = api.call("POST", "/api/works/batch/delete", Some(&alice), Some(body.clone())).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", &body.to_string());
    }
    let both = api.call("POST", "/api/works/batch/delete", Some(&alice), Some(json!({"ids": [ids[1], ids[2], ids[1]]}))).await;
    assert_eq!((both.status, both.body["data"]["deleted"].as_u64()), (StatusCode::OK, Some(2)), "{}", both.body);
    assert_eq!(works_of(&api, &alice, "").await["total"], 0);
    // Seed 003's delete of bob's own work.
    let v1 = api.call("DELETE", &format!("/api/v1/works/{bobs}"), Some(&bob), None).await;
    assert_eq!((v1.status, v1.body["data"]["deleted"].as_bool()), (StatusCode::OK, Some(true)), "{}", v1.body);
    eventually(30, "every object of the deleted works is gone", || async {
        state.works.sweep().await;
        db.pending_deletions().await.unwrap().is_empty().then_some(())
    })
    .await;
    let left = std::fs::read_dir(api._dir.path().join("storage/works"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(left, 0, "no object of a deleted work is left");
    assert_eq!(api.call("GET", "/api/admin/works", None, None).await.status, StatusCode::UNAUTHORIZED);
}
