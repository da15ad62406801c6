//! Task management in Kubernetes mode (issue 12): cancel and retry through the EnhanceTask
//! custom resources, against the project's in-memory API server (`purrify-kubesim`), with the
//! real gateway binary pointed at it by KUBECONFIG. No operator runs: the test writes task
//! status the way the operator does.

mod support;

use std::path::PathBuf;

use kube::api::{Api, Patch, PatchParams, PostParams};
use purrify_api::{EnhanceTask, GpuPool};
use purrify_gateway::domain::tasks::kubernetes::CANCEL_ANNOTATION;
use purrify_testkit::cluster::kubernetes_gateway_args;
use purrify_testkit::{Proc, eventually, free_port};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_go_through_the_custom_resources() {
    let (addr, _sim) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kubesim::write_kubeconfig(&kubeconfig, addr).unwrap();
    let client = purrify_testkit::cluster::kube_client(&kubeconfig).await;
    purrify_testkit::cluster::install_crds(&client).await;
    let tasks: Api<EnhanceTask> = Api::namespaced(client.clone(), "default");
    let pools: Api<GpuPool> = Api::namespaced(client.clone(), "default");
    let pool: GpuPool = serde_json::from_value(json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
        "metadata": { "name": "default" }, "spec": { "external": [{ "url": "http://203.0.113.8:8000" }] },
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();

    let port = free_port();
    let storage = format!("file://{}", dir.path().join("storage").display());
    let args = kubernetes_gateway_args(port, &dir.path().join("gw"), &storage);
    let proc = Proc::spawn(
        "gateway",
        PathBuf::from(env!("CARGO_BIN_EXE_purrify-gateway")).as_path(),
        &args,
        &[("KUBECONFIG", &kubeconfig)],
        dir.path(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(30, "the gateway is ready", || async {
        http.get(format!("{base}/readyz")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;

    let reg: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "k8s-tasks@example.com", "password": "correct horse 42"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["data"]["access_token"].as_str().unwrap_or_else(|| panic!("{reg}\n{}", proc.log())).to_owned();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(support::small_photo_png(64, 48)).file_name("cat.png"))
        .text("scale", "4");
    let up: Value =
        http.post(format!("{base}/api/v1/enhance")).bearer_auth(&token).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = up["task_id"].as_str().unwrap_or_else(|| panic!("{up}\n{}", proc.log())).to_owned();
    let detail = |id: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let v: Value = http.get(format!("{base}/api/tasks/{id}")).bearer_auth(&token).send().await.ok()?.json().await.ok()?;
            Some(v["data"].clone())
        }
    };

    // Cancel: the gateway annotates the CR; the operator's Cancelled status ends the task.
    let c: Value = http.post(format!("{base}/api/tasks/{id}/cancel")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(c["data"]["outcome"], "cancel_requested", "{c}");
    let cr = tasks.get(&id).await.unwrap();
    assert_eq!(cr.metadata.annotations.as_ref().and_then(|a| a.get(CANCEL_ANNOTATION)).map(String::as_str), Some("true"));
    let status = json!({ "status": { "phase": "Cancelled", "progress": 0.0, "attempts": 0 } });
    tasks.patch_status(&id, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    eventually(20, "the task reads cancelled", || async { detail(id.clone()).await.filter(|d| d["status"] == "cancelled") }).await;

    // Retry: a new task, hence a new CR with the same parameters.
    let r: Value = http.post(format!("{base}/api/tasks/{id}/retry")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let again = r["data"]["id"].as_str().unwrap_or_else(|| panic!("{r}\n{}", proc.log())).to_owned();
    assert_eq!((r["data"]["retry_of"].as_str(), r["data"]["status"].as_str()), (Some(id.as_str()), Some("pending")), "{r}");
    let (old, new) = (tasks.get(&id).await.unwrap(), tasks.get(&again).await.unwrap());
    assert_eq!(new.spec.params.scale, 4);
    assert_eq!(new.spec.params, old.spec.params);
    assert_ne!(new.spec.input.uri, old.spec.input.uri, "the retry has its own input object");
    assert_eq!(new.spec.owner.as_ref().map(|o| &o.user_id), old.spec.owner.as_ref().map(|o| &o.user_id));

    // The operator runs it; the detail follows the CR.
    let running = json!({ "status": { "phase": "Running", "progress": 0.5, "attempts": 1, "worker": "w0" } });
    tasks.patch_status(&again, &PatchParams::default(), &Patch::Merge(&running)).await.unwrap();
    let d = eventually(20, "the retry reads running", || async { detail(again.clone()).await.filter(|d| d["status"] == "running") }).await;
    assert!(d["progress"].as_f64().unwrap() > 0.0, "{d}");
    let again_twice: Value =
        http.post(format!("{base}/api/tasks/{id}/retry")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(again_twice["error_code"], "VALIDATION_ERROR", "{again_twice}");
}
