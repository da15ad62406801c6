//! `EnhanceTask`: one photo to enhance (DESIGN section 2). The spec carries the enhancement
//! vocabulary of [`crate::enhance`] in the CRD's camelCase form.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DEFAULT_POOL;
use crate::enhance::{EnhanceParams, FaceRestoration, OutputFormat, QualityLevel};
use crate::outcome::TaskStatus;

/// One photo to enhance. The spec is immutable: a change is a new task.
// clippy reads the repeated `type_`/`json_path` keys of the printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
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
/// Why a task failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TaskError {
    /// Bounded reason: `BadInput`, `TooLarge`, `InvalidParams`, `WorkerUnavailable`,
    /// `InferenceFailed`, `StorageError`, `DeadlineExceeded`, `Cancelled`, `InternalError`.
    pub reason: String,
    /// Human-readable explanation, safe to show to the uploader.
    pub message: String,
}

impl From<EnhanceParams> for TaskParams {
    fn from(p: EnhanceParams) -> Self {
        Self {
            tile_size: p.tile_size,
            quality_level: p.quality_level,
            scale: p.scale,
            face_enhance: p.face_enhance,
            output_format: p.output_format,
        }
    }
}

impl From<TaskParams> for EnhanceParams {
    fn from(p: TaskParams) -> Self {
        Self {
            tile_size: p.tile_size,
            quality_level: p.quality_level,
            scale: p.scale,
            face_enhance: p.face_enhance,
            output_format: p.output_format,
        }
    }
}

impl From<TaskPhase> for TaskStatus {
    fn from(phase: TaskPhase) -> Self {
        match phase {
            TaskPhase::Queued => TaskStatus::Queued,
            TaskPhase::Running => TaskStatus::Processing,
            TaskPhase::Succeeded => TaskStatus::Completed,
            TaskPhase::Failed => TaskStatus::Failed,
            TaskPhase::Cancelled => TaskStatus::Cancelled,
        }
    }
}

impl TaskResult {
    /// The status record of a worker's result.
    pub fn from_job(r: &crate::JobResult) -> Self {
        Self {
            uri: r.output_uri.clone(),
            width: r.width,
            height: r.height,
            bytes: r.bytes,
            content_type: Some(r.content_type.clone()).filter(|c| !c.is_empty()),
            faces: r.faces,
            face_restoration: Some(r.face_restoration),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_convert_both_ways_unchanged() {
        let p = EnhanceParams {
            tile_size: 128,
            quality_level: QualityLevel::Fast,
            scale: 4,
            face_enhance: false,
            output_format: OutputFormat::Webp,
        };
        assert_eq!(EnhanceParams::from(TaskParams::from(p)), p);
        assert_eq!(EnhanceParams::from(TaskParams::default()), EnhanceParams::default());
    }

    #[test]
    fn phases_map_onto_status_words() {
        assert_eq!(TaskStatus::from(TaskPhase::Running), TaskStatus::Processing);
        assert_eq!(TaskStatus::from(TaskPhase::Cancelled), TaskStatus::Cancelled);
        for p in [TaskPhase::Succeeded, TaskPhase::Failed, TaskPhase::Cancelled] {
            assert!(TaskStatus::from(p).is_finished() && p.is_finished());
        }
    }
}
