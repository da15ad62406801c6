//! System logs with the real gateway binary: the subscriber it installs captures its own
//! events into the database, from start-up (before the stack exists, queued until it does)
//! to the requests it serves (with their request ids), and with debug logs on no password
//! or token reaches the table.

mod support;

use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "root password 91";

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_stores_its_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("gateway.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir", &dir.path().join("data").display().to_string()])
        .args(["--embedded-worker", "false"])
        .env("RUST_LOG", "debug")
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

    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "root@example.com", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = login["data"]["access_token"].as_str().unwrap_or_else(|| panic!("login: {login}")).to_owned();
    let wrong = http.post(format!("{base}/api/auth/login")).json(&json!({"email": "root@example.com", "password": "wrong one"}));
    assert_eq!(wrong.send().await.unwrap().status(), 401);

    // Start-up events were logged before the stack existed: queued, then stored.
    let search = |q: &str| format!("{base}/api/logs/system?search={q}");
    let ready = purrify_testkit::eventually(30, "the start-up event is stored", || async {
        let page = get(&http, &search("database%20ready"), &token).await;
        (page["data"]["total"].as_u64()? >= 1).then_some(page)
    })
    .await;
    assert_eq!(ready["data"]["items"][0]["level"], "INFO");
    let login_event = purrify_testkit::eventually(30, "the login's event is stored", || async {
        let page = get(&http, &search("password%20login"), &token).await;
        page["data"]["items"].as_array()?.iter().find(|e| e["message"] == "password login").cloned()
    })
    .await;
    assert!(login_event["request_id"].as_str().is_some_and(|r| !r.is_empty()), "inside the request's span: {login_event}");
    assert_eq!(login_event["module"], "purrify_gateway::domain::accounts");
    let debug = get(&http, &format!("{base}/api/logs/system?level=DEBUG"), &token).await;
    assert_eq!(debug["data"]["total"], 0, "debug events are printed, not stored");

    let day = chrono::Utc::now().date_naive();
    let file = http
        .get(format!("{base}/api/logs/download?log_type=system&date={day}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(file.contains("gateway listening"), "{file}");
    for secret in [ADMIN_PASSWORD, "wrong one", token.as_str()] {
        assert!(!file.contains(secret), "{secret} stored: {file}");
    }
    drop(proc);
}
