//! Mode parity (DESIGN section 3: "the same worker answer gives the same outcome, reason word
//! and message in both modes"), pinned through the public API: the same scripted worker
//! answers are fed to a standalone gateway (its own dispatcher) and to a Kubernetes-mode
//! gateway (kubesim + operator), each a separate process, and the seed 000 status each one
//! ends with (`status`, `error_code`, `error`) must be the same, and the expected one.
//!
//! Each scenario gets a fresh fake worker per mode, so both see identical answers from a
//! worker with no history; the two modes run a scenario side by side, scenarios one after
//! the other on the same processes (the standalone gateway re-pointed with
//! `POST /api/v1/config/backend`, the default GpuPool's `spec.external` replaced).
//! Both also run the same number of jobs on the worker. `progress` of a failed task is not
//! compared: it is whatever the last attempt's event stream delivered before the error,
//! which depends on timing (the fake fails 20 ms after its 0.5 mark).

use std::path::{Path, PathBuf};

use kube::api::{Api, Patch, PatchParams, PostParams};
use purrify_api::{FailReason, GpuPool, client_message};
use purrify_inference::protocol::ErrorReason;
use purrify_testkit::cluster::{KubesimProcess, kubernetes_gateway_args};
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use purrify_testkit::gateway_client::{upload, wait_for, wait_ready};
use purrify_testkit::{Proc, eventually, free_port, workspace_bin as bin};
use serde_json::{Value, json};

const MAX_ATTEMPTS: u32 = 3;
const ADMIN_TOKEN: &str = "parity-admin";
const POOL: &str = "default";

/// What a client sees of a finished task.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    status: String,
    error_code: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn completed() -> Self {
        Self { status: "completed".into(), error_code: None, error: None }
    }

    /// Failed with `reason` after `attempts` attempts, the message as both modes must word it.
    fn failed(reason: FailReason, detail: &str, attempts: u32) -> Self {
        Self { status: "failed".into(), error_code: Some(reason.code().into()), error: Some(client_message(reason, detail, attempts)) }
    }

    fn of(status: &Value) -> Self {
        let text = |k: &str| status[k].as_str().map(str::to_owned);
        Self { status: text("status").unwrap_or_default(), error_code: text("error_code"), error: text("error") }
    }
}

struct Scenario {
    name: &'static str,
    /// What the fake does with each new job...
    default: Behavior,
    /// ...except these first ones.
    script: Vec<Behavior>,
    expected: Outcome,
    /// Jobs the worker runs (accepted submits) before the task ends.
    jobs: usize,
    /// A worker detail that must not reach the client.
    hidden: Option<&'static str>,
}

fn scenarios() -> Vec<Scenario> {
    const NOT_JPEG: &str = "cannot decode: not a JPEG";
    const TOO_LARGE: &str = "the image has 40000x30000 pixels, more than the 100000000 allowed";
    const TILE: &str = "tile_size must be between 32 and 1024";
    const STORAGE: &str = "s3://bucket/secret: 500";
    const INFERENCE: &str = "onnxruntime: CUDA out of memory on /dev/nvidia0";
    const INTERNAL: &str = "panic at /srv/x.rs";
    let s = |name, default, script, expected, jobs, hidden| Scenario { name, default, script, expected, jobs, hidden };
    vec![
        s("succeed", Behavior::Succeed, vec![], Outcome::completed(), 1, None),
        s(
            "bad input",
            Behavior::Fail(ErrorReason::BadInput, NOT_JPEG),
            vec![],
            Outcome::failed(FailReason::BadInput, NOT_JPEG, 1),
            1,
            None,
        ),
        s(
            "too large",
            Behavior::Fail(ErrorReason::TooLarge, TOO_LARGE),
            vec![],
            Outcome::failed(FailReason::TooLarge, TOO_LARGE, 1),
            1,
            None,
        ),
        s("refused on submit (422)", Behavior::Reject(TILE), vec![], Outcome::failed(FailReason::InvalidParams, TILE, 1), 0, None),
        s(
            "storage fails every time",
            Behavior::Fail(ErrorReason::Storage, STORAGE),
            vec![],
            Outcome::failed(FailReason::StorageError, STORAGE, MAX_ATTEMPTS),
            MAX_ATTEMPTS as usize,
            Some("secret"),
        ),
        s(
            "inference fails every time",
            Behavior::Fail(ErrorReason::Inference, INFERENCE),
            vec![],
            Outcome::failed(FailReason::InferenceFailed, INFERENCE, MAX_ATTEMPTS),
            MAX_ATTEMPTS as usize,
            Some("CUDA"),
        ),
        s(
            "internal error every time",
            Behavior::Fail(ErrorReason::Internal, INTERNAL),
            vec![],
            Outcome::failed(FailReason::InternalError, INTERNAL, MAX_ATTEMPTS),
            MAX_ATTEMPTS as usize,
            Some("/srv/x.rs"),
        ),
        s(
            "inference fails once, then succeeds",
            Behavior::Succeed,
            vec![Behavior::Fail(ErrorReason::Inference, INFERENCE)],
            Outcome::completed(),
            2,
            None,
        ),
    ]
}

