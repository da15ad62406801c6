//! Purrify's custom resources, group `purrify.io`, version `v1alpha1` (DESIGN section 2), and
//! the small vocabulary shared by the operator and the gateway. Types only: no I/O.
//!
//! Doc comments on fields become the CRD schema's descriptions (`kubectl explain`). The CRD
//! YAML in `crds/` is generated from these types by `purrify-crdgen` and kept in sync by a
//! test.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "purrify.io";
pub const VERSION: &str = "v1alpha1";
/// Name of the pool a task goes to when it names none.
pub const DEFAULT_POOL: &str = "default";

// ---------------------------------------------------------------------------------------
// GpuPool

/// A set of inference workers of one kind. A managed pool has `image` and `replicas`: the
/// operator runs a Deployment of GPU pods (and may also use `external` servers). An
/// external-only pool has neither and uses only the GPU servers in `external`, which may be
/// empty (every server unregistered): the pool is then valid but not Ready.
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

/// ONNX Runtime execution provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cuda,
    Tensorrt,
    Cpu,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
            Self::Cpu => "cpu",
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
    /// GPU telemetry the worker reports (`/v1/info`); absent on CPU workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuStatus>,
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

// ---------------------------------------------------------------------------------------
// EnhanceTask

/// One photo to enhance. The spec is immutable: a change is a new task.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "purrify.io",
    version = "v1alpha1",
    kind = "EnhanceTask",
    plural = "enhancetasks",
    singular = "enhancetask",
    shortname = "et",
    shortname = "etask",
    category = "purrify",
    namespaced,
    status = "EnhanceTaskStatus",
    doc = "One photo to enhance: restored faces and upscaled background, computed by a worker of a GpuPool.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "number", json_path = ".status.progress"),
    printcolumn(name = "Worker", type_ = "string", json_path = ".status.worker"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("EnhanceTask spec is immutable; create a new task"))]
#[serde(rename_all = "camelCase")]
pub struct EnhanceTaskSpec {
    /// GpuPool (same namespace) that runs the task.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// The photo to enhance.
    pub input: TaskInput,
    /// Where the result goes.
    pub output: TaskOutput,
    /// Enhancement parameters.
    #[serde(default)]
    pub params: TaskParams,
    /// Higher runs first.
    #[serde(default)]
    #[schemars(range(min = -100, max = 100))]
    pub priority: i32,
    /// Seconds from creation until the task fails with `DeadlineExceeded`.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub deadline_seconds: u32,
    /// Seconds a finished task is kept before the operator deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub ttl_seconds_after_finished: Option<u32>,
    /// Who asked; tasks are dispatched fairly across owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<TaskOwner>,
}

fn default_pool() -> String {
    DEFAULT_POOL.into()
}
fn default_deadline() -> u32 {
    300
}

/// The photo a task enhances.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskInput {
    /// Object-storage URI of the photo (`s3://bucket/key`, `file:///...`).
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// MIME type detected at upload (`image/jpeg`, `image/png`, `image/webp`, `image/avif`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// Where a task's result goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TaskOutput {
    /// Object-storage URI the result is written to.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
}

/// Speed/quality trade-off of the background super-resolution.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum QualityLevel {
    /// Real-ESRGAN x4plus.
    #[default]
    High,
    /// realesr-animevideov3, seam-free tiles.
    Medium,
    /// realesr-animevideov3, less tile overlap.
    Fast,
}

/// Encoding of the result image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `image/jpeg`.
    #[default]
    Jpeg,
    /// `image/png`.
    Png,
    /// `image/webp`.
    Webp,
}

impl OutputFormat {
    /// MIME type of images in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }
}

