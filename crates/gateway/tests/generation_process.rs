//! Generation through providers with the real gateway binary and local fakes of the
//! providers' APIs (issue 13's acceptance): a text-to-image task on an OpenAI-compatible
//! provider that fails twice with 503 and then answers (the policy retries); a provider that
//! stays down, whose configured fallback takes the task; and an n8n-style workflow that a
//! seed 001 scene task is handed to, finished by its signed callback. Results are served from
//! our storage, never the providers' URLs.

mod support;

use std::net::SocketAddr;

use purrify_testkit::providers::n8n::FakeN8n;
use purrify_testkit::providers::openai::FakeOpenAi;
use purrify_testkit::providers::stability::FakeStability;
use purrify_testkit::providers::{Fault, png};
use purrify_testkit::{Proc, eventually, free_port};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("root@example.com", "root password 77");
const SEALING_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// A file server standing in for where a workflow leaves its result.
async fn result_server() -> SocketAddr {
    let picture = png(48, 32, 200);
    let app = axum::Router::new().route(
        "/results/card.png",
        axum::routing::get(move || {
            let p = picture.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "image/png")], p) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Gw {
    base: String,
    http: reqwest::Client,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = dir.path().join("gateway.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_purrify-gateway"))
            .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir", &dir.path().join("data").display().to_string()])
            .args(["--embedded-worker", "false"])
            .env("RUST_LOG", "info")
            .env("PURRIFY_BOOTSTRAP_ADMIN_EMAIL", ADMIN.0)
            .env("PURRIFY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN.1)
            .env("PURRIFY_ARGON2_MEMORY_KIB", "8192")
            .env("PURRIFY_ARGON2_ITERATIONS", "1")
            .env("PURRIFY_LOGINS_PER_MINUTE_PER_ADDRESS", "0")
            .env("PURRIFY_ALLOW_PRIVATE_WORKERS", "true")
            .env("PURRIFY_PROVIDER_KEY", SEALING_KEY)
            .env("PURRIFY_PUBLIC_URL", &base)
            .env("PURRIFY_PROVIDER_RETRY_BASE_MS", "20")
            .env("PURRIFY_PROVIDER_POLL_MS", "50")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("gateway starts");
        let proc = Proc::adopt("gateway", child, log);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        purrify_testkit::gateway_client::wait_ready(&http, &format!("{base}/readyz"), &proc).await;
        Self { base, http, _proc: proc, _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits for a generation task to end; its seed 003 view.
    async fn finished(&self, token: &str, task_id: &str) -> Value {
        eventually(60, "the generation task ends", || async {
            let (_, v) = self.call("GET", &format!("/api/v1/generate/task/{task_id}"), token, None).await;
            (v["data"]["status"] != "processing").then(|| v["data"].clone())
        })
        .await
    }
}

async fn add_provider(gw: &Gw, admin: &str, body: Value) -> String {
    let (status, v) = gw.call("POST", "/api/v1/config/providers/custom", admin, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_retries_falls_back_and_finishes_workflows_by_callback() {
    let openai = FakeOpenAi::start("sk-openai-test").await;
    let stability = FakeStability::start("sk-stability-test").await;
    let n8n = FakeN8n::start("n8n-shared-secret").await;
    let results = result_server().await;
    let gw = Gw::start().await;

    let (_, login) = gw.call("POST", "/api/auth/login", "", Some(json!({"email": ADMIN.0, "password": ADMIN.1}))).await;
    let admin = login["data"]["access_token"].as_str().unwrap_or_else(|| panic!("{login}")).to_owned();
    let (status, reg) = gw
        .call(
            "POST",
            "/api/v1/auth/register",
            "",
            Some(json!({"username": "alice", "email": "alice@example.com", "password": "correct horse 42"})),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let alice = reg["data"]["token"].as_str().unwrap().to_owned();

    let dalle = add_provider(
        &gw,
        &admin,
        json!({"type": "image", "name": "Local DALL-E", "apiUrl": openai.base_url(), "apiKey": "sk-openai-test",
               "config": {"protocol": "openai", "models": ["dall-e-3"]}}),
    )
    .await;
    let (status, v) =
        gw.call("PUT", "/api/v1/config/providers", &admin, Some(json!({"imageProvider": dalle, "imageModel": "dall-e-3"}))).await;
    assert_eq!(status, 200, "{v}");

    // 1. Two 503s, then an image: the policy retries and the task completes.
    openai.fail_next(2, Fault::status(503));
    let (status, started) = gw
        .call("POST", "/api/v1/generate/text-to-image", &alice, Some(json!({"prompt": "a cat in a teacup", "width": 512, "height": 512})))
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!((started["data"]["status"].as_str(), started["data"]["estimatedTime"].as_u64()), (Some("processing"), Some(30)));
    let first = started["data"]["taskId"].as_str().unwrap().to_owned();
    let done = gw.finished(&alice, &first).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(openai.requests_to("/images/generations").len(), 3, "two failures and the success");
    let url = done["result"]["images"][0]["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/api/v1/generate/task/"), "our URL, not the provider's: {url}");
    let file = gw.http.get(format!("{}{url}", gw.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "image/png");
    assert!(file.bytes().await.unwrap().starts_with(b"\x89PNG"));

    // 2. A provider that stays down: its fallback takes the task.
    let sd = add_provider(
        &gw,
        &admin,
        json!({"type": "image", "name": "Local Stability", "apiUrl": stability.base_url(), "apiKey": "sk-stability-test",
               "config": {"protocol": "stability", "models": ["stable-image-core"], "fallback": dalle}}),
    )
    .await;
    gw.call("PUT", "/api/v1/config/providers", &admin, Some(json!({"imageProvider": sd}))).await;
    stability.set_down(true);
    let before = openai.requests_to("/images/generations").len();
    let (_, started) =
        gw.call("POST", "/api/v1/generate/text-to-image", &alice, Some(json!({"prompt": "a fox", "width": 512, "height": 512}))).await;
    let second = started["data"]["taskId"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
    let done = gw.finished(&alice, &second).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(stability.request_count(), 3, "the primary was tried with its retries");
    assert_eq!(openai.requests_to("/images/generations").len(), before + 1, "the fallback made it");

    // 3. A seed 001 scene handed to an n8n workflow, finished by its signed callback.
    let n8n_id = add_provider(
        &gw,
        &admin,
        json!({"type": "workflow", "name": "Local n8n", "apiUrl": n8n.base_url(), "apiKey": "n8n-shared-secret",
               "config": {"protocol": "webhook", "models": ["default"]}}),
    )
    .await;
    gw.call("PUT", "/api/v1/config/providers", &admin, Some(json!({"workflowProvider": n8n_id}))).await;
    let (status, scene) = gw.call("POST", "/api/scenes", &admin, Some(json!({"name": "Postcard workflow", "task_type": "workflow"}))).await;
    assert_eq!(status, 201, "{scene}");
    let scene_id = scene["data"]["id"].as_str().unwrap().to_owned();
    let (status, login) =
        gw.call("POST", "/api/auth/login", "", Some(json!({"email": "alice@example.com", "password": "correct horse 42"}))).await;
    assert_eq!(status, 200, "{login}");
    let alice001 = login["data"]["access_token"].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(png(40, 30, 10)).file_name("in.png"));
    let up: Value = gw
        .http
        .post(format!("{}/api/upload/single", gw.base))
        .bearer_auth(&alice001)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = up["data"]["id"].as_str().or_else(|| up["data"]["file_id"].as_str()).unwrap_or_else(|| panic!("{up}")).to_owned();
    let (status, task) = gw.call("POST", "/api/tasks/create", &alice001, Some(json!({"file_id": file_id, "scene_id": scene_id}))).await;
    assert_eq!(status, 201, "{task}");
    let third = task["data"]["task_id"].as_str().or_else(|| task["data"]["id"].as_str()).unwrap_or_else(|| panic!("{task}")).to_owned();
    let received = eventually(30, "the workflow receives the task", || async { n8n.received(&third) }).await;
    assert_eq!(received.workflow, scene_id);
    assert_eq!(received.complete_url, format!("{}/api/callback/task-complete", gw.base));
    assert_eq!(n8n.complete(&third, &format!("http://{results}/results/card.png")).await, 200);
    let (_, detail) = gw.call("GET", &format!("/api/tasks/{third}"), &alice001, None).await;
    assert_eq!(detail["data"]["status"], "completed", "{detail}");
    let (_, work) = gw.call("GET", &format!("/api/v1/generate/task/{third}"), &alice, None).await;
    assert_eq!(work["data"]["result"]["images"][0]["width"], 48, "the workflow's result, copied in: {work}");
}
