//! Seed 003's quotas through the router and the service, on SQLite and PostgreSQL: the hourly
//! API-call count (the N+1th authenticated request is 429 with Retry-After, anonymous and
//! token-issuing requests are not counted, concurrent requests never get past the limit),
//! VIP limits, administrators, `GET /api/v1/user/quota`, and the daily generation quotas with
//! their rollover at midnight UTC.

mod support;

use axum::http::StatusCode;
use purrify_gateway::domain::DomainError;
use purrify_gateway::domain::accounts::{Principal, Role};
use purrify_gateway::domain::quotas::{Generation, Plan};
use purrify_store::{VipState, Window, now_ms};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

/// Registers through seed 003 (not counted); the access token and the user id.
async fn register(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/v1/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

fn header(r: &Reply, name: &str) -> Option<i64> {
    r.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

async fn quota(api: &Api, token: &str) -> Value {
    let r = api.call("GET", "/api/v1/user/quota", Some(token), None).await;
    assert_eq!((r.status, &r.body["code"]), (StatusCode::OK, &json!(200)), "{}", r.body);
    assert!(r.body["timestamp"].is_i64(), "seed 003's envelope: {}", r.body);
    r.body["data"].clone()
}

on_both!(the_hourly_api_quota_refuses_the_call_after_the_limit, vip_users_and_admins_get_their_limits, generation_quotas_count_per_day);

async fn the_hourly_api_quota_refuses_the_call_after_the_limit(backend: Backend) {
    let api = api_with(backend, |c| c.quotas.free_api_calls_per_hour = 3).await;
    let (alice, _) = register(&api, "alice@example.com").await;

    // Anonymous requests, requests with a token that does not verify, and the token
    // endpoints are not counted.
    for _ in 0..5 {
        let anon = api.get("/api/v1/info").await;
        assert_eq!((anon.status, header(&anon, "x-ratelimit-limit")), (StatusCode::OK, None));
    }
    let forged = api.call("GET", "/api/v1/user/profile", Some("not-a-token"), None).await;
    assert_eq!((forged.status, header(&forged, "x-ratelimit-limit")), (StatusCode::UNAUTHORIZED, None));
    let bearer = format!("Bearer {alice}");
    let login = api
        .post_json("/api/v1/auth/login", json!({"email": "alice@example.com", "password": PASSWORD}), &[("authorization", &bearer)])
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);

    for remaining in [2, 1, 0] {
        let r = api.call("GET", "/api/v1/user/profile", Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!((header(&r, "x-ratelimit-limit"), header(&r, "x-ratelimit-remaining")), (Some(3), Some(remaining)));
    }
    let before = now_ms();
    let spent = api.call("GET", "/api/v1/user/profile", Some(&alice), None).await;
    assert_envelope(&spent, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "the fourth call of the hour");
    let retry = header(&spent, "retry-after").expect("Retry-After");
    let to_hour_end = (Window::Hour.end(before) - before + 999) / 1000;
    assert!((1..=to_hour_end).contains(&retry) && retry >= to_hour_end - 5, "Retry-After {retry}, hour ends in {to_hour_end} s");
    assert_eq!((header(&spent, "x-ratelimit-limit"), header(&spent, "x-ratelimit-remaining")), (Some(3), Some(0)));
    // Seed 003's limits count seed 003's API only: other surfaces, and seed 000's status polls,
    // stay served (and uncounted) for the same user.
    let me = api.call("GET", "/api/users/me", Some(&alice), None).await;
    assert_eq!((me.status, header(&me, "x-ratelimit-limit")), (StatusCode::OK, None), "seed 002's profile: {}", me.body);
    let poll = api.call("GET", "/api/v1/status/0123456789abcdef0123456789abcdef", Some(&alice), None).await;
    assert_eq!((poll.status, header(&poll, "x-ratelimit-limit")), (StatusCode::NOT_FOUND, None), "a seed 000 status poll");

    // The report is not counted, so a spent user still learns when the hour resets.
    let q = quota(&api, &alice).await;
    assert_eq!(q["plan"], "free");
    assert_eq!((&q["api"]["limit"], &q["api"]["used"], &q["api"]["remaining"]), (&json!(3), &json!(3), &json!(0)), "{q}");
    let reset = chrono::DateTime::parse_from_rfc3339(q["api"]["resetAt"].as_str().unwrap()).unwrap().timestamp_millis();
    assert_eq!(reset, Window::Hour.end(before));
    assert_eq!(q["image"], json!({"limit": 10, "used": 0, "remaining": 10, "resetAt": q["image"]["resetAt"]}), "the seed's default");
    assert!(q["video"]["resetAt"].as_str().unwrap().ends_with("T00:00:00Z"), "{q}");

    // Another user's count is their own; concurrent calls never get past the limit.
    let (bob, _) = register(&api, "bob@example.com").await;
    let api = std::sync::Arc::new(api);
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (api, bob) = (api.clone(), bob.clone());
            tokio::spawn(async move { api.call("GET", "/api/v1/user/profile", Some(&bob), None).await.status })
        })
        .collect();
    let mut ok = 0;
    for c in futures::future::join_all(calls).await {
        match c.unwrap() {
            StatusCode::OK => ok += 1,
            s => assert_eq!(s, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    assert_eq!(ok, 3, "exactly the limit");
    assert_eq!(quota(&api, &bob).await["api"]["used"], 3);
}

async fn vip_users_and_admins_get_their_limits(backend: Backend) {
    let api = api_with(backend, |c| {
        c.quotas.free_api_calls_per_hour = 1;
        c.quotas.vip_api_calls_per_hour = 3;
        c.bootstrap_admin_email = Some("root@example.com".into());
        c.bootstrap_admin_password = Some("root password 1".into());
    })
    .await;
    let db = api.stack.state.tasks.db().clone();
    let (vip, vip_id) = register(&api, "vip@example.com").await;
    let (lapsed, lapsed_id) = register(&api, "lapsed@example.com").await;
    // Set before their first counted call, so no cached free state is in the way.
    assert!(db.set_vip(&vip_id, VipState { level: 1, expires_at: Some(now_ms() + 86_400_000) }).await.unwrap());
    assert!(db.set_vip(&lapsed_id, VipState { level: 2, expires_at: Some(now_ms() - 1) }).await.unwrap());

    for remaining in [2, 1, 0] {
        let r = api.call("GET", "/api/v1/user/profile", Some(&vip), None).await;
        assert_eq!((r.status, header(&r, "x-ratelimit-remaining")), (StatusCode::OK, Some(remaining)), "{}", r.body);
    }
    let spent = api.call("GET", "/api/v1/user/profile", Some(&vip), None).await;
    assert_envelope(&spent, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "the VIP's fourth call");
    let q = quota(&api, &vip).await;
    assert_eq!(
        (&q["plan"], &q["api"]["limit"], &q["image"]["limit"], &q["video"]["limit"]),
        (&json!("vip"), &json!(3), &json!(100), &json!(20))
    );

    // An expired VIP level is the free plan.
    assert_eq!(api.call("GET", "/api/v1/user/profile", Some(&lapsed), None).await.status, StatusCode::OK);
    let r = api.call("GET", "/api/v1/user/profile", Some(&lapsed), None).await;
    assert_envelope(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "an expired VIP on the free limit");
    assert_eq!(quota(&api, &lapsed).await["plan"], "free");

    // Administrators operate the service: their calls are not counted.
    let root = api.post_json("/api/auth/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    let root = root.body["data"]["access_token"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        let r = api.call("GET", "/api/v1/user/profile", Some(&root), None).await;
        assert_eq!((r.status, header(&r, "x-ratelimit-limit")), (StatusCode::OK, None), "{}", r.body);
    }
}

async fn generation_quotas_count_per_day(backend: Backend) {
    let api = api(backend).await;
    let (_, id) = register(&api, "gen@example.com").await;
    let user = Principal { user_id: id.clone(), role: Role::User };
    let quotas = &api.stack.state.quotas;
    // One instant read from the clock and passed in: the next day is that instant plus a
    // day, never a sleep.
    let now = now_ms();
    let midnight = Window::Day.end(now);
    for used in 1..=3 {
        let a = quotas.consume_at(&user, Generation::Video, now).await.unwrap();
        assert_eq!((a.limit, a.used, a.remaining, a.reset_at), (3, used, 3 - used, midnight), "the seed's free video quota");
    }
    match quotas.consume_at(&user, Generation::Video, now).await {
        Err(DomainError::RateLimited { retry_after, message }) => {
            assert_eq!(i64::try_from(retry_after).unwrap(), (midnight - now + 999) / 1000, "until midnight UTC");
            assert!(message.contains("video"), "{message}");
        }
        other => panic!("a fourth video in a day: {other:?}"),
    }
    // Images have their own count.
    assert_eq!(quotas.consume_at(&user, Generation::Image, now).await.unwrap().used, 1);
    let report = quotas.report_at(&user, now).await.unwrap();
    assert_eq!((report.plan, report.video.used, report.video.remaining, report.image.used), (Plan::Free, 3, 0, 1));

    // The next UTC day starts from zero.
    let tomorrow = now + Window::Day.millis();
    let a = quotas.consume_at(&user, Generation::Video, tomorrow).await.unwrap();
    assert_eq!((a.used, a.reset_at), (1, midnight + Window::Day.millis()));
    assert_eq!(quotas.report_at(&user, tomorrow).await.unwrap().image.used, 0);

    // A VIP (granted on this replica's database after the plan was cached) gets the VIP
    // quota once the cached free state is older than its bound; a new service sees it now.
    let db = api.stack.state.tasks.db().clone();
    assert!(db.set_vip(&id, VipState { level: 1, expires_at: None }).await.unwrap());
    let fresh = purrify_gateway::domain::quotas::QuotaService::new(db, quotas.settings());
    let a = fresh.consume_at(&user, Generation::Video, now).await.unwrap();
    assert_eq!((a.limit, a.used, a.remaining), (20, 4, 16), "the day's count carries over into the VIP limit");
}