/// How one mode ended one scenario.
#[derive(Debug)]
struct Ran {
    status: Value,
    /// Jobs the worker ran, and every submit it answered (refusals included).
    jobs: usize,
    submits: usize,
}

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

/// A small real photo as PNG (a crop of the cat in `chelsea.png`).
fn photo() -> Vec<u8> {
    let path = purrify_inference::cache::cache_root().join("photos").join("chelsea.png");
    let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("{} missing: run `make models`", path.display()));
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let crop = image::imageops::crop_imm(&img, 100, 50, 64, 48).to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(crop).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Starts a fresh fake worker for `sc`, lets `point_at` route new tasks to it, uploads the
/// photo through the gateway on `gw` and waits for the task to finish.
async fn run_on<F, Fut>(http: &reqwest::Client, gw: u16, procs: &[&Proc], sc: &Scenario, point_at: F) -> Ran
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let worker = FakeWorker::start(2, sc.default.clone()).await;
    worker.script(sc.script.clone());
    point_at(worker.url.clone()).await;
    let id = upload(http, gw, photo(), 400).await;
    let status = wait_for(http, gw, &id, "a finished state", finished, procs).await;
    Ran { status, jobs: worker.started().len(), submits: worker.submits().len() }
}

/// `purrify-gateway --backend standalone` with no worker of its own.
struct Standalone {
    gw: Proc,
    port: u16,
}

impl Standalone {
    async fn start(http: &reqwest::Client, dir: &Path) -> Self {
        let port = free_port();
        let args = [
            "--backend",
            "standalone",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.join("standalone").display().to_string(),
            "--embedded-worker",
            "false",
            "--allow-private-workers",
            "--max-attempts",
            &MAX_ATTEMPTS.to_string(),
            "--admin-token",
            ADMIN_TOKEN,
            "--rate-limit",
            "0",
            "--uploads-per-minute",
            "100000",
            "--probe-interval-seconds",
            "1",
        ];
        let gw = Proc::spawn("standalone-gateway", &bin("purrify-gateway"), &args.map(String::from), &[], dir);
        wait_ready(http, &format!("http://127.0.0.1:{port}/readyz"), &gw).await;
        Self { gw, port }
    }

    /// Makes `url` the default backend (the only worker) and waits until it is probed healthy.
    async fn point_at(&self, http: &reqwest::Client, url: String) {
        let base = format!("http://127.0.0.1:{}", self.port);
        let r = http
            .post(format!("{base}/api/v1/config/backend"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"backend_url": url}))
            .send()
            .await
            .unwrap();
        let answer = r.status();
        assert!(answer.is_success(), "setting the backend: {answer} {}", r.text().await.unwrap_or_default());
        eventually(30, &format!("the standalone gateway to find {url} healthy"), || async {
            let c: Value = http.get(format!("{base}/api/v1/config")).send().await.ok()?.json().await.ok()?;
            let servers = &c["backend_servers"];
            (c["backend_url"].as_str()?.trim_end_matches('/') == url && servers["total_servers"] == 1 && servers["healthy_servers"] == 1)
                .then_some(())
        })
        .await;
    }

    async fn run(&self, http: &reqwest::Client, sc: &Scenario) -> Ran {
        run_on(http, self.port, &[&self.gw], sc, |url| self.point_at(http, url)).await
    }
}

