//! The images on a podman network, in the seed 000 topology: one gateway container in
//! standalone mode (SQLite on its own volume, no in-process worker) and two inference worker
//! containers that join it through `/webhook/register`, all sharing one storage.
//! A real photo goes through; the worker running it is killed (`podman kill`) and the task
//! completes on the other; every container runs as UID 10001 and exits cleanly on
//! `podman stop` (SIGTERM) within its grace period. Twice: storage on a shared podman
//! volume, and on S3 (an s3s-fs server). The workers run on the `openvino` execution
//! provider (their default), not on its CPU fallback; and the worker image's CLI runs each
//! provider it ships on its own ONNX Runtime build.
//!
//! The images are the ones `make images` builds (built first when missing). Without podman
//! the test fails: it never skips.

use std::time::{Duration, Instant};

use purrify_testkit::gateway_client::{completed, status, worker_in_flight};
use serde_json::{Value, json};

use crate::support::{
    ONE_AT_A_TIME, S3_BUCKET, S3_KEY, S3_SECRET, VERSION, assert_non_root, ensure_images, logs_of, podman, purrify_cache, root, run,
    s3_server, stop_within, walk,
};
const SECRET: &str = "image-test-secret";
/// `podman stop --time`: SIGTERM, then SIGKILL after this many seconds. The binaries get a
/// shorter grace of their own, so a clean stop ends well before it.
const STOP_TIMEOUT_SECS: u64 = 20;
const SHUTDOWN_GRACE_SECS: u64 = 10;

/// Containers, network and volume of one test run, removed when dropped (also on failure).
struct Env {
    prefix: String,
    containers: Vec<String>,
}

impl Env {
    fn new(name: &str) -> Env {
        // `make images` installs podman on a fresh machine: before the first podman call.
        ensure_images();
        let prefix = format!("purrify-it-{}-{name}", std::process::id());
        podman(&["network", "create", &prefix]);
        podman(&["volume", "create", &format!("{prefix}-storage")]);
        podman(&["volume", "create", &format!("{prefix}-data")]);
        Env { prefix, containers: Vec::new() }
    }

    fn network(&self) -> &str {
        &self.prefix
    }

    /// The gateway's data dir (SQLite), as the chart's emptyDir. A volume, not a tmpfs:
    /// podman 4.3 gives a tmpfs the image directory's mode with root as owner.
    fn data_mount(&self) -> String {
        format!("{}-data:/var/lib/purrify:U", self.prefix)
    }

    fn storage_mount(&self) -> String {
        // `U`: chown the volume to the container's user (10001) so it can write.
        format!("{}-storage:/var/lib/purrify/storage:U", self.prefix)
    }

    /// `podman run -d` with the restricted settings the chart uses: read-only root
    /// filesystem, /tmp as a tmpfs, no capabilities, no privilege escalation.
    fn start(&mut self, name: &str, image: &str, extra: &[&str], args: &[&str]) -> String {
        let name = format!("{}-{name}", self.prefix);
        let stop_timeout = STOP_TIMEOUT_SECS.to_string();
        let mut all = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            self.network(),
            "--read-only",
            "--tmpfs",
            "/tmp:rw,mode=1777",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "--stop-timeout",
            &stop_timeout,
            "--publish",
            "127.0.0.1::8000",
        ];
        if image.contains("gateway") {
            all.pop();
            all.push("127.0.0.1::8080");
        }
        all.extend_from_slice(extra);
        all.push(image);
        all.extend_from_slice(args);
        podman(&all);
        self.containers.push(name.clone());
        name
    }

    fn logs(&self) -> String {
        logs_of(&self.containers)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for c in &self.containers {
            let _ = run(&["rm", "-f", "-t", "0", c]);
        }
        let _ = run(&["network", "rm", "-f", &self.prefix]);
        let _ = run(&["volume", "rm", "-f", &format!("{}-storage", self.prefix)]);
        let _ = run(&["volume", "rm", "-f", &format!("{}-data", self.prefix)]);
    }
}

/// The loopback port podman published for the container's `port`.
fn host_port(container: &str, port: u16) -> u16 {
    let out = podman(&["port", container, &format!("{port}/tcp")]);
    out.lines().next().and_then(|l| l.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port: {out}"))
}

fn container_ip(env: &Env, container: &str) -> String {
    podman(&["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", env.network()), container])
}

async fn wait_http_ok(http: &reqwest::Client, url: &str, env: &Env) {
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < give_up, "{url} never answered 2xx\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Storage shared by the gateway and the workers: a podman volume mounted in each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_two_workers_on_a_podman_network() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = Env::new("vol");
    let storage = env.storage_mount();
    scenario(env, &["--volume", &storage]).await;
}

