//! Seed 001's scenes through the router on SQLite and PostgreSQL: public reads of active
//! scenes in their order, admin-only writes with every bad field named, and tasks made from a
//! scene running its parameters at its price.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::client::*;
use support::*;

const ROOT: (&str, &str) = ("root@example.com", "root password 1");

fn setup(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some(ROOT.0.into());
    c.bootstrap_admin_password = Some(ROOT.1.into());
}

async fn token(api: &Api, path: &str, body: serde_json::Value) -> (String, String) {
    let r = api.post_json(path, body, &[]).await;
    assert!(r.status.is_success(), "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

on_both!(scenes_crud_and_validation, a_task_from_a_scene_takes_its_parameters_and_price);

async fn scenes_crud_and_validation(backend: Backend) {
    let api = api_with(backend, setup).await;
    let (root, _) = token(&api, "/api/auth/login", json!({"email": ROOT.0, "password": ROOT.1})).await;
    let (alice, _) = token(&api, "/api/auth/register", json!({"email": "alice@example.com", "password": "correct horse 42"})).await;
    assert_eq!(api.get("/api/scenes").await.body["data"], json!([]));

    let portrait = json!({"name": "Portrait", "description": "faces", "cover_url": "https://cdn.example.com/p.jpg", "task_type": "enhance",
                          "params": {"scale": 2, "quality_level": "high", "face_enhance": true}, "price": "2.50", "sort_order": 20});
    let created = api.call("POST", "/api/scenes", Some(&root), Some(portrait.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let p = created.body["data"].clone();
    assert_eq!(
        (p["name"].as_str(), p["price"].as_f64(), p["own_price"].as_bool(), p["is_active"].as_bool()),
        (Some("Portrait"), Some(2.5), Some(true), Some(true))
    );
    assert_eq!((p["params"]["scale"].as_u64(), p["params"]["face_enhance"].as_bool()), (Some(2), Some(true)));
    let pid = p["id"].as_str().unwrap().to_owned();
    let landscape = api
        .call(
            "POST",
            "/api/scenes",
            Some(&root),
            Some(json!({"name": "Landscape", "params": {"scale": 4, "quality_level": "fast", "face_enhance": false}, "sort_order": 10})),
        )
        .await;
    let lid = landscape.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (landscape.body["data"]["price"].as_f64(), landscape.body["data"]["own_price"].as_bool()),
        (Some(0.0), Some(false)),
        "the kind's price"
    );
    let hidden = api.call("POST", "/api/scenes", Some(&root), Some(json!({"name": "Draft", "is_active": false}))).await;
    let hid = hidden.body["data"]["id"].as_str().unwrap().to_owned();

    // Public reads: active scenes by sort order; an inactive one is missing except for admins.
    let names = |r: &Reply| r.body["data"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&api.get("/api/scenes").await), ["Landscape", "Portrait"]);
    assert_eq!(names(&api.call("GET", "/api/scenes?include_inactive=true", Some(&root), None).await), ["Draft", "Landscape", "Portrait"]);
    assert_eq!(names(&api.call("GET", "/api/scenes?include_inactive=true", Some(&alice), None).await), ["Landscape", "Portrait"]);
    assert_eq!(api.get(&format!("/api/scenes/{pid}")).await.body["data"]["name"], "Portrait");
    assert_envelope(&api.get(&format!("/api/scenes/{hid}")).await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "inactive");
    assert_eq!(api.call("GET", &format!("/api/scenes/{hid}"), Some(&root), None).await.status, StatusCode::OK);

    // Writes are for admins, and every bad field is named.
    for (method, path) in
        [("POST", "/api/scenes".to_string()), ("PUT", format!("/api/scenes/{pid}")), ("DELETE", format!("/api/scenes/{pid}"))]
    {
        let r = api.call(method, &path, Some(&alice), Some(portrait.clone())).await;
        assert_envelope(&r, StatusCode::FORBIDDEN, "ACCESS_DENIED", &format!("user {method}"));
        assert_envelope(
            &api.call(method, &path, None, Some(portrait.clone())).await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
            method,
        );
    }
    let bad = api
        .call(
            "POST",
            "/api/scenes",
            Some(&root),
            Some(json!({"name": "", "cover_url": "javascript:alert(1)", "task_type": "video", "price": -1})),
        )
        .await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "bad scene");
    for field in ["name", "cover_url", "task_type", "price"] {
        assert!(bad.body["details"]["field_errors"][field].is_array(), "{field}: {}", bad.body);
    }
    let bad_params = api.call("POST", "/api/scenes", Some(&root), Some(json!({"name": "x", "params": {"scale": 3}}))).await;
    assert_envelope(&bad_params, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "scale 3");
    assert_eq!(names(&api.call("GET", "/api/scenes?include_inactive=true", Some(&root), None).await).len(), 3, "nothing written");

    // PUT replaces; DELETE removes.
    let mut changed = portrait.clone();
    changed["name"] = json!("Portrait HD");
    changed["price"] = json!(null);
    let put = api.call("PUT", &format!("/api/scenes/{pid}"), Some(&root), Some(changed.clone())).await;
    assert_eq!(
        (put.status, put.body["data"]["name"].as_str(), put.body["data"]["own_price"].as_bool()),
        (StatusCode::OK, Some("Portrait HD"), Some(false)),
        "{}",
        put.body
    );
    assert_envelope(
        &api.call("PUT", "/api/scenes/nope", Some(&root), Some(changed)).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "missing",
    );
    assert_eq!(api.call("DELETE", &format!("/api/scenes/{lid}"), Some(&root), None).await.status, StatusCode::OK);
    assert_envelope(
        &api.call("DELETE", &format!("/api/scenes/{lid}"), Some(&root), None).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "twice",
    );
    assert_eq!(names(&api.get("/api/scenes").await), ["Portrait HD"]);
}

async fn a_task_from_a_scene_takes_its_parameters_and_price(backend: Backend) {
    let api = api_with(backend, setup).await;
    let (root, _) = token(&api, "/api/auth/login", json!({"email": ROOT.0, "password": ROOT.1})).await;
    let (alice, alice_id) = token(&api, "/api/auth/register", json!({"email": "alice@example.com", "password": "correct horse 42"})).await;
    api.call("PUT", "/api/admin/config/price_enhance", Some(&root), Some(json!({"value": 1}))).await;
    api.call("PUT", &format!("/api/admin/users/{alice_id}"), Some(&root), Some(json!({"balance": 10}))).await;
    let scene = api
        .call(
            "POST",
            "/api/scenes",
            Some(&root),
            Some(json!({"name": "HD", "params": {"scale": 4, "quality_level": "medium", "face_enhance": false}, "price": 3})),
        )
        .await;
    let sid = scene.body["data"]["id"].as_str().unwrap().to_owned();

    let body = multipart(&[("file", Some("p.png"), &small_photo_png(32, 32))]);
    let req = axum::http::Request::post("/api/upload/single")
        .header(axum::http::header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {alice}"))
        .body(axum::body::Body::from(body))
        .unwrap();
    let file = api.send(req).await.body["data"]["file_id"].as_str().unwrap().to_owned();

    let r = api.call("POST", "/api/tasks/create", Some(&alice), Some(json!({"file_id": file, "scene_id": sid}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = &r.body["data"];
    assert_eq!((d["scene_id"].as_str(), d["title"].as_str()), (Some(sid.as_str()), Some("HD")), "{d}");
    assert_eq!(
        (d["config"]["scale"].as_u64(), d["config"]["quality_level"].as_str(), d["config"]["face_enhance"].as_bool()),
        (Some(4), Some("medium"), Some(false))
    );
    let bal = api.call("GET", "/api/credits/balance", Some(&alice), None).await.body["data"].clone();
    assert_eq!(bal, json!({"balance": 7.0, "held": 3.0, "spent": 0.0}), "the scene's price, not the kind's");
    // Explicit parameters override the scene's.
    let r =
        api.call("POST", "/api/tasks/create", Some(&alice), Some(json!({"file_id": file, "scene_id": sid, "params": {"scale": 2}}))).await;
    assert_eq!((r.body["data"]["config"]["scale"].as_u64(), r.body["data"]["config"]["quality_level"].as_str()), (Some(2), Some("medium")));
}
