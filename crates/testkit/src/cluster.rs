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