/// Enhancement parameters (the seed API's `tile_size`, `quality_level`, plus scale, face
/// restoration and output format).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scale == 2 || self.scale == 4").message("scale must be 2 or 4"))]
#[x_kube(validation = Rule::new("self.tileSize == 0 || (self.tileSize >= 32 && self.tileSize <= 1024)").message("tileSize must be 0 (the default, 400) or 32..1024"))]
pub struct TaskParams {
    /// Tile edge in input pixels (32..1024); 0 means the default 400. Memory on the worker
    /// follows the tile, never the whole image.
    #[serde(default = "default_tile")]
    #[schemars(range(min = 0, max = 1024))]
    pub tile_size: u32,
    /// Speed/quality trade-off: `high` runs Real-ESRGAN x4plus, `medium` and `fast` the
    /// much smaller realesr-animevideov3 (`fast` with less tile overlap).
    #[serde(default)]
    pub quality_level: QualityLevel,
    /// Output scale: 2 or 4.
    #[serde(default = "default_scale")]
    #[schemars(range(min = 2, max = 4))]
    pub scale: u32,
    /// Restore faces when the pool has a restoration model.
    #[serde(default = "default_true")]
    pub face_enhance: bool,
    /// Encoding of the result: `jpeg`, `png` or `webp`.
    #[serde(default)]
    pub output_format: OutputFormat,
}

impl Default for TaskParams {
    fn default() -> Self {
        Self {
            tile_size: default_tile(),
            quality_level: QualityLevel::High,
            scale: 2,
            face_enhance: true,
            output_format: OutputFormat::Jpeg,
        }
    }
}

fn default_tile() -> u32 {
    400
}
fn default_scale() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

/// Who asked for a task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOwner {
    /// The uploading user (or client) id; used for fairness, never for authorisation.
    #[schemars(length(max = 253))]
    pub user_id: String,
}

/// Where a task is in its lifecycle (DESIGN section 3).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum TaskPhase {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The seed 000 status word clients see.
    pub fn public_status(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "processing",
            Self::Succeeded => "completed",
            Self::Failed | Self::Cancelled => "failed",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// Observed state of a task. Written at most a handful of times per task (Running, coarse
/// progress, finished): fine-grained progress is streamed, not stored in etcd.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnhanceTaskStatus {
    /// `Queued`, `Running`, `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default)]
    pub phase: TaskPhase,
    /// 0..1, coarse.
    #[serde(default)]
    pub progress: f32,
    /// Worker running (or that ran) the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Job id on that worker (`{task uid}-{attempt}`), for re-attaching after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Attempts started.
    #[serde(default)]
    pub attempts: u32,
    /// RFC 3339 time the first attempt started on a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// RFC 3339 time the task finished (succeeded, failed or was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// What the worker produced; set once the task succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Why the task failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Standard Kubernetes conditions, for tools that wait on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The enhanced image a task produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// Object-storage URI the result was written to.
    pub uri: String,
    /// Width of the result in pixels.
    pub width: u32,
    /// Height of the result in pixels.
    pub height: u32,
    /// Size of the result in bytes.
    pub bytes: u64,
    /// MIME type of the result (`image/jpeg`, `image/png`, `image/webp`). Absent only on
    /// results recorded by an operator older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Faces detected (and restored when `faceRestoration` is `applied`).
    pub faces: u32,
    /// Whether face restoration ran, and if not why: `applied`, `disabled` (the task asked
    /// for none), `notConfigured` (the pool has no restoration model), `noFaces`. Absent only
    /// on results recorded by an operator older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_restoration: Option<FaceRestoration>,
}

/// Outcome of face restoration on one task, as the worker reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FaceRestoration {
    /// Faces were detected and restored.
    Applied,
    /// The task asked for no face restoration (`params.faceEnhance: false`).
    Disabled,
    /// The worker has no restoration model: background-only enhancement.
    NotConfigured,
    /// A restoration model is configured but no face was found.
    NoFaces,
}

/// Why a task failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TaskError {
    /// Bounded reason: `BadInput`, `TooLarge`, `InvalidParams`, `WorkerUnavailable`,
    /// `InferenceFailed`, `StorageError`, `DeadlineExceeded`, `Cancelled`.
    pub reason: String,
    /// Human-readable explanation, safe to show to the uploader.
    pub message: String,
}

/// Every CRD of the project, in a stable order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![GpuPool::crd(), EnhanceTask::crd()]
}

/// `(file name, YAML)` of each CRD as kept in `crds/`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_yaml::to_string(&crd).expect("CRDs serialise");
            (format!("{name}.yaml"), format!("# Generated by `cargo run -p purrify-api --bin purrify-crdgen`; do not edit.\n{yaml}"))
        })
        .collect()
}
