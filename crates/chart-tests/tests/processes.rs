//! The rendered Deployments' command lines and environment are ones the binaries accept: for
//! every case of the values matrix, `purrify-operator` and `purrify-gateway` start with
//! exactly the args and env the chart gives their containers, against `purrify-kubesim`
//! (KUBECONFIG) and a PostgreSQL database of their own, and their readiness probes' paths
//! answer 200. Then what the values said shows in what they do (lease, limits, secrets, the
//! first admin, the JWT signing key, WeChat login against a fake, anonymous uploads, a
//! provider's API key sealed with the provider-key Secret, the default pool's workers).
//! The `helm test` pod's script runs against the live gateway. And the release installs
//! into kubesim with the real `kubectl apply` (client-side validation against the server's
//! OpenAPI, and server-side apply), after which the operator reconciles the default pool.
//!
//! How a container becomes a process here: the image's entrypoint is the binary (the
//! workspace's build of it), `args` as rendered, an environment of exactly the rendered
//! variables (Secrets resolved from the values the test gives them, the downward API from the
//! release namespace and a pod name, envFrom after env as Kubernetes orders them) plus
//! KUBECONFIG in place of the in-cluster service account; each emptyDir mount becomes a
//! temporary directory, and variables pointing into a mount point there instead.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use purrify_api::GpuPool;
use purrify_testkit::gateway_client::wait_ready;
use purrify_testkit::kubectl_path;
use purrify_testkit::{Proc, eventually, free_port, workspace_bin};
use serde_json::Value;
use support::{Case, Doc, NAMESPACE, chart_dir, matrix, render, values_of};

/// Access-token signing keys (`<key id>:<secret of at least 32 bytes>`) of the tests.
const JWT_KEY: &str = "chart-k1:0123456789abcdef0123456789abcdef-chart-tests";
const JWT_KEY_ROTATED: &str = "chart-k2:fedcba9876543210fedcba9876543210-chart-tests";
const JWT_KEYS_PREVIOUS: &str = "chart-k0:00112233445566778899aabbccddeeff-chart-tests";
/// The WeChat app of the tests, which the fake jscode2session knows.
const WECHAT_APPID: &str = "wx0123456789abcdef";
const WECHAT_SECRET: &str = "wechat-app-secret-for-tests";
/// Keys that seal providers' API keys (32 bytes), in the two forms the gateway reads.
const PROVIDER_KEY_HEX: &str = "8f2a4c6e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a";
const PROVIDER_KEY_BASE64: &str = "cHVycmlmeS1jaGFydC10ZXN0cy1wcm92aWRlci1rZXk=";
/// The API key an admin gives a provider in the Secret cases; never answered back.
const PROVIDER_API_KEY: &str = "sk-chart-tests-provider-api-key";
/// The first admin of the Secret cases.
const ADMIN_EMAIL: &str = "first-admin@example.com";
const ADMIN_PASSWORD: &str = "Chart-admin-pass-42";

/// Values of the Secrets the cases refer to, as an admin would have created them.
fn secret_value(name: &str, key: &str, database_url: &str) -> String {
    match (name, key) {
        (_, "DATABASE_URL") | ("pg-cluster-app", "uri") => database_url.to_owned(),
        ("purrify-webhook", _) => "webhook-secret-for-tests".into(),
        ("purrify-admin", _) => "admin-token-for-tests".into(),
        ("purrify-callbacks", "hmac") => "callback-signing-key-for-tests".into(),
        ("purrify-providers", "sealing-key") => PROVIDER_KEY_HEX.into(),
        ("purrify-provider-key", "PURRIFY_PROVIDER_KEY") => PROVIDER_KEY_BASE64.into(),
        ("purrify-s3", "AWS_ACCESS_KEY_ID") => "minio-test".into(),
        ("purrify-s3", "AWS_SECRET_ACCESS_KEY") => "minio-test-secret".into(),
        ("purrify-jwt", "PURRIFY_JWT_KEY") => JWT_KEY.into(),
        ("purrify-jwt", "PURRIFY_JWT_PREVIOUS_KEYS") => JWT_KEYS_PREVIOUS.into(),
        // Rotated: the new key signs, the old one (and one older) still verify.
        ("purrify-signing", "current") => JWT_KEY_ROTATED.into(),
        ("purrify-signing", "previous") => format!("{JWT_KEY},{JWT_KEYS_PREVIOUS}"),
        ("purrify-wechat", "WECHAT_APPID" | "appid") => WECHAT_APPID.into(),
        ("purrify-wechat", "WECHAT_SECRET" | "secret") => WECHAT_SECRET.into(),
        ("purrify-bootstrap-admin" | "purrify-first-admin", "PURRIFY_BOOTSTRAP_ADMIN_EMAIL" | "email") => ADMIN_EMAIL.into(),
        ("purrify-bootstrap-admin" | "purrify-first-admin", "PURRIFY_BOOTSTRAP_ADMIN_PASSWORD" | "password") => ADMIN_PASSWORD.into(),
        ("purrify-pay", "WECHAT_PAY_MCH_ID") => "1900000109".into(),
        _ => panic!("the test has no value for Secret {name} key {key}"),
    }
}

