//! The chart's Deployments, run in the images: each container of the rendered release (the
//! gateway and the operator from `charts/purrify`, the inference worker from the Deployment
//! the operator creates for the chart's default GpuPool) starts in its image with exactly the
//! rendered `args` and `env`, under the pod's security context, and its readiness probe's
//! path answers 200; then it stops on SIGTERM within the pod's grace period.
//!
//! How a pod becomes a container here (the emulated kubelet):
//! - the image: the rendered one's repository and tag, which must be an image `make images`
//!   builds (`purrify-<component>:<appVersion>`);
//! - `env`: `value`s as rendered, `secretKeyRef`/`secretRef` from the Secrets an admin created
//!   (values of this test), `configMapRef` from the rendered ConfigMaps, the downward API from
//!   the release namespace and a pod name; `envFrom` first, `env` over it, as Kubernetes does.
//!   Nothing else is added but KUBECONFIG, which stands in for the service account's token
//!   in pods that have one (kubesim speaks plain HTTP on loopback);
//! - the security context: `runAsUser:runAsGroup` as `--user`, fsGroup as `--group-add`,
//!   `readOnlyRootFilesystem` as `--read-only` without podman's own /tmp, /run and /var/tmp
//!   (only what the pod mounts is writable), dropped capabilities, no privilege escalation;
//! - each emptyDir as a tmpfs of its sizeLimit owned by the container's user (what fsGroup
//!   does to an emptyDir);
//! - the pod network: a network namespace of its own (slirp4netns) whose 10.0.2.2 is the
//!   host's loopback, where kubesim, PostgreSQL and the S3 server listen; the container ports
//!   are published on loopback for the probes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use purrify_api::GpuPool;
use purrify_testkit::cluster::KubesimProcess;
use purrify_testkit::eventually;

use crate::render::{Doc, NAMESPACE, render};
use crate::support::{
    ONE_AT_A_TIME, S3_BUCKET, S3_KEY, S3_SECRET, VERSION, assert_non_root, ensure_images, logs_of, podman, run, s3_server, stop_within,
};

/// The host's loopback as a container on `slirp4netns:allow_host_loopback=true` reaches it.
const HOST_LOOPBACK: &str = "10.0.2.2";
/// Where the cluster credentials appear in containers of pods with a service account.
const KUBECONFIG_IN_POD: &str = "/var/run/purrify/kubeconfig";
/// The access-token signing key in the JWT Secret (`<key id>:<secret of at least 32 bytes>`).
const JWT_KEY: &str = "image-k1:0123456789abcdef0123456789abcdef-image-tests";

/// The release this test installs: the defaults (the JWT Secret `purrify-jwt`, anonymous
/// uploads off), with what a real install must say (where S3 is and its credentials Secret,
/// the webhook and admin Secrets) and the default GpuPool on CPU, so the operator creates a
/// worker Deployment.
fn values(s3_port: u16) -> String {
    format!(
        r#"
storage:
  bucket: {S3_BUCKET}
  s3:
    endpoint: http://{HOST_LOOPBACK}:{s3_port}
    region: us-east-1
    allowHttp: true
    credentialsSecret: purrify-s3
gateway:
  secrets:
    webhookSecret: {{name: purrify-webhook, key: WEBHOOK_SECRET}}
    adminToken: {{name: purrify-admin, key: token}}
gpuPool:
  create: true
  executionProvider: cpu
  gpusPerReplica: 0
  replicas: {{min: 1, max: 1}}
"#
    )
}

/// The Secrets the admin created before the install: name -> key -> value.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn secrets(database_url: &str) -> Secrets {
    let secret = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    BTreeMap::from([
        ("purrify-database".into(), secret(&[("DATABASE_URL", database_url)])),
        ("purrify-webhook".into(), secret(&[("WEBHOOK_SECRET", "webhook-secret-for-tests")])),
        ("purrify-admin".into(), secret(&[("token", "admin-token-for-tests")])),
        ("purrify-jwt".into(), secret(&[("PURRIFY_JWT_KEY", JWT_KEY)])),
        ("purrify-s3".into(), secret(&[("AWS_ACCESS_KEY_ID", S3_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET)])),
    ])
}

/// What the emulated kubelet resolves references from.
struct Sources {
    secrets: Secrets,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// The cluster credentials on the host, for pods with a service account.
    kubeconfig: std::path::PathBuf,
}

/// The containers of this test, removed when dropped (their logs printed on failure).
#[derive(Default)]
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", logs_of(&self.0));
        }
        for c in &self.0 {
            let _ = run(&["rm", "-f", "-t", "0", c]);
        }
    }
}

/// One started container of a pod: its name, its readiness URL on the host and the pod's
/// grace period.
struct Started {
    container: String,
    ready_url: String,
    grace_secs: u64,
}

