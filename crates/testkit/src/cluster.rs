//! Talking to `purrify-kubesim` from tests the way the binaries talk to a cluster.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client configured from the kubeconfig file kubesim wrote, as the operator and the
/// gateway configure theirs from `KUBECONFIG`.
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config from kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// Registers the project's CRDs (the same objects `crds/*.yaml` holds; the api crate's test
/// keeps the files in sync), as an admin applies them.
pub async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in purrify_api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("creating CRD {:?}: {e}", crd.metadata.name));
    }
}

/// A `purrify-kubesim` process on a free loopback port, with the kubeconfig it wrote and the
/// project's CRDs installed: the cluster of the process-level suites.
pub struct KubesimProcess {
    pub proc: crate::Proc,
    pub kubeconfig: std::path::PathBuf,
    pub client: kube::Client,
}

impl KubesimProcess {
    /// Starts it with its kubeconfig and log in `dir`; returns once it listens and the CRDs
    /// are in.
    pub async fn start(dir: &Path) -> Self {
        use std::io::{BufRead, BufReader};
        let kubeconfig = dir.join("kubeconfig");
        let log = dir.join("kubesim.log");
        let mut child = std::process::Command::new(crate::workspace_bin("purrify-kubesim"))
            .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("kubesim log"))
            .spawn()
            .expect("purrify-kubesim starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("kubesim's first line");
        assert!(line.starts_with("listening on "), "kubesim said {line:?}");
        let proc = crate::Proc::adopt("kubesim", child, log);
        let client = kube_client(&kubeconfig).await;
        install_crds(&client).await;
        Self { proc, kubeconfig, client }
    }
}

/// The command line of a `purrify-gateway` in Kubernetes mode on 127.0.0.1:`port`, namespace
/// `default`, history in `data_dir`, objects under `storage` (a URI), no rate limits; callers
/// append what their scenario needs (secrets, the operator's URL).
pub fn kubernetes_gateway_args(port: u16, data_dir: &Path, storage: &str) -> Vec<String> {
    [
        "--backend",
        "kubernetes",
        "--namespace",
        "default",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &data_dir.display().to_string(),
        "--storage",
        storage,
        "--rate-limit",
        "0",
        "--uploads-per-minute",
        "100000",
        // Kubernetes mode refuses to start without a shared signing key.
        "--jwt-key",
        TEST_JWT_KEY,
    ]
    .map(String::from)
    .to_vec()
}

/// The access-token signing key of gateways started by tests (`<kid>:<secret>`).
pub const TEST_JWT_KEY: &str = "test-key:0123456789abcdef0123456789abcdef-purrify";
