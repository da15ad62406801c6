//! The objects a valid in-cluster pool should have: a Deployment of inference workers, a
//! Service in front of them and a PodDisruptionBudget. Pure functions of the pool, the replica
//! count the scaler chose and the operator's worker defaults; no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use purrify_api::{ExecutionProvider, GpuPool, QualityLevel};

use super::validate::{InCluster, ValidPool};

/// Label carrying the pool name on every child and worker pod; the pod watch maps pods back
/// to their pool through it.
pub const POOL_LABEL: &str = "purrify.io/pool";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/name` of the worker pods.
pub const WORKER_APP: &str = "purrify-inference";
/// `app.kubernetes.io/managed-by` of everything the operator creates; its child watches
/// select on it.
pub const MANAGED_BY: &str = "purrify-operator";
/// Port the worker listens on inside its pod, and its name (probes and the Service refer to
/// the name so the number lives in one place).
pub const WORKER_PORT: i32 = 8000;
pub const WORKER_PORT_NAME: &str = "http";
pub const CONTAINER_NAME: &str = "inference";
/// Extended resource of the NVIDIA device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Suffix of the children's common name.
const CHILD_SUFFIX: &str = "-inference";
/// Longest name a Service may have (DNS-1035 label).
pub const MAX_CHILD_NAME: usize = 63;
/// Longest name of a pool with in-cluster replicas, so its children's names fit.
pub const MAX_IN_CLUSTER_POOL_NAME: usize = MAX_CHILD_NAME - CHILD_SUFFIX.len();
const MODELS_VOLUME: &str = "models";
const TRT_CACHE_VOLUME: &str = "tensorrt-cache";
const TRT_CACHE_PATH: &str = "/var/cache/purrify/tensorrt";
const TMP_VOLUME: &str = "tmp";
/// The root filesystem is read-only: /tmp is an emptyDir of this size.
const TMP_SIZE: &str = "256Mi";
/// The worker drains running jobs for 60 s after SIGTERM (`PURRIFY_SHUTDOWN_GRACE`); the pod
/// must outlive that.
const TERMINATION_GRACE_SECONDS: i64 = 75;

/// Settings of the workers that are the operator's, not the pool's: storage and credentials
/// are cluster-wide, so they come from a ConfigMap and a Secret the Helm chart creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDefaults {
    /// ConfigMap whose keys become worker environment (`PURRIFY_STORAGE`,
    /// `PURRIFY_S3_ENDPOINT`, ...). Optional in the pod, so a missing one does not block it.
    pub env_config_map: Option<String>,
    /// Secret whose keys become worker environment (`AWS_ACCESS_KEY_ID`, ...).
    pub env_secret: Option<String>,
}

impl Default for WorkerDefaults {
    fn default() -> Self {
        Self { env_config_map: Some("purrify-worker".into()), env_secret: Some("purrify-worker".into()) }
    }
}

/// Name shared by a pool's Deployment, Service and PDB.
pub fn child_name(pool: &str) -> String {
    format!("{pool}{CHILD_SUFFIX}")
}

/// Labels selecting a pool's worker pods. Also the Deployment's selector, which Kubernetes
/// never lets change: keep this set stable across releases.
pub fn selector_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAME_LABEL.to_owned(), WORKER_APP.to_owned()), (POOL_LABEL.to_owned(), pool.to_owned())])
}

/// `key=value,...` form of [`selector_labels`], for list and watch calls.
pub fn selector_string(pool: &str) -> String {
    selector_labels(pool).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels of every child object and worker pod.
pub fn labels(pool: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(pool);
    l.insert(INSTANCE_LABEL.to_owned(), pool.to_owned());
    l.insert(COMPONENT_LABEL.to_owned(), "inference-worker".to_owned());
    l.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    l
}

fn meta(pool: &ValidPool, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(&pool.key.name)),
        namespace: Some(pool.key.namespace.clone()),
        labels: Some(labels(&pool.key.name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference children carry, so they are garbage-collected with the
/// pool and their changes trigger its reconcile.
pub fn owner_reference(pool: &GpuPool) -> Option<OwnerReference> {
    use kube::Resource;
    pool.controller_owner_ref(&())
}

/// The desired Deployment with `replicas` workers.
pub fn deployment(pool: &ValidPool, ic: &InCluster, replicas: i32, owner: &OwnerReference, defaults: &WorkerDefaults) -> Deployment {
    let name = &pool.key.name;
    let gpu = ic.gpus_per_replica > 0;
    Deployment {
        metadata: meta(pool, owner),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(name)), ..LabelSelector::default() },
            // A surge pod needs a free GPU that usually does not exist, which would stall every
            // rollout: replace GPU workers one at a time instead.
            strategy: gpu.then(|| DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(name)), ..ObjectMeta::default() }),
                spec: Some(pod_spec(ic, defaults)),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn pod_spec(ic: &InCluster, defaults: &WorkerDefaults) -> PodSpec {
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(Quantity(TMP_SIZE.into())), ..EmptyDirVolumeSource::default() }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount { name: TMP_VOLUME.into(), mount_path: "/tmp".into(), ..VolumeMount::default() }];
    if let Some(claim) = &ic.models.pvc {
        volumes.push(Volume {
            name: MODELS_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim.clone(), read_only: Some(true) }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: MODELS_VOLUME.into(),
            mount_path: ic.models.path.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if ic.execution_provider == ExecutionProvider::Tensorrt {
        // TensorRT compiles engines at start-up, which takes minutes; an emptyDir keeps them
        // across container restarts of the same pod.
        volumes.push(Volume { name: TRT_CACHE_VOLUME.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() });
        mounts.push(VolumeMount { name: TRT_CACHE_VOLUME.into(), mount_path: TRT_CACHE_PATH.into(), ..VolumeMount::default() });
    }
    let mut env_from = Vec::new();
    if let Some(cm) = &defaults.env_config_map {
        env_from.push(EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: cm.clone(), optional: Some(true) }),
            ..EnvFromSource::default()
        });
    }
    if let Some(secret) = &defaults.env_secret {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret.clone(), optional: Some(true) }),
            ..EnvFromSource::default()
        });
    }
    PodSpec {
        containers: vec![Container {
            name: CONTAINER_NAME.into(),
            image: Some(ic.image.clone()),
            // The image's entrypoint is `purrify-inference`.
            args: Some(vec!["serve".into()]),
            ports: Some(vec![ContainerPort {
                name: Some(WORKER_PORT_NAME.into()),
                container_port: WORKER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            env: Some(env(ic)),
            env_from: (!env_from.is_empty()).then_some(env_from),
            resources: Some(resources(ic)),
            // `/healthz` answers as soon as the process serves; `/readyz` only once models are
            // loaded and warmed up, which can take minutes, so only readiness waits for it.
            liveness_probe: Some(http_probe("/healthz", 10, 3)),
            readiness_probe: Some(http_probe("/readyz", 5, 2)),
            volume_mounts: Some(mounts),
            security_context: Some(container_security_context()),
            ..Container::default()
        }],
        security_context: Some(PodSecurityContext {
            // The image's user: numeric and not root in the project's images (UID 10001).
            run_as_non_root: Some(true),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        node_selector: (!ic.node_selector.is_empty()).then(|| ic.node_selector.clone()),
        tolerations: (!ic.tolerations.is_empty()).then(|| ic.tolerations.clone()),
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // Service links would put a variable per Service of the namespace into every worker.
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The "restricted" Pod Security Standard, as the chart's own pods have it, so workers run
/// in namespaces that enforce it: the worker writes only to its storage, /tmp and the
/// TensorRT cache, all volumes.
fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

fn env(ic: &InCluster) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..EnvVar::default() };
    let mut env = vec![
        // Pods are reached on their IP: listen on every interface, not loopback.
        var("PURRIFY_WORKER_ADDR", format!("0.0.0.0:{WORKER_PORT}")),
        var("PURRIFY_EXECUTION_PROVIDER", ic.execution_provider.as_str().into()),
        var("PURRIFY_CAPACITY", ic.concurrency_per_replica.to_string()),
        var("PURRIFY_LOG_FORMAT", "json".into()),
    ];
    // Only a mounted PVC moves the models: without one they are the image's, where its own
    // PURRIFY_MODELS_DIR points (/opt/purrify/models in purrify-inference).
    if ic.models.pvc.is_some() {
        env.push(var("PURRIFY_MODELS_DIR", ic.models.path.clone()));
    }
    if let Some(face) = &ic.models.face_model {
        let path = if face.starts_with('/') { face.clone() } else { format!("{}/{face}", ic.models.path.trim_end_matches('/')) };
        env.push(var("PURRIFY_FACE_MODEL", path));
    }
    if !ic.models.quality_levels.is_empty() {
        let levels: Vec<&str> = ic
            .models
            .quality_levels
            .iter()
            .map(|q| match q {
                QualityLevel::High => "high",
                QualityLevel::Medium => "medium",
                QualityLevel::Fast => "fast",
            })
            .collect();
        env.push(var("PURRIFY_QUALITY_LEVELS", levels.join(",")));
    }
    if ic.execution_provider == ExecutionProvider::Tensorrt {
        env.push(var("PURRIFY_TENSORRT_CACHE", TRT_CACHE_PATH.into()));
    }
    env
}

/// The pool's resources plus its GPUs. GPUs go into limits: extended resources cannot be
/// overcommitted, and Kubernetes copies the limit into the request.
fn resources(ic: &InCluster) -> ResourceRequirements {
    let mut r = ic.resources.clone().unwrap_or_default();
    if ic.gpus_per_replica > 0 {
        r.limits.get_or_insert_with(BTreeMap::new).insert(GPU_RESOURCE.into(), Quantity(ic.gpus_per_replica.to_string()));
    }
    r
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(WORKER_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// A ClusterIP Service over the workers, for scraping their `/metrics` and for clients that
/// want one stable name (the operator itself talks to each pod directly).
pub fn service(pool: &ValidPool, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(pool, owner),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&pool.key.name)),
            ports: Some(vec![ServicePort {
                name: Some(WORKER_PORT_NAME.into()),
                port: WORKER_PORT,
                target_port: Some(IntOrString::String(WORKER_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// At most one worker evicted at a time by voluntary disruptions (node drains, upgrades).
/// `maxUnavailable` rather than `minAvailable`, so a single-replica pool can still be
/// drained; unhealthy pods may always be evicted, so a broken worker never blocks a drain.
pub fn pod_disruption_budget(pool: &ValidPool, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(pool, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(&pool.key.name)), ..LabelSelector::default() }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Everything an in-cluster pool should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
}

pub fn desired(pool: &ValidPool, ic: &InCluster, replicas: i32, owner: &OwnerReference, defaults: &WorkerDefaults) -> Desired {
    Desired {
        deployment: deployment(pool, ic, replicas, owner, defaults),
        service: service(pool, owner),
        pdb: pod_disruption_budget(pool, owner),
    }
}
