//! The gateway's public API and the binaries' health endpoints over real HTTP, as the
//! end-to-end tests use them whichever backend the gateway runs (standalone or Kubernetes).
//! Processes are addressed by loopback port, since a test restarts them on the same port.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Proc;

/// Polls `url` until it answers 2xx (a `/readyz`); panics with the process's log after a minute.
pub async fn wait_ready(http: &reqwest::Client, url: &str, p: &Proc) {
    for _ in 0..1200 {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never became ready at {url}:\n{}", p.name, p.log());
}

/// `POST /api/v1/enhance` of a PNG at the `fast` level: the task id. Anything but 202 fails
/// the test with the gateway's answer, which says why.
pub async fn upload(http: &reqwest::Client, gw: u16, bytes: Vec<u8>, tile: u32) -> String {
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(bytes).file_name("photo.png"))
        .text("quality_level", "fast")
        .text("tile_size", tile.to_string());
    let r = http.post(format!("http://127.0.0.1:{gw}/api/v1/enhance")).multipart(form).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["task_id"].as_str().unwrap().to_string()
}

/// `POST /webhook/register` of a worker on 127.0.0.1 with the gateway's webhook secret; fails
/// unless the gateway says it succeeded. The server id.
pub async fn register(http: &reqwest::Client, gw: u16, worker_port: u16, secret: &str) -> String {
    let r: Value = http
        .post(format!("http://127.0.0.1:{gw}/webhook/register"))
        .json(&json!({"ip": "127.0.0.1", "port": worker_port, "secret": secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    r["server_id"].as_str().unwrap().to_string()
}

/// `GET /api/v1/status/{id}`; `Null` while the gateway is down or restarting.
pub async fn status(http: &reqwest::Client, gw: u16, id: &str) -> Value {
    match http.get(format!("http://127.0.0.1:{gw}/api/v1/status/{id}")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// The `done` of [`wait_for`] for a task that finished well.
pub fn completed(s: &Value) -> bool {
    s["status"] == "completed"
}

/// Polls the task's status until `done` holds; after two minutes panics with the last status
/// and the logs of `procs`.
pub async fn wait_for(http: &reqwest::Client, gw: u16, id: &str, what: &str, done: impl Fn(&Value) -> bool, procs: &[&Proc]) -> Value {
    for _ in 0..2400 {
        let s = status(http, gw, id).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs: Vec<String> = procs.iter().map(|p| format!("--- {} ---\n{}", p.name, p.log())).collect();
    panic!("task {id} never reached {what}; last status {}\n{}", status(http, gw, id).await, logs.join("\n"));
}

/// An inference worker's `in_flight` from `GET /v1/info`; 0 while it does not answer.
pub async fn worker_in_flight(http: &reqwest::Client, port: u16) -> u64 {
    match http.get(format!("http://127.0.0.1:{port}/v1/info")).send().await {
        Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["in_flight"].as_u64()).unwrap_or(0),
        Err(_) => 0,
    }
}
