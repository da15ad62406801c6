//! Rendering `charts/purrify` the way `helm template` does, with the offline renderer that
//! `../shared/tools/helm-template/build.sh` builds, and the values matrix the tests share.
//!
//! The `shared` folder sits next to the workspace root (from `/work/main`:
//! `../shared`; in CI next to the clone); it is found from this crate's directory,
//! `CARGO_MANIFEST_DIR/../../../shared`. Nothing is skipped when it or the renderer is
//! missing: the tests fail and say what is missing.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Release name and namespace of every render: `purrify` in `purrify`, the names deploy/ uses.
pub const RELEASE: &str = "purrify";
pub const NAMESPACE: &str = "purrify";
/// The Kubernetes version the templates are rendered for (`.Capabilities`): the kubectl
/// these machines have.
pub const KUBE_VERSION: &str = "1.32";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/purrify")
}

/// `../shared` of the workspace root.
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// The renderer's binary: built (or found in its cache outside the clone) once per test
/// binary by `build.sh`, which installs Debian's Go packages when they are missing.
pub fn helm_template() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = shared_dir().join("tools/helm-template/build.sh");
        assert!(
            script.is_file(),
            "{} is missing: the chart tests render with ../shared/tools/helm-template, next to the workspace root {}",
            script.display(),
            workspace_root().display()
        );
        let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).expect("build.sh prints a path");
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(path.is_file(), "build.sh printed {path:?}, which is not a file");
        path
    })
}

/// One rendered manifest and the template it came from.
#[derive(Debug, Clone)]
pub struct Doc {
    pub source: String,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    /// `Kind/name (template)`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{} ({})", self.kind(), self.name(), self.source)
    }
}

/// Renders the chart with these values files (YAML text, in order) and `--set`s; the
/// renderer's message (schema violations, template failures) on failure.
pub fn try_render(values: &[&str], sets: &[&str], include_crds: bool) -> Result<Vec<Doc>, String> {
    try_render_text(values, sets, include_crds).map(|text| parse_stream(&text))
}

/// [`try_render`]'s manifests as the renderer printed them.
pub fn try_render_text(values: &[&str], sets: &[&str], include_crds: bool) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(helm_template());
    cmd.arg(chart_dir()).args(["--name", RELEASE, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]);
    for (i, v) in values.iter().enumerate() {
        let path = dir.path().join(format!("values-{i}.yaml"));
        std::fs::write(&path, v).expect("values file");
        cmd.arg("-f").arg(path);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    if include_crds {
        cmd.arg("--include-crds");
    }
    let out = cmd.output().expect("helm-template runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout).expect("UTF-8 manifests"))
}

/// [`try_render`] that must succeed.
pub fn render(values: &[&str], sets: &[&str]) -> Vec<Doc> {
    try_render(values, sets, false).unwrap_or_else(|e| panic!("the chart does not render:\n{e}"))
}

/// Splits helm's multi-document output; a document without a `# Source:` line of its own
/// (the second object of a template) belongs to the previous one's template. Documents that
/// are empty or only comments are dropped, as kubectl and helm drop them.
pub fn parse_stream(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut source = String::new();
    let mut chunk = String::new();
    let mut flush = |chunk: &mut String, source: &str| {
        let v: Value = serde_yaml::from_str(chunk).unwrap_or_else(|e| panic!("{source}: not YAML: {e}\n{chunk}"));
        if !v.is_null() {
            assert!(v.is_object(), "{source}: a manifest is a mapping, not {v}");
            docs.push(Doc { source: source.to_owned(), value: v });
        }
        chunk.clear();
    };
    for line in text.lines() {
        if line == "---" {
            flush(&mut chunk, &source);
            continue;
        }
        if let Some(s) = line.strip_prefix("# Source: ") {
            source = s.to_owned();
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    flush(&mut chunk, &source);
    docs
}

/// One set of values of the matrix every test goes through.
pub struct Case {
    pub name: &'static str,
    pub values: &'static str,
    /// The Secrets (name, keys) the values refer to, which an admin creates before the install.
    pub secrets: &'static [(&'static str, &'static [&'static str])],
}

/// Everything the chart can switch on, with non-default names, ports and keys.
pub const EVERYTHING_ON: &str = r#"
images:
  pullSecrets: [regcred]
  gateway:
    registry: registry.example.com/purrify
    tag: 0.1.0-rc.1
  operator:
    digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
storage:
  bucket: photos.example
  prefix: /purrify/tasks/
  s3:
    endpoint: http://minio.storage.svc:9000
    region: cn-north-1
    allowHttp: true
    credentialsSecret: purrify-s3
