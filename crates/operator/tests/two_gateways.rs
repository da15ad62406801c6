//! Two gateway replicas in Kubernetes mode on one PostgreSQL database (the Helm chart's
//! default): kubesim, one operator, a held fake worker and two `purrify-gateway` processes
//! sharing the history database and the `file://` storage. Tasks are uploaded through both,
//! one gateway is SIGKILLed while they run, and the survivor must finish the history of every
//! task (its status, its PostgreSQL row, the SSE stream of a task uploaded through the other
//! replica, the download); the killed replica, restarted, must read the same history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, PostParams};
use purrify_api::{GpuPool, TaskStatus};
use purrify_inference::client::SseParser;
use purrify_store::Db;
use purrify_store::testing::TestPostgresUrl;
use purrify_testkit::cluster::{KubesimProcess, kubernetes_gateway_args};
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use purrify_testkit::gateway_client::{completed, status, upload, wait_for, wait_ready};
use purrify_testkit::{Proc, eventually, free_port, workspace_bin as bin};
use serde_json::{Value, json};

const POOL: &str = "default";
/// Tasks uploaded through each gateway.
const PER_GATEWAY: usize = 2;

/// A small synthetic photo as PNG.
fn photo() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The JPEG a worker would have written for a task.
fn result_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(y * 5) as u8, (x * 4) as u8, 64]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// One `purrify-gateway --backend kubernetes` replica.
struct Gateway {
    proc: Proc,
    port: u16,
}

struct Setup<'a> {
    dir: &'a Path,
    kubeconfig: PathBuf,
    storage: String,
    database_url: String,
    operator_port: u16,
}

impl Setup<'_> {
    /// Starts replica `name` on `port` (not waiting for it to be ready).
    fn gateway(&self, name: &str, port: u16) -> Gateway {
        let mut args = kubernetes_gateway_args(port, &self.dir.join(name), &self.storage);
        args.extend([
            "--operator-url".to_string(),
            format!("http://127.0.0.1:{}", self.operator_port),
            "--database-url".to_string(),
            self.database_url.clone(),
        ]);
        let proc = Proc::spawn(name, &bin("purrify-gateway"), &args, &[("KUBECONFIG", self.kubeconfig.as_path())], self.dir);
        Gateway { proc, port }
    }
}

/// Reads the SSE stream `resp` until a `task_complete` or `task_failed` event: the names of
/// all events received, in order. `first` is told when the first event arrived.
async fn read_events(resp: reqwest::Response, first: tokio::sync::oneshot::Sender<()>) -> Vec<String> {
    let mut first = Some(first);
    let mut parser = SseParser::new();
    let mut body = resp.bytes_stream();
    let mut names = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        for ev in parser.feed(&chunk).expect("a well-formed event stream") {
            let name = ev.event.clone();
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            let last = matches!(name.as_str(), "task_complete" | "task_failed");
            names.push(name);
            if last {
                return names;
            }
        }
    }
    names
}

