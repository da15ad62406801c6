//! A crash between a task's success and its capture: the gateway binary is SIGKILLed with a
//! hold open, the task's success is in the database (what the dispatcher had written), and
//! after a restart the hold is captured, once, and stays captured through another restart.

mod support;

use std::path::Path;

use purrify_store::{Db, EntryKind};
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};

fn start(dir: &Path, port: u16) -> Proc {
    let log = dir.join(format!("gateway-{port}.log"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir", &dir.join("data").display().to_string(), "--embedded-worker", "false"])
        .env("RUST_LOG", "info")
        .env("PURRIFY_BOOTSTRAP_ADMIN_EMAIL", "root@example.com")
        .env("PURRIFY_BOOTSTRAP_ADMIN_PASSWORD", "root password 1")
        .env("PURRIFY_ARGON2_MEMORY_KIB", "4096")
        .env("PURRIFY_ARGON2_ITERATIONS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("gateway starts");
    Proc::adopt("gateway", child, log)
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value, method: reqwest::Method) -> Value {
    let mut req = http.request(method, url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_left_open_by_a_crash_is_captured_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut gw = start(dir.path(), port);
    purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &gw).await;

    let admin = post(
        &http,
        format!("{base}/api/auth/login"),
        None,
        json!({"email": "root@example.com", "password": "root password 1"}),
        reqwest::Method::POST,
    )
    .await;
    let admin = admin["data"]["access_token"].as_str().unwrap().to_owned();
    let user = post(
        &http,
        format!("{base}/api/auth/register"),
        None,
        json!({"email": "u@example.com", "password": "user password 42"}),
        reqwest::Method::POST,
    )
    .await;
    let (token, user_id) =
        (user["data"]["access_token"].as_str().unwrap().to_owned(), user["data"]["user"]["id"].as_str().unwrap().to_owned());
    post(&http, format!("{base}/api/admin/config/price_enhance"), Some(&admin), json!({"value": 1}), reqwest::Method::PUT).await;
    post(&http, format!("{base}/api/admin/users/{user_id}"), Some(&admin), json!({"balance": 3}), reqwest::Method::PUT).await;
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(support::small_photo_png(64, 48)).file_name("a.png"));
    let up: Value =
        http.post(format!("{base}/api/v1/enhance")).bearer_auth(&token).multipart(form).send().await.unwrap().json().await.unwrap();
    let task = up["task_id"].as_str().unwrap().to_owned();

    // The crash: the process dies; the dispatcher had recorded the success, not the capture.
    gw.kill();
    let url = format!("sqlite://{}/purrify.db", dir.path().join("data").display());
    let db = Db::connect(&url).await.unwrap();
    let job = format!("{task}-1");
    assert!(db.claim_task(&task, 0, "http://worker", &job).await.unwrap());
    assert!(db.complete_task(&task, &job, &support::client::job_result()).await.unwrap());
    assert_eq!(db.hold_state(&task).await.unwrap().as_deref(), Some("held"));

    for round in 0..2 {
        let port = free_port();
        let gw = start(dir.path(), port);
        purrify_testkit::gateway_client::wait_ready(&http, &format!("http://127.0.0.1:{port}/readyz"), &gw).await;
        purrify_testkit::eventually(20, "the restarted gateway captures the hold", || async {
            (db.hold_state(&task).await.ok()?.as_deref() == Some("captured")).then_some(())
        })
        .await;
        let b: Value = http
            .get(format!("http://127.0.0.1:{port}/api/credits/balance"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(b["data"], json!({"balance": 2.0, "held": 0.0, "spent": 1.0}), "round {round}: {b}");
        let captures = db.ledger_page(&user_id, Some(EntryKind::Capture), Default::default()).await.unwrap();
        assert_eq!(captures.total, 1, "round {round}: captured exactly once");
        assert!(db.ledger_mismatches().await.unwrap().is_empty());
        drop(gw);
    }
}