/// Storage on S3: an s3s-fs server (SigV4, plain HTTP, path-style) on the host, reached
/// from the containers through the network's gateway address, credentials as `AWS_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_two_workers_on_s3_storage() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = Env::new("s3");
    let dir = tempfile::tempdir().unwrap();
    let port = s3_server(dir.path()).await;
    let host = podman(&["network", "inspect", "-f", "{{range .Subnets}}{{.Gateway}}{{end}}", env.network()]);
    let endpoint = format!("PURRIFY_S3_ENDPOINT=http://{host}:{port}");
    let key = format!("AWS_ACCESS_KEY_ID={S3_KEY}");
    let secret = format!("AWS_SECRET_ACCESS_KEY={S3_SECRET}");
    let storage = format!("PURRIFY_STORAGE=s3://{S3_BUCKET}/purrify");
    #[rustfmt::skip]
    let extra = [
        "--env", &storage, "--env", &endpoint, "--env", "PURRIFY_S3_ALLOW_HTTP=true",
        "--env", "AWS_REGION=us-east-1", "--env", &key, "--env", &secret,
    ];
    scenario(env, &extra).await;
    // The upload and the result went through the S3 server.
    let objects: Vec<_> = walk(&dir.path().join(S3_BUCKET).join("purrify"));
    assert!(objects.len() >= 2, "objects on the S3 server: {objects:?}");
}