/// The rendered image's local counterpart: `<registry>/purrify-x:<tag>` -> `purrify-x:<tag>`,
/// which must be what `make images` builds.
fn local_image(rendered: &str) -> String {
    let last = rendered.rsplit('/').next().unwrap_or_default();
    let (repo, tag) = last.split_once(':').unwrap_or_else(|| panic!("image {rendered} has no tag"));
    assert!(
        ["purrify-gateway", "purrify-operator", "purrify-inference"].contains(&repo),
        "image {rendered} is not one `make images` builds"
    );
    assert_eq!(tag, VERSION, "image {rendered}: `make images` tags {repo}:{VERSION}");
    format!("{repo}:{tag}")
}

/// A Quantity of bytes (`64Mi`, `1Gi`, `500M`, `1000`) as bytes.
fn bytes(q: &str) -> u64 {
    let (digits, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    let factor = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("quantity {q}: unit {unit} is not emulated"),
    };
    n * factor
}

/// The container's environment as the kubelet builds it.
fn environment(id: &str, c: &Container, pod_name: &str, s: &Sources) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        assert!(from.prefix.is_none(), "{id}: envFrom prefix is not emulated");
        if let Some(r) = &from.config_map_ref {
            match s.config_maps.get(&r.name) {
                Some(data) => env.extend(data.clone()),
                None => assert_eq!(r.optional, Some(true), "{id}: ConfigMap {} does not exist", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match s.secrets.get(&r.name) {
                Some(data) => env.extend(data.clone()),
                None => assert_eq!(r.optional, Some(true), "{id}: Secret {} does not exist", r.name),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            assert!(!v.contains("$("), "{id}: {} would be expanded by Kubernetes", e.name);
            v.clone()
        } else {
            let from = e.value_from.as_ref().unwrap_or_else(|| panic!("{id}: {} has neither value nor valueFrom", e.name));
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.namespace" => NAMESPACE.to_owned(),
                    "metadata.name" => pod_name.to_owned(),
                    other => panic!("{id}: fieldRef {other} is not emulated"),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let secret = s.secrets.get(&r.name).unwrap_or_else(|| panic!("{id}: Secret {} does not exist", r.name));
                secret.get(&r.key).unwrap_or_else(|| panic!("{id}: Secret {} has no key {}", r.name, r.key)).clone()
            } else if let Some(r) = &from.config_map_key_ref {
                let cm = s.config_maps.get(&r.name).unwrap_or_else(|| panic!("{id}: ConfigMap {} does not exist", r.name));
                cm.get(&r.key).unwrap_or_else(|| panic!("{id}: ConfigMap {} has no key {}", r.name, r.key)).clone()
            } else {
                panic!("{id}: {} has an unsupported valueFrom", e.name)
            }
        };
        env.insert(e.name.clone(), v);
    }
    env
}

fn port_number(id: &str, c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(n) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(n))
                .unwrap_or_else(|| panic!("{id}: no container port named {n}"))
                .container_port
        }
    }
}

