//! Kubernetes mode end to end, every part a separate process: `purrify-kubesim` (the
//! project's in-memory API server), inference workers, the operator and the gateway, sharing
//! `file://` storage. A real photo goes in through the gateway and comes out enhanced.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use purrify_api::{EnhanceTask, GpuPool};
use purrify_testkit::cluster::{KubesimProcess, kubernetes_gateway_args};
use purrify_testkit::gateway_client::{completed, register, upload, wait_for, wait_ready, worker_in_flight};
use purrify_testkit::{Proc, free_port, workspace_bin as bin};
use serde_json::{Value, json};

fn cache_root() -> PathBuf {
    purrify_inference::cache::cache_root()
}

struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    _kubesim: Proc,
    client: kube::Client,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sim = KubesimProcess::start(dir.path()).await;
        Self { kubeconfig: sim.kubeconfig, client: sim.client, _kubesim: sim.proc, dir, http: reqwest::Client::new() }
    }

    fn storage(&self) -> String {
        format!("file://{}", self.dir.path().join("storage").display())
    }

    fn spawn(&self, name: &str, program: PathBuf, args: &[String]) -> Proc {
        Proc::spawn(name, &program, args, &[("KUBECONFIG", &self.kubeconfig)], self.dir.path())
    }

    fn worker(&self, name: &str, port: u16) -> Proc {
        let args =
            ["serve", "--addr", &format!("127.0.0.1:{port}"), "--storage", &self.storage(), "--quality-levels", "fast", "--threads", "1"];
        self.spawn(name, bin("purrify-inference"), &args.map(String::from))
    }

    fn operator(&self, name: &str, port: u16, lease_seconds: u32) -> Proc {
        let args = [
            "run",
            "--namespace",
            "default",
            "--lease-namespace",
            "default",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--lease-duration-seconds",
            &lease_seconds.to_string(),
            "--probe-interval-seconds",
            "1",
        ];
        self.spawn(name, bin("purrify-operator"), &args.map(String::from))
    }

    fn gateway(&self, port: u16, operator_port: u16) -> Proc {
        let mut args = kubernetes_gateway_args(port, &self.dir.path().join("gw"), &self.storage());
        let operator = format!("http://127.0.0.1:{operator_port}");
        args.extend(["--operator-url", &operator, "--webhook-secret", "k8s-secret", "--allow-private-workers"].map(String::from));
        self.spawn("gateway", bin("purrify-gateway"), &args)
    }

    async fn external_pool(&self, workers: &[u16]) {
        let pools: Api<GpuPool> = Api::namespaced(self.client.clone(), "default");
        let external: Vec<Value> = workers.iter().map(|p| json!({"url": format!("http://127.0.0.1:{p}")})).collect();
        let pool: GpuPool = serde_json::from_value(json!({
            "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
            "metadata": {"name": "default"}, "spec": {"external": external},
        }))
        .unwrap();
        pools.create(&PostParams::default(), &pool).await.unwrap();
    }

    async fn task(&self, id: &str) -> Option<EnhanceTask> {
        Api::<EnhanceTask>::namespaced(self.client.clone(), "default").get_opt(id).await.unwrap()
    }

    async fn worker_succeeded(&self, port: u16) -> f64 {
        let Ok(r) = self.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await else { return 0.0 };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(r#"purrify_worker_jobs_total{outcome="succeeded""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (up to 10 s) until the worker runs a job; panics with the logs otherwise, so a
    /// kill that follows is known to hit a job in flight.
    async fn job_in_flight(&self, port: u16, procs: &[&Proc]) {
        for _ in 0..400 {
            if worker_in_flight(&self.http, port).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let logs: Vec<String> = procs.iter().map(|p| format!("--- {} ---\n{}", p.name, p.log())).collect();
        panic!("the worker on port {port} never had a job in flight\n{}", logs.join("\n"));
    }

    async fn attempts(&self, id: &str) -> Option<u32> {
        self.task(id).await.and_then(|t| t.status).map(|s| s.attempts)
    }
}

fn photo(w: u32, h: u32) -> Vec<u8> {
    let path = cache_root().join("photos").join("solvay_conference_1927.jpg");
    let bytes = std::fs::read(&path).unwrap_or_else(|_| panic!("{} missing: run `make models`", path.display()));
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let crop = image::imageops::crop_imm(&img, 1000, 600, w, h).to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(crop).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn running(s: &Value) -> bool {
    s["status"] == "processing"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_goes_through_the_gateway_the_operator_and_an_external_worker() {
    let c = Cluster::start().await;
    let (wp, op, gp) = (free_port(), free_port(), free_port());
    let w = c.worker("worker", wp);
    let o = c.operator("operator", op, 15);
    let g = c.gateway(gp, op);
    wait_ready(&c.http, &format!("http://127.0.0.1:{wp}/readyz"), &w).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{op}/readyz"), &o).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &g).await;
    c.external_pool(&[wp]).await;

    let id = upload(&c.http, gp, photo(200, 150), 400).await;
    let cr = c.task(&id).await.expect("the upload became an EnhanceTask");
    assert_eq!(cr.spec.pool, "default");
    let s = wait_for(&c.http, gp, &id, "completed", completed, &[&w, &o, &g]).await;
    assert_eq!(s["progress"], 1.0);
    let d = c.http.get(format!("http://127.0.0.1:{gp}/api/v1/download/{id}")).send().await.unwrap();
    assert_eq!(d.status(), 200);
    assert_eq!(d.headers()["content-type"], "image/jpeg");
    let img = image::load_from_memory(&d.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (400, 300));

    // The webhook edits the default pool's external endpoints.
    register(&c.http, gp, 1, "k8s-secret").await;
    let pool = Api::<GpuPool>::namespaced(c.client.clone(), "default").get("default").await.unwrap();
    assert!(pool.spec.external.iter().any(|e| e.url == "http://127.0.0.1:1"), "{:?}", pool.spec.external);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_is_replaced_by_the_other() {
    let c = Cluster::start().await;
    let (w1p, w2p, op, gp) = (free_port(), free_port(), free_port(), free_port());
    let mut w1 = c.worker("worker-1", w1p);
    let mut w2 = c.worker("worker-2", w2p);
    let o = c.operator("operator", op, 15);
    let g = c.gateway(gp, op);
    for (port, p) in [(w1p, &w1), (w2p, &w2)] {
        wait_ready(&c.http, &format!("http://127.0.0.1:{port}/readyz"), p).await;
    }
    wait_ready(&c.http, &format!("http://127.0.0.1:{op}/readyz"), &o).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &g).await;
    c.external_pool(&[w1p, w2p]).await;

    let id = upload(&c.http, gp, photo(640, 480), 32).await;
    wait_for(&c.http, gp, &id, "processing", running, &[&w1, &w2, &o, &g]).await;
    let mut victim = None;
    for _ in 0..400 {
        if worker_in_flight(&c.http, w1p).await > 0 {
            victim = Some((1, w2p));
            break;
        }
        if worker_in_flight(&c.http, w2p).await > 0 {
            victim = Some((2, w1p));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (which, survivor) = victim.expect("one worker runs the job");
    if which == 1 {
        w1.kill()
    } else {
        w2.kill()
    }
    wait_for(&c.http, gp, &id, "completed", completed, &[&w1, &w2, &o, &g]).await;
    assert_eq!(c.worker_succeeded(survivor).await, 1.0, "the surviving worker ran the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarted_mid_task_reattaches_without_running_twice() {
    let c = Cluster::start().await;
    let (wp, op, gp) = (free_port(), free_port(), free_port());
    let w = c.worker("worker", wp);
    let mut o = c.operator("operator", op, 3);
    let g = c.gateway(gp, op);
    wait_ready(&c.http, &format!("http://127.0.0.1:{wp}/readyz"), &w).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{op}/readyz"), &o).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &g).await;
    c.external_pool(&[wp]).await;

    let id = upload(&c.http, gp, photo(640, 480), 32).await;
    // The kill must hit a job the worker is running, or there is nothing to re-attach to.
    c.job_in_flight(wp, &[&w, &o, &g]).await;
    o.kill();
    // The killed leader's lease must expire (3 s) before the new operator leads.
    let o2 = c.operator("operator-2", op, 3);
    wait_for(&c.http, gp, &id, "completed", completed, &[&w, &o2, &g]).await;
    assert_eq!(c.worker_succeeded(wp).await, 1.0, "re-attached instead of running the job again");
    // The CR outlives completion (TTL 300 s), so the count is there to read.
    assert_eq!(c.attempts(&id).await, Some(1), "the restart cost no attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_operator_takes_over_when_the_leader_dies() {
    const LEASE_SECONDS: u32 = 3;
    let c = Cluster::start().await;
    let (wp, op1, op2, gp) = (free_port(), free_port(), free_port(), free_port());
    let w = c.worker("worker", wp);
    let mut leader = c.operator("operator-1", op1, LEASE_SECONDS);
    wait_ready(&c.http, &format!("http://127.0.0.1:{op1}/readyz"), &leader).await;
    let standby = c.operator("operator-2", op2, LEASE_SECONDS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let standby_ready = c.http.get(format!("http://127.0.0.1:{op2}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_ne!(standby_ready, 200, "only the leader is ready (schedules)");
    let g = c.gateway(gp, op2);
    wait_ready(&c.http, &format!("http://127.0.0.1:{wp}/readyz"), &w).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{gp}/readyz"), &g).await;
    c.external_pool(&[wp]).await;

    // Work on both sides of the handover: one job the leader dispatched and the worker is
    // running when the leader dies, one task that arrives while nobody leads.
    let running_id = upload(&c.http, gp, photo(640, 480), 32).await;
    c.job_in_flight(wp, &[&w, &leader, &standby, &g]).await;
    let killed = Instant::now();
    leader.kill();
    let queued_id = upload(&c.http, gp, photo(160, 120), 400).await;
    wait_ready(&c.http, &format!("http://127.0.0.1:{op2}/readyz"), &standby).await;
    let takeover = killed.elapsed();

    // The standby waits out the lease (the leader renewed at most a third of it before the
    // kill) and takes over at its next poll, about 1.3x the lease. The bound is 1.5x with a
    // generous floor for a loaded machine: this catches a standby that waits for something
    // else (several leases, a restart), not scheduling jitter.
    let lease = Duration::from_secs(LEASE_SECONDS.into());
    assert!(takeover >= lease / 2, "the standby took over after {takeover:?}, before the lease ({lease:?}) could expire");
    let bound = (lease * 3 / 2).max(Duration::from_secs(10));
    assert!(takeover <= bound, "the standby took over after {takeover:?}, expected within {bound:?}");

    let procs = [&w, &standby, &g];
    wait_for(&c.http, gp, &queued_id, "completed", completed, &procs).await;
    wait_for(&c.http, gp, &running_id, "completed", completed, &procs).await;
    assert_eq!(c.worker_succeeded(wp).await, 2.0, "each job ran once: the running one was re-attached");
    assert_eq!(c.attempts(&running_id).await, Some(1), "the handover cost the running task no attempt");
    assert_eq!(c.attempts(&queued_id).await, Some(1));
}
