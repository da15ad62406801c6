//! Admin statistics and GPU monitoring through the router on SQLite and PostgreSQL: exact
//! figures from accounts, tasks and orders made through the API and the store; GPU servers
//! in standalone mode from fake workers over real HTTP (one registered through the webhook
//! reporting two GPUs and its host load, one configured as the backend URL reporting
//! nothing, as a CPU worker), a task running on one of them, a worker going offline, 404s,
//! and administrators only. The Kubernetes-mode source (GpuPool status) is tested against
//! kubesim with the gateway binary.

mod support;

use std::path::PathBuf;

use axum::http::StatusCode;
use purrify_inference::protocol::{GpuInfo, HostInfo};
use purrify_store::{BeginRefund, Guard, NewOrder, NewTask, SettledRefund, now_ms};
use purrify_testkit::eventually;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";
const GIB: u64 = 1 << 30;

fn admin_config(c: &mut purrify_gateway::config::Config) {
    c.bootstrap_admin_email = Some("root@example.com".into());
    c.bootstrap_admin_password = Some("root password 1".into());
    c.allow_private_workers = true;
}

async fn login(api: &Api, email: &str, password: &str) -> String {
    let r = api.post_json("/api/auth/login", json!({"email": email, "password": password}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]["access_token"].as_str().unwrap().to_owned()
}

async fn register(api: &Api, email: &str) -> (String, String) {
    let r = api.post_json("/api/auth/register", json!({"email": email, "password": PASSWORD}), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["access_token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

async fn data(api: &Api, uri: &str, token: &str) -> Value {
    let r = api.call("GET", uri, Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
    assert_eq!(r.body["success"], true);
    r.body["data"].clone()
}

const ADMIN_ONLY: [&str; 6] = [
    "/api/admin/stats",
    "/api/admin/stats/overview",
    "/api/gpu/servers",
    "/api/gpu/servers/gpu-00000000",
    "/api/gpu/servers/gpu-00000000/status",
    "/api/gpu/cluster/overview",
];

async fn assert_admin_only(api: &Api, user: &str) {
    for uri in ADMIN_ONLY {
        assert_envelope(&api.call("GET", uri, None, None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", uri);
        assert_envelope(&api.call("GET", uri, Some(user), None).await, StatusCode::FORBIDDEN, "ACCESS_DENIED", uri);
    }
}

on_both!(statistics_count_accounts_tasks_and_revenue_exactly, gpu_servers_show_what_workers_report);

async fn statistics_count_accounts_tasks_and_revenue_exactly(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let root = login(&api, "root@example.com", "root password 1").await;
    let (alice, alice_id) = register(&api, "alice@example.com").await;
    let (_, bob_id) = register(&api, "bob@example.com").await;
    register(&api, "carol@example.com").await;
    assert_admin_only(&api, &alice).await;

    let empty = data(&api, "/api/admin/stats", &root).await;
    assert_eq!(empty["total_tasks"], 0);
    assert_eq!(empty["total_revenue"].as_f64(), Some(0.0));

    // Active: root and alice logged in; bob created a task; carol only registered.
    login(&api, "alice@example.com", PASSWORD).await;
    let db = api.stack.state.tasks.db().clone();
    for n in 1..=5 {
        let mut t = NewTask::new(format!("bob-{n}"), "file:///in", "file:///out", Default::default());
        t.user_id = Some(bob_id.clone());
        db.insert_task(&t, std::time::Duration::from_secs(300)).await.unwrap();
    }
    // bob-1 stays queued (no worker), bob-2 runs, bob-3 completes, bob-4 fails, bob-5 is cancelled.
    assert!(db.claim_task("bob-2", 0, "http://203.0.113.1:8000", "bob-2-1").await.unwrap());
    assert!(db.claim_task("bob-3", 0, "http://203.0.113.1:8000", "bob-3-1").await.unwrap());
    assert!(db.complete_task("bob-3", "bob-3-1", &job_result()).await.unwrap());
    assert!(db.fail_task("bob-4", Guard::Queued, purrify_api::FailReason::BadInput, "not an image").await.unwrap());
    assert!(db.cancel_task("bob-5", Guard::Queued).await.unwrap());

    // Revenue: 30.00 + 6.00 paid, the 6.00 refunded, one order never paid.
    for (no, package, pay) in [
        ("P000000000000000000000101", "standard", true),
        ("P000000000000000000000102", "basic", true),
        ("P000000000000000000000103", "basic", false),
    ] {
        let package = db.package(package).await.unwrap().unwrap();
        let fen = package.price_fen;
        db.create_order(&NewOrder { out_trade_no: no.into(), user_id: alice_id.clone(), package, expires_at: now_ms() + 60_000 })
            .await
            .unwrap();
        if pay {
            db.mark_order_paid(no, &format!("tx-{no}"), fen).await.unwrap();
        }
    }
    assert!(matches!(db.begin_refund("P000000000000000000000102", "R101", "root", None).await.unwrap(), BeginRefund::Started { .. }));
    assert!(matches!(db.settle_refund("R101", true).await.unwrap(), SettledRefund::Refunded { .. }));

    let stats = data(&api, "/api/admin/stats", &root).await;
    assert_eq!(
        stats,
        json!({
            "total_users": 4, "active_users": 3,
            "total_tasks": 5, "pending_tasks": 1, "running_tasks": 1, "completed_tasks": 1, "failed_tasks": 1, "cancelled_tasks": 1,
            "total_gpu_servers": 0, "online_gpu_servers": 0,
            "total_revenue": 30.0,
        })
    );
    let overview = data(&api, "/api/admin/stats/overview", &root).await;
    let mut expected = stats.clone();
    expected.as_object_mut().unwrap().extend(
        json!({"new_users_today": 4, "tasks_today": 5, "queue_length": 1, "revenue_today": 30.0, "total_refunded": 6.0})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(overview, expected);
}

fn gpu(name: &str, utilization: f32, used_gib: f64, total_gib: u64) -> GpuInfo {
    GpuInfo { name: name.into(), utilization, memory_used: (used_gib * GIB as f64) as u64, memory_total: total_gib * GIB }
}

async fn gpu_servers_show_what_workers_report(backend: Backend) {
    let api = api_with(backend, admin_config).await;
    let root = login(&api, "root@example.com", "root password 1").await;
    let (alice, _) = register(&api, "alice@example.com").await;
    assert_admin_only(&api, &alice).await;

    assert_eq!(data(&api, "/api/gpu/servers", &root).await, json!([]));
    let empty = data(&api, "/api/gpu/cluster/overview", &root).await;
    assert_eq!((empty["total_servers"].as_u64(), empty["average_gpu_usage"].clone()), (Some(0), Value::Null), "{empty}");

    // A GPU worker, registered through the webhook.
    let gpu_worker = FakeWorker::start(2, Behavior::Hold).await;
    gpu_worker.report(
        vec![gpu("NVIDIA A10G", 85.5, 10.5, 12), gpu("NVIDIA A10G", 5.0, 1.0, 12)],
        Some(HostInfo { cpu_usage: 45.25, memory_used: 6 * GIB, memory_total: 8 * GIB }),
    );
    let port: u16 = gpu_worker.url.rsplit(':').next().unwrap().parse().unwrap();
    let reg = api.post_json("/webhook/register", json!({"ip": "127.0.0.1", "port": port, "secret": "test-secret"}), &[]).await;
    assert_eq!(reg.status, StatusCode::OK, "{}", reg.body);
    let gpu_id = reg.body["server_id"].as_str().expect("a server id").to_owned();

    // A task runs on it (the fake holds it at 50 %).
    let up = api.upload_as(&alice, &[("file", Some("a.png"), &small_photo_png(32, 24))]).await;
    assert_eq!(up.status, StatusCode::ACCEPTED, "{}", up.body);
    let task = up.body["task_id"].as_str().unwrap().to_owned();
    let status_uri = format!("/api/gpu/servers/{gpu_id}/status");
    let status = eventually(30, "the task runs on the GPU server at 50 %", || async {
        let s = data(&api, &status_uri, &root).await;
        (s["running_tasks"] == json!([{"task_id": task, "progress": 50.0}])).then_some(s)
    })
    .await;
    assert_eq!(
        (&status["server_id"], &status["status"], &status["cpu_usage"], &status["memory_usage"]),
        (&json!(gpu_id), &json!("online"), &json!(45.25), &json!(75.0))
    );
    assert_eq!(
        status["gpu_usage"],
        json!([
            {"gpu_id": 0, "name": "NVIDIA A10G", "usage": 85.5, "memory_used": 10.5, "memory_total": 12.0},
            {"gpu_id": 1, "name": "NVIDIA A10G", "usage": 5.0, "memory_used": 1.0, "memory_total": 12.0},
        ])
    );
    assert!(status["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{status}");

    // A CPU worker as the configured backend: no GPU figures, and none invented.
    let cpu_worker = FakeWorker::start(1, Behavior::Hold).await;
    let set =
        api.post_json("/api/v1/config/backend", json!({"backend_url": cpu_worker.url}), &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let servers = eventually(30, "both servers online", || async {
        let list = data(&api, "/api/gpu/servers", &root).await;
        (list.as_array().unwrap().iter().filter(|s| s["status"] == "online").count() == 2).then_some(list)
    })
    .await;
    let find = |source: &str| servers.as_array().unwrap().iter().find(|s| s["source"] == source).cloned().unwrap();
    let (g, c) = (find("registered"), find("configured"));
    let heartbeat = g["last_heartbeat"].clone();
    assert!(heartbeat.as_str().is_some_and(|t| t.ends_with('Z')), "{g}");
    assert_eq!(
        g,
        json!({
            "id": gpu_id, "name": format!("127.0.0.1:{port}"), "host": "127.0.0.1", "endpoint": gpu_worker.url, "source": "registered",
            "status": "online", "current_tasks": 1, "max_concurrent_tasks": 2, "total_memory": 24.0, "used_memory": 11.5,
            "gpu_count": 2, "cpu_usage": 45.25, "memory_usage": 75.0, "last_heartbeat": heartbeat,
        })
    );
    let cpu_id = c["id"].as_str().unwrap().to_owned();
    assert!(cpu_id.starts_with("w-") && cpu_id.len() == 14, "an id from the URL: {cpu_id}");
    assert_eq!(
        (&c["gpu_count"], &c["total_memory"], &c["cpu_usage"], &c["memory_usage"], &c["current_tasks"]),
        (&json!(0), &json!(0.0), &Value::Null, &Value::Null, &json!(0))
    );
    let detail = data(&api, &format!("/api/gpu/servers/{cpu_id}"), &root).await;
    assert_eq!((&detail["id"], &detail["gpu_usage"], &detail["running_tasks"]), (&json!(cpu_id), &json!([]), &json!([])));
    let detail = data(&api, &format!("/api/gpu/servers/{gpu_id}"), &root).await;
    assert_eq!((&detail["gpu_count"], &detail["running_tasks"][0]["task_id"]), (&json!(2), &json!(task)));
    assert_eq!(data(&api, "/api/gpu/servers", &root).await.as_array().unwrap().len(), 2, "ids are stable across reads");

    let overview = data(&api, "/api/gpu/cluster/overview", &root).await;
    assert_eq!(
        overview,
        json!({
            "total_servers": 2, "online_servers": 2, "offline_servers": 0, "total_gpus": 2, "busy_gpus": 1, "idle_gpus": 1,
            "total_running_tasks": 1, "queue_length": 0, "average_gpu_usage": 45.25, "total_memory": 24.0, "used_memory": 11.5,
        })
    );

    for uri in
        ["/api/gpu/servers/gpu-ffffffff", "/api/gpu/servers/gpu-ffffffff/status", "/api/gpu/servers/a.b", "/api/gpu/servers/w-0/status"]
    {
        assert_envelope(&api.call("GET", uri, Some(&root), None).await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", uri);
    }

    // The CPU worker dies: offline, counted so in the statistics.
    cpu_worker.kill();
    eventually(30, "the dead worker is offline", || async {
        let s = data(&api, &format!("/api/gpu/servers/{cpu_id}/status"), &root).await;
        (s["status"] == "offline").then_some(())
    })
    .await;
    let stats = data(&api, "/api/admin/stats", &root).await;
    assert_eq!((&stats["total_gpu_servers"], &stats["online_gpu_servers"], &stats["running_tasks"]), (&json!(2), &json!(1), &json!(1)));

    // The task finishes: nothing runs on the server any more.
    gpu_worker.release(1);
    eventually(30, "the finished task leaves the server", || async {
        (data(&api, &status_uri, &root).await["running_tasks"] == json!([])).then_some(())
    })
    .await;
}

/// Kubernetes mode: the same shape from the GpuPool status the operator writes (kubesim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_gpu_servers_come_from_the_gpupool_status() {
    use kube::api::{Api as KubeApi, Patch, PatchParams, PostParams};
    use purrify_api::{EnhanceTask, GpuPool};

    let (addr, _sim) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kubesim::write_kubeconfig(&kubeconfig, addr).unwrap();
    let client = purrify_testkit::cluster::kube_client(&kubeconfig).await;
    purrify_testkit::cluster::install_crds(&client).await;
    let pools: KubeApi<GpuPool> = KubeApi::namespaced(client.clone(), "default");
    let pool: GpuPool = serde_json::from_value(json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "default"},
        "spec": {"external": [{"url": "http://203.0.113.7:8000"}, {"url": "http://203.0.113.8:8000"}]},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let status = json!({"status": {"healthyWorkers": 1, "workers": [
        {"name": "gpu-pod-0", "endpoint": "http://203.0.113.7:8000", "healthy": true, "inFlight": 1,
         "lastHeartbeat": "2026-01-15T10:45:00Z", "gpu": {"utilization": 62.5, "memoryUsed": 6 * GIB, "memoryTotal": 16 * GIB},
         "gpus": [{"utilization": 62.5, "memoryUsed": 6 * GIB, "memoryTotal": 16 * GIB},
                  {"utilization": 5.0, "memoryUsed": 2 * GIB, "memoryTotal": 16 * GIB}],
         "host": {"cpuUsage": 37.0, "memoryUsed": 8 * GIB, "memoryTotal": 32 * GIB}},
        {"name": "cpu-pod-1", "endpoint": "http://203.0.113.8:8000", "healthy": false, "inFlight": 0},
    ]}});
    pools.patch_status("default", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let port = purrify_testkit::free_port();
    let mut args = purrify_testkit::cluster::kubernetes_gateway_args(
        port,
        &dir.path().join("gw"),
        &format!("file://{}", dir.path().join("storage").display()),
    );
    args.extend(["--bootstrap-admin-email", "root@example.com", "--bootstrap-admin-password", "root password 1"].map(String::from));
    let proc = purrify_testkit::Proc::spawn(
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
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "root@example.com", "password": "root password 1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["access_token"].as_str().unwrap_or_else(|| panic!("{login}\n{}", proc.log())).to_owned();
    let get = |path: String| {
        let req = http.get(format!("{base}{path}")).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()["data"].clone()
        }
    };

    // A task the operator runs on the GPU pod, as mirrored from its status.
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(small_photo_png(32, 24)).file_name("cat.png"));
    let up: Value = http.post(format!("{base}/api/v1/enhance")).multipart(form).send().await.unwrap().json().await.unwrap();
    let task = up["task_id"].as_str().unwrap_or_else(|| panic!("{up}\n{}", proc.log())).to_owned();
    let tasks: KubeApi<EnhanceTask> = KubeApi::namespaced(client.clone(), "default");
    let running = json!({"status": {"phase": "Running", "progress": 0.25, "worker": "http://203.0.113.7:8000", "attempts": 1}});
    tasks.patch_status(&task, &PatchParams::default(), &Patch::Merge(&running)).await.unwrap();

    let servers = eventually(30, "both pool workers listed", || async {
        let list = get("/api/gpu/servers".into()).await;
        (list.as_array().map(Vec::len) == Some(2)).then_some(list)
    })
    .await;
    let gpu_server = &servers[0];
    let id = gpu_server["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("w-"), "{gpu_server}");
    assert_eq!(
        *gpu_server,
        json!({
            "id": id, "name": "gpu-pod-0", "host": "203.0.113.7", "endpoint": "http://203.0.113.7:8000", "source": "pool",
            "status": "online", "current_tasks": 1, "max_concurrent_tasks": null, "total_memory": 32.0, "used_memory": 8.0,
            "gpu_count": 2, "cpu_usage": 37.0, "memory_usage": 25.0, "last_heartbeat": "2026-01-15T10:45:00Z",
        })
    );
    assert_eq!((&servers[1]["name"], &servers[1]["status"], &servers[1]["gpu_count"]), (&json!("cpu-pod-1"), &json!("offline"), &json!(0)));

    let status = eventually(30, "the running task shows on its server", || async {
        let s = get(format!("/api/gpu/servers/{id}/status")).await;
        (s["running_tasks"] == json!([{"task_id": task, "progress": 25.0}])).then_some(s)
    })
    .await;
    assert_eq!(
        status["gpu_usage"],
        json!([
            {"gpu_id": 0, "name": null, "usage": 62.5, "memory_used": 6.0, "memory_total": 16.0},
            {"gpu_id": 1, "name": null, "usage": 5.0, "memory_used": 2.0, "memory_total": 16.0},
        ])
    );
    assert_eq!((&status["cpu_usage"], &status["memory_usage"]), (&json!(37.0), &json!(25.0)), "the host load as the worker reports it");
    let overview = get("/api/gpu/cluster/overview".into()).await;
    assert_eq!(
        (&overview["total_servers"], &overview["online_servers"], &overview["total_gpus"], &overview["busy_gpus"]),
        (&json!(2), &json!(1), &json!(2), &json!(1))
    );
    assert_eq!((&overview["idle_gpus"], &overview["total_memory"], &overview["used_memory"]), (&json!(1), &json!(32.0), &json!(8.0)));
    assert_eq!((&overview["average_gpu_usage"], &overview["total_running_tasks"]), (&json!(33.75), &json!(1)));
    let stats = get("/api/admin/stats".into()).await;
    assert_eq!((&stats["total_gpu_servers"], &stats["online_gpu_servers"]), (&json!(2), &json!(1)));
}
