//! The gateway's Kubernetes backend against the project's in-memory API server
//! (`purrify-kubesim`, in this process, so its request counters show which API calls a
//! gateway request makes). The gateway is the real binary, pointed at the server by
//! KUBECONFIG as in a cluster. No operator runs: the tests write task status the way the
//! operator does (status subresource) and delete CRs the way its TTL does.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use purrify_api::{EnhanceTask, GpuPool};
use purrify_gateway::domain::tasks::kubernetes::{CANCEL_ANNOTATION, DELETED_MESSAGE, MISSING_MESSAGE};
use purrify_testkit::cluster::kubernetes_gateway_args;
use purrify_testkit::{Proc, free_port};
use serde_json::{Value, json};

const SECRET: &str = "k8s-test-secret";
const ADMIN: &str = "k8s-test-admin";

struct Cluster {
    sim: Option<kubesim::ServerHandle>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
    http: reqwest::Client,
}

struct Gateway {
    proc: Proc,
    base: String,
}

impl Cluster {
    async fn start() -> Self {
        let (addr, sim) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        kubesim::write_kubeconfig(&kubeconfig, addr).unwrap();
        let client = purrify_testkit::cluster::kube_client(&kubeconfig).await;
        purrify_testkit::cluster::install_crds(&client).await;
        Self { sim: Some(sim), addr, dir, kubeconfig, client, http: reqwest::Client::new() }
    }

    fn sim(&self) -> &kubesim::ServerHandle {
        self.sim.as_ref().expect("kubesim is running")
    }

    /// Stops the API server (the gateway's next cluster call fails).
    async fn stop_api_server(&mut self) {
        self.sim.take().expect("running").shutdown().await.unwrap();
    }

    /// A fresh (empty) API server on the same address, CRDs applied.
    async fn restart_api_server(&mut self) {
        let (_, sim) = kubesim::Server::start(self.addr).await.unwrap();
        self.sim = Some(sim);
        purrify_testkit::cluster::install_crds(&self.client).await;
    }

    fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    async fn gateway(&self) -> Gateway {
        let port = free_port();
        let mut args = kubernetes_gateway_args(port, &self.dir.path().join("gw"), &format!("file://{}", self.storage_dir().display()));
        args.extend(["--webhook-secret", SECRET, "--admin-token", ADMIN].map(String::from));
        let proc = Proc::spawn(
            "gateway",
            PathBuf::from(env!("CARGO_BIN_EXE_purrify-gateway")).as_path(),
            &args,
            &[("KUBECONFIG", &self.kubeconfig)],
            self.dir.path(),
        );
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..600 {
            if let Ok(r) = self.http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Gateway { proc, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway never became ready:\n{}", proc.log());
    }

    fn pools(&self) -> Api<GpuPool> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn tasks(&self) -> Api<EnhanceTask> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// An external-only pool whose status (as the operator writes it) lists these workers.
    async fn pool_with_workers(&self, name: &str, workers: &[(&str, bool)]) {
        let external: Vec<Value> = workers.iter().map(|(url, _)| json!({ "url": url })).collect();
        let pool: GpuPool = serde_json::from_value(json!({
            "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
            "metadata": { "name": name }, "spec": { "external": external },
        }))
        .unwrap();
        self.pools().create(&PostParams::default(), &pool).await.unwrap();
        self.pool_status(name, workers).await;
    }

    async fn pool_status(&self, name: &str, workers: &[(&str, bool)]) {
        let ws: Vec<Value> = workers
            .iter()
            .enumerate()
            .map(|(i, (url, healthy))| json!({ "name": format!("w{i}"), "endpoint": url, "healthy": healthy }))
            .collect();
        let healthy = workers.iter().filter(|(_, h)| *h).count();
        let status = json!({ "status": { "workers": ws, "healthyWorkers": healthy } });
        self.pools().patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }

    /// Writes task status the way the operator does.
    async fn task_status(&self, id: &str, status: Value) {
        self.tasks().patch_status(id, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await.unwrap();
    }

    /// The operator's worker writing a result: a real JPEG at the task's output URI, and the
    /// Succeeded status pointing at it. Returns the bytes.
    async fn succeed(&self, id: &str) -> Vec<u8> {
        let cr = self.tasks().get(id).await.unwrap();
        let path = PathBuf::from(cr.spec.output.uri.strip_prefix("file://").expect("file:// storage"));
        let img = image::load_from_memory(&support::small_photo_png(64, 48)).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        let bytes = out.into_inner();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        self.task_status(
            id,
            json!({
                "phase": "Succeeded", "progress": 1.0, "worker": "w0", "attempts": 1,
                "result": { "uri": cr.spec.output.uri, "width": 64, "height": 48, "bytes": bytes.len(), "faces": 0 },
            }),
        )
        .await;
        bytes
    }

    async fn upload(&self, gw: &Gateway) -> String {
        let form = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(support::small_photo_png(64, 48)).file_name("cat.png"))
            .text("quality_level", "fast");
        let r = self.http.post(format!("{}/api/v1/enhance", gw.base)).multipart(form).send().await.unwrap();
        let code = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(code, 202, "{body}\n{}", gw.proc.log());
        body["task_id"].as_str().unwrap().to_string()
    }

    async fn get(&self, url: String) -> (u16, Value) {
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, gw: &Gateway, id: &str) -> Value {
        self.get(format!("{}/api/v1/status/{id}", gw.base)).await.1
    }

    async fn wait_status(&self, gw: &Gateway, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let s = self.status(gw, id).await;
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {id} never became {what}; last {}\n{}", self.status(gw, id).await, gw.proc.log());
    }

    async fn webhook(&self, gw: &Gateway, path: &str, ip: &str, port: u16) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/webhook/{path}", gw.base))
            .json(&json!({ "ip": ip, "port": port, "secret": SECRET }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn registered(&self, gw: &Gateway) -> Vec<String> {
        let (code, body) = self.get(format!("{}/webhook/servers?secret={SECRET}", gw.base)).await;
        assert_eq!(code, 200, "{body}");
        body["data"]["servers"].as_array().unwrap().iter().map(|s| s["url"].as_str().unwrap().to_string()).collect()
    }

    async fn route_to(&self, gw: &Gateway, pool: &str) {
        let r = self
            .http
            .post(format!("{}/api/v1/config/backend", gw.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "pool": pool }))
            .send()
            .await
            .unwrap();
        let code = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["pool"], pool);
    }

    fn count(&self, verb: &str, resource: &str) -> u64 {
        self.sim().request_count(verb, resource)
    }
}

async fn download(c: &Cluster, gw: &Gateway, id: &str) -> (u16, Vec<u8>) {
    let r = c.http.get(format!("{}/api/v1/download/{id}", gw.base)).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.bytes().await.unwrap().to_vec())
}

fn endpoints(pool: &GpuPool) -> Vec<(String, Option<String>)> {
    pool.spec.external.iter().map(|e| (e.url.clone(), e.name.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_without_a_pool_creates_an_external_only_pool() {
    let c = Cluster::start().await;
    let gw = c.gateway().await;
    assert!(c.pools().get_opt("default").await.unwrap().is_none());

    let (code, body) = c.webhook(&gw, "register", "203.0.113.7", 8000).await;
    assert_eq!(code, 200, "{body}\n{}", gw.proc.log());
    let id = body["server_id"].as_str().unwrap().to_string();
    let pool = c.pools().get("default").await.unwrap();
    assert_eq!(endpoints(&pool), vec![("http://203.0.113.7:8000".to_string(), Some(id))]);
    assert!(pool.spec.image.is_none() && pool.spec.replicas.is_none(), "external-only");
    assert!(pool.spec.concurrency_per_replica >= 1, "valid against the CRD");
    let managers: Vec<_> = pool.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, vec![purrify_gateway::domain::tasks::kubernetes::FIELD_MANAGER.to_string()]);

    // A second server joins the pool the first one created.
    let (code, _) = c.webhook(&gw, "register", "203.0.113.8", 8000).await;
    assert_eq!(code, 200);
    assert_eq!(c.pools().get("default").await.unwrap().spec.external.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_the_last_server_leaves_an_empty_external_only_pool() {
    let c = Cluster::start().await;
    let gw = c.gateway().await;
    let (code, body) = c.webhook(&gw, "register", "203.0.113.7", 8000).await;
    assert_eq!(code, 200, "{body}");
    let id = body["server_id"].clone();

    let (code, body) = c.webhook(&gw, "unregister", "203.0.113.7", 8000).await;
    assert_eq!(code, 200, "{body}\n{}", gw.proc.log());
    assert_eq!(body["server_id"], id);
    let pool = c.pools().get("default").await.unwrap();
    assert!(pool.spec.external.is_empty(), "{:?}", pool.spec.external);
    assert!(c.registered(&gw).await.is_empty());
    // Nothing left anywhere: a second unregister is a 404.
    let (code, _) = c.webhook(&gw, "unregister", "203.0.113.7", 8000).await;
    assert_eq!(code, 404);
    // The emptied pool still takes registrations.
    let (code, _) = c.webhook(&gw, "register", "203.0.113.9", 8000).await;
    assert_eq!(code, 200);
    assert_eq!(c.pools().get("default").await.unwrap().spec.external.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_change_keeps_the_registration_for_a_retry() {
    let mut c = Cluster::start().await;
    let gw = c.gateway().await;
    for ip in ["203.0.113.7", "203.0.113.8"] {
        assert_eq!(c.webhook(&gw, "register", ip, 8000).await.0, 200);
    }

    c.stop_api_server().await;
    let (code, body) = c.webhook(&gw, "unregister", "203.0.113.7", 8000).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error_code"], "SERVER_UNAVAILABLE", "{body}");
    assert_eq!(c.registered(&gw).await.len(), 2, "the row stays while the pool still has the endpoint");

    // The API server is back (empty, as after losing etcd; the pool is restored by hand):
    // the retry finds the registration and removes both.
    c.restart_api_server().await;
    c.pool_with_workers("default", &[("http://203.0.113.7:8000", true), ("http://203.0.113.8:8000", true)]).await;
    let (code, body) = c.webhook(&gw, "unregister", "203.0.113.7", 8000).await;
    assert_eq!(code, 200, "{body}\n{}", gw.proc.log());
    assert_eq!(endpoints(&c.pools().get("default").await.unwrap()), vec![("http://203.0.113.8:8000".to_string(), None)]);
    assert_eq!(c.registered(&gw).await, vec!["http://203.0.113.8:8000".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_routed_pool_from_the_watch_cache() {
    let c = Cluster::start().await;
    c.pool_with_workers("default", &[("http://203.0.113.7:8000", false)]).await;
    c.pool_with_workers("gpu-b", &[("http://203.0.113.8:8000", true), ("http://203.0.113.9:8000", true)]).await;
    let gw = c.gateway().await;
    let health = || c.get(format!("{}/api/v1/health", gw.base));

    let (code, body) = health().await;
    assert_eq!(code, 503, "the default pool has no healthy worker: {body}");
    assert_eq!(body["backend_status"]["total_servers"], 1);

    c.route_to(&gw, "gpu-b").await;
    let (code, body) = health().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["backend_status"]["healthy_servers"], 2);

    let (gets, lists) = (c.count("get", "gpupools"), c.count("list", "gpupools"));
    for _ in 0..50 {
        assert_eq!(health().await.0, 200);
    }
    for _ in 0..20 {
        let (code, info) = c.get(format!("{}/api/v1/info", gw.base)).await;
        assert_eq!(code, 200);
        assert_eq!(info["backend_servers"]["healthy_servers"], 2, "{info}");
    }
    for _ in 0..20 {
        let text = c.http.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
        assert!(text.lines().any(|l| l == "purrify_gateway_healthy_workers 2"), "{text}");
    }
    assert_eq!((c.count("get", "gpupools"), c.count("list", "gpupools")), (gets, lists), "health, info and metrics read the cache");

    // The cache follows the operator's status writes through the watch.
    c.pool_status("gpu-b", &[("http://203.0.113.8:8000", false), ("http://203.0.113.9:8000", true)]).await;
    let start = Instant::now();
    loop {
        let (_, body) = health().await;
        if body["backend_status"]["healthy_servers"] == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "health never saw the status change: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    c.pool_status("gpu-b", &[("http://203.0.113.8:8000", false)]).await;
    let start = Instant::now();
    while health().await.0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(10), "health never turned unhealthy");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((c.count("get", "gpupools"), c.count("list", "gpupools")), (gets, lists));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_to_the_routed_pool_and_stay_downloadable_after_the_ttl_delete() {
    let c = Cluster::start().await;
    c.pool_with_workers("gpu-b", &[("http://203.0.113.8:8000", true)]).await;
    let gw = c.gateway().await;
    c.route_to(&gw, "gpu-b").await;

    let id = c.upload(&gw).await;
    let cr = c.tasks().get(&id).await.expect("the upload is an EnhanceTask");
    assert_eq!(cr.spec.pool, "gpu-b");
    assert_eq!(cr.metadata.labels.as_ref().unwrap()["purrify.io/pool"], "gpu-b");
    assert_eq!(cr.spec.params.quality_level, purrify_api::QualityLevel::Fast);
    assert!(cr.spec.output.uri.starts_with("file://"), "{}", cr.spec.output.uri);

    // Polls are served from the watch-fed hub.
    let (gets, lists) = (c.count("get", "enhancetasks"), c.count("list", "enhancetasks"));
    for _ in 0..100 {
        assert_eq!(c.status(&gw, &id).await["status"], "queued");
    }
    c.task_status(&id, json!({ "phase": "Running", "progress": 0.5, "worker": "w0", "attempts": 1 })).await;
    let s = c.wait_status(&gw, &id, "processing", |s| s["status"] == "processing").await;
    assert_eq!(s["progress"], 0.5);
    let (code, _) = download(&c, &gw, &id).await;
    assert_eq!(code, 409, "not finished yet");
    assert_eq!((c.count("get", "enhancetasks"), c.count("list", "enhancetasks")), (gets, lists), "no API call per poll");
    let bytes = c.succeed(&id).await;
    // (`succeed` read the CR itself.)
    let (gets, lists) = (c.count("get", "enhancetasks"), c.count("list", "enhancetasks"));
    let s = c.wait_status(&gw, &id, "completed", |s| s["status"] == "completed").await;
    assert_eq!(s["result"]["width"], 64);
    assert_eq!(s["download_url"], format!("/api/v1/download/{id}"));
    for _ in 0..100 {
        assert_eq!(c.status(&gw, &id).await["status"], "completed");
    }
    assert_eq!((c.count("get", "enhancetasks"), c.count("list", "enhancetasks")), (gets, lists), "no API call per poll");

    // The operator's TTL deletes the finished CR; the gateway keeps the outcome.
    c.tasks().delete(&id, &DeleteParams::default()).await.unwrap();
    while c.tasks().get_opt(&id).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.status(&gw, &id).await["status"], "completed");
    let (code, got) = download(&c, &gw, &id).await;
    assert_eq!(code, 200);
    assert_eq!(got, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_deleted_before_it_finished_fails_or_is_cancelled() {
    let c = Cluster::start().await;
    c.pool_with_workers("default", &[("http://203.0.113.8:8000", true)]).await;
    let mut gw = c.gateway().await;

    // Queued, deleted by hand.
    let queued = c.upload(&gw).await;
    c.wait_status(&gw, &queued, "queued", |s| s["status"] == "queued").await;
    c.tasks().delete(&queued, &DeleteParams::default()).await.unwrap();
    let s = c.wait_status(&gw, &queued, "failed", |s| s["status"] == "failed").await;
    assert_eq!(s["error"], DELETED_MESSAGE, "{s}");
    assert_eq!(s["error_code"], "INTERNAL_ERROR");

    // Running, the gateway asked for a cancel (the annotation KubeBackend::cancel writes),
    // then the CR went before the operator wrote Cancelled.
    let running = c.upload(&gw).await;
    c.task_status(&running, json!({ "phase": "Running", "progress": 0.25, "attempts": 1 })).await;
    c.wait_status(&gw, &running, "processing", |s| s["status"] == "processing").await;
    let annotate = json!({ "metadata": { "annotations": { CANCEL_ANNOTATION: "true" } } });
    c.tasks().patch(&running, &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    c.tasks().delete(&running, &DeleteParams::default()).await.unwrap();
    let s = c.wait_status(&gw, &running, "cancelled", |s| s["status"] == "failed").await;
    assert_eq!(s["error_code"], "CANCELLED", "{s}");

    // Both outcomes are in the database, not only in memory.
    gw.proc.kill();
    let gw = c.gateway().await;
    assert_eq!(c.status(&gw, &queued).await["error"], DELETED_MESSAGE);
    assert_eq!(c.status(&gw, &running).await["error_code"], "CANCELLED");
    let (code, _) = download(&c, &gw, &queued).await;
    assert_eq!(code, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_missing_unfinished_tasks_end_and_finished_ones_stay_downloadable() {
    let c = Cluster::start().await;
    c.pool_with_workers("default", &[("http://203.0.113.8:8000", true)]).await;
    let mut gw = c.gateway().await;

    let queued = c.upload(&gw).await;
    let created = Instant::now();
    let running = c.upload(&gw).await;
    let done = c.upload(&gw).await;
    let kept = c.upload(&gw).await;
    c.task_status(&running, json!({ "phase": "Running", "progress": 0.5, "attempts": 1 })).await;
    c.wait_status(&gw, &running, "processing", |s| s["status"] == "processing").await;
    let bytes = c.succeed(&done).await;
    c.wait_status(&gw, &done, "completed", |s| s["status"] == "completed").await;

    // The gateway is down while the CRs go: no watch sees the deletes.
    gw.proc.kill();
    for id in [&queued, &running, &done] {
        c.tasks().delete(id, &DeleteParams::default()).await.unwrap();
    }
    // A queued row gets a grace period (its create may still be in flight elsewhere).
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(created.elapsed())).await;
    let gw = c.gateway().await;

    let s = c.wait_status(&gw, &running, "failed", |s| s["status"] == "failed").await;
    assert_eq!(s["error"], MISSING_MESSAGE, "{s}");
    let s = c.wait_status(&gw, &queued, "failed", |s| s["status"] == "failed").await;
    assert_eq!(s["error"], MISSING_MESSAGE, "{s}");
    assert_eq!(c.status(&gw, &kept).await["status"], "queued", "a task whose CR is there is untouched");
    assert_eq!(c.status(&gw, &done).await["status"], "completed");
    let (code, got) = download(&c, &gw, &done).await;
    assert_eq!(code, 200);
    assert_eq!(got, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_a_token_belongs_to_its_user_in_the_custom_resource() {
    let c = Cluster::start().await;
    c.pool_with_workers("gpu-a", &[("http://203.0.113.8:8000", true)]).await;
    let gw = c.gateway().await;
    c.route_to(&gw, "gpu-a").await;
    let reg: Value = c
        .http
        .post(format!("{}/api/auth/register", gw.base))
        .json(&json!({"email": "k8s@example.com", "password": "correct horse 42"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (token, user_id) = (reg["data"]["access_token"].as_str().unwrap(), reg["data"]["user"]["id"].as_str().unwrap());
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(support::small_photo_png(64, 48)).file_name("cat.png"));
    let up: Value =
        c.http.post(format!("{}/api/v1/enhance", gw.base)).bearer_auth(token).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = up["task_id"].as_str().unwrap().to_owned();
    let cr = c.tasks().get(&id).await.unwrap();
    assert_eq!(cr.spec.owner.as_ref().map(|o| o.user_id.as_str()), Some(user_id), "spec.owner.userId names the account");
    let owner_status = |t: Option<&str>| {
        let mut req = c.http.get(format!("{}/api/v1/status/{id}", gw.base));
        if let Some(t) = t {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!((owner_status(Some(token)).await, owner_status(None).await), (200, 404));
    c.succeed(&id).await;
    let completed = purrify_testkit::eventually(20, "the owner sees the task completed", || async {
        let s: Value = c.http.get(format!("{}/api/v1/status/{id}", gw.base)).bearer_auth(token).send().await.ok()?.json().await.ok()?;
        (s["status"] == "completed").then_some(s)
    })
    .await;
    assert_eq!(completed["download_url"], format!("/api/v1/download/{id}"));
    assert_eq!(owner_status(None).await, 404, "still hidden from others");
    let r = c.http.get(format!("{}/api/v1/download/{id}", gw.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the owner downloads the result");

    // An anonymous upload is queued fairly under its client's group, owned by nobody.
    let anon = c.upload(&gw).await;
    let cr = c.tasks().get(&anon).await.unwrap();
    assert!(cr.spec.owner.as_ref().is_some_and(|o| o.user_id.starts_with("anon:")), "{:?}", cr.spec.owner);
    assert_eq!(c.status(&gw, &anon).await["status"], "queued");
}