gateway:
  replicas: 3
  secrets:
    webhookSecret: {name: purrify-webhook, key: WEBHOOK_SECRET}
    adminToken: {name: purrify-admin, key: token}
    callbackSecret: {name: purrify-callbacks, key: hmac}
    providerKey: {name: purrify-providers, key: sealing-key}
    # The signing key and the one it replaced, in one Secret.
    jwtKey: {name: purrify-signing, key: current}
    jwtPreviousKeys: {name: purrify-signing, key: previous}
    wechat: {name: purrify-wechat, appidKey: appid, secretKey: secret}
    bootstrapAdmin: {name: purrify-first-admin, emailKey: email, passwordKey: password}
  # WeChat Pay with stand-in Secrets; the notification URL from ingress.host. The process
  # tests turn it off: the gateway loads the merchant's key files at start.
  wechatPay:
    enabled: true
    mchId: 1900000109
    appid: wx0123456789abcdef
    publicKeyId: PUB_KEY_ID_0114232134912410000000000000
    apiBase: https://wechatpay-proxy.example.com
    apiV3Key: {name: purrify-wechatpay, key: api-v3-key}
    certificatesSecret: purrify-wechatpay-certs
    orderTtlSeconds: 900
  extraEnvFromSecrets: [purrify-pay]
  extraEnv:
    - {name: RUST_LOG, value: "info,purrify_gateway=debug"}
  config:
    logFormat: text
    maxUploadBytes: 52428800
    maxPixels: 40000000
    corsOrigins: [https://servicewechat.com, https://admin.example.com]
    rateLimit: 20.5
    rateBurst: 40
    uploadsPerMinute: 12
    trustedProxyHops: 2
    taskDeadlineSeconds: 240
    maxAttempts: 4
    allowPrivateWorkers: true
    probeIntervalSeconds: 3
    shutdownGraceSeconds: 20
    swaggerUiDir: /usr/share/purrify/swagger-ui
    allowAnonymousUploads: true
    accessTokenSeconds: 900
    refreshTokenDays: 7
    wechatApiBase: https://wechat-proxy.example.com
    loginsPerMinutePerAddress: 12.5
    loginsPerMinutePerAccount: 3
    argon2MemoryKib: 32768
    argon2Iterations: 3
    uploadQuotaBytes: 5368709120
    logRetentionDays: 90
    wsPingIntervalMs: 20000
    wsAuthTimeoutMs: 5000
    callbackMaxAttempts: 5
    callbackRetryBaseMs: 2000
    callbackTimeoutSeconds: 15
    # publicUrl stays empty: it comes from ingress.host (and none in the no-ingress case).
    providerAttempts: 4
    providerRetryBaseMs: 250
    providerTimeoutSeconds: 600
    providerBreakerFailures: 8
    providerBreakerCooldownSeconds: 45
    providerPollMs: 1500
    providerConcurrency: 64
    providerMaxResultBytes: 524288000
  autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 6, targetCPUUtilizationPercentage: 60}
  podDisruptionBudget: {enabled: true, maxUnavailable: 1}
  podAnnotations: {example.com/team: photos}
  podLabels: {example.com/tier: api}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: api, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 1
          preference:
            matchExpressions: [{key: example.com/pool, operator: In, values: [api]}]
  priorityClassName: high-priority
  service: {type: LoadBalancer, port: 8443, annotations: {example.com/lb: internal}}
ingress:
  enabled: true
  className: nginx
  host: api.purrify.example.com
  annotations: {cert-manager.io/cluster-issuer: letsencrypt}
  tls: {enabled: true, secretName: purrify-api-tls}
operator:
  watchNamespace: purrify
  leaseName: purrify-leader
  leaseDurationSeconds: 20
  probeIntervalSeconds: 2
  statusRefreshSeconds: 30
  taskMaxAttempts: 5
  taskDefaultTtlSeconds: 600
  logFormat: text
  extraEnv:
    - {name: RUST_LOG, value: info}
  podAnnotations: {example.com/team: photos}
  priorityClassName: high-priority
gpuPool:
  create: true
  mode: managed
  replicas: {min: 0, max: 3}
  gpusPerReplica: 2
  executionProvider: tensorrt
  concurrencyPerReplica: 3
  resources: {requests: {cpu: "2", memory: 8Gi}}
  nodeSelector: {nvidia.com/gpu.present: "true"}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  models: {pvc: purrify-models, path: /models, faceModel: gfpgan-v1.4.onnx, qualityLevels: [high, fast]}
  scaling: {targetQueuePerReplica: 8, scaleDownDelaySeconds: 120}
  external: [{url: "http://203.0.113.7:8000", name: gpu-1}]
  workerEnv: {PURRIFY_JPEG_QUALITY: 95}
