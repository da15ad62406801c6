//! Checks a `GpuPool` beyond what the CRD schema and its CEL rules already enforce, and turns
//! it into the shape the builders and the prober work from. Pure.
//!
//! The schema catches most mistakes at admission; these are the ones it cannot express (a
//! pool name too long to derive a Service name from) or that an older CRD version may have
//! let through. The rules are the CRD's: a pool is either managed (`image` and `replicas`)
//! or external-only (neither); an external-only pool may have no endpoints at all (the last
//! registered server was unregistered), which is valid but not Ready. An invalid pool keeps
//! whatever it already runs: nothing is applied or removed until the spec is fixed, and the
//! status says why.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use purrify_api::{ExecutionProvider, GpuPool, ModelSource, Scaling};
use purrify_inference::client::{WorkerSpec, normalize_endpoint};

use super::builder::{MAX_CHILD_NAME, MAX_IN_CLUSTER_POOL_NAME, child_name};
use crate::registry::PoolKey;

/// A pool that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPool {
    pub key: PoolKey,
    pub generation: Option<i64>,
    /// In-cluster replicas, when the pool has any.
    pub in_cluster: Option<InCluster>,
    /// External workers, endpoints normalised and de-duplicated.
    pub external: Vec<WorkerSpec>,
    pub concurrency_per_replica: u32,
}

/// What the operator runs in the cluster for a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct InCluster {
    pub image: String,
    pub min: i32,
    pub max: i32,
    pub gpus_per_replica: u32,
    pub resources: Option<ResourceRequirements>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub models: ModelSource,
    pub execution_provider: ExecutionProvider,
    pub concurrency_per_replica: u32,
    pub scaling: Scaling,
}

/// Why a pool was refused: one human-readable line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

pub fn validate(pool: &GpuPool) -> Result<ValidPool, Invalid> {
    let mut problems = Vec::new();
    let name = pool.metadata.name.clone().unwrap_or_default();
    let namespace = pool.metadata.namespace.clone().unwrap_or_default();
    let spec = &pool.spec;
    if name.is_empty() || namespace.is_empty() {
        problems.push("the pool has no name or namespace".to_owned());
    }

    let in_cluster = match (&spec.replicas, &spec.image) {
        (None, None) => None,
        (Some(_), None) => {
            problems.push("replicas is set but image is not: in-cluster workers need an image".to_owned());
            None
        }
        (None, Some(_)) => {
            problems.push("image is set but replicas is not: a managed pool needs both, an external-only pool neither".to_owned());
            None
        }
        (Some(r), Some(image)) => {
            if image.trim().is_empty() {
                problems.push("image is empty".to_owned());
            }
            if r.min < 0 || r.max < 0 {
                problems.push(format!("replicas must not be negative (min {}, max {})", r.min, r.max));
            }
            if r.min > r.max {
                problems.push(format!("replicas.min ({}) exceeds replicas.max ({})", r.min, r.max));
            }
            let child = child_name(&name);
            if !is_dns1035_label(&child) {
                problems.push(format!(
                    "the pool name must start with a letter and be at most {} characters, so that \
                     its Service name `{child}` is a valid DNS label",
                    MAX_IN_CLUSTER_POOL_NAME
                ));
            }
            Some(InCluster {
                image: image.clone(),
                min: r.min,
                max: r.max,
                gpus_per_replica: spec.gpus_per_replica,
                resources: spec.resources.clone(),
                node_selector: spec.node_selector.clone(),
                tolerations: spec.tolerations.clone(),
                models: spec.models.clone().unwrap_or_else(default_models),
                execution_provider: spec.execution_provider,
                concurrency_per_replica: spec.concurrency_per_replica.max(1),
                scaling: spec.scaling.clone().unwrap_or_default(),
            })
        }
    };
    if let Some(s) = &spec.scaling
        && s.target_queue_per_replica == 0
    {
        problems.push("scaling.targetQueuePerReplica must be at least 1".to_owned());
    }

    let mut external: Vec<WorkerSpec> = Vec::new();
    for e in &spec.external {
        match normalize_endpoint(&e.url) {
            Ok(endpoint) => {
                // The register webhook may add an endpoint twice; one worker is one entry.
                if external.iter().any(|w| w.endpoint == endpoint) {
                    continue;
                }
                let name = e.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| endpoint.clone());
                external.push(WorkerSpec::new(endpoint).with_name(name).with_capacity(spec.concurrency_per_replica.max(1)));
            }
            Err(err) => problems.push(format!("external endpoint `{}` is invalid: {err}", e.url)),
        }
    }

    if !problems.is_empty() {
        return Err(Invalid(problems));
    }
    Ok(ValidPool {
        key: PoolKey::new(namespace, name),
        generation: pool.metadata.generation,
        in_cluster,
        external,
        concurrency_per_replica: spec.concurrency_per_replica.max(1),
    })
}