/// WeChat's `jscode2session` as the gateway calls it: any code of the tests' app (its id and
/// secret in the query) is user `o-chart-test`; anything else is WeChat's invalid-credentials
/// error. The request lines it received, for the test to look at.
struct FakeWeChat {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWeChat {
    async fn start() -> FakeWeChat {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                let ours = line.starts_with("GET /sns/jscode2session?")
                    && line.contains(&format!("appid={WECHAT_APPID}&"))
                    && line.contains(&format!("secret={WECHAT_SECRET}&"));
                seen.lock().unwrap().push(line);
                let body = if ours {
                    r#"{"openid":"o-chart-test","session_key":"c2Vzc2lvbi1rZXk="}"#
                } else {
                    r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        FakeWeChat { url, requests, server }
    }
}

impl Drop for FakeWeChat {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The JSON header of a JWT.
fn jwt_header(token: &str) -> Value {
    let part = token.split('.').next().unwrap_or_default();
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in part.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("{token}: not base64url"),
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{token}: header is not JSON: {e}"))
}

/// `[env: NAME` of a binary's `--help`: the variables it reads.
fn env_names_of(bin: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(workspace_bin(bin)).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} {args:?} --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("[env: ")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect())
        .collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    _kubesim: Proc,
    client: kube::Client,
}

impl Cluster {
    /// kubesim with the release namespace and the chart's CRDs (from charts/purrify/crds).
    async fn start() -> Cluster {
        let cluster = Cluster::start_empty().await;
        let client = cluster.client.clone();
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for entry in std::fs::read_dir(chart_dir().join("crds")).unwrap() {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        cluster
    }

    /// kubesim as it starts: no namespace but the built-in ones, no CRDs.
    async fn start_empty() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let log = dir.path().join("kubesim.log");
        let mut child = Command::new(workspace_bin("purrify-kubesim"))
            .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("purrify-kubesim starts");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.starts_with("listening on "), "kubesim said {line:?}");
        let kubesim = Proc::adopt("kubesim", child, log);
        let client = purrify_testkit::cluster::kube_client(&kubeconfig).await;
        Cluster { dir, kubeconfig, _kubesim: kubesim, client }
    }

    /// `kubectl ARGS` (stdin: `input`) against this cluster, with a HOME of its own so its
    /// discovery and OpenAPI caches start empty; must succeed. Its stdout.
    fn kubectl(&self, args: &[&str], input: Option<&str>) -> String {
        use std::io::Write;
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &home)
            .current_dir(support::workspace_root())
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = input {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl {args:?} failed:\n{stdout}{stderr}");
        stdout.into_owned()
    }
}

/// A container of a rendered Deployment, as a process.
struct Launch {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    ready_url: String,
}

fn deployment(docs: &[Doc], name: &str) -> Deployment {
    let d = docs.iter().find(|d| d.kind() == "Deployment" && d.name() == name).unwrap_or_else(|| panic!("no Deployment {name}"));
    serde_json::from_value(d.value.clone()).unwrap()
}