/// kubesim, the operator and `purrify-gateway --backend kubernetes`, each a process.
struct Cluster {
    _kubesim: Proc,
    operator: Proc,
    gw: Proc,
    port: u16,
    client: kube::Client,
}

impl Cluster {
    async fn start(http: &reqwest::Client, dir: &Path) -> Self {
        let sim = KubesimProcess::start(dir).await;
        let (kubeconfig, kubesim, client) = (sim.kubeconfig, sim.proc, sim.client);

        let (op, port) = (free_port(), free_port());
        let spawn = |name: &str, program: PathBuf, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            Proc::spawn(name, &program, &args, &[("KUBECONFIG", kubeconfig.as_path())], dir)
        };
        let operator = spawn(
            "operator",
            bin("purrify-operator"),
            &[
                "run",
                "--namespace",
                "default",
                "--lease-namespace",
                "default",
                "--metrics-addr",
                &format!("127.0.0.1:{op}"),
                "--probe-interval-seconds",
                "1",
                "--task-max-attempts",
                &MAX_ATTEMPTS.to_string(),
            ],
        );
        let mut gw_args =
            kubernetes_gateway_args(port, &dir.join("kubernetes"), &format!("file://{}", dir.join("kubernetes-storage").display()));
        gw_args.extend(["--operator-url".to_string(), format!("http://127.0.0.1:{op}")]);
        let gw = Proc::spawn("kubernetes-gateway", &bin("purrify-gateway"), &gw_args, &[("KUBECONFIG", kubeconfig.as_path())], dir);
        wait_ready(http, &format!("http://127.0.0.1:{op}/readyz"), &operator).await;
        wait_ready(http, &format!("http://127.0.0.1:{port}/readyz"), &gw).await;
        Self { _kubesim: kubesim, operator, gw, port, client }
    }

    /// Makes `url` the default pool's only (external) worker and waits until the operator
    /// reports it healthy in the pool's status.
    async fn point_at(&self, url: String) {
        let pools: Api<GpuPool> = Api::namespaced(self.client.clone(), "default");
        let external = json!([{ "url": url }]);
        if pools.get_opt(POOL).await.unwrap().is_some() {
            let patch = json!({ "spec": { "external": external } });
            pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        } else {
            let pool: GpuPool = serde_json::from_value(json!({
                "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
                "metadata": { "name": POOL }, "spec": { "external": external },
            }))
            .unwrap();
            pools.create(&PostParams::default(), &pool).await.unwrap();
        }
        eventually(30, &format!("the operator to report {url} healthy in GpuPool {POOL}"), || async {
            let pool = pools.get(POOL).await.ok()?;
            let workers = pool.status?.workers;
            (workers.len() == 1 && workers[0].endpoint.trim_end_matches('/') == url && workers[0].healthy).then_some(())
        })
        .await;
    }

    async fn run(&self, http: &reqwest::Client, sc: &Scenario) -> Ran {
        run_on(http, self.port, &[&self.operator, &self.gw], sc, |url| self.point_at(url)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_turn_the_same_worker_answers_into_the_same_public_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (standalone, cluster) = tokio::join!(Standalone::start(&http, dir.path()), Cluster::start(&http, dir.path()));

    for sc in scenarios() {
        let (s, k) = tokio::join!(standalone.run(&http, &sc), cluster.run(&http, &sc));
        let name = sc.name;
        eprintln!("{name}: standalone {} ({} jobs), kubernetes {} ({} jobs)", s.status, s.jobs, k.status, k.jobs);
        let (so, ko) = (Outcome::of(&s.status), Outcome::of(&k.status));
        assert_eq!(so, ko, "{name}: the modes disagree\n  standalone: {}\n  kubernetes: {}", s.status, k.status);
        assert_eq!(so, sc.expected, "{name}: both modes say {}", s.status);
        assert_eq!((s.jobs, k.jobs), (sc.jobs, sc.jobs), "{name}: jobs run (standalone, kubernetes)");
        assert_eq!(s.submits, k.submits, "{name}: submits (standalone, kubernetes)");
        if let Some(hidden) = sc.hidden {
            for (mode, status) in [("standalone", &s.status), ("kubernetes", &k.status)] {
                assert!(!status.to_string().contains(hidden), "{name}: {mode} shows the worker's detail {hidden:?}: {status}");
            }
        }
    }
}
