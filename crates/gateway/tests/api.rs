//! The public API through the real router (`oneshot`), on real SQLite and PostgreSQL.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use futures::StreamExt;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use serde_json::json;
use support::client::*;
use support::*;

on_both!(
    upload_queues_a_task_and_status_reports_it,
    hostile_requests_get_clear_errors_and_leave_nothing_behind,
    webhook_registration_is_idempotent_and_checked,
    config_endpoints_need_the_admin_token,
    request_ids_cors_docs_and_metrics,
);

async fn upload_queues_a_task_and_status_reports_it(backend: Backend) {
    let api = api(backend).await;
    let photo = small_photo_png(64, 48);
    let r = api.upload(&[("file", Some("cat.png"), &photo), ("tile_size", None, b"200"), ("scale", None, b"4")]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "queued");
    let id = r.body["task_id"].as_str().unwrap().to_string();

    // No worker in this configuration: the task stays queued, durably.
    let s = api.get(&format!("/api/v1/status/{id}")).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["task_id"], id);
    assert_eq!(s.body["status"], "queued");
    assert_eq!(s.body["progress"], 0.0);
    assert!(s.body.get("download_url").is_none());
    let row = api.stack.state.tasks.db().get_task(&id).await.unwrap().expect("persisted before the 202");
    assert_eq!(row.params.tile_size, 200);
    assert_eq!(row.params.scale, 4);
    assert_eq!(row.input_bytes, photo.len() as u64);
    assert_eq!(api.stored_uploads(), 1);
    // Live, not the gauge a /metrics scrape refreshes (nothing scraped in this test).
    let health = api.get("/api/v1/health").await;
    assert_eq!(health.body["backend_status"]["queue_depth"], 1, "{}", health.body);
    // Seed 001's /health: the same report in its envelope.
    let h001 = api.get("/health").await;
    assert_eq!(h001.body["data"]["backend_status"]["queue_depth"], 1, "{}", h001.body);
    assert_eq!(h001.status, health.status);
    assert_eq!(h001.body["success"], health.status == StatusCode::OK, "{}", h001.body);
    assert_eq!(h001.body["data"]["status"], health.body["status"]);

    let d = api.get(&format!("/api/v1/download/{id}")).await;
    assert_envelope(&d, StatusCode::CONFLICT, "TASK_NOT_FINISHED", "download while queued");
}

