//! Uploads through the real router on SQLite and PostgreSQL: truncated files refused on
//! `/api/v1/enhance` by their container's completeness, and seed 001's and seed 003's upload
//! routes (ownership, quota, base64, bad files), each refusal leaving no object and no row, and
//! deletion that frees the row and the quota at once while the sweeper removes the objects,
//! retrying while storage refuses.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use purrify_testkit::eventually;
use serde_json::{Value, json};
use support::client::*;
use support::*;

fn jpeg_photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::load_from_memory(&small_photo_png(w, h)).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

on_both!(
    truncated_images_are_refused_on_enhance,
    seed_001_uploads_are_owned_served_and_deleted,
    base64_uploads_decode_or_are_refused,
    the_storage_quota_refuses_and_stores_nothing,
    bad_files_and_batches_leave_nothing_behind,
    seed_003_image_and_video_uploads,
    uploads_share_the_per_client_rate_limit,
    a_deleted_upload_leaves_no_object_even_while_storage_refuses,
);

async fn truncated_images_are_refused_on_enhance(backend: Backend) {
    let api = api(backend).await;
    let jpeg = jpeg_photo(160, 120);
    let png = small_photo_png(96, 64);
    assert!(jpeg.len() > 2000, "the JPEG must be longer than the cut");
    for (what, cut) in
        [("JPEG cut after 1.5 kB", &jpeg[..1536]), ("PNG cut in half", &png[..png.len() / 2]), ("PNG without IEND", &png[..png.len() - 12])]
    {
        let r = api.upload(&[("file", Some("photo"), cut)]).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_IMAGE", what);
        assert!(r.body["message"].as_str().unwrap().contains("incomplete"), "{what}: {}", r.body);
        assert_eq!(api.stored_uploads(), 0, "{what}: nothing stored");
    }
    assert_eq!(api.stack.state.tasks.db().count_by_status().await.unwrap().queued, 0, "no task row for a refused upload");
    for (what, full) in [("whole JPEG", &jpeg), ("whole PNG", &png)] {
        let r = api.upload(&[("file", Some("photo"), full)]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{what}: {}", r.body);
    }
    assert_eq!(api.stored_uploads(), 2);
}

async fn user(api: &Api, name: &str) -> (String, String) {
    let r = api
        .post_json(
            "/api/auth/register",
            json!({"email": format!("{name}@example.com"), "username": name, "password": "correct horse 42"}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

/// A multipart POST to `path`, with a token when given.
async fn post_files(api: &Api, path: &str, token: Option<&str>, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
    let body = multipart(parts);
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    api.send(req.body(Body::from(body)).unwrap()).await
}

/// Objects in the uploads' storage directory (files and thumbnails).
fn stored_files(api: &Api) -> usize {
    std::fs::read_dir(api._dir.path().join("storage").join("files")).map(|d| d.count()).unwrap_or(0)
}

/// Waits until the deletion sweeper (the gateway's background loop) has emptied its queue and
/// `n` objects are left in the uploads' directory.
async fn objects_settle(api: &Api, n: usize) {
    let db = api.stack.state.tasks.db();
    eventually(30, &format!("{n} stored objects and no deletion pending"), || async {
        (db.pending_deletions().await.unwrap().is_empty() && stored_files(api) == n).then_some(())
    })
    .await;
}

async fn rows(api: &Api, user_id: &str) -> usize {
    api.stack.state.tasks.db().user_uploads(user_id, 1000).await.unwrap().len()
}

async fn seed_001_uploads_are_owned_served_and_deleted(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = user(&api, "alice").await;
    let (bob, _) = user(&api, "bob").await;
    let png = small_photo_png(48, 32);

    let anonymous = post_files(&api, "/api/upload/single", None, &[("file", Some("cat.png"), &png)]).await;
    assert_envelope(&anonymous, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "uploads need a login");

    let r = post_files(&api, "/api/upload/single", Some(&alice), &[("file", Some("../holiday/cat.png"), &png)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["success"], true);
    let d = &r.body["data"];
    assert_eq!((d["size"].as_u64(), d["width"].as_u64(), d["height"].as_u64()), (Some(png.len() as u64), Some(48), Some(32)));
    assert_eq!(
        (d["mimetype"].as_str(), d["kind"].as_str(), d["original_name"].as_str()),
        (Some("image/png"), Some("image"), Some("cat.png"))
    );
    let file_id = d["file_id"].as_str().unwrap().to_owned();
    assert_eq!(file_id.len(), 22, "128 random bits, URL-safe");
    let filename = d["filename"].as_str().unwrap().to_owned();
    assert_eq!(filename, format!("{file_id}.png"));
    // The capability URL serves the bytes without a token.
    let url = d["url"].as_str().unwrap().to_owned();
    let served = api.get(&url).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.raw, png);
    assert_eq!(served.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(served.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // A capability URL: the user's own cache keeps it, shared caches never.
    assert_eq!(served.headers[header::CACHE_CONTROL], "private, max-age=86400, immutable");
    assert_eq!(served.headers[header::CONTENT_LENGTH], png.len().to_string().as_str());
    assert_eq!(served.headers[header::CONTENT_DISPOSITION], format!("inline; filename=\"{filename}\"").as_str());
    assert_eq!(api.get(&format!("/api/upload/files/{file_id}.jpg")).await.status, StatusCode::NOT_FOUND, "wrong extension");
    assert_eq!(api.get("/api/upload/files/AAAAAAAAAAAAAAAAAAAAAA.png").await.status, StatusCode::NOT_FOUND);
    // The tasks helper's entry point finds it for its owner only.
    let resolved = api.stack.state.uploads.resolve(&alice_id, &file_id).await.unwrap().expect("alice's file");
    assert_eq!((resolved.bytes, resolved.content_type.as_str(), resolved.width), (png.len() as u64, "image/png", Some(48)));
    let (_, bob_id) = (bob.clone(), api.stack.state.accounts.authenticate(&bob).await.unwrap().user_id);
    assert!(api.stack.state.uploads.resolve(&bob_id, &file_id).await.unwrap().is_none());
    // A task made from it gets its own copy of the object: the task's housekeeping deletes
    // that copy, never the upload, and deleting the upload leaves the task's input alone.
    let copy = api.stack.state.uploads.copy_for_task(&alice_id, &file_id, "uploads/task-from-upload").await.unwrap().unwrap();
    assert!(copy.uri.ends_with("/uploads/task-from-upload.png"), "{}", copy.uri);
    assert_eq!(api.stack.state.storage.get(&copy.uri, 1 << 20).await.unwrap().as_ref(), png.as_slice());
    assert!(api.stack.state.uploads.copy_for_task(&bob_id, &file_id, "uploads/stolen").await.unwrap().is_none());

    let many = post_files(
        &api,
        "/api/upload/multiple",
        Some(&alice),
        &[("files", Some("a.png"), &png), ("note", None, b"ignored"), ("files", Some("b.png"), &png), ("files[]", Some("c.png"), &png)],
    )
    .await;
    assert_eq!(many.status, StatusCode::OK, "{}", many.body);
    assert_eq!(many.body["data"].as_array().unwrap().len(), 3);
    assert_eq!((rows(&api, &alice_id).await, stored_files(&api)), (4, 4));

    // Bob cannot delete Alice's file: 404, and it is still there.
    let theirs = api.call("DELETE", &format!("/api/upload/{filename}"), Some(&bob), None).await;
    assert_envelope(&theirs, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "someone else's file");
    assert_eq!(api.get(&url).await.status, StatusCode::OK);
    let mine = api.call("DELETE", &format!("/api/upload/{filename}"), Some(&alice), None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    assert_eq!(mine.body["data"]["deleted"], true);
    assert!(api.stack.state.storage.get(&copy.uri, 1 << 20).await.is_ok(), "the task's copy outlives the upload");
    assert_eq!(api.get(&url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(rows(&api, &alice_id).await, 3, "the row is gone at once");
    objects_settle(&api, 3).await;
    let again = api.call("DELETE", &format!("/api/upload/{filename}"), Some(&alice), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // By id alone works too.
    let second = many.body["data"][0]["file_id"].as_str().unwrap();
    assert_eq!(api.call("DELETE", &format!("/api/upload/{second}"), Some(&alice), None).await.status, StatusCode::OK);
}

async fn base64_uploads_decode_or_are_refused(backend: Backend) {
    use base64::Engine;
    let api = api(backend).await;
    let (token, user_id) = user(&api, "carol").await;
    let png = small_photo_png(40, 30);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let post = |body: Value| {
        let api = &api;
        let token = token.clone();
        async move {
            api.call(
                "POST",
                if body.get("images").is_some() { "/api/upload/base64/batch" } else { "/api/upload/base64" },
                Some(&token),
                Some(body),
            )
            .await
        }
    };

    let r = post(json!({"image": format!("data:image/png;base64,{b64}"), "filename": "c.png"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["data"]["size"].as_u64(), r.body["data"]["original_name"].as_str()), (Some(png.len() as u64), Some("c.png")));
    assert_eq!(api.get(r.body["data"]["url"].as_str().unwrap()).await.raw, png, "decoded exactly");
    let bare = post(json!({"data": b64})).await;
    assert_eq!(bare.status, StatusCode::OK, "{}", bare.body);
    assert_eq!(bare.body["data"]["original_name"], "image.png", "a name is made up when none is sent");
    let batch = post(json!({"images": [b64, {"image": format!("data:image/png;base64,{b64}"), "filename": "two.png"}]})).await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    assert_eq!(batch.body["data"][1]["original_name"], "two.png");
    assert_eq!(rows(&api, &user_id).await, 4);
    let before = stored_files(&api);

    for (what, body, status, code) in [
        ("bad base64", json!({"image": "not base64 at all!"}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        ("no image", json!({"filename": "x.png"}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        ("text data URL", json!({"image": "data:text/plain,hello"}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        (
            "not an image",
            json!({"image": base64::engine::general_purpose::STANDARD.encode(b"just some text, no image here")}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "truncated PNG",
            json!({"image": base64::engine::general_purpose::STANDARD.encode(&png[..png.len() / 2])}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_IMAGE",
        ),
        ("a batch with one bad image", json!({"images": [b64, "%%%%"]}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        ("too many", json!({"images": vec![b64.clone(); 11]}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        ("empty batch", json!({"images": []}), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
    ] {
        assert_envelope(&post(body).await, status, code, what);
        assert_eq!((rows(&api, &user_id).await, stored_files(&api)), (4, before), "{what}: nothing stored");
    }
    let bad = post(json!({"image": "abc!"})).await;
    assert!(bad.body["details"]["field_errors"]["image"].is_array(), "{}", bad.body);
    let not_json = api
        .send(
            Request::post("/api/upload/base64")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"image\": "))
                .unwrap(),
        )
        .await;
    assert_envelope(&not_json, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "malformed JSON");
}

async fn the_storage_quota_refuses_and_stores_nothing(backend: Backend) {
    let png = small_photo_png(40, 30);
    let quota = 2 * png.len() as u64 + 10;
    let api = api_with(backend, |c| c.upload_quota_bytes = quota).await;
    let (token, user_id) = user(&api, "dave").await;
    let (other, _) = user(&api, "erin").await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let r = post_files(&api, "/api/upload/single", Some(&token), &[("file", Some("p.png"), &png)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        names.push(r.body["data"]["filename"].as_str().unwrap().to_owned());
    }
    let over = post_files(&api, "/api/upload/single", Some(&token), &[("file", Some("p.png"), &png)]).await;
    assert_envelope(&over, StatusCode::PAYLOAD_TOO_LARGE, "STORAGE_QUOTA_EXCEEDED", "third file");
    assert!(over.body["message"].as_str().unwrap().contains("quota"), "{}", over.body);
    assert_eq!(over.body["details"]["quota_bytes"], quota);
    assert_eq!((rows(&api, &user_id).await, stored_files(&api)), (2, 2), "the refused file left nothing");
    // A batch that would pass the quota is refused whole.
    assert_eq!(api.call("DELETE", &format!("/api/upload/{}", names[0]), Some(&token), None).await.status, StatusCode::OK);
    let batch =
        post_files(&api, "/api/upload/multiple", Some(&token), &[("files", Some("a.png"), &png), ("files", Some("b.png"), &png)]).await;
    assert_envelope(&batch, StatusCode::PAYLOAD_TOO_LARGE, "STORAGE_QUOTA_EXCEEDED", "batch over the quota");
    assert_eq!(rows(&api, &user_id).await, 1);
    objects_settle(&api, 1).await;
    // Deleting made room; other users have their own quota.
    assert_eq!(post_files(&api, "/api/upload/single", Some(&token), &[("file", Some("p.png"), &png)]).await.status, StatusCode::OK);
    assert_eq!(post_files(&api, "/api/upload/single", Some(&other), &[("file", Some("p.png"), &png)]).await.status, StatusCode::OK);
}

async fn bad_files_and_batches_leave_nothing_behind(backend: Backend) {
    let api = api_with(backend, |c| c.max_upload_bytes = 64 * 1024).await;
    let (token, user_id) = user(&api, "frank").await;
    let png = small_photo_png(40, 30);
    let jpeg = jpeg_photo(160, 120);
    let big = small_photo_png(400, 300);
    assert!(big.len() > 64 * 1024);
    let one = |name: &'static str, bytes: Vec<u8>| vec![("file", Some(name), bytes)];
    for (what, path, parts, status, code) in [
        (
            "wrong magic bytes",
            "/api/upload/single",
            one("x.png", b"GIF89a but not really an image".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "text file",
            "/api/upload/single",
            one("x.jpg", b"hello, I am text named like a photo".to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "JPEG cut after 1.5 kB",
            "/api/upload/single",
            one("x.jpg", jpeg[..1536].to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_IMAGE",
        ),
        (
            "PNG without IEND",
            "/api/upload/single",
            one("x.png", png[..png.len() - 12].to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_IMAGE",
        ),
        ("over the file limit", "/api/upload/single", one("x.png", big.clone()), StatusCode::PAYLOAD_TOO_LARGE, "FILE_TOO_LARGE"),
        ("empty file", "/api/upload/single", one("x.png", Vec::new()), StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        ("no file", "/api/upload/single", vec![("other", None, b"x".to_vec())], StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        (
            "two files on single",
            "/api/upload/single",
            vec![("file", Some("a.png"), png.clone()), ("file", Some("b.png"), png.clone())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "too many files",
            "/api/upload/multiple",
            (0..11).map(|_| ("files", Some("a.png"), png.clone())).collect(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            "a batch with a cut file",
            "/api/upload/multiple",
            vec![("files", Some("a.png"), png.clone()), ("files", Some("b.jpg"), jpeg[..1536].to_vec())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_IMAGE",
        ),
        (
            "a video on an image route",
            "/api/upload/single",
            one("v.mp4", tiny_mp4(b"frames")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ] {
        let parts: Vec<(&str, Option<&str>, &[u8])> = parts.iter().map(|(n, f, b)| (*n, *f, b.as_slice())).collect();
        let r = post_files(&api, path, Some(&token), &parts).await;
        assert_envelope(&r, status, code, what);
        assert_eq!((rows(&api, &user_id).await, stored_files(&api)), (0, 0), "{what}: no row, no object");
    }
    let not_multipart = api.call("POST", "/api/upload/single", Some(&token), Some(json!({"file": "x"}))).await;
    assert_envelope(&not_multipart, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "JSON on a multipart route");
}

/// A minimal MP4: `ftyp`, `moov` (`mvhd` of 2.5 s, one video `trak` of 640x360), `mdat`.
fn tiny_mp4(mdat: &[u8]) -> Vec<u8> {
    fn bx(kind: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        [&((body.len() + 8) as u32).to_be_bytes()[..], kind, &body].concat()
    }
    let mut mvhd = [0u8; 100];
    mvhd[12..16].copy_from_slice(&600u32.to_be_bytes());
    mvhd[16..20].copy_from_slice(&1500u32.to_be_bytes());
    let mut tkhd = [0u8; 84];
    tkhd[40..44].copy_from_slice(&0x10000u32.to_be_bytes());
    tkhd[56..60].copy_from_slice(&0x10000u32.to_be_bytes());
    tkhd[76..80].copy_from_slice(&(640u32 << 16).to_be_bytes());
    tkhd[80..84].copy_from_slice(&(360u32 << 16).to_be_bytes());
    let hdlr = [&[0u8; 8][..], b"vide", &[0u8; 12]].concat();
    let trak = bx(b"trak", &[&bx(b"tkhd", &[&tkhd]), &bx(b"mdia", &[&bx(b"hdlr", &[&hdlr])])]);
    [bx(b"ftyp", &[b"mp42\0\0\0\0mp42isom"]), bx(b"moov", &[&bx(b"mvhd", &[&mvhd]), &trak]), bx(b"mdat", &[mdat])].concat()
}

async fn seed_003_image_and_video_uploads(backend: Backend) {
    let api = api(backend).await;
    let (token, user_id) = user(&api, "grace").await;
    let big = small_photo_png(350, 250);
    let r = post_files(&api, "/api/v1/upload/image", Some(&token), &[("file", Some("big.png"), &big)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["code"], 200);
    let d = &r.body["data"];
    assert_eq!((d["width"].as_u64(), d["height"].as_u64(), d["fileSize"].as_u64()), (Some(350), Some(250), Some(big.len() as u64)));
    let thumb = api.get(d["thumbnail"].as_str().unwrap()).await;
    assert_eq!(thumb.status, StatusCode::OK);
    assert_eq!(thumb.headers[header::CONTENT_TYPE], "image/jpeg");
    let t = image::load_from_memory(&thumb.raw).unwrap();
    assert_eq!((t.width(), t.height()), (320, 229), "longest side 320, aspect kept");
    assert_eq!(api.get(d["url"].as_str().unwrap()).await.raw, big);
    assert_eq!(stored_files(&api), 2, "file and thumbnail");

    let mp4 = tiny_mp4(&[7; 5000]);
    let v = post_files(&api, "/api/v1/upload/video", Some(&token), &[("file", Some("clip.mp4"), &mp4)]).await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    let vd = &v.body["data"];
    assert_eq!((vd["width"].as_u64(), vd["height"].as_u64(), vd["durationMs"].as_u64()), (Some(640), Some(360), Some(2500)));
    assert_eq!((vd["fileSize"].as_u64(), vd["mimeType"].as_str()), (Some(mp4.len() as u64), Some("video/mp4")));
    assert_eq!(api.get(vd["url"].as_str().unwrap()).await.raw, mp4);
    // A WebM: EBML header naming its DocType, then a Segment whose size matches.
    let webm = [&[0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84][..], b"webm", &[0x18, 0x53, 0x80, 0x67, 0x88], &[1; 8]].concat();
    let w = post_files(&api, "/api/v1/upload/video", Some(&token), &[("file", Some("clip.webm"), &webm)]).await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert!(w.body["data"]["width"].is_null(), "WebM sizes are not read");
    assert_eq!(rows(&api, &user_id).await, 3);
    let files = stored_files(&api);

    for (what, path, bytes, status, code) in [
        ("MP4 cut short", "/api/v1/upload/video", mp4[..mp4.len() - 100].to_vec(), 422, "INVALID_IMAGE"),
        ("WebM cut short", "/api/v1/upload/video", webm[..webm.len() - 1].to_vec(), 422, "INVALID_IMAGE"),
        ("a photo as a video", "/api/v1/upload/video", big.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("PNG cut short", "/api/v1/upload/image", big[..big.len() / 3].to_vec(), 422, "INVALID_IMAGE"),
    ] {
        let r = post_files(&api, path, Some(&token), &[("file", Some("f"), &bytes)]).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
        assert_eq!(
            (r.body["code"].as_u64(), r.body["error"].as_str()),
            (Some(status.into()), Some(code)),
            "{what}: seed 003's error shape"
        );
        assert_eq!((rows(&api, &user_id).await, stored_files(&api)), (3, files), "{what}: nothing stored");
    }
    let anonymous = post_files(&api, "/api/v1/upload/image", None, &[("file", Some("big.png"), &big)]).await;
    assert_eq!((anonymous.status, anonymous.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("INVALID_CREDENTIALS")));
}

async fn uploads_share_the_per_client_rate_limit(backend: Backend) {
    let api = api_with(backend, |c| c.uploads_per_minute = 2.0).await;
    let (token, user_id) = user(&api, "heidi").await;
    let png = small_photo_png(40, 30);
    for _ in 0..2 {
        assert_eq!(post_files(&api, "/api/upload/single", Some(&token), &[("file", Some("p.png"), &png)]).await.status, StatusCode::OK);
    }
    // The third upload from this client, on any upload route, waits.
    let r = api.call("POST", "/api/upload/base64", Some(&token), Some(json!({"image": "QUJD"}))).await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "TASK_LIMIT_EXCEEDED", "third upload in a minute");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(rows(&api, &user_id).await, 2);
}

fn path_of(uri: &str) -> std::path::PathBuf {
    url::Url::parse(uri).unwrap().to_file_path().unwrap()
}

async fn a_deleted_upload_leaves_no_object_even_while_storage_refuses(backend: Backend) {
    let api = api(backend).await;
    let (token, user_id) = user(&api, "ivan").await;
    let png = small_photo_png(350, 250);
    let r = post_files(&api, "/api/v1/upload/image", Some(&token), &[("file", Some("big.png"), &png)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (url, thumb_url) = (r.body["data"]["url"].as_str().unwrap().to_owned(), r.body["data"]["thumbnail"].as_str().unwrap().to_owned());
    let state = &api.stack.state;
    let db = state.tasks.db();
    let row = db.user_uploads(&user_id, 10).await.unwrap().pop().expect("the upload's row");
    let (file, thumbnail) = (path_of(&row.uri), path_of(row.thumbnail_uri.as_deref().expect("a thumbnail")));
    assert!(file.is_file() && thumbnail.is_file());
    assert!(state.uploads.usage(&user_id).await.unwrap().0 > 0);

    // Storage refuses to delete the file: it is a non-empty directory now.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir_all(file.join("stuck")).unwrap();
    let name = format!("{}.png", row.id);
    let del = api.call("DELETE", &format!("/api/upload/{name}"), Some(&token), None).await;
    assert_eq!((del.status, &del.body["data"]["deleted"]), (StatusCode::OK, &json!(true)), "{}", del.body);
    // Gone from the API at once, and off the quota.
    assert_eq!(api.get(&url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&thumb_url).await.status, StatusCode::NOT_FOUND);
    assert_envelope(
        &api.call("DELETE", &format!("/api/upload/{name}"), Some(&token), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "twice",
    );
    assert_eq!(rows(&api, &user_id).await, 0);
    assert_eq!(state.uploads.usage(&user_id).await.unwrap().0, 0, "the quota is freed at once");

    // The sweeper deletes the thumbnail; the file fails and waits for a retry.
    let failing = eventually(30, "a failed attempt on the file", || async {
        let pending = db.pending_deletions().await.unwrap();
        (!thumbnail.exists() && pending.len() == 1 && pending[0].attempts >= 1).then(|| pending[0].clone())
    })
    .await;
    assert_eq!((failing.uri.as_str(), failing.work_id.as_deref()), (row.uri.as_str(), None), "{failing:?}");
    assert!(failing.last_error.is_some());
    assert!(file.exists(), "storage refused: the object is still there");

    // Storage recovers; the retry deletes it and nothing of the upload is left.
    std::fs::remove_dir_all(&file).unwrap();
    std::fs::write(&file, b"still here").unwrap();
    objects_settle(&api, 0).await;
    assert!(!file.exists() && !thumbnail.exists());
}