serviceAccount:
  annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/purrify"}
metrics:
  serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  gatewayFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
tests:
  image: {registry: docker.io/library, repository: bash, tag: "5.2"}
  attempts: 5
"#;

const EVERYTHING_SECRETS: &[(&str, &[&str])] = &[
    ("purrify-database", &["DATABASE_URL"]),
    ("purrify-webhook", &["WEBHOOK_SECRET"]),
    ("purrify-admin", &["token"]),
    ("purrify-callbacks", &["hmac"]),
    ("purrify-providers", &["sealing-key"]),
    ("purrify-s3", &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
    ("purrify-signing", &["current", "previous"]),
    ("purrify-wechat", &["appid", "secret"]),
    ("purrify-first-admin", &["email", "password"]),
    ("purrify-pay", &["WECHAT_PAY_MCH_ID"]),
    ("purrify-wechatpay", &["api-v3-key"]),
    // Mounted as files at WECHAT_CERT_DIR.
    ("purrify-wechatpay-certs", &["apiclient_key.pem", "apiclient_cert.pem", "pub_key.pem"]),
];

/// The Secrets of the defaults: the database URL and the JWT signing key, both required.
pub const DEFAULT_SECRETS: &[(&str, &[&str])] = &[("purrify-database", &["DATABASE_URL"]), ("purrify-jwt", &["PURRIFY_JWT_KEY"])];

/// An external database, and the optional account Secrets and the provider key under their
/// default keys (the previous signing keys next to the current one in the JWT Secret).
const EXTERNAL_DATABASE: &str = r#"
gateway:
  secrets:
    databaseUrl: {name: pg-cluster-app, key: uri}
    jwtPreviousKeys: {name: purrify-jwt}
    wechat: {name: purrify-wechat}
    bootstrapAdmin: {name: purrify-bootstrap-admin}
    providerKey: {name: purrify-provider-key}
"#;

/// The values matrix: defaults, everything on, an external database, GPU pools, no ingress.
pub fn matrix() -> Vec<Case> {
    vec![
        Case { name: "defaults", values: "", secrets: DEFAULT_SECRETS },
        Case { name: "everything-on", values: EVERYTHING_ON, secrets: EVERYTHING_SECRETS },
        Case {
            // A database run elsewhere (here: a CloudNativePG cluster's generated Secret).
            name: "external-database",
            values: EXTERNAL_DATABASE,
            secrets: &[
                ("pg-cluster-app", &["uri"]),
                ("purrify-jwt", &["PURRIFY_JWT_KEY", "PURRIFY_JWT_PREVIOUS_KEYS"]),
                ("purrify-wechat", &["WECHAT_APPID", "WECHAT_SECRET"]),
                ("purrify-bootstrap-admin", &["PURRIFY_BOOTSTRAP_ADMIN_EMAIL", "PURRIFY_BOOTSTRAP_ADMIN_PASSWORD"]),
                ("purrify-provider-key", &["PURRIFY_PROVIDER_KEY"]),
            ],
        },
        Case {
            name: "gpu-pool-managed",
            values: "gpuPool:\n  create: true\n  executionProvider: cpu\n  gpusPerReplica: 0\n  replicas: {min: 1, max: 2}\n",
            secrets: DEFAULT_SECRETS,
        },
        Case {
            name: "gpu-pool-external",
            values: "gpuPool:\n  create: true\n  mode: external\n  external:\n    - {url: \"http://203.0.113.7:8000\"}\n    - {url: \"https://gpu-2.example.com\", name: gpu-2}\n",
            secrets: DEFAULT_SECRETS,
        },
        Case { name: "no-ingress", values: "", secrets: EVERYTHING_SECRETS },
    ]
}

/// The values files of a case (`no-ingress` is everything on but the Ingress).
pub fn values_of(case: &Case) -> Vec<&'static str> {
    match case.name {
        "no-ingress" => vec![EVERYTHING_ON, "ingress:\n  enabled: false\n"],
        _ => vec![case.values],
    }
}

/// The chart's appVersion.
pub fn app_version() -> String {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap()).unwrap();
    chart["appVersion"].as_str().expect("Chart.yaml has appVersion").to_owned()
}