/// The gateway and two workers, `storage` being the podman arguments that give each the
/// shared storage.
async fn scenario(mut env: Env, storage: &[&str]) {
    ensure_images();
    let gateway_image = format!("purrify-gateway:{VERSION}");
    let worker_image = format!("purrify-inference:{VERSION}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let data = env.data_mount();
    let grace = SHUTDOWN_GRACE_SECS.to_string();

    // The gateway: standalone, SQLite in its data dir volume (the chart's emptyDir).
    let webhook = format!("WEBHOOK_SECRET={SECRET}");
    let mut gw_extra = vec!["--volume", &data, "--env", &webhook];
    gw_extra.extend_from_slice(storage);
    let gw = env.start(
        "gateway",
        &gateway_image,
        &gw_extra,
        &["--embedded-worker", "false", "--probe-interval-seconds", "1", "--shutdown-grace-seconds", &grace],
    );
    let gw_port = host_port(&gw, 8080);
    // Two workers; each runs one job at a time with one thread (CI has 2 cores).
    let mut workers = Vec::new();
    for n in ["worker-a", "worker-b"] {
        let w = env.start(n, &worker_image, storage, &["serve", "--threads", "1", "--parallel", "1", "--shutdown-grace", &grace]);
        workers.push(w);
    }
    wait_http_ok(&http, &format!("http://127.0.0.1:{gw_port}/readyz"), &env).await;
    for w in &workers {
        wait_http_ok(&http, &format!("http://127.0.0.1:{}/readyz", host_port(w, 8000)), &env).await;
    }
    // The image carries the OpenVINO build of ONNX Runtime where the binary looks for it, so
    // the workers' sessions run on `openvino`, their default, and nothing fell back to `cpu`.
    for w in &workers {
        let info: Value = http.get(format!("http://127.0.0.1:{}/v1/info", host_port(w, 8000))).send().await.unwrap().json().await.unwrap();
        assert_eq!(info["requested_execution_provider"], "openvino", "{w}: {info}");
        assert_eq!(info["execution_provider"], "openvino", "{w} runs on the fallback: {info}\n{}", env.logs());
    }
    assert_no_fallback(&logs_of(&workers));
    // Docs are served from the assets baked into the gateway image.
    let docs = http.get(format!("http://127.0.0.1:{gw_port}/docs/assets/swagger-ui-bundle.js")).send().await.unwrap();
    assert!(docs.status().is_success(), "Swagger UI assets: {}", docs.status());

    // The workers join as GPU servers would, with their address on the network.
    for w in &workers {
        let ip = container_ip(&env, w);
        let r: Value = http
            .post(format!("http://127.0.0.1:{gw_port}/webhook/register"))
            .json(&json!({"ip": ip, "port": 8000, "secret": SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["success"], true, "register {w} ({ip}): {r}\n{}", env.logs());
    }
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let h: Value = http.get(format!("http://127.0.0.1:{gw_port}/api/v1/health")).send().await.unwrap().json().await.unwrap();
        if h["backend_status"]["healthy_servers"] == 2 {
            break;
        }
        assert!(Instant::now() < give_up, "workers never healthy: {h}\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for c in [&gw, &workers[0], &workers[1]] {
        assert_non_root(c);
    }
    // The operator's image too: it needs an API server to run, so only its user and that its
    // binary starts (read-only, no capabilities) are checked here.
    for i in ["gateway", "operator", "inference"] {
        let user = podman(&["image", "inspect", "-f", "{{.Config.User}}", &format!("purrify-{i}:{VERSION}")]);
        assert_eq!(user, "10001:10001", "purrify-{i}");
    }
    let operator = podman(&["run", "--rm", "--read-only", "--cap-drop", "all", &format!("purrify-operator:{VERSION}"), "--version"]);
    assert_eq!(operator, format!("purrify-operator {VERSION}"));

    // The chart's `helm test` hook: its bash script, in the gateway image, on the network.
    let script = std::fs::read_to_string(root().join("charts/purrify/files/health-check.sh")).unwrap();
    let gw_ip = container_ip(&env, &gw);
    let (host_env, port_env) = (format!("GATEWAY_HOST={gw_ip}"), "GATEWAY_PORT=8080".to_string());
    #[rustfmt::skip]
    let out = run(&[
        "run", "--rm", "--network", env.network(), "--read-only", "--cap-drop", "all",
        "--env", &host_env, "--env", &port_env, "--env", "ATTEMPTS=5",
        "--entrypoint", "bash", &gateway_image, "-c", &script,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("is healthy"), "helm test script: {said}{}", String::from_utf8_lossy(&out.stderr));

    // A real photo, small tiles so the job runs long enough to be interrupted.
    let photo = std::fs::read(purrify_cache().join("photos/chelsea.png")).expect("chelsea.png: run `make models`");
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(photo).file_name("chelsea.png"))
        .text("quality_level", "fast")
        .text("scale", "2")
        .text("tile_size", "32");
    let r = http.post(format!("http://127.0.0.1:{gw_port}/api/v1/enhance")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();

    // Kill the worker that runs it, mid-task.
    let give_up = Instant::now() + Duration::from_secs(60);
    let busy = loop {
        let mut busy = None;
        for w in &workers {
            if worker_in_flight(&http, host_port(w, 8000)).await > 0 {
                busy = Some(w.clone());
            }
        }
        if let Some(b) = busy {
            break b;
        }
        assert!(Instant::now() < give_up, "no worker ever ran the task: {}\n{}", status(&http, gw_port, &id).await, env.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!completed(&status(&http, gw_port, &id).await), "the task finished before the kill");
    podman(&["kill", "--signal", "KILL", &busy]);
    eprintln!("killed {busy} mid-task");

    let give_up = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let s = status(&http, gw_port, &id).await;
        if completed(&s) {
            break s;
        }
        assert!(s["status"] != "failed", "task failed: {s}\n{}", env.logs());
        assert!(Instant::now() < give_up, "task never completed: {s}\n{}", env.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["result"]["width"], 451 * 2, "{done}");
    let img = http.get(format!("http://127.0.0.1:{gw_port}/api/v1/download/{id}")).send().await.unwrap();
    assert_eq!(img.status(), 200);
    let bytes = img.bytes().await.unwrap();
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "not a JPEG");
    // Running the job (on both workers: one was killed mid-task) fell back nowhere either.
    assert_no_fallback(&logs_of(&workers));

    // A clean stop on SIGTERM within the grace period.
    let survivor = workers.iter().find(|w| **w != busy).unwrap().clone();
    for c in [&survivor, &gw] {
        let took = stop_within(c, STOP_TIMEOUT_SECS);
        eprintln!("{c} stopped on SIGTERM in {took:?}");
    }
}

/// No session of the worker whose `logs` these are left its requested execution provider: the
/// warnings `purrify-inference` logs when the OpenVINO build is missing, when a provider
/// cannot be registered, or when it refuses a model.
fn assert_no_fallback(logs: &str) {
    for warning in ["will run on the CPU provider", "falling back"] {
        assert!(!logs.contains(warning), "a worker fell back ({warning:?}):\n{logs}");
    }
}

/// `purrify-inference enhance --json` in the worker image, restricted as the chart runs it
/// (read-only root, UID 10001, no capabilities), names the provider that ran: `openvino` by
/// default (the OpenVINO build in lib/openvino/ beside the binary), `cpu` when the operator
/// asks for it through PURRIFY_EXECUTION_PROVIDER (the standard build in lib/). Each finds
/// its own build: the image sets no ORT_DYLIB_PATH, which would pick one for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_image_runs_each_provider_on_its_own_onnx_runtime() {
    let _one = ONE_AT_A_TIME.lock().await;
    ensure_images();
    let image = format!("purrify-inference:{VERSION}");
    let env_vars = podman(&["image", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", &image]);
    assert!(!env_vars.contains("ORT_DYLIB_PATH"), "the image pins one ONNX Runtime for every provider:\n{env_vars}");
    let photos = format!("{}:/photos:ro", purrify_cache().join("photos").display());
    for provider in ["openvino", "cpu"] {
        let select = format!("PURRIFY_EXECUTION_PROVIDER={provider}");
        #[rustfmt::skip]
        let out = run(&[
            "run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop", "all",
            "--security-opt", "no-new-privileges", "--volume", &photos, "--env", &select, &image,
            "enhance", "--quality", "fast", "--threads", "1", "--no-face", "--json", "--log-format", "text",
            "/photos/chelsea.png", "/tmp/out.jpg",
        ]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "enhance on {provider}: {stdout}{stderr}");
        let line = stdout.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line: {stdout}{stderr}"));
        let result: Value = serde_json::from_str(line).unwrap();
        assert_eq!(result["provider"], provider, "{result}\n{stderr}");
        assert_eq!(result["width"], 451 * 2, "{result}");
        assert_no_fallback(&stderr);
    }
}
