//! Recharge codes (seed 002) through the real router on SQLite and PostgreSQL: an admin
//! creates batches and lists them by status, users redeem codes as they type them, the
//! balance grows exactly once, refusals write nothing, and guessing is rate-limited.

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

async fn admin_api(backend: Backend) -> Api {
    api_with(backend, |c| {
        c.bootstrap_admin_email = Some("root@example.com".into());
        c.bootstrap_admin_password = Some("root password 1".into());
    })
    .await
}

async fn admin_token(api: &Api) -> String {
    let r = api.post_json("/api/auth/admin/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

async fn user_token(api: &Api, name: &str) -> String {
    let r = api
        .post_json("/api/auth/register", json!({"email": format!("{name}@example.com"), "username": name, "password": PASSWORD}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

fn in_future(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn balance(api: &Api, token: &str) -> f64 {
    api.call("GET", "/api/users/me", Some(token), None).await.body["data"]["balance"].as_f64().unwrap()
}

async fn redeem(api: &Api, token: &str, code: &str) -> Reply {
    api.call("POST", "/api/recharge/redeem", Some(token), Some(json!({ "code": code }))).await
}

async fn codes(api: &Api, token: &str, query: &str) -> Value {
    let r = api.call("GET", &format!("/api/recharge/codes?{query}"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
    r.body["data"].clone()
}

fn code_of(v: &Value) -> String {
    v["code"].as_str().unwrap().to_owned()
}

on_both!(admins_create_codes_and_users_redeem_each_once, refused_codes_write_nothing, code_guessing_is_rate_limited);

async fn admins_create_codes_and_users_redeem_each_once(backend: Backend) {
    let api = admin_api(backend).await;
    let admin = admin_token(&api).await;
    let alice = user_token(&api, "alice").await;
    let bob = user_token(&api, "bob").await;
    let body = json!({"amount": 100.1, "description": "新用户充值码", "batch_size": 3, "expires_at": in_future(86_400_000), "max_uses": 1});

    assert_envelope(
        &api.call("POST", "/api/recharge/codes", Some(&alice), Some(body.clone())).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "a user",
    );
    assert_envelope(
        &api.call("POST", "/api/recharge/codes", None, Some(body.clone())).await,
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "anonymous",
    );
    assert_envelope(
        &api.call("GET", "/api/recharge/codes", Some(&alice), None).await,
        StatusCode::FORBIDDEN,
        "ACCESS_DENIED",
        "a user listing",
    );
    assert_eq!(codes(&api, &admin, "").await["total"], 0, "a refused creation created nothing");

    let created = api.call("POST", "/api/recharge/codes", Some(&admin), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let d = &created.body["data"];
    assert_eq!((d["total_generated"].as_u64(), d["total_amount"].as_f64()), (Some(3), Some(300.3)), "{d}");
    let batch: Vec<String> = d["codes"].as_array().unwrap().iter().map(code_of).collect();
    for c in &batch {
        let groups: Vec<&str> = c.split('-').collect();
        assert_eq!(groups.len(), 4, "{c}");
        assert_eq!(groups[0], "OWL");
        assert!(groups[1..].iter().all(|g| g.len() == 4 && g.bytes().all(|b| b"23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(&b))), "{c}");
    }
    assert_eq!((d["codes"][0]["amount"].as_f64(), d["codes"][0]["status"].as_str()), (Some(100.1), Some("active")));
    // A second batch with the amount as a string and two uses per code.
    let two_use = api
        .call(
            "POST",
            "/api/recharge/codes",
            Some(&admin),
            Some(json!({"amount": "19.99", "batch_size": 1, "max_uses": 2, "expires_at": in_future(86_400_000)})),
        )
        .await;
    assert_eq!(two_use.status, StatusCode::CREATED, "{}", two_use.body);
    let shared = code_of(&two_use.body["data"]["codes"][0]);

    let bad = api
        .call(
            "POST",
            "/api/recharge/codes",
            Some(&admin),
            Some(json!({"amount": 0.001, "batch_size": 1001, "max_uses": 0, "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_envelope(&bad, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "a bad batch");
    let fields = &bad.body["details"]["field_errors"];
    for f in ["amount", "batch_size", "max_uses", "expires_at"] {
        assert!(fields[f][0].is_string(), "{f}: {fields}");
    }

    // Typed lower-case without dashes: the same code. The balance grows exactly once.
    let typed = batch[0].to_lowercase().replace('-', "");
    let r = redeem(&api, &alice, &typed).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["data"]["amount"].as_f64(), r.body["data"]["new_balance"].as_f64()), (Some(100.1), Some(100.1)), "{}", r.body);
    assert!(r.body["data"]["recharge_record_id"].as_str().is_some_and(|id| !id.is_empty()));
    let again = redeem(&api, &alice, &batch[0]).await;
    assert_envelope(&again, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "a second redemption");
    assert_eq!(again.body["details"]["field_errors"]["code"][0], "was already redeemed by this account");
    let taken = redeem(&api, &bob, &batch[0]).await;
    assert_eq!(taken.body["details"]["field_errors"]["code"][0], "has been used up", "{}", taken.body);
    assert_eq!((balance(&api, &alice).await, balance(&api, &bob).await), (100.1, 0.0));

    // Two users share a two-use code; each is credited once.
    assert_eq!(redeem(&api, &alice, &shared).await.body["data"]["new_balance"].as_f64(), Some(120.09));
    assert_eq!(redeem(&api, &bob, &shared).await.body["data"]["new_balance"].as_f64(), Some(19.99));
    assert_eq!((balance(&api, &alice).await, balance(&api, &bob).await), (120.09, 19.99));

    let used = codes(&api, &admin, "status=used").await;
    let mut used_codes: Vec<String> = used["items"].as_array().unwrap().iter().map(code_of).collect();
    used_codes.sort();
    let mut expected = vec![batch[0].clone(), shared.clone()];
    expected.sort();
    assert_eq!(used_codes, expected);
    let active = codes(&api, &admin, "status=active&page=1&page_size=1").await;
    assert_eq!(
        (active["total"].as_u64(), active["total_pages"].as_u64(), active["items"].as_array().map(Vec::len)),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(active["items"][0]["description"], "新用户充值码");
    let everything = codes(&api, &admin, "").await;
    assert_eq!((everything["total"].as_u64(), everything["page"].as_u64(), everything["page_size"].as_u64()), (Some(4), Some(1), Some(20)));
    let r = api.call("GET", "/api/recharge/codes?status=bogus", Some(&admin), None).await;
    assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown status");

    let records = api.call("GET", "/api/recharge/records?page=1&page_size=20", Some(&alice), None).await;
    assert_eq!(records.status, StatusCode::OK, "{}", records.body);
    let d = &records.body["data"];
    assert_eq!((d["total"].as_u64(), d["total_pages"].as_u64()), (Some(2), Some(1)), "{d}");
    let mut mine: Vec<(String, f64)> = d["items"].as_array().unwrap().iter().map(|r| (code_of(r), r["amount"].as_f64().unwrap())).collect();
    mine.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(batch[0].clone(), 100.1), (shared.clone(), 19.99)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(mine, want, "only alice's own redemptions");
    assert_envelope(
        &api.call("GET", "/api/recharge/records", None, None).await,
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "anonymous records",
    );
}

async fn refused_codes_write_nothing(backend: Backend) {
    let api = admin_api(backend).await;
    let admin = admin_token(&api).await;
    let carol = user_token(&api, "carol").await;
    // Valid when created; then its expiry passes (moved into the past in the database rather
    // than waited for on the clock).
    let soon = api
        .call("POST", "/api/recharge/codes", Some(&admin), Some(json!({"amount": 50, "batch_size": 1, "expires_at": in_future(60_000)})))
        .await;
    assert_eq!(soon.status, StatusCode::CREATED, "{}", soon.body);
    let code = code_of(&soon.body["data"]["codes"][0]);
    let past = purrify_store::now_ms() - 1;
    sqlx::query("UPDATE recharge_codes SET expires_at = $1 WHERE code = $2")
        .bind(past)
        .bind(&code)
        .execute(api.stack.state.tasks.db().pool())
        .await
        .unwrap();

    let expired = redeem(&api, &carol, &code).await;
    assert_envelope(&expired, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "an expired code");
    assert_eq!(expired.body["details"]["field_errors"]["code"][0], "has expired");
    assert_envelope(&redeem(&api, &carol, "OWL-2345-6789-ABCD").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "an unknown code");
    let malformed = redeem(&api, &carol, "OWL-0000-1111-IIII").await;
    assert_envelope(&malformed, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "ambiguous characters are never in a code");
    let empty = api.call("POST", "/api/recharge/redeem", Some(&carol), Some(json!({}))).await;
    assert_eq!(empty.body["details"]["field_errors"]["code"][0], "is required");

    assert_eq!(balance(&api, &carol).await, 0.0);
    assert_eq!(api.call("GET", "/api/recharge/records", Some(&carol), None).await.body["data"]["total"], 0);
    let listed = codes(&api, &admin, "status=expired").await;
    assert_eq!((listed["total"].as_u64(), listed["items"][0]["used_count"].as_i64()), (Some(1), Some(0)), "{listed}");
    assert_eq!(listed["items"][0]["status"], "expired");
}

/// Every attempt spends the user's allowance (10 a minute), so codes cannot be found by
/// trying them.
async fn code_guessing_is_rate_limited(backend: Backend) {
    let api = admin_api(backend).await;
    let admin = admin_token(&api).await;
    let dave = user_token(&api, "dave").await;
    let erin = user_token(&api, "erin").await;
    let r = api
        .call("POST", "/api/recharge/codes", Some(&admin), Some(json!({"amount": 1, "batch_size": 1, "expires_at": in_future(86_400_000)})))
        .await;
    let real = code_of(&r.body["data"]["codes"][0]);
    for i in 0..10 {
        let guess = format!("OWL-2222-2222-222{}", char::from(b"23456789AB"[i]));
        assert_eq!(redeem(&api, &dave, &guess).await.status, StatusCode::NOT_FOUND, "guess {i}");
    }
    let limited = redeem(&api, &dave, &real).await;
    assert_envelope(&limited, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", "the 11th attempt in a minute");
    assert!(limited.headers.get("retry-after").is_some());
    assert_eq!(balance(&api, &dave).await, 0.0, "even a right code is not tried once limited");
    // Another user (same address, under its larger limit) is not affected.
    assert_eq!(redeem(&api, &erin, &real).await.status, StatusCode::OK);
}