async fn hostile_requests_get_clear_errors_and_leave_nothing_behind(backend: Backend) {
    let api = api_with(backend, |c| c.max_upload_bytes = 256 * 1024).await;
    let photo = small_photo_png(32, 32);
    let gif = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8)).write_to(&mut out, image::ImageFormat::Gif).unwrap();
        out.into_inner()
    };
    let mut big = small_photo_png(32, 32);
    big.resize(400 * 1024, 0);
    let mut bad_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    bad_jpeg.extend_from_slice(&[0x13; 200]);

    type Case<'a> = (&'a str, Reply, StatusCode, &'a str);
    let mut cases: Vec<Case> = Vec::new();
    let raw_post = |ct: &'static str, body: &'static [u8]| {
        Request::post("/api/v1/enhance").header(header::CONTENT_TYPE, ct).body(Body::from(body)).unwrap()
    };
    cases.push((
        "json instead of multipart",
        api.send(raw_post("application/json", b"{}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "no body",
        api.send(Request::post("/api/v1/enhance").body(Body::empty()).unwrap()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push(("no file field", api.upload(&[("tile_size", None, b"400")]).await, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"));
    cases.push(("empty file", api.upload(&[("file", Some("a.jpg"), b"")]).await, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"));
    cases.push((
        "text named .jpg",
        api.upload(&[("file", Some("a.jpg"), b"just some text, really")]).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    ));
    cases.push(("GIF", api.upload(&[("file", Some("a.gif"), &gif)]).await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"));
    cases.push((
        "PNG claiming 100000x100000",
        api.upload(&[("file", Some("a.png"), &png_header_claiming(100_000, 100_000))]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_IMAGE",
    ));
    cases.push((
        "JPEG header then garbage",
        api.upload(&[("file", Some("a.jpg"), &bad_jpeg)]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_IMAGE",
    ));
    cases.push((
        "file over the limit",
        api.upload(&[("file", Some("a.png"), &big)]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "FILE_TOO_LARGE",
    ));
    cases.push((
        "two files",
        api.upload(&[("file", Some("a.png"), &photo), ("file", Some("b.png"), &photo)]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "tile_size not a number",
        api.upload(&[("file", Some("a.png"), &photo), ("tile_size", None, b"abc")]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "tile_size too small",
        api.upload(&[("tile_size", None, b"5"), ("file", Some("a.png"), &photo)]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "quality_level unknown",
        api.upload(&[("file", Some("a.png"), &photo), ("quality_level", None, b"ultra")]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "scale 3",
        api.upload(&[("file", Some("a.png"), &photo), ("scale", None, b"3")]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "face_enhance maybe",
        api.upload(&[("file", Some("a.png"), &photo), ("face_enhance", None, b"maybe")]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    let declared_huge = Request::post("/api/v1/enhance")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(header::CONTENT_LENGTH, 10 * 1024 * 1024)
        .body(Body::from(multipart(&[("file", Some("a.png"), &photo)])))
        .unwrap();
    cases.push(("Content-Length over the limit", api.send(declared_huge).await, StatusCode::PAYLOAD_TOO_LARGE, "FILE_TOO_LARGE"));
    cases.push(("status of unknown task", api.get("/api/v1/status/doesnotexist").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
    cases.push(("status with a strange id", api.get("/api/v1/status/..%2F..%2Fetc").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
    cases.push(("download of unknown task", api.get("/api/v1/download/doesnotexist").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
    cases.push((
        "events of unknown task",
        api.get("/api/v1/status/doesnotexist/events").await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    ));
    cases.push(("unknown endpoint", api.get("/api/v2/everything").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
    cases.push((
        "config without token",
        api.post_json("/api/v1/config/backend", json!({"backend_url": "http://10.0.0.1:8000"}), &[]).await,
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
    ));
    cases.push((
        "config with wrong token",
        api.post_json("/api/v1/config/multi-backend", json!({"enabled": true}), &[("authorization", "Bearer nope")]).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
    ));
    cases.push((
        "config with a bad URL",
        api.post_json("/api/v1/config/backend", json!({"backend_url": "ftp://x"}), &[("authorization", "Bearer admin-token")]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register without secret",
        api.post_json("/webhook/register", json!({"ip": "203.0.113.9", "port": 8000}), &[]).await,
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
    ));
    cases.push((
        "register with wrong secret",
        api.post_json("/webhook/register", json!({"ip": "203.0.113.9", "port": 8000, "secret": "guess"}), &[]).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
    ));
    cases.push((
        "register loopback",
        api.post_json("/webhook/register", json!({"ip": "127.0.0.1", "port": 8000, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register metadata address",
        api.post_json("/webhook/register", json!({"ip": "169.254.169.254", "port": 80, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register port out of range",
        api.post_json("/webhook/register", json!({"ip": "203.0.113.9", "port": 70000, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register not an ip",
        api.post_json("/webhook/register", json!({"ip": "gpu.example.com", "port": 8000, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register with broken JSON",
        api.send(Request::post("/webhook/register").header(header::CONTENT_TYPE, "application/json").body(Body::from("{")).unwrap()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "unregister unknown server",
        api.post_json("/webhook/unregister", json!({"ip": "203.0.113.77", "port": 8000, "secret": "test-secret"}), &[]).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    ));
    cases.push(("servers without secret", api.get("/webhook/servers").await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"));
    // Streamed without a Content-Length (which alone would be refused up front): the field is
    // refused once it passes its own small limit, long before the body limit.
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"tile_size\"\r\n\r\n");
    let mut tail = b"\r\n".to_vec();
    tail.extend_from_slice(&multipart(&[("file", Some("a.png"), &photo)]));
    cases.push((
        "multi-MB tile_size",
        api.send(streamed_upload(streamed_body(head, 48, tail, false))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    let mut head = multipart(&[("file", Some("a.png"), &photo)]);
    head.truncate(head.len() - format!("--{BOUNDARY}--\r\n").len());
    head.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"quality_level\"\r\n\r\n").as_bytes());
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    cases.push((
        "multi-MB quality_level after the file",
        api.send(streamed_upload(streamed_body(head, 48, tail, false))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "tile_size of 65 bytes",
        api.upload(&[("file", Some("a.png"), &photo), ("tile_size", None, &[b'4'; 65])]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    // No Content-Length: the limit is met while the unknown field is being dropped.
    let padded = multipart(&[("comment", None, &vec![b'x'; 400 * 1024]), ("file", Some("a.png"), &photo)]);
    cases.push((
        "unknown field past the body limit",
        api.send(streamed_upload(Body::from_stream(futures::stream::iter(
            padded.chunks(16 * 1024).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        ))))
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "FILE_TOO_LARGE",
    ));
    cases.push((
        "DELETE on the upload endpoint",
        api.send(Request::delete("/api/v1/enhance").body(Body::empty()).unwrap()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    ));
    cases.push((
        "POST on a status",
        api.send(Request::post("/api/v1/status/abc").body(Body::empty()).unwrap()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    ));
    cases.push(("GET on register", api.get("/webhook/register").await, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"));
    cases.push(("unknown docs asset", api.get("/docs/assets/evil.js").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
    let big_json = json!({"ip": "203.0.113.9", "port": 8000, "secret": "test-secret", "pad": "x".repeat(100 * 1024)});
    cases.push((
        "register with a 100 KB JSON body",
        api.post_json("/webhook/register", big_json.clone(), &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "REQUEST_TOO_LARGE",
    ));
    cases.push((
        "config with a 100 KB JSON body",
        api.post_json("/api/v1/config/backend", big_json, &[("authorization", "Bearer admin-token")]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "REQUEST_TOO_LARGE",
    ));
    cases.push((
        "register an IPv4-mapped metadata address",
        api.post_json("/webhook/register", json!({"ip": "::ffff:169.254.169.254", "port": 80, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register a NAT64 loopback address",
        api.post_json("/webhook/register", json!({"ip": "64:ff9b::127.0.0.1", "port": 80, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register Azure's wire server",
        api.post_json("/webhook/register", json!({"ip": "168.63.129.16", "port": 80, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));
    cases.push((
        "register Oracle's metadata address",
        api.post_json("/webhook/register", json!({"ip": "192.0.0.192", "port": 80, "secret": "test-secret"}), &[]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    ));

    assert!(cases.len() >= 20);
    for (what, reply, status, code) in &cases {
        assert_envelope(reply, *status, code, what);
    }
    let field = |i: usize| cases[i].1.body["details"]["field_errors"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(field(10), Some(vec!["tile_size".to_string()]));
    assert_eq!(field(12), Some(vec!["quality_level".to_string()]));
    assert_eq!(field(13), Some(vec!["scale".to_string()]));
    let named = |what: &str| cases.iter().find(|c| c.0 == what).unwrap();
    for (what, f) in [
        ("multi-MB tile_size", "tile_size"),
        ("multi-MB quality_level after the file", "quality_level"),
        ("tile_size of 65 bytes", "tile_size"),
    ] {
        let fields = named(what).1.body["details"]["field_errors"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(fields, Some(vec![f.to_string()]), "{what}");
    }
    let allow = named("DELETE on the upload endpoint").1.headers.get(header::ALLOW).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(allow.as_deref(), Some("POST"), "405 keeps the Allow header");

    // Nothing half-written: no stored upload, no task row; and the service still serves.
    assert_eq!(api.stored_uploads(), 0, "refused uploads must not leave files");
    let counts = api.stack.state.tasks.db().count_by_status().await.unwrap();
    assert_eq!(counts, Default::default(), "refused uploads must not leave tasks");
    let ok = api.upload(&[("file", Some("a.png"), &photo)]).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.body);
}

async fn webhook_registration_is_idempotent_and_checked(backend: Backend) {
    let api = api(backend).await;
    let body = json!({"ip": "203.0.113.9", "port": 8000, "secret": "test-secret"});
    let first = api.post_json("/webhook/register", body.clone(), &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["success"], true);
    let id = first.body["server_id"].as_str().unwrap().to_string();
    // The secret is also accepted as a header, and re-registering keeps the id.
    let again =
        api.post_json("/webhook/register", json!({"ip": "203.0.113.9", "port": "8000"}), &[("x-webhook-secret", "test-secret")]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["server_id"], id);

    let list = api.get("/webhook/servers?secret=test-secret").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["data"]["total_servers"], 1);
    assert_eq!(list.body["data"]["servers"][0]["server_id"], id);
    assert_eq!(list.body["data"]["servers"][0]["healthy"], false, "nothing listens at 203.0.113.9");
    assert!(api.stack.state.tasks.fleet().endpoints().iter().any(|e| e.contains("203.0.113.9:8000")), "the fleet knows it");
    assert_eq!(list.body["data"]["health_check_running"], true);
    api.stack.state.tasks.prober().abort();
    purrify_testkit::eventually(90, "the prober stops", || async { api.stack.state.tasks.prober().is_finished().then_some(()) }).await;
    let list = api.get("/webhook/servers?secret=test-secret").await;
    assert_eq!(list.body["data"]["health_check_running"], false, "reports the prober's real state");

    let gone = api.post_json("/webhook/unregister", body.clone(), &[]).await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(gone.body["server_id"], id);
    assert!(!api.stack.state.tasks.fleet().endpoints().iter().any(|e| e.contains("203.0.113.9")));
    let list = api.get("/webhook/servers").await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
}

async fn config_endpoints_need_the_admin_token(backend: Backend) {
    let api = api(backend).await;
    let c = api.get("/api/v1/config").await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.body["max_file_size"], 100 * 1024 * 1024);
    assert_eq!(c.body["timeout"], 300);
    assert_eq!(c.body["multi_backend"]["enabled"], true);

    let auth = [("authorization", "Bearer admin-token")];
    let r = api.post_json("/api/v1/config/backend", json!({"backend_url": "http://10.1.2.3:8000"}), &auth).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["new_backend_url"], "http://10.1.2.3:8000");
    let c = api.get("/api/v1/config").await;
    assert_eq!(c.body["backend_url"], "http://10.1.2.3:8000");
    assert!(api.stack.state.tasks.fleet().endpoints().iter().any(|e| e.contains("10.1.2.3:8000")));

    let r = api.post_json("/api/v1/config/multi-backend", json!({"enabled": false, "fallback_to_default": true}), &auth).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["details"]["enabled"]["before"], true);
    assert_eq!(r.body["details"]["enabled"]["after"], false);
    assert_eq!(api.get("/api/v1/config").await.body["multi_backend"]["enabled"], false);

    let info = api.get("/api/v1/info").await;
    assert_eq!(info.status, StatusCode::OK);
    assert!(info.body["endpoints"].as_array().unwrap().iter().any(|e| e == "POST /api/v1/enhance"));
    let health = api.get("/api/v1/health").await;
    assert_eq!(health.body["backend_status"]["database"], "connected");
    assert!(health.body["timestamp"].is_string());
}

async fn request_ids_cors_docs_and_metrics(backend: Backend) {
    let api = api(backend).await;
    let r = api.send(Request::get("/api/v1/info").header("x-request-id", "abc-123").body(Body::empty()).unwrap()).await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let r = api.get("/api/v1/info").await;
    assert_eq!(r.headers["x-request-id"].len(), 36, "a UUID is generated");
    let e = api.get("/api/v1/status/nope").await;
    assert!(e.headers.contains_key("x-request-id"), "errors carry it too");

    let pre = api
        .send(
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/api/v1/enhance")
                .header("origin", "https://servicewechat.com")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(pre.status.is_success());
    assert_eq!(pre.headers["access-control-allow-origin"], "*");

    let spec = api.get("/api/v1/openapi.json").await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(spec.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/enhance", "/api/v1/status/{task_id}", "/api/v1/download/{task_id}", "/webhook/register"] {
        assert!(spec.body["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let docs = api.get("/docs").await;
    assert_eq!(docs.status, StatusCode::OK, "Swagger UI assets are installed by `make models`: {}", String::from_utf8_lossy(&docs.raw));
    assert!(String::from_utf8_lossy(&docs.raw).contains("swagger-ui-bundle.js"), "the docs page loads Swagger UI");
    let bundle = api.get("/docs/assets/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.headers[header::CONTENT_TYPE].to_str().unwrap().contains("javascript"), "{:?}", bundle.headers[header::CONTENT_TYPE]);
    assert!(bundle.raw.len() > 100_000, "the real bundle, not an error page");
    let css = api.get("/docs/assets/swagger-ui.css").await;
    assert!(css.status == StatusCode::OK && css.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/css"));

    let m = api.get("/metrics").await;
    let text = String::from_utf8_lossy(&m.raw);
    assert!(
        text.contains(r#"purrify_gateway_http_requests_total{route="/api/v1/status/{task_id}",method="GET",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains("purrify_gateway_queue_depth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let api = api_with(Backend::Sqlite, |c| {
        c.rate_limit = 1.0;
        c.rate_burst = 3.0;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(api.get("/api/v1/info").await.status, StatusCode::OK);
    }
    let r = api.get("/api/v1/info").await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "burst exceeded");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK, "probes are never limited");

    let api = api_with(Backend::Sqlite, |c| c.uploads_per_minute = 1.0).await;
    let photo = small_photo_png(16, 16);
    assert_eq!(api.upload(&[("file", Some("a.png"), &photo)]).await.status, StatusCode::ACCEPTED);
    let r = api.upload(&[("file", Some("a.png"), &photo)]).await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "TASK_LIMIT_EXCEEDED", "upload limit");
    assert_eq!(
        api.metric(r#"purrify_gateway_uploads_rejected_total{code="TASK_LIMIT_EXCEEDED"}"#).await,
        1.0,
        "rate-limited uploads count as rejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_upload_is_counted_by_its_code() {
    let api = api(Backend::Sqlite).await;
    let not_multipart = Request::post("/api/v1/enhance").header(header::CONTENT_TYPE, "application/json").body(Body::from("{}")).unwrap();
    assert_eq!(api.send(not_multipart).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.upload(&[("file", Some("a.txt"), b"plain text, not an image")]).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.metric(r#"purrify_gateway_uploads_rejected_total{code="VALIDATION_ERROR"}"#).await, 1.0, "a non-multipart body counts");
    assert_eq!(api.metric(r#"purrify_gateway_uploads_rejected_total{code="UNSUPPORTED_MEDIA_TYPE"}"#).await, 1.0);
}

/// Bytes allocated and not yet freed by the current thread, and their peak since a reset: on
/// a current-thread runtime that is where a request is handled, so it shows whether the
/// request's body was held whole.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        let _ = LIVE.try_with(|live| {
            let v = live.get() + n;
            live.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    struct Counting;

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Starts a measurement: returns the current live bytes, which become the peak.
    pub fn reset() -> isize {
        let live = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(live));
        live
    }

    pub fn peak() -> isize {
        PEAK.with(Cell::get)
    }
}

/// A multipart body as a stream: `head`, then `n` chunks of 64 KiB made only when read,
/// then `tail`, then (with `stall`) nothing ever again. Each chunk arrives as from a socket,
/// after the reader found nothing new once (the multipart parser takes whatever is ready).
fn streamed_body(head: impl Into<Bytes>, n: usize, tail: Vec<u8>, stall: bool) -> Body {
    let head = head.into();
    let chunks = futures::stream::once(async move { head })
        .chain(futures::stream::iter(0..n).map(|_| Bytes::from(vec![b'7'; 64 * 1024])))
        .chain(futures::stream::once(async move { Bytes::from(tail) }))
        .then(|c| async move {
            tokio::task::yield_now().await;
            c
        })
        .map(Ok::<_, std::io::Error>);
    if stall { Body::from_stream(chunks.chain(futures::stream::pending())) } else { Body::from_stream(chunks) }
}

fn streamed_upload(body: Body) -> Request<Body> {
    Request::post("/api/v1/enhance").header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}")).body(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_text_field_is_refused_before_the_rest_arrives() {
    let api = api(Backend::Sqlite).await;
    // 1 MB of tile_size, and then the client never sends another byte: the answer must not
    // wait for the end of a field that is already too long.
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"tile_size\"\r\n\r\n");
    let req = streamed_upload(streamed_body(head, 16, Vec::new(), true));
    let r = tokio::time::timeout(Duration::from_secs(30), api.send(req)).await.expect("answered while the field was still arriving");
    assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "endless tile_size");
    assert!(r.body["details"]["field_errors"]["tile_size"].is_array(), "{}", r.body);
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_fields_are_dropped_as_they_arrive() {
    let api = api(Backend::Sqlite).await;
    let photo = small_photo_png(16, 16);
    // 8 MiB of an unknown field ahead of the file, read and dropped 64 KiB at a time.
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n");
    let mut tail = b"\r\n".to_vec();
    tail.extend_from_slice(&multipart(&[("file", Some("a.png"), &photo)]));
    let req = streamed_upload(streamed_body(head, 128, tail, false));
    // The router (with its OpenAPI document) is built before counting: it grows with every
    // route added, and this measures what handling an upload holds.
    let router = purrify_gateway::app::router(api.stack.state.clone());
    let base = heap::reset();
    let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
    let peak = heap::peak() - base;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(peak < 2 * 1024 * 1024, "handling the upload held {peak} bytes at once: the unknown field was buffered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_is_a_retryable_503_and_leaves_nothing() {
    let api = api(Backend::Sqlite).await;
    // Where uploads go is now a file, not a directory: every write fails, as on a full or
    // read-only disk (chmod would not stop root).
    let uploads = api._dir.path().join("storage").join("uploads");
    std::fs::create_dir_all(uploads.parent().unwrap()).unwrap();
    std::fs::write(&uploads, b"not a directory").unwrap();
    let photo = small_photo_png(32, 32);
    let r = api.upload(&[("file", Some("a.png"), &photo)]).await;
    assert_envelope(&r, StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE", "storage down");
    assert!(r.headers.contains_key(header::RETRY_AFTER), "the client is told to retry");
    let text = String::from_utf8_lossy(&r.raw);
    assert!(!text.contains(&api._dir.path().display().to_string()) && !text.contains("uploads"), "no storage detail leaks: {text}");
    assert_eq!(api.stack.state.tasks.db().count_by_status().await.unwrap(), Default::default(), "no task without its input");
    assert_eq!(std::fs::read(&uploads).unwrap(), b"not a directory");
    assert_eq!(api.metric(r#"purrify_gateway_uploads_rejected_total{code="SERVER_UNAVAILABLE"}"#).await, 1.0);

    // A client that breaks off mid-file is still the client's error.
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n");
    let cut = futures::stream::iter([Ok(Bytes::from(head)), Ok(Bytes::from(photo.clone()))])
        .chain(futures::stream::once(async { Err(std::io::Error::other("connection reset")) }));
    std::fs::remove_file(&uploads).unwrap();
    let r = api.send(streamed_upload(Body::from_stream(cut))).await;
    assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "client cut off");
    assert_eq!(api.stored_uploads(), 0, "the partial upload is gone");

    // Storage back: uploads work again.
    assert_eq!(api.upload(&[("file", Some("a.png"), &photo)]).await.status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_the_dispatchers_exact_counts() {
    let api = api(Backend::Sqlite).await;
    let worker = FakeWorker::start(2, Behavior::Succeed).await;
    let r = api.post_json("/api/v1/config/backend", json!({"backend_url": worker.url}), &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = api.upload(&[("file", Some("a.png"), &small_photo_png(16, 16))]).await.body["task_id"].as_str().unwrap().to_string();
    purrify_testkit::eventually(90, "the task completes", || async {
        (api.get(&format!("/api/v1/status/{id}")).await.body["status"] == "completed").then_some(())
    })
    .await;
    assert_eq!(api.metric(r#"purrify_gateway_tasks_total{outcome="completed",code="none"}"#).await, 1.0);
    assert_eq!(api.metric("purrify_gateway_dispatch_attempts_total").await, 1.0);
    assert_eq!(api.metric("purrify_gateway_dispatch_retries_total").await, 0.0);
    let text = String::from_utf8_lossy(&api.get("/metrics").await.raw).to_string();
    for name in ["dispatch_reattached_total", "dispatch_db_errors_total", "dispatch_busy_requeues_total"] {
        assert!(text.contains(&format!("purrify_gateway_{name} 0")), "{name} exported: {text}");
    }
    assert!(text.contains(r#"purrify_gateway_tasks_total{outcome="failed",code="PROCESSING_TIMEOUT"} 0"#), "failures by code: {text}");
}