/// `GET /api/v1/download/{id}` on the gateway at `port` must answer `jpeg`.
async fn download(http: &reqwest::Client, port: u16, id: &str, jpeg: &[u8]) {
    let r = http.get(format!("http://127.0.0.1:{port}/api/v1/download/{id}")).send().await.unwrap();
    let code = r.status();
    let kind = r.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
    let body = r.bytes().await.unwrap();
    assert_eq!(code, 200, "download of {id} from port {port}: {}", String::from_utf8_lossy(&body));
    assert_eq!(kind.as_deref(), Some("image/jpeg"), "download of {id} from port {port}");
    assert_eq!(body.as_ref(), jpeg, "download of {id} from port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_the_history_and_one_survives_the_other_being_killed() {
    let pg = TestPostgresUrl::create().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let http = reqwest::Client::new();

    let sim = KubesimProcess::start(dir).await;
    let operator_port = free_port();
    let operator = Proc::spawn(
        "operator",
        &bin("purrify-operator"),
        &[
            "run",
            "--namespace",
            "default",
            "--lease-namespace",
            "default",
            "--metrics-addr",
            &format!("127.0.0.1:{operator_port}"),
            "--probe-interval-seconds",
            "1",
        ]
        .map(String::from),
        &[("KUBECONFIG", sim.kubeconfig.as_path())],
        dir,
    );

    // The only worker: an external-only default pool, healthy before anything is uploaded,
    // taking every task at once (the default is 2 jobs per worker) so all are held running.
    let worker = FakeWorker::start(2 * PER_GATEWAY as u32, Behavior::Hold).await;
    let pools: Api<GpuPool> = Api::namespaced(sim.client.clone(), "default");
    let pool: GpuPool = serde_json::from_value(json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
        "metadata": { "name": POOL }, "spec": { "external": [{ "url": worker.url }], "concurrencyPerReplica": 2 * PER_GATEWAY },
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();

    // Both replicas start at once against the same empty database, as a Helm install does.
    let storage_dir = dir.join("storage");
    let setup = Setup {
        dir,
        kubeconfig: sim.kubeconfig.clone(),
        storage: format!("file://{}", storage_dir.display()),
        database_url: pg.url.clone(),
        operator_port,
    };
    let (port_a, port_b) = (free_port(), free_port());
    let a = setup.gateway("gateway-a", port_a);
    let mut b = setup.gateway("gateway-b", port_b);
    wait_ready(&http, &format!("http://127.0.0.1:{operator_port}/readyz"), &operator).await;
    wait_ready(&http, &format!("http://127.0.0.1:{port_a}/readyz"), &a.proc).await;
    wait_ready(&http, &format!("http://127.0.0.1:{port_b}/readyz"), &b.proc).await;
    eventually(30, &format!("the operator to report {} healthy in GpuPool {POOL}", worker.url), || async {
        let workers = pools.get(POOL).await.ok()?.status?.workers;
        (workers.len() == 1 && workers[0].healthy).then_some(())
    })
    .await;

    // Uploads through both replicas, all held running on the worker.
    let mut ids_a = Vec::new();
    let mut ids_b = Vec::new();
    for _ in 0..PER_GATEWAY {
        ids_a.push(upload(&http, a.port, photo(), 400).await);
        ids_b.push(upload(&http, b.port, photo(), 400).await);
    }
    let all: Vec<String> = ids_a.iter().chain(&ids_b).cloned().collect();
    if tokio::time::timeout(Duration::from_secs(30), worker.wait_started(all.len())).await.is_err() {
        let mut states = Vec::new();
        for id in &all {
            states.push(status(&http, a.port, id).await.to_string());
        }
        panic!(
            "the worker started {:?} of {all:?}; statuses {states:?}\n--- operator ---\n{}\n--- gateway-a ---\n{}\n--- gateway-b ---\n{}",
            worker.started(),
            operator.log(),
            a.proc.log(),
            b.proc.log()
        );
    }
    let processing = |s: &Value| s["status"] == "processing";
    for id in &all {
        for gw in [&a, &b] {
            wait_for(&http, gw.port, id, "processing", processing, &[&operator, &a.proc, &b.proc]).await;
        }
    }

    // A live stream on the survivor (a) of a task uploaded through the replica about to die.
    let followed = ids_b[0].clone();
    let resp = http.get(format!("http://127.0.0.1:{}/api/v1/status/{followed}/events", a.port)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "SSE on gateway-a for {followed}");
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let stream = tokio::spawn(read_events(resp, first_tx));
    tokio::time::timeout(Duration::from_secs(30), first_rx).await.expect("the SSE stream's first event").unwrap();

    // gateway-b dies mid-task; the worker then finishes every task, writing its output.
    b.proc.kill();
    let jpeg = result_jpeg();
    std::fs::create_dir_all(storage_dir.join("results")).unwrap();
    for id in &all {
        std::fs::write(storage_dir.join("results").join(format!("{id}.jpg")), &jpeg).unwrap();
    }
    worker.release(all.len());

    // The survivor reports every task completed, whichever replica took the upload...
    for id in &all {
        wait_for(&http, a.port, id, "completed", completed, &[&operator, &a.proc]).await;
    }
    // ...streams the other replica's task to its end...
    let names = tokio::time::timeout(Duration::from_secs(30), stream).await.expect("the SSE stream ends").unwrap();
    assert_eq!(names.last().map(String::as_str), Some("task_complete"), "SSE events of {followed} on gateway-a: {names:?}");
    assert!(!names.iter().any(|n| n == "task_failed"), "SSE events of {followed} on gateway-a: {names:?}");
    // ...has every history row completed with its result...
    let db = Db::connect(&pg.url).await.unwrap();
    for id in &all {
        let row = eventually(30, &format!("the history row of {id} to be completed"), || async {
            db.get_task(id).await.unwrap().filter(|t| t.status == TaskStatus::Completed)
        })
        .await;
        let result = row.result.unwrap_or_else(|| panic!("{id}: completed row without a result"));
        assert!(result.output_uri.ends_with(&format!("results/{id}.jpg")), "{id}: result {result:?}");
        assert_eq!((row.error_code, row.error_message), (None, None), "{id}");
    }
    // ...and serves every result.
    for id in &all {
        download(&http, a.port, id, &jpeg).await;
    }

    // The killed replica, restarted, reads the same history.
    let b = setup.gateway("gateway-b-restarted", port_b);
    wait_ready(&http, &format!("http://127.0.0.1:{port_b}/readyz"), &b.proc).await;
    for id in &all {
        let s = status(&http, b.port, id).await;
        assert!(completed(&s), "{id} on the restarted gateway-b: {s}");
        download(&http, b.port, id, &jpeg).await;
    }
    db.close().await;
}
