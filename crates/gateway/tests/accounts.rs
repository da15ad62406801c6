//! Accounts through the real router on SQLite and PostgreSQL: registration and login for
//! seeds 002 and 003, refresh rotation and replay, logout, password changes and deactivation
//! stopping old tokens at once, WeChat login (seeds 001 and 004) against a local
//! `jscode2session`, admins, login rate limits and the operator's CLI.

mod support;

use axum::http::StatusCode;
use purrify_testkit::wechat::FakeWeChat;
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

/// Registers through seed 002 and returns the session's data.
async fn register(api: &Api, email: &str, username: &str) -> Value {
    let r = api
        .post_json("/api/auth/register", json!({"email": email, "username": username, "password": PASSWORD, "full_name": "新用户"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["data"].clone()
}

async fn login(api: &Api, email: &str, password: &str) -> Reply {
    api.post_json("/api/auth/login", json!({"email": email, "password": password}), &[]).await
}

fn token(session: &Value) -> String {
    session["access_token"].as_str().unwrap().to_owned()
}

on_both!(
    email_accounts_register_log_in_and_refresh,
    refresh_tokens_rotate_and_a_replay_revokes_the_login,
    password_changes_and_deactivation_stop_old_tokens_at_once,
    wechat_logins_create_the_account_once_and_map_wechat_errors,
    admins_list_and_edit_users,
    seed_003_speaks_its_own_envelope,
);

async fn email_accounts_register_log_in_and_refresh(backend: Backend) {
    let api = api(backend).await;
    let s = register(&api, "Alice@Example.com", "alice").await;
    assert_eq!((s["token_type"].as_str(), s["expires_in"].as_u64()), (Some("bearer"), Some(1800)));
    assert_eq!(s["user"]["email"], "alice@example.com", "emails are case-folded");
    assert_eq!((s["user"]["role"].as_str(), s["user"]["balance"].as_f64()), (Some("user"), Some(0.0)));
    assert_eq!(s["is_new_user"], true);
    assert!(s["refresh_token"].as_str().unwrap().starts_with("prt_"));
    assert!(s.get("password").is_none() && !s.to_string().contains("argon2"), "no secret in the answer: {s}");

    // Every missing or bad field at once, as seed 002 shows.
    let bad = api.post_json("/api/auth/register", json!({"email": "not-an-email", "password": "short"}), &[]).await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "bad registration");
    assert!(bad.body["details"]["field_errors"]["email"][0].as_str().unwrap().contains("valid email"), "{}", bad.body);
    assert!(bad.body["details"]["field_errors"]["password"][0].as_str().unwrap().contains("at least 8"), "{}", bad.body);
    let taken = api.post_json("/api/auth/register", json!({"email": "ALICE@example.com", "password": PASSWORD}), &[]).await;
    assert_eq!(taken.body["details"]["field_errors"]["email"][0], "is already registered");
    let taken =
        api.post_json("/api/auth/register", json!({"email": "b@example.com", "username": "ALICE", "password": PASSWORD}), &[]).await;
    assert_eq!(taken.body["details"]["field_errors"]["username"][0], "is already taken");
    let empty = api.post_json("/api/auth/register", json!({}), &[]).await;
    assert_eq!(empty.body["details"]["field_errors"]["email"][0], "is required");
    assert_eq!(empty.body["details"]["field_errors"]["password"][0], "is required");

    // A wrong password and an unknown email get the same answer.
    let wrong = login(&api, "alice@example.com", "wrong horse 42").await;
    let unknown = login(&api, "nobody@example.com", PASSWORD).await;
    assert_envelope(&wrong, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "wrong password");
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));
    let empty = login(&api, "", "").await;
    assert_eq!(empty.body["details"]["field_errors"], json!({"email": ["is required"], "password": ["is required"]}), "{}", empty.body);
    let ok = login(&api, "  ALICE@example.com ", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!((ok.body["success"].as_bool(), ok.body["error_code"].is_null()), (Some(true), true));
    let t = token(&ok.body["data"]);
    assert_eq!(ok.body["data"]["is_new_user"], false);

    let me = api.call("GET", "/api/auth/me", Some(&t), None).await;
    assert_eq!(me.body["data"]["username"], "alice");
    assert!(me.body["data"]["last_login"].as_str().is_some_and(|v| v.ends_with('Z')), "{}", me.body);
    let me = api.call("GET", "/api/users/me", Some(&t), None).await;
    assert_eq!((me.body["data"]["full_name"].as_str(), me.body["data"]["total_tasks"].as_u64()), (Some("新用户"), Some(0)));
    let edited = api.call("PUT", "/api/users/me", Some(&t), Some(json!({"full_name": "Alice A.", "username": "alice_a"}))).await;
    assert_eq!((edited.body["data"]["full_name"].as_str(), edited.body["data"]["username"].as_str()), (Some("Alice A."), Some("alice_a")));
    let bad_edit = api.call("PUT", "/api/users/me", Some(&t), Some(json!({"avatar_url": "javascript:alert(1)"}))).await;
    assert_envelope(&bad_edit, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "bad avatar");
    let stats = api.call("GET", "/api/users/stats", Some(&t), None).await;
    assert_eq!(
        stats.body["data"],
        json!({"total_tasks": 0, "completed_tasks": 0, "failed_tasks": 0, "cancelled_tasks": 0, "total_cost": 0.0, "current_balance": 0.0, "last_task_date": null})
    );

    for (token, what) in [(None, "no token"), (Some("not.a.jwt"), "garbage"), (Some(&t[..t.len() - 2]), "truncated signature")] {
        let r = api.call("GET", "/api/auth/me", token, None).await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", what);
    }
}

async fn refresh_tokens_rotate_and_a_replay_revokes_the_login(backend: Backend) {
    let api = api(backend).await;
    let first = register(&api, "bob@example.com", "bob").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second = api.post_json("/api/auth/refresh", json!({"refresh_token": r1}), &[]).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let r2 = second.body["data"]["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    let me = api.call("GET", "/api/auth/me", Some(&token(&second.body["data"])), None).await;
    assert_eq!(me.body["data"]["email"], "bob@example.com");
    // r1 again: a copy. The login's tokens (r2 included) are revoked.
    let replay = api.post_json("/api/auth/refresh", json!({"refresh_token": r1}), &[]).await;
    assert_envelope(&replay, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "replayed refresh token");
    assert!(replay.body["message"].as_str().unwrap().contains("already used"));
    let after = api.post_json("/api/auth/refresh", json!({"refresh_token": r2}), &[]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // Logout revokes this login only; `all_devices` ends every session and access token.
    let a = login(&api, "bob@example.com", PASSWORD).await.body["data"].clone();
    let b = login(&api, "bob@example.com", PASSWORD).await.body["data"].clone();
    let out = api.call("POST", "/api/auth/logout", Some(&token(&a)), Some(json!({"refresh_token": a["refresh_token"]}))).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    assert_eq!(
        api.post_json("/api/auth/refresh", json!({"refresh_token": a["refresh_token"]}), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let b2 = api.post_json("/api/auth/refresh", json!({"refresh_token": b["refresh_token"]}), &[]).await;
    assert_eq!(b2.status, StatusCode::OK, "the other login still refreshes");
    let b2 = b2.body["data"].clone();
    api.call("POST", "/api/auth/logout", Some(&token(&b2)), Some(json!({"all_devices": true}))).await;
    assert_eq!(api.call("GET", "/api/auth/me", Some(&token(&b2)), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.post_json("/api/auth/refresh", json!({"refresh_token": b2["refresh_token"]}), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let missing = api.post_json("/api/auth/refresh", json!({}), &[]).await;
    assert_eq!(missing.body["details"]["field_errors"]["refresh_token"][0], "is required");
}

async fn password_changes_and_deactivation_stop_old_tokens_at_once(backend: Backend) {
    let api = api_with(backend, |c| {
        c.bootstrap_admin_email = Some("root@example.com".into());
        c.bootstrap_admin_password = Some("root password 1".into());
    })
    .await;
    let s = register(&api, "carol@example.com", "carol").await;
    let old = token(&s);
    let wrong = api
        .call("POST", "/api/users/change-password", Some(&old), Some(json!({"current_password": "nope", "new_password": "new horse 43"})))
        .await;
    assert_eq!(wrong.body["details"]["field_errors"]["current_password"][0], "is wrong");
    let weak = api
        .call("POST", "/api/users/change-password", Some(&old), Some(json!({"current_password": PASSWORD, "new_password": "carol"})))
        .await;
    assert!(weak.body["details"]["field_errors"]["new_password"].is_array());
    let changed = api
        .call("POST", "/api/users/change-password", Some(&old), Some(json!({"current_password": PASSWORD, "new_password": "new horse 43"})))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let r = api.call("GET", "/api/auth/me", Some(&old), None).await;
    assert_envelope(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "access token from before the change");
    assert_eq!(
        api.post_json("/api/auth/refresh", json!({"refresh_token": s["refresh_token"]}), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&api, "carol@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    let fresh = token(&login(&api, "carol@example.com", "new horse 43").await.body["data"]);

    let admin = token(
        &api.post_json("/api/auth/admin/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await.body["data"],
    );
    let id = s["user"]["id"].as_str().unwrap();
    let off = api.call("PUT", &format!("/api/admin/users/{id}"), Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!((off.status, off.body["data"]["is_active"].as_bool()), (StatusCode::OK, Some(false)), "{}", off.body);
    let r = api.call("GET", "/api/auth/me", Some(&fresh), None).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "ACCESS_DENIED", "a deactivated account's token");
    let r = login(&api, "carol@example.com", "new horse 43").await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "ACCESS_DENIED", "a deactivated account's login");
}

async fn wechat_logins_create_the_account_once_and_map_wechat_errors(backend: Backend) {
    let wx = FakeWeChat::start("wx-test-app", "wx-test-secret").await;
    let api = api_with(backend, |c| {
        c.wechat_appid = Some("wx-test-app".into());
        c.wechat_secret = Some("wx-test-secret".into());
        c.wechat_api_base = wx.base_url();
    })
    .await;
    let first = api.post_json("/api/auth/wechat/login", json!({"code": wx.code_for("openid-1", Some("union-1"))}), &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!((first.body["data"]["is_new_user"].as_bool(), first.body["data"]["user"]["wechat"].as_bool()), (Some(true), Some(true)));
    assert!(!first.body.to_string().contains("openid-1"), "WeChat identifiers are not echoed");
    // Seed 004's login is the same account.
    let again = api.post_json("/api/v1/users/login", json!({"code": wx.code_for("openid-1", None)}), &[]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["is_new_user"], false);
    let me = api.call("GET", "/api/auth/me", Some(again.body["token"].as_str().unwrap()), None).await;
    assert_eq!(me.body["data"]["id"], first.body["data"]["user"]["id"]);

    let calls = wx.requests();
    let used = wx.code_for("openid-2", None);
    assert_eq!(api.post_json("/api/auth/wechat/login", json!({"code": used}), &[]).await.status, StatusCode::OK);
    let cases = [
        (used, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
        ("never-issued".to_owned(), StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
        (wx.failing_code(45011), StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED"),
        (wx.failing_code(40226), StatusCode::FORBIDDEN, "ACCESS_DENIED"),
        (wx.failing_code(-1), StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE"),
    ];
    for (code, status, error_code) in &cases {
        let r = api.post_json("/api/auth/wechat/login", json!({"code": code}), &[]).await;
        assert_envelope(&r, *status, error_code, &format!("WeChat answer for {code}"));
    }
    assert_eq!(wx.requests(), calls + 1 + cases.len(), "every code is exchanged exactly once: never retried");
    let r = api.post_json("/api/auth/wechat/login", json!({"code": ""}), &[]).await;
    assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "an empty code");
    assert_eq!(wx.requests(), calls + 1 + cases.len(), "an empty code never reaches WeChat");

    // Without WECHAT_APPID/WECHAT_SECRET the login says so.
    drop(api);
    let plain = support::client::api(backend).await;
    let r = plain.post_json("/api/auth/wechat/login", json!({"code": "abc"}), &[]).await;
    assert_envelope(&r, StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE", "WeChat not configured");
}

async fn admins_list_and_edit_users(backend: Backend) {
    let api = api_with(backend, |c| {
        c.bootstrap_admin_email = Some("root@example.com".into());
        c.bootstrap_admin_password = Some("root password 1".into());
    })
    .await;
    let user = register(&api, "dave@example.com", "dave").await;
    let t = token(&user);
    let r = api.post_json("/api/auth/admin/login", json!({"email": "dave@example.com", "password": PASSWORD}), &[]).await;
    assert_envelope(&r, StatusCode::FORBIDDEN, "ACCESS_DENIED", "admin login of a user");
    assert_envelope(
        &api.call("GET", "/api/admin/users", Some(&t), None).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "a user on admin routes",
    );
    assert_envelope(&api.call("GET", "/api/admin/users", None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "anonymous");
    let admin = api.post_json("/api/auth/admin/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    let a = token(&admin.body["data"]);
    for i in 0..4 {
        register(&api, &format!("user{i}@example.com"), &format!("user_{i}")).await;
    }
    let page = api.call("GET", "/api/admin/users?page=1&page_size=2&role=user", Some(&a), None).await;
    let d = &page.body["data"];
    assert_eq!(
        (d["total"].as_u64(), d["page_size"].as_u64(), d["total_pages"].as_u64(), d["items"].as_array().map(Vec::len)),
        (Some(5), Some(2), Some(3), Some(2)),
        "{d}"
    );
    let found = api.call("GET", "/api/admin/users?search=DAVE", Some(&a), None).await;
    assert_eq!(found.body["data"]["items"][0]["email"], "dave@example.com");
    let bad = api.call("GET", "/api/admin/users?role=root", Some(&a), None).await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown role filter");
    let id = user["user"]["id"].as_str().unwrap();
    let balance = api.call("PUT", &format!("/api/admin/users/{id}"), Some(&a), Some(json!({"balance": 200.0}))).await;
    assert_eq!(balance.body["data"]["balance"], 200.0, "a balance edit is a ledger adjustment: {}", balance.body);
    let bad = api.call("PUT", &format!("/api/admin/users/{id}"), Some(&a), Some(json!({"balance": "12.345"}))).await;
    assert!(bad.body["details"]["field_errors"]["balance"][0].as_str().unwrap().contains("two decimals"), "{}", bad.body);
    let promoted = api.call("PUT", &format!("/api/admin/users/{id}"), Some(&a), Some(json!({"role": "admin"}))).await;
    assert_eq!(promoted.body["data"]["role"], "admin");
    // Role changes reach the old token's checks at once on this replica.
    assert_eq!(api.call("GET", "/api/admin/users", Some(&t), None).await.status, StatusCode::OK);
    let missing = api.call("PUT", "/api/admin/users/nope", Some(&a), Some(json!({"is_active": false}))).await;
    assert_envelope(&missing, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "unknown user");
    let root_id = admin.body["data"]["user"]["id"].as_str().unwrap();
    api.call("PUT", &format!("/api/admin/users/{id}"), Some(&a), Some(json!({"role": "user"}))).await;
    let last = api.call("PUT", &format!("/api/admin/users/{root_id}"), Some(&a), Some(json!({"is_active": false}))).await;
    assert_eq!(last.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", last.body);
    assert!(last.body["message"].as_str().unwrap().contains("last active admin"));
}

async fn seed_003_speaks_its_own_envelope(backend: Backend) {
    let api = api(backend).await;
    let r =
        api.post_json("/api/v1/auth/register", json!({"username": "erin", "email": "erin@example.com", "password": PASSWORD}), &[]).await;
    assert_eq!((r.status, r.body["code"].as_u64()), (StatusCode::CREATED, Some(201)), "{}", r.body);
    assert_eq!(r.body["data"]["user"], json!({"id": r.body["data"]["user"]["id"], "username": "erin", "email": "erin@example.com"}));
    assert!(r.body["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(r.body["data"]["refreshToken"].as_str().is_some(), "camelCase: {}", r.body);
    let bad = api.post_json("/api/v1/auth/register", json!({"email": "x"}), &[]).await;
    assert_eq!(
        (bad.status, bad.body["code"].as_u64(), bad.body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(422), Some("VALIDATION_ERROR")),
        "{}",
        bad.body
    );
    assert!(bad.body["details"]["field_errors"]["password"].is_array() && bad.body.get("success").is_none(), "{}", bad.body);
    let login = api.post_json("/api/v1/auth/login", json!({"email": "erin@example.com", "password": PASSWORD}), &[]).await;
    assert_eq!(login.body["code"], 200);
    let t = login.body["data"]["token"].as_str().unwrap();
    let p = api.call("GET", "/api/v1/user/profile", Some(t), None).await;
    assert_eq!(
        p.body["data"],
        json!({"id": r.body["data"]["user"]["id"], "username": "erin", "avatar": null, "computePower": 0, "vipLevel": 0, "totalGenerated": 0})
    );
    let anon = api.call("GET", "/api/v1/user/profile", None, None).await;
    assert_eq!(
        (anon.status, anon.body["code"].as_u64(), anon.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some(401), Some("INVALID_CREDENTIALS"))
    );
    let refreshed = api.post_json("/api/v1/auth/refresh", json!({"refreshToken": login.body["data"]["refreshToken"]}), &[]).await;
    assert_eq!(refreshed.body["code"], 200, "{}", refreshed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_per_address_and_per_account() {
    let api = api_with(Backend::Sqlite, |c| {
        c.logins_per_minute_per_account = 3.0;
        c.logins_per_minute_per_address = 5.0;
        c.trust_forwarded_for = true;
    })
    .await;
    register(&api, "frank@example.com", "frank").await;
    // Three guesses from three addresses spend the account's attempts.
    for i in 0..3 {
        let r = api
            .post_json(
                "/api/auth/login",
                json!({"email": "frank@example.com", "password": "guess 1"}),
                &[("x-forwarded-for", &format!("10.0.0.{i}"))],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = api
        .post_json("/api/auth/login", json!({"email": "FRANK@example.com", "password": PASSWORD}), &[("x-forwarded-for", "10.0.0.9")])
        .await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "fourth attempt on the account");
    assert!(r.headers.get("retry-after").is_some());
    // One address trying many accounts meets the address limit.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = api
            .post_json(
                "/api/auth/login",
                json!({"email": format!("x{i}@example.com"), "password": "guess 1"}),
                &[("x-forwarded-for", "10.0.0.77")],
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), None);
    let command = purrify_gateway::config::Command::Admin(purrify_gateway::config::AdminCommand::CreateUser {
        email: "ops@example.com".into(),
        username: Some("ops".into()),
        role: purrify_gateway::config::RoleArg::Admin,
    });
    let out = purrify_gateway::app::cli::run(&c, &command, &mut std::io::Cursor::new(b"ops password 7\n".to_vec())).await.unwrap();
    assert!(out.starts_with("created admin ops@example.com"), "{out}");
    let weak = purrify_gateway::app::cli::run(&c, &command, &mut std::io::Cursor::new(b"x\n".to_vec())).await.unwrap_err().to_string();
    assert!(weak.contains("password must be at least 8"), "{weak}");
    let again = purrify_gateway::app::cli::run(&c, &command, &mut std::io::Cursor::new(b"ops password 8\n".to_vec()))
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("is already"), "a second account with the same email or username: {again}");
    let api = api_with_dir(dir, c).await;
    let r = api.post_json("/api/auth/admin/login", json!({"email": "ops@example.com", "password": "ops password 7"}), &[]).await;
    assert_eq!((r.status, r.body["data"]["user"]["role"].as_str()), (StatusCode::OK, Some("admin")), "{}", r.body);
}