fn default_models() -> ModelSource {
    // Through serde so the CRD's defaults (`path: /models`) stay in one place.
    serde_json::from_value(serde_json::json!({})).unwrap_or_default()
}

/// RFC 1035 label: what a Service name must be.
fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CHILD_NAME
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_api::{ExternalEndpoint, GpuPoolSpec, Replicas};

    fn pool(name: &str, spec: GpuPoolSpec) -> GpuPool {
        let mut p = GpuPool::new(name, spec);
        p.metadata.namespace = Some("ns".into());
        p
    }

    #[test]
    fn service_name_limits_apply_to_in_cluster_pools_only() {
        let long = "a".repeat(60);
        let spec = GpuPoolSpec { image: Some("img".into()), replicas: Some(Replicas { min: 1, max: 2 }), ..GpuPoolSpec::default() };
        let err = validate(&pool(&long, spec)).unwrap_err();
        assert!(err.to_string().contains("at most 53 characters"), "{err}");
        let ext =
            GpuPoolSpec { external: vec![ExternalEndpoint { url: "http://10.0.0.1:8000".into(), name: None }], ..GpuPoolSpec::default() };
        assert!(validate(&pool(&long, ext)).is_ok());
        let digit = GpuPoolSpec { image: Some("img".into()), replicas: Some(Replicas { min: 0, max: 1 }), ..GpuPoolSpec::default() };
        assert!(validate(&pool("1pool", digit)).is_err());
    }

    #[test]
    fn refuses_what_the_schema_cannot_see() {
        let spec = GpuPoolSpec { image: Some(" ".into()), replicas: Some(Replicas { min: 3, max: 1 }), ..GpuPoolSpec::default() };
        let err = validate(&pool("p", spec)).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.to_string().contains("image is empty") && err.to_string().contains("exceeds"), "{err}");
        let spec = GpuPoolSpec { external: vec![ExternalEndpoint { url: "not a url".into(), name: None }], ..GpuPoolSpec::default() };
        assert!(validate(&pool("p", spec)).unwrap_err().to_string().contains("not a url"));
    }

    #[test]
    fn a_pool_is_managed_or_external_only_as_the_crd_says() {
        let replicas = Some(Replicas { min: 0, max: 2 });
        let err = validate(&pool("p", GpuPoolSpec { replicas: replicas.clone(), ..GpuPoolSpec::default() })).unwrap_err();
        assert!(err.to_string().contains("replicas is set but image is not"), "{err}");
        let err = validate(&pool("p", GpuPoolSpec { image: Some("img".into()), ..GpuPoolSpec::default() })).unwrap_err();
        assert!(err.to_string().contains("image is set but replicas is not"), "{err}");
        let managed = GpuPoolSpec { image: Some("img".into()), replicas, ..GpuPoolSpec::default() };
        assert!(validate(&pool("p", managed)).unwrap().in_cluster.is_some());
    }

    #[test]
    fn an_external_only_pool_without_endpoints_is_valid() {
        // What unregistering the last server leaves behind; the status says NoWorkers.
        let v = validate(&pool("default", GpuPoolSpec::external_only(vec![]))).unwrap();
        assert!(v.in_cluster.is_none() && v.external.is_empty());
    }

    #[test]
    fn external_endpoints_are_normalised_and_deduplicated() {
        let spec = GpuPoolSpec {
            external: vec![
                ExternalEndpoint { url: "http://10.0.0.1:8000/".into(), name: Some("gpu-a".into()) },
                ExternalEndpoint { url: "http://10.0.0.1:8000".into(), name: None },
                ExternalEndpoint { url: "http://10.0.0.2:8000".into(), name: None },
            ],
            concurrency_per_replica: 3,
            ..GpuPoolSpec::default()
        };
        let v = validate(&pool("p", spec)).unwrap();
        assert!(v.in_cluster.is_none());
        assert_eq!(v.external.len(), 2);
        assert_eq!(v.external[0].name.as_deref(), Some("gpu-a"));
        assert_eq!(v.external[0].endpoint, "http://10.0.0.1:8000");
        assert_eq!(v.external[1].name.as_deref(), Some("http://10.0.0.2:8000"));
        assert_eq!(v.external[1].capacity, Some(3));
    }

    #[test]
    fn models_default_to_the_crd_default_path() {
        assert_eq!(default_models().path, "/models");
    }
}