fn config_map(docs: &[Doc], name: &str) -> BTreeMap<String, String> {
    let d = docs.iter().find(|d| d.kind() == "ConfigMap" && d.name() == name).unwrap_or_else(|| panic!("no ConfigMap {name}"));
    serde_json::from_value::<ConfigMap>(d.value.clone()).unwrap().data.unwrap_or_default()
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(n) => c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(n)).expect("a named port").container_port,
    }
}

/// The Secrets an admin created: name, keys.
type Secrets = &'static [(&'static str, &'static [&'static str])];

fn launch(docs: &[Doc], name: &str, secrets: Secrets, value: &dyn Fn(&str, &str) -> String, mounts_root: &Path) -> Launch {
    let d = deployment(docs, name);
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1, "{name}: one container");
    let c = pod.containers[0].clone();
    assert!(c.command.is_none(), "{name}: the image's entrypoint is the binary");
    let pod_name = format!("{name}-5d8f7c9b6d-x7k2p");
    // emptyDir mounts: a directory each.
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let vol = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
        assert!(vol.empty_dir.is_some(), "{name}: {} is not an emptyDir", m.name);
        let host = mounts_root.join(format!("{name}-{}", m.name));
        std::fs::create_dir_all(&host).unwrap();
        mounts.push((m.mount_path.clone(), host));
    }
    let remap = |v: &str| -> String {
        for (path, host) in &mounts {
            if v == path || v.starts_with(&format!("{path}/")) {
                return format!("{}{}", host.display(), &v[path.len()..]);
            }
        }
        v.to_owned()
    };
    let mut env = BTreeMap::new();
    // envFrom first; env entries override them (Kubernetes' order).
    for from in c.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            let keys = secrets.iter().find(|(n, _)| *n == s.name).unwrap_or_else(|| panic!("{name}: no Secret {}", s.name)).1;
            for key in keys {
                env.insert((*key).to_owned(), value(&s.name, key));
            }
        }
        if let Some(cm) = &from.config_map_ref {
            env.extend(config_map(docs, &cm.name));
        }
    }
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            assert!(!v.contains("$("), "{name}: {} would be expanded by Kubernetes", e.name);
            remap(v)
        } else {
            let from = e.value_from.as_ref().unwrap_or_else(|| panic!("{name}: {} has neither value nor valueFrom", e.name));
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.namespace" => NAMESPACE.to_owned(),
                    "metadata.name" => pod_name.clone(),
                    other => panic!("{name}: fieldRef {other} is not emulated"),
                }
            } else if let Some(s) = &from.secret_key_ref {
                let keys = secrets.iter().find(|(n, _)| *n == s.name).map(|(_, k)| *k).unwrap_or_default();
                assert!(keys.contains(&s.key.as_str()), "{name}: Secret {} key {} is not one the values name", s.name, s.key);
                value(&s.name, &s.key)
            } else if let Some(cm) = &from.config_map_key_ref {
                config_map(docs, &cm.name)[&cm.key].clone()
            } else {
                panic!("{name}: {} has an unsupported valueFrom", e.name)
            }
        };
        env.insert(e.name.clone(), v);
    }
    let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.clone()).expect("an httpGet readiness probe");
    let ready_url = format!("http://127.0.0.1:{}{}", port_number(&c, &probe.port), probe.path.as_deref().unwrap_or("/"));
    let args = c.args.clone().unwrap_or_default();
    Launch { args, env, ready_url }
}

fn spawn(cluster: &Cluster, bin: &str, l: &Launch) -> Proc {
    let log = cluster.dir.path().join(format!("{bin}.log"));
    let work = cluster.dir.path().join(format!("{bin}-workdir"));
    std::fs::create_dir_all(&work).unwrap();
    let child = Command::new(workspace_bin(bin))
        .args(&l.args)
        .env_clear()
        .envs(&l.env)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    Proc::adopt(bin, child, log)
}

/// The sets that put the listeners on free loopback-reachable ports and point the gateway
/// at the operator's (the in-cluster Service name does not resolve here).
fn port_sets() -> (u16, u16, Vec<String>) {
    let (gw, op) = (free_port(), free_port());
    let sets =
        vec![format!("gateway.port={gw}"), format!("operator.port={op}"), format!("gateway.config.operatorUrl=http://127.0.0.1:{op}")];
    (gw, op, sets)
}