/// Starts the single container of Deployment `d` as the kubelet would (see the module doc).
fn start(d: &Deployment, s: &Sources, containers: &mut Containers) -> Started {
    let name = d.metadata.name.clone().expect("a named Deployment");
    let spec: &PodSpec = d.spec.template.spec.as_ref().unwrap_or_else(|| panic!("{name}: no pod spec"));
    assert_eq!(spec.containers.len(), 1, "{name}: one container");
    assert!(spec.init_containers.is_none(), "{name}: init containers are not emulated");
    let c = &spec.containers[0];
    let id = format!("{name}/{}", c.name);
    assert!(c.command.is_none(), "{id}: the image's entrypoint is the binary");
    let image = local_image(c.image.as_deref().unwrap_or_default());
    let pod_name = format!("{name}-5d8f7c9b6d-x7k2p");
    let container = format!("purrify-it-{}-{name}", std::process::id());
    let grace_secs = spec.termination_grace_period_seconds.unwrap_or(30) as u64;

    let mut a: Vec<String> = ["run", "-d", "--name", &container, "--stop-timeout", &grace_secs.to_string()].map(String::from).to_vec();
    a.push("--network=slirp4netns:allow_host_loopback=true".into());
    for p in c.ports.iter().flatten() {
        a.push(format!("--publish=127.0.0.1::{}", p.container_port));
    }

    // The security context, the container's over the pod's.
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    if let Some(user) = sc.run_as_user.or(psc.run_as_user) {
        let group = sc.run_as_group.or(psc.run_as_group);
        a.push(format!("--user={user}{}", group.map(|g| format!(":{g}")).unwrap_or_default()));
    }
    if let Some(g) = psc.fs_group {
        a.push(format!("--group-add={g}"));
    }
    if sc.read_only_root_filesystem == Some(true) {
        a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if let Some(caps) = &sc.capabilities {
        a.extend(caps.drop.iter().flatten().map(|c| format!("--cap-drop={}", c.to_lowercase())));
        a.extend(caps.add.iter().flatten().map(|c| format!("--cap-add={}", c.to_lowercase())));
    }
    if sc.allow_privilege_escalation == Some(false) {
        a.push("--security-opt=no-new-privileges".into());
    }
    for seccomp in [&sc.seccomp_profile, &psc.seccomp_profile].into_iter().flatten() {
        assert_eq!(seccomp.type_, "RuntimeDefault", "{id}: only the runtime's default seccomp profile is emulated");
    }
    assert_ne!(sc.privileged, Some(true), "{id}: privileged");

    // Volumes: emptyDirs as tmpfs owned by the container's user.
    for m in c.volume_mounts.iter().flatten() {
        let vol = spec.volumes.iter().flatten().find(|v| v.name == m.name).unwrap_or_else(|| panic!("{id}: no volume {}", m.name));
        let dir = vol.empty_dir.as_ref().unwrap_or_else(|| panic!("{id}: volume {} is not an emptyDir (not emulated)", m.name));
        let size = dir.size_limit.as_ref().map(|q| format!(",size={}", bytes(&q.0))).unwrap_or_default();
        a.push(format!("--tmpfs={}:rw{size},U", m.mount_path));
    }
    // The service account's credentials.
    if spec.service_account_name.is_some() && spec.automount_service_account_token != Some(false) {
        a.push(format!("--volume={}:{KUBECONFIG_IN_POD}:ro", s.kubeconfig.display()));
        a.push(format!("--env=KUBECONFIG={KUBECONFIG_IN_POD}"));
    }
    for (k, v) in environment(&id, c, &pod_name, s) {
        a.push(format!("--env={k}={v}"));
    }
    a.push(image);
    a.extend(c.args.iter().flatten().cloned());

    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    podman(&args);
    containers.0.push(container.clone());

    let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{id}: no httpGet readiness probe"));
    assert!(probe.host.is_none() && probe.scheme.as_deref().is_none_or(|s| s == "HTTP"), "{id}: a plain HTTP probe of the pod");
    let port = port_number(&id, c, &probe.port);
    let published = podman(&["port", &container, &format!("{port}/tcp")]);
    let host_port = published.lines().next().and_then(|l| l.rsplit(':').next()).unwrap_or_else(|| panic!("{id}: {published}"));
    let ready_url = format!("http://127.0.0.1:{host_port}{}", probe.path.as_deref().unwrap_or("/"));
    Started { container, ready_url, grace_secs }
}

/// Polls the readiness probe's URL until it answers 200; fails at once when the container
/// exits, and after `secs` seconds.
async fn wait_ready(http: &reqwest::Client, s: &Started, secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(&s.ready_url).send().await
            && r.status() == 200
        {
            return start.elapsed();
        }
        let state = podman(&["inspect", "-f", "{{.State.Status}} (exit code {{.State.ExitCode}})", &s.container]);
        assert!(state.starts_with("running"), "{} is {state} before {} answered 200", s.container, s.ready_url);
        assert!(start.elapsed() < Duration::from_secs(secs), "{} never answered 200 in {secs} s", s.ready_url);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deployment(docs: &[Doc], name: &str) -> Deployment {
    let d = docs.iter().find(|d| d.kind() == "Deployment" && d.name() == name).unwrap_or_else(|| panic!("no Deployment {name}"));
    serde_json::from_value(d.value.clone()).unwrap()
}

/// `[env: NAME` of `purrify-inference serve --help`, run in its image: what the worker reads.
fn worker_reads(image: &str) -> Vec<String> {
    let help = podman(&["run", "--rm", "--network=none", image, "serve", "--help"]);
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_deployments_run_in_their_images_and_become_ready() {
    let _one = ONE_AT_A_TIME.lock().await;
    ensure_images();
    let begin = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = KubesimProcess::start(dir.path()).await;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(cluster.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    // The cluster and the database as the containers reach them: through the host's loopback.
    let kubeconfig = dir.path().join("kubeconfig-in-pod");
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    assert!(text.contains("server: http://127.0.0.1:"), "{text}");
    std::fs::write(&kubeconfig, text.replace("server: http://127.0.0.1:", &format!("server: http://{HOST_LOOPBACK}:"))).unwrap();
    let db = purrify_store::testing::TestPostgresUrl::create().await;
    let database_url = in_pod_url(&db.url);
    let s3_dir = tempfile::tempdir().unwrap();
    let s3_port = s3_server(s3_dir.path()).await;

    let docs = render(&[&values(s3_port)], &[]);
    let config_maps = docs
        .iter()
        .filter(|d| d.kind() == "ConfigMap")
        .map(|d| {
            let cm: ConfigMap = serde_json::from_value(d.value.clone()).unwrap();
            (d.name().to_owned(), cm.data.unwrap_or_default())
        })
        .collect();
    let sources = Sources { secrets: secrets(&database_url), config_maps, kubeconfig };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut containers = Containers::default();

    // The operator first: Ready only as the leader, on the rendered Lease.
    let operator = start(&deployment(&docs, "purrify-operator"), &sources, &mut containers);
    let took = wait_ready(&http, &operator, 60).await;
    eprintln!("operator ready in {took:?}");
    let gateway = start(&deployment(&docs, "purrify-gateway"), &sources, &mut containers);
    let took = wait_ready(&http, &gateway, 60).await;
    eprintln!("gateway ready in {took:?}");
    first_admin_as_notes_say(&http, &gateway).await;

    // The chart's default pool: the operator in its container creates the workers'
    // Deployment, which runs the inference image as the operator built it.
    let pool: GpuPool =
        serde_json::from_value(docs.iter().find(|d| d.kind() == "GpuPool").expect("the default pool").value.clone()).unwrap();
    let pool_name = pool.metadata.name.clone().unwrap();
    Api::<GpuPool>::namespaced(cluster.client.clone(), NAMESPACE).create(&PostParams::default(), &pool).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let workers = eventually(60, "the default pool's worker Deployment", || async {
        deployments.get_opt(&format!("{pool_name}-inference")).await.ok().flatten()
    })
    .await;
    let c = &workers.spec.template.spec.as_ref().unwrap().containers[0];
    let reads = worker_reads(&local_image(c.image.as_deref().unwrap()));
    for e in c.env.iter().flatten() {
        assert!(reads.contains(&e.name), "the worker Deployment sets {}, which `purrify-inference serve` does not read", e.name);
    }
    let worker = start(&workers, &sources, &mut containers);
    let took = wait_ready(&http, &worker, 180).await;
    eprintln!("worker ready in {took:?}");

    // Each ran, and became Ready, as a non-root user on a read-only root filesystem: the
    // restricted settings of its pod spec (the worker's from the operator's builder).
    for s in [&operator, &gateway, &worker] {
        assert_non_root(&s.container);
        assert_eq!(podman(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &s.container]), "true", "{}", s.container);
    }
    for s in [&worker, &gateway, &operator] {
        let took = stop_within(&s.container, s.grace_secs);
        eprintln!("{} stopped on SIGTERM in {took:?} (grace {} s)", s.container, s.grace_secs);
    }
    drop(containers);
    drop(cluster);
    eprintln!("rendered Deployments in their images: {:?}", begin.elapsed());
}

/// NOTES.txt's way to the first admin: `purrify-gateway admin create-user` run in the
/// gateway's container (`kubectl exec -i`; here `podman exec -i`), the password on stdin.
/// The admin then logs in, with a token signed by the JWT Secret's key; anonymous uploads are
/// refused (the chart's default) and the admin's are not.
async fn first_admin_as_notes_say(http: &reqwest::Client, gateway: &Started) {
    use std::io::Write;
    let (email, password) = ("admin@example.com", "Image-admin-pass-42");
    let mut child =
        crate::support::podman_cmd(&["exec", "-i", &gateway.container, "purrify-gateway", "admin", "create-user", "--email", email])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("podman exec");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "admin create-user in the gateway container failed:\n{text}");
    assert!(text.contains("created admin admin@example.com"), "{text}");
    assert!(!text.contains(password), "the password is echoed:\n{text}");

    let base = gateway.ready_url.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
    let login = http
        .post(format!("{base}/api/auth/admin/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the admin's login");
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["data"]["access_token"].as_str().expect("an access token").to_owned();
    let me = http.get(format!("{base}/api/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200, "/api/auth/me with the admin's token");
    let anonymous = http.post(format!("{base}/api/v1/enhance")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "an anonymous upload with the chart's defaults");
    let upload = http.post(format!("{base}/api/v1/enhance")).bearer_auth(&token).send().await.unwrap();
    assert_ne!(upload.status(), 401, "the admin's upload");
}

/// A PostgreSQL URL on the host's loopback, as a container reaches it.
fn in_pod_url(url: &str) -> String {
    let u = url.replacen("@127.0.0.1:", &format!("@{HOST_LOOPBACK}:"), 1).replacen("@localhost:", &format!("@{HOST_LOOPBACK}:"), 1);
    assert!(u.contains(HOST_LOOPBACK), "the test PostgreSQL is not on the host's loopback: {url}");
    u
}
