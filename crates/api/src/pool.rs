//! `GpuPool`: a set of inference workers of one kind (DESIGN section 2).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::enhance::QualityLevel;

/// A set of inference workers of one kind. A managed pool has `image` and `replicas`: the
/// operator runs a Deployment of GPU pods (and may also use `external` servers). An
/// external-only pool has neither and uses only the GPU servers in `external`, which may be
/// empty (every server unregistered): the pool is then valid but not Ready.
// clippy reads the repeated `type_`/`json_path` keys of the printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "purrify.io",
    version = "v1alpha1",
    kind = "GpuPool",
    plural = "gpupools",
    singular = "gpupool",
    shortname = "gp",
    shortname = "gpool",
    category = "purrify",
    namespaced,
    status = "GpuPoolStatus",
    doc = "A pool of GPU inference workers: in-cluster replicas and/or external GPU servers.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".status.healthyWorkers", description = "Healthy workers"),
    printcolumn(name = "Queue", type_ = "integer", json_path = ".status.queueDepth", description = "Tasks waiting"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas.min <= self.replicas.max").message("replicas.min must not exceed replicas.max"))]
#[x_kube(validation = Rule::new("!has(self.replicas) || has(self.image)").message("replicas needs an image: a managed pool sets both image and replicas, an external-only pool neither"))]
#[x_kube(validation = Rule::new("!has(self.image) || has(self.replicas)").message("image needs replicas: a managed pool sets both image and replicas, an external-only pool neither"))]
#[serde(rename_all = "camelCase")]
pub struct GpuPoolSpec {
    /// Container image of the inference worker (`purrify-inference serve`). Set together
    /// with `replicas` (a managed pool); an external-only pool leaves both out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How many in-cluster replicas the operator may run; it scales between the two on the
    /// pool's load (queued and running tasks). Set together with `image`; omitted (with
    /// `image`): an external-only pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// GPUs (`nvidia.com/gpu`) requested per replica; 0 for CPU workers.
    #[serde(default = "default_gpus")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus_per_replica: u32,
    /// Extra resource requests and limits of the worker container (CPU, memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must match (e.g. a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods (GPU nodes are usually tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Where the model files come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelSource>,
    /// ONNX Runtime execution provider of the workers. Workers fall back to CPU (and report
    /// it in status) when the requested provider is unavailable.
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// Jobs each worker accepts at once.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency_per_replica: u32,
    /// Queue-driven scaling between `replicas.min` and `replicas.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    /// GPU servers outside the cluster, reached over HTTP(S). Filled by the gateway's
    /// register webhook, or written by hand. Always written, also when empty: an
    /// external-only pool whose last server was unregistered stays a valid pool.
    // No `skip_serializing_if`: replacing a pool with its last endpoint removed must send
    // `external: []`, not drop the field.
    #[serde(default)]
    pub external: Vec<ExternalEndpoint>,
}

/// The serde (and CRD) defaults: what `spec: {}` deserialises to. An external-only pool
/// without endpoints, which the CRD accepts.
impl Default for GpuPoolSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: None,
            gpus_per_replica: default_gpus(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            models: None,
            execution_provider: ExecutionProvider::default(),
            concurrency_per_replica: default_concurrency(),
            scaling: None,
            external: Vec::new(),
        }
    }
}

impl GpuPoolSpec {
    /// An external-only pool of these GPU servers (the register webhook's pool), every other
    /// field at its default.
    pub fn external_only(external: Vec<ExternalEndpoint>) -> Self {
        Self { external, ..Self::default() }
    }
}

fn default_gpus() -> u32 {
    1
}
fn default_concurrency() -> u32 {
    2
}

/// Bounds of the in-cluster replica count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct Replicas {
    /// Replicas kept even with an empty queue.
    #[schemars(range(min = 0, max = 100))]
    pub min: i32,
    /// Most replicas the queue may scale to.
    #[schemars(range(min = 0, max = 100))]
    pub max: i32,
}

/// Model files mounted into the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// PersistentVolumeClaim holding the converted models (`make models` output:
    /// `*.onnx`, `scrfd.onnx`, `mtcnn/`). Without it, the image must contain them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// Mount path of the models inside the worker (`PURRIFY_MODELS_DIR`).
    #[serde(default = "default_models_path")]
    pub path: String,
    /// GFPGAN/CodeFormer-signature face restoration model, relative to `path`. Without it,
    /// workers do background-only enhancement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_model: Option<String>,
    /// Quality levels the workers serve (their models are loaded at start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality_levels: Vec<QualityLevel>,
}

fn default_models_path() -> String {
    "/models".into()
}

/// ONNX Runtime execution provider. `openvino` is for CPU workers (faster than `cpu` on the
/// Real-ESRGAN models); its image must carry ONNX Runtime's OpenVINO build, else the worker
/// falls back to `cpu` with a warning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cuda,
    Tensorrt,
    Cpu,
    Openvino,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
            Self::Cpu => "cpu",
            Self::Openvino => "openvino",
        }
    }
}

/// Queue-driven scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Tasks of the pool (queued plus running) per replica the operator aims for. Running
    /// tasks count so that replicas busy with jobs are not scaled away.
    #[serde(default = "default_target_queue")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_queue_per_replica: u32,
    /// How long the load must stay low before replicas are removed.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Self { target_queue_per_replica: default_target_queue(), scale_down_delay_seconds: default_scale_down_delay() }
    }
}

fn default_target_queue() -> u32 {
    4
}
fn default_scale_down_delay() -> u32 {
    300
}

/// A GPU server outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ExternalEndpoint {
    /// Base URL of its inference worker, e.g. `http://203.0.113.7:8000`.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(:[0-9]+)?/?$"))]
    pub url: String,
    /// Name shown in status (the webhook's server id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Observed state of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuPoolStatus {
    /// In-cluster replicas the Deployment has.
    #[serde(default)]
    pub replicas: i32,
    /// In-cluster replicas that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Workers passing health checks (in-cluster and external).
    #[serde(default)]
    pub healthy_workers: i32,
    /// Every known worker and its health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerStatus>,
    /// Tasks of this pool waiting for a worker.
    #[serde(default)]
    pub queue_depth: i32,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`, `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One worker of the pool as last probed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Pod name (in-cluster) or the external endpoint's `name` (else its URL).
    pub name: String,
    /// Base URL the operator dispatches jobs to.
    pub endpoint: String,
    /// Whether the worker passed its last readiness probe (`/readyz`).
    pub healthy: bool,
    /// Jobs running or queued on it.
    #[serde(default)]
    pub in_flight: u32,
    /// GPU telemetry the worker reports (`/v1/info`): its first GPU, kept for readers that
    /// know only this field; absent on CPU workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuStatus>,
    /// Every GPU the worker reports, in device order (the first is `gpu`); empty on CPU
    /// workers and when written by an operator that knew only `gpu`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuStatus>,
    /// CPU and memory load of the worker's host, when the worker reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostStatus>,
    /// RFC 3339 time of the last successful health probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
}

/// A worker's GPU load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GpuStatus {
    /// Percent, 0..100.
    pub utilization: f32,
    /// Bytes.
    pub memory_used: u64,
    /// Bytes.
    pub memory_total: u64,
}

/// A worker host's CPU and memory load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// Busy CPU time, percent 0..100.
    pub cpu_usage: f32,
    /// Memory in use, bytes.
    pub memory_used: u64,
    /// Memory installed, bytes.
    pub memory_total: u64,
}