/// The operator and the gateway of `docs`, started and Ready.
struct Running {
    cluster: Cluster,
    operator: Proc,
    gateway: Proc,
    operator_launch: Launch,
    gateway_launch: Launch,
    gateway_port: u16,
    _db: purrify_store::testing::TestPostgresUrl,
    http: reqwest::Client,
}

async fn start(docs: &[Doc], secrets: Secrets) -> Running {
    let cluster = Cluster::start().await;
    let db = purrify_store::testing::TestPostgresUrl::create().await;
    let url = db.url.clone();
    let value = move |name: &str, key: &str| secret_value(name, key, &url);
    let mounts = cluster.dir.path().join("volumes");
    let operator_launch = launch(docs, "purrify-operator", secrets, &value, &mounts);
    let gateway_launch = launch(docs, "purrify-gateway", secrets, &value, &mounts);
    let http = reqwest::Client::new();
    let operator = spawn(&cluster, "purrify-operator", &operator_launch);
    // Ready only as the leader: it took the Lease.
    wait_ready(&http, &operator_launch.ready_url, &operator).await;
    let gateway = spawn(&cluster, "purrify-gateway", &gateway_launch);
    wait_ready(&http, &gateway_launch.ready_url, &gateway).await;
    let gateway_port = gateway_launch.ready_url.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap().parse().unwrap();
    Running { cluster, operator, gateway, operator_launch, gateway_launch, gateway_port, _db: db, http }
}

fn logs(r: &Running) -> String {
    format!("--- operator ---\n{}\n--- gateway ---\n{}", r.operator.log(), r.gateway.log())
}

