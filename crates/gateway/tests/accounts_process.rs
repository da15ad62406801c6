//! Accounts with the real gateway binary: the mini-program's login through a local
//! `jscode2session` that speaks WeChat's protocol, email accounts, refresh, password change,
//! the admin login, and an upload that belongs to its user. Everything runs with debug logs
//! captured, and no secret, password, hash or token may appear in them.

mod support;

use std::path::Path;

use purrify_testkit::wechat::FakeWeChat;
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};

const WECHAT_SECRET: &str = "wx-secret-3f9c2a7d51e8";
const JWT_SECRET: &str = "jwt-secret-a81c4e0f6b2d9e7a3c5f1b8d0e2a4c6f";
const ADMIN_PASSWORD: &str = "root password 91";
const USER_PASSWORD: &str = "user password 42";
const NEW_PASSWORD: &str = "second password 43";

struct Gw {
    proc: Proc,
    base: String,
    http: reqwest::Client,
}

impl Gw {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }
}

async fn start(dir: &Path, wx: &FakeWeChat) -> Gw {
    let port = free_port();
    let args: Vec<String> = [
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--embedded-worker",
        "false",
        "--log-format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let log = dir.join("gateway.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"))
        .args(&args)
        .env("RUST_LOG", "debug")
        .env("WECHAT_APPID", "wx-process-app")
        .env("WECHAT_SECRET", WECHAT_SECRET)
        .env("WECHAT_API_BASE", wx.base_url())
        .env("PURRIFY_JWT_KEY", format!("k1:{JWT_SECRET}"))
        .env("PURRIFY_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")
        .env("PURRIFY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PURRIFY_ARGON2_MEMORY_KIB", "8192")
        .env("PURRIFY_ARGON2_ITERATIONS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("gateway starts");
    let proc = Proc::adopt("gateway", child, log);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &proc).await;
    Gw { proc, base, http }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_work_end_to_end_and_no_secret_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let wx = FakeWeChat::start("wx-process-app", WECHAT_SECRET).await;
    let gw = start(dir.path(), &wx).await;
    let mut secrets: Vec<String> =
        vec![WECHAT_SECRET.into(), JWT_SECRET.into(), ADMIN_PASSWORD.into(), USER_PASSWORD.into(), NEW_PASSWORD.into()];

    // The mini-program: wx.login() code -> token (seeds 001 and 004).
    let code = wx.code_for("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
    let (status, body) = gw.post("/api/auth/wechat/login", None, json!({"code": code})).await;
    assert_eq!((status, body["data"]["is_new_user"].as_bool()), (200, Some(true)), "{body}\n{}", gw.proc.log());
    let wechat_token = body["data"]["access_token"].as_str().unwrap().to_owned();
    secrets.extend([wechat_token.clone(), body["data"]["refresh_token"].as_str().unwrap().to_owned(), "tiihtNczf5v6AKRyjwEUhQ==".into()]);
    let (status, body) = gw.post("/api/v1/users/login", None, json!({"code": wx.code_for("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", None)})).await;
    assert_eq!((status, body["is_new_user"].as_bool()), (200, Some(false)), "{body}");
    secrets.push(body["token"].as_str().unwrap().to_owned());
    let (status, _) = gw.post("/api/auth/wechat/login", None, json!({"code": code})).await;
    assert_eq!(status, 401, "a code works once");

    // Email: register, a failed login, login, refresh, change the password.
    let (status, body) =
        gw.post("/api/auth/register", None, json!({"email": "u@example.com", "username": "user1", "password": USER_PASSWORD})).await;
    assert_eq!(status, 201, "{body}");
    let refresh = body["data"]["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(refresh.clone());
    assert_eq!(gw.post("/api/auth/login", None, json!({"email": "u@example.com", "password": "not the password 1"})).await.0, 401);
    let (status, body) = gw.post("/api/auth/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["access_token"].as_str().unwrap().to_owned();
    secrets.extend([token.clone(), body["data"]["refresh_token"].as_str().unwrap().to_owned()]);
    // An upload with the token is the user's.
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(support::small_photo_png(64, 48)).file_name("a.png"));
    let up: Value =
        gw.http.post(format!("{}/api/v1/enhance", gw.base)).bearer_auth(&token).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = up["task_id"].as_str().unwrap();
    assert_eq!(gw.get(&format!("/api/v1/status/{id}"), &token).await.0, 200);
    assert_eq!(gw.get(&format!("/api/v1/status/{id}"), &wechat_token).await.0, 404, "not the WeChat user's task");
    let (status, body) =
        gw.post("/api/users/change-password", Some(&token), json!({"current_password": USER_PASSWORD, "new_password": NEW_PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.get("/api/users/me", &token).await.0, 401, "the old token stopped at once");

    // The first admin came from configuration.
    let (status, body) = gw.post("/api/auth/admin/login", None, json!({"email": "root@example.com", "password": ADMIN_PASSWORD})).await;
    assert_eq!(status, 200, "{body}");
    let admin = body["data"]["access_token"].as_str().unwrap().to_owned();
    secrets.push(admin.clone());
    let (status, body) = gw.get("/api/admin/users?page_size=10", &admin).await;
    assert_eq!((status, body["data"]["total"].as_u64()), (200, Some(3)), "{body}");

    let log = gw.proc.log();
    assert!(log.lines().count() > 20 && log.contains("password login"), "debug logs were captured:\n{log}");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret reached the log: {}…", &s[..8.min(s.len())]);
    }
    assert!(!log.contains("$argon2id$"), "a password hash reached the log");
    // Bearer tokens are JWTs: no header of one may appear either.
    assert!(!log.contains("eyJhbGciOiJIUzI1NiIs"), "a token reached the log");
}
