//! The binary as a separate process: address on stdout, kubeconfig on disk, SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client_from;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, PostParams, WatchParams};
use serde_json::json;

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kube/config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_purrify-kubesim"))
        .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").expect("address line").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(written.contains(&format!("server: http://{addr}")), "{written}");

    let client = client_from(&kubeconfig).await;
    let nss: Api<Namespace> = Api::all(client);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "from-process"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(nss.get("from-process").await.unwrap().name_any(), "from-process");

    // An open watch must not hold up a graceful shutdown.
    let mut w = nss.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    w.next().await.unwrap().unwrap();

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still running 5s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn refuses_non_loopback_addresses() {
    let out = Command::new(env!("CARGO_BIN_EXE_purrify-kubesim")).args(["serve", "--addr", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no authentication"));
}