async fn run_case(case: &Case) {
    let (gw_port, _, mut sets) = port_sets();
    // WeChat's API is the fake's (the rendered value is checked in tests/chart).
    let wechat = FakeWeChat::start().await;
    sets.push(format!("gateway.config.wechatApiBase={}", wechat.url));
    // WeChat Pay stays off here: with it on, the gateway loads the merchant's key files from
    // the certificates Secret at start, which these processes have no real ones of (its
    // rendering is checked in tests/chart; the gateway's own tests run it against a fake).
    sets.push("gateway.wechatPay.enabled=false".into());
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let docs = render(&values_of(case), &sets);
    let r = start(&docs, case.secrets).await;
    let (op, gw) = (&r.operator_launch, &r.gateway_launch);

    // Every variable is one the binary reads (a misspelt one would be ignored silently).
    let gateway_reads = env_names_of("purrify-gateway", &[]);
    let operator_reads = env_names_of("purrify-operator", &["run"]);
    for name in gw.env.keys() {
        let known = gateway_reads.contains(name)
            || ["POD_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WECHAT_PAY_MCH_ID", "RUST_LOG"].contains(&name.as_str());
        assert!(known, "{}: the gateway does not read {name}", case.name);
    }
    for name in op.env.keys() {
        assert!(operator_reads.contains(name) || name == "RUST_LOG", "{}: the operator does not read {name}", case.name);
    }
    let worker_reads = env_names_of("purrify-inference", &["serve"]);
    for key in config_map(&docs, "purrify-worker").keys() {
        assert!(
            worker_reads.contains(key),
            "{}: the worker ConfigMap sets {key}, which `purrify-inference serve` does not read",
            case.name
        );
    }

    // The operator leads on the rendered Lease, in the pod's namespace, under the pod's name.
    let lease_name = &op.env["PURRIFY_LEASE_NAME"];
    let lease = Api::<Lease>::namespaced(r.cluster.client.clone(), NAMESPACE).get(lease_name).await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.starts_with("purrify-operator-5d8f7c9b6d-x7k2p-"), "{}: holder {holder}", case.name);

    // The gateway runs in Kubernetes mode with the rendered limits.
    let info: Value = r.http.get(format!("http://127.0.0.1:{gw_port}/api/v1/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["config_info"]["backend"], "kubernetes", "{}", case.name);
    assert_eq!(info["config_info"]["max_file_size"].to_string(), gw.env["PURRIFY_MAX_UPLOAD_BYTES"]);
    assert_eq!(info["config_info"]["timeout"].to_string(), gw.env["PURRIFY_TASK_DEADLINE_SECONDS"]);
    // The webhook secret and the admin token arrive from their Secrets (or are absent).
    let servers = r.http.get(format!("http://127.0.0.1:{gw_port}/webhook/servers?secret=webhook-secret-for-tests")).send().await.unwrap();
    let expected = if gw.env.contains_key("WEBHOOK_SECRET") { 200 } else { 503 };
    assert_eq!(servers.status(), expected, "{}: /webhook/servers", case.name);
    let admin = r
        .http
        .post(format!("http://127.0.0.1:{gw_port}/api/v1/config/multi-backend"))
        .bearer_auth("admin-token-for-tests")
        .json(&serde_json::json!({"enabled": false, "fallback_to_default": true}))
        .send()
        .await
        .unwrap();
    let expected = if gw.env.contains_key("PURRIFY_ADMIN_TOKEN") { 200 } else { 403 };
    assert_eq!(admin.status(), expected, "{}: admin endpoint\n{}", case.name, logs(&r));

    // Accounts. The first admin exists when its Secret was given, and logs in with a token
    // signed by the key of the JWT Secret, for the rendered lifetime.
    let url = |path: &str| format!("http://127.0.0.1:{gw_port}{path}");
    let login = r
        .http
        .post(url("/api/auth/admin/login"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let status = login.status();
    let body: Value = login.json().await.unwrap();
    let token = if gw.env.contains_key("PURRIFY_BOOTSTRAP_ADMIN_EMAIL") {
        assert_eq!(status, 200, "{}: the first admin's login: {body}\n{}", case.name, logs(&r));
        let session = &body["data"];
        assert_eq!(session["user"]["role"], "admin", "{}: {body}", case.name);
        assert_eq!(session["expires_in"].to_string(), gw.env["PURRIFY_ACCESS_TOKEN_SECONDS"], "{}", case.name);
        let token = session["access_token"].as_str().unwrap().to_owned();
        let kid = gw.env["PURRIFY_JWT_KEY"].split(':').next().unwrap();
        assert_eq!(jwt_header(&token)["kid"], kid, "{}: signed with the JWT Secret's key", case.name);
        let me = r.http.get(url("/api/auth/me")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(me.status(), 200, "{}: /api/auth/me", case.name);
        Some(token)
    } else {
        assert_eq!(status, 401, "{}: no admin without the bootstrap Secret: {body}", case.name);
        None
    };
    // A provider's API key is sealed with the key from the provider-key Secret, which the
    // gateway took at start (hex in everything-on, base64 in external-database), and is never
    // answered back. (Without that Secret no key can be stored: the gateway's own tests.)
    if let (Some(token), true) = (&token, gw.env.contains_key("PURRIFY_PROVIDER_KEY")) {
        let put = r
            .http
            .put(url("/api/v1/config/providers/stability"))
            .bearer_auth(token)
            .json(&serde_json::json!({"apiKey": PROVIDER_API_KEY}))
            .send()
            .await
            .unwrap();
        let status = put.status();
        let body: Value = put.json().await.unwrap();
        assert_eq!(status, 200, "{}: a provider's API key: {body}\n{}", case.name, logs(&r));
        assert_eq!(body["data"]["hasKey"], true, "{}: {body}", case.name);
        assert!(!body.to_string().contains(PROVIDER_API_KEY), "{}: the API key is answered back: {body}", case.name);
        let list = r.http.get(url("/api/v1/config/providers")).bearer_auth(token).send().await.unwrap().text().await.unwrap();
        assert!(list.contains("\"hasKey\":true") && !list.contains(PROVIDER_API_KEY), "{}: {list}", case.name);
    }
    // Anonymous uploads as rendered (off by default): refused before anything is read.
    let anonymous = r.http.post(url("/api/v1/enhance")).send().await.unwrap().status();
    match gw.env["PURRIFY_ALLOW_ANONYMOUS_UPLOADS"].as_str() {
        "false" => assert_eq!(anonymous, 401, "{}: an anonymous upload", case.name),
        "true" => assert_ne!(anonymous, 401, "{}: an anonymous upload", case.name),
        other => panic!("{}: PURRIFY_ALLOW_ANONYMOUS_UPLOADS={other}", case.name),
    }
    if let Some(token) = &token {
        let upload = r.http.post(url("/api/v1/enhance")).bearer_auth(token).send().await.unwrap().status();
        assert_ne!(upload, 401, "{}: the admin's upload", case.name);
    }
    // WeChat login with the Secret's app id and secret at the rendered API base, or 503.
    let wx = r.http.post(url("/api/auth/wechat/login")).json(&serde_json::json!({"code": "0a1b2c3d4e5f"})).send().await.unwrap();
    let status = wx.status();
    let body: Value = wx.json().await.unwrap();
    if gw.env.contains_key("WECHAT_APPID") {
        assert_eq!(status, 200, "{}: WeChat login: {body}\n{}", case.name, logs(&r));
        assert_eq!(body["data"]["is_new_user"], true, "{}: {body}", case.name);
        let requests = wechat.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1, "{}: {requests:?}", case.name);
        assert!(requests[0].contains("js_code=0a1b2c3d4e5f"), "{}: {requests:?}", case.name);
    } else {
        assert_eq!(status, 503, "{}: WeChat login without its Secret: {body}", case.name);
        assert!(wechat.requests.lock().unwrap().is_empty(), "{}", case.name);
    }

    // The default pool, as rendered, is admitted and reconciled: a managed one gets its
    // workers' Deployment, whose environment comes from the chart's ConfigMap and the
    // storage credentials Secret the operator was told about.
    if let Some(doc) = docs.iter().find(|d| d.kind() == "GpuPool") {
        let pool: GpuPool = serde_json::from_value(doc.value.clone()).unwrap();
        let pools: Api<GpuPool> = Api::namespaced(r.cluster.client.clone(), NAMESPACE);
        pools.create(&PostParams::default(), &pool).await.unwrap_or_else(|e| panic!("{}: the rendered GpuPool is refused: {e}", case.name));
        if pool.spec.image.is_some() {
            let deployments: Api<Deployment> = Api::namespaced(r.cluster.client.clone(), NAMESPACE);
            let workers = eventually(60, "the pool's worker Deployment", || async {
                deployments.get_opt(&format!("{}-inference", pool.metadata.name.as_deref().unwrap())).await.ok().flatten()
            })
            .await;
            let c = &workers.spec.template.spec.unwrap().containers[0];
            assert_eq!(c.image, pool.spec.image, "{}", case.name);
            let from = c.env_from.clone().unwrap_or_default();
            assert_eq!(from[0].config_map_ref.as_ref().map(|c| c.name.as_str()), Some("purrify-worker"), "{}", case.name);
            let secret = from.iter().find_map(|f| f.secret_ref.as_ref()).map(|s| s.name.clone());
            let expected = Some(op.env["PURRIFY_WORKER_SECRET"].clone()).filter(|s| !s.is_empty());
            assert_eq!(secret, expected, "{}: the workers' credentials Secret", case.name);
        } else {
            eventually(60, "the external pool's status", || async {
                let p = pools.get(pool.metadata.name.as_deref().unwrap()).await.ok()?;
                let s = p.status?;
                (s.workers.len() == p.spec.external.len()).then_some(())
            })
            .await;
        }
    }
    drop(r);
}

macro_rules! cases {
    ($($fn_name:ident => $case:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $fn_name() {
            let case = matrix().into_iter().find(|c| c.name == $case).unwrap();
            run_case(&case).await;
        }
    )*};
}

cases! {
    the_defaults_start_and_become_ready => "defaults",
    everything_on_starts_and_becomes_ready => "everything-on",
    an_external_database_starts_and_becomes_ready => "external-database",
    a_managed_gpu_pool_starts_and_is_reconciled => "gpu-pool-managed",
    an_external_gpu_pool_starts_and_is_probed => "gpu-pool-external",
    no_ingress_starts_and_becomes_ready => "no-ingress",
}

/// Runs the `helm test` pod's command with its environment, addressed at `host:port` (in the
/// cluster: the gateway Service's DNS name and port; here the gateway process); its exit
/// status and output.
fn run_helm_test(docs: &[Doc], port: u16, attempts: Option<u32>) -> (bool, String) {
    let d = docs.iter().find(|d| d.kind() == "Pod").expect("the helm test pod");
    let pod: Pod = serde_json::from_value(d.value.clone()).unwrap();
    let c = &pod.spec.unwrap().containers[0];
    let command: Vec<String> = c.command.clone().unwrap().into_iter().chain(c.args.clone().unwrap_or_default()).collect();
    let mut env: BTreeMap<String, String> = c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap())).collect();
    assert!(env["GATEWAY_HOST"].ends_with(".svc"), "the pod calls the Service: {}", env["GATEWAY_HOST"]);
    env.insert("GATEWAY_HOST".into(), "127.0.0.1".into());
    env.insert("GATEWAY_PORT".into(), port.to_string());
    if let Some(n) = attempts {
        env.insert("ATTEMPTS".into(), n.to_string());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let out = Command::new(&command[0]).args(&command[1..]).env_clear().envs(&env).env("PATH", path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_test_passes_once_a_worker_is_healthy_and_fails_before() {
    let worker = purrify_testkit::fake_worker::FakeWorker::start(2, purrify_testkit::fake_worker::Behavior::Succeed).await;
    let (_, _, sets) = port_sets();
    let mut sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    sets.push("operator.probeIntervalSeconds=1");
    let pool = format!("gpuPool:\n  create: true\n  mode: external\n  external: [{{url: \"{}\"}}]\n", worker.url);
    let docs = render(&["", &pool], &sets);
    let r = start(&docs, matrix()[0].secrets).await;

    // No pool yet: the gateway is up but has no worker, and the test says so.
    let (ok, out) = tokio::task::spawn_blocking({
        let docs = docs.clone();
        let port = r.gateway_port;
        move || run_helm_test(&docs, port, Some(1))
    })
    .await
    .unwrap();
    assert!(!ok, "the helm test passed without a worker:\n{out}");
    assert!(out.contains("HTTP 503") && out.contains("\"healthy_servers\":0"), "{out}");

    // Nothing listening: it fails too, and says it got no answer.
    let closed = free_port();
    let (ok, out) = tokio::task::spawn_blocking({
        let docs = docs.clone();
        move || run_helm_test(&docs, closed, Some(1))
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("not healthy after 1 attempts"), "{out}");

    // The rendered default pool with the worker: healthy, and the helm test passes.
    let pool: GpuPool = serde_json::from_value(docs.iter().find(|d| d.kind() == "GpuPool").unwrap().value.clone()).unwrap();
    Api::<GpuPool>::namespaced(r.cluster.client.clone(), NAMESPACE).create(&PostParams::default(), &pool).await.unwrap();
    let (ok, out) = tokio::task::spawn_blocking({
        let docs = docs.clone();
        let port = r.gateway_port;
        move || run_helm_test(&docs, port, None)
    })
    .await
    .unwrap();
    assert!(ok, "the helm test failed with a healthy worker:\n{out}\n{}", logs(&r));
    assert!(out.contains("is healthy") && out.contains("\"status\":\"healthy\""), "{out}");
}

/// `helm install` without helm: the rendered release goes into kubesim through the real
/// kubectl (CRDs from the chart's `crds/` first, as helm installs them; then every manifest
/// of the release, hooks left out as helm leaves them until `helm test`), with kubectl's
/// default client-side validation against the server's OpenAPI or as a server-side apply.
/// Then the operator, started from the rendered Deployment, reconciles the default pool.
async fn install_with_kubectl(values: &[&str], server_side: bool) {
    let cluster = Cluster::start_empty().await;
    let (_, op_port, sets) = port_sets();
    let mut sets: Vec<String> = sets;
    sets.extend(["tests.enabled=false".into(), "metrics.serviceMonitor.enabled=false".into(), "operator.probeIntervalSeconds=1".into()]);
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let text = support::try_render_text(values, &sets, false).unwrap_or_else(|e| panic!("{e}"));
    let docs = support::parse_stream(&text);
    let apply: &[&str] = if server_side { &["apply", "--server-side"] } else { &["apply"] };

    cluster.kubectl(&["create", "namespace", NAMESPACE], None);
    let crds = chart_dir().join("crds");
    let out = cluster.kubectl(&[apply, &["-f", crds.to_str().unwrap()]].concat(), None);
    assert!(out.contains("gpupools.purrify.io"), "{out}");
    let out = cluster.kubectl(&[apply, &["-f", "-"]].concat(), Some(&text));
    let applied = out.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(applied, docs.len(), "one line per object:\n{out}");
    // Everything is there, as rendered.
    let names = cluster.kubectl(&["get", "-f", "-", "-o", "name"], Some(&text));
    assert_eq!(names.lines().count(), docs.len(), "{names}");
    // Applying the same release again changes nothing (an upgrade without changes).
    let again = cluster.kubectl(&[apply, &["-f", "-"]].concat(), Some(&text));
    assert!(!again.contains("created"), "{again}");

    // The operator of the release, as its Deployment runs it, against what was installed.
    let secrets: Secrets = &[];
    let mounts = cluster.dir.path().join("volumes");
    let op = launch(&docs, "purrify-operator", secrets, &|n, k| panic!("the operator reads no Secret ({n}/{k})"), &mounts);
    assert!(op.ready_url.contains(&op_port.to_string()));
    let operator = spawn(&cluster, "purrify-operator", &op);
    let http = reqwest::Client::new();
    wait_ready(&http, &op.ready_url, &operator).await;

    let pool_doc = docs.iter().find(|d| d.kind() == "GpuPool").expect("the case creates the default pool");
    let pool_name = pool_doc.name().to_owned();
    let pool = eventually(60, "the default pool's status for its generation", || async {
        let json = cluster.kubectl(&["get", "gpupool", &pool_name, "-n", NAMESPACE, "-o", "json"], None);
        let v: Value = serde_json::from_str(&json).unwrap();
        let observed = v["status"]["observedGeneration"].as_i64()?;
        (observed == v["metadata"]["generation"].as_i64()? && !v["status"]["conditions"].as_array()?.is_empty()).then_some(v)
    })
    .await;
    if pool_doc.value["spec"]["image"].is_string() {
        // Managed: the operator runs its workers as a Deployment owned by the pool, with the
        // environment of the chart's worker ConfigMap.
        let json = cluster.kubectl(&["get", "deployment", &format!("{pool_name}-inference"), "-n", NAMESPACE, "-o", "json"], None);
        let d: Deployment = serde_json::from_str(&json).unwrap();
        let owner = &d.metadata.owner_references.as_ref().expect("owned by the pool")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("GpuPool", pool_name.as_str()));
        let c = &d.spec.template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), pool_doc.value["spec"]["image"].as_str());
        let from = c.env_from.clone().unwrap_or_default();
        assert_eq!(from[0].config_map_ref.as_ref().map(|c| c.name.as_str()), Some("purrify-worker"));
        let cm = cluster.kubectl(&["get", "configmap", "purrify-worker", "-n", NAMESPACE, "-o", "jsonpath={.data.PURRIFY_STORAGE}"], None);
        assert!(cm.starts_with("s3://"), "{cm}");
    } else {
        // External-only: its servers are probed and listed.
        let external = pool["spec"]["external"].as_array().unwrap().len();
        eventually(60, "the external servers in the pool's status", || async {
            let json = cluster.kubectl(&["get", "gpupool", &pool_name, "-n", NAMESPACE, "-o", "json"], None);
            let v: Value = serde_json::from_str(&json).unwrap();
            (v["status"]["workers"].as_array().map(Vec::len) == Some(external)).then_some(())
        })
        .await;
    }
    // kubectl's own view of the pool: the CRD's printer columns.
    let table = cluster.kubectl(&["get", "gpupools", "-n", NAMESPACE], None);
    assert!(table.starts_with("NAME") && table.contains("WORKERS") && table.contains(&pool_name), "{table}");
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_on_installs_with_kubectl_apply_and_its_pool_reconciles() {
    install_with_kubectl(&[support::EVERYTHING_ON], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_on_installs_with_kubectl_server_side_apply_and_its_pool_reconciles() {
    install_with_kubectl(&[support::EVERYTHING_ON], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_pool_installs_with_kubectl_apply_and_is_probed() {
    let case = matrix().into_iter().find(|c| c.name == "gpu-pool-external").unwrap();
    install_with_kubectl(&values_of(&case), false).await;
}
