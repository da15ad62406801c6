//! The worker wire protocol (DESIGN section 4): what a dispatcher sends to an inference
//! worker and what it gets back. Shared by the server (`engine` feature) and the client
//! (`client` feature); serde only, no I/O.

use serde::{Deserialize, Serialize};

// The enhancement vocabulary is defined once, in `purrify-api`, and spoken here unchanged.
pub use purrify_api::enhance::{
    DEFAULT_TILE_SIZE, EnhanceParams, FaceRestoration, JobResult, MAX_TILE_SIZE, MIN_TILE_SIZE, OutputFormat, QualityLevel,
    ReportedJobResult, TileAdaptation,
};

/// A job submitted to a worker: `POST /v1/jobs`. Idempotent by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub id: String,
    /// Object-storage URI of the input image (`file:///...`, `s3://bucket/key`).
    pub input_uri: String,
    /// Object-storage URI the result is written to.
    pub output_uri: String,
    #[serde(default)]
    pub params: EnhanceParams,
}

/// Lifecycle of a job on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Bounded failure categories (metrics labels and retry decisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The input is not an image we can decode, or is malformed. Never retried.
    BadInput,
    /// The input has more pixels than allowed. Never retried.
    TooLarge,
    /// Parameters out of bounds. Never retried.
    InvalidParams,
    /// Reading the input or writing the output failed. Retryable.
    Storage,
    /// Model execution failed. Retryable on another worker.
    Inference,
    /// The job was cancelled.
    Cancelled,
    /// Anything else. Retryable.
    Internal,
}

impl ErrorReason {
    /// Whether another attempt (possibly on another worker) can succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Storage | Self::Inference | Self::Internal)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadInput => "bad_input",
            Self::TooLarge => "too_large",
            Self::InvalidParams => "invalid_params",
            Self::Storage => "storage",
            Self::Inference => "inference",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub reason: ErrorReason,
    pub message: String,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub state: JobState,
    /// 0..=1.
    pub progress: f32,
    /// What the job is doing now: `queued`, `decode`, `faces`, `tiles`, `encode`, `upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// One server-sent event of `GET /v1/jobs/{id}/events`. The SSE `event:` name is
/// `progress`, `done` or `error`; `data:` is this value as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    Progress { progress: f32, stage: String },
    Done { result: JobResult },
    Error { error: JobError },
}

impl JobEvent {
    pub fn sse_name(&self) -> &'static str {
        match self {
            Self::Progress { .. } => "progress",
            Self::Done { .. } => "done",
            Self::Error { .. } => "error",
        }
    }
}

/// GPU telemetry reported by a worker (absent on CPU workers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    /// 0..=100.
    pub utilization: f32,
    pub memory_used: u64,
    pub memory_total: u64,
}

/// The worker host's load (Linux: `/proc/stat` and `/proc/meminfo`; inside a container these
/// are the node's figures unless the runtime virtualises them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Busy CPU time over the interval since the previous reading, 0..=100.
    pub cpu_usage: f32,
    /// Bytes in use (total minus available).
    pub memory_used: u64,
    pub memory_total: u64,
}

impl HostInfo {
    /// Memory in use, 0..=100.
    pub fn memory_usage(&self) -> f32 {
        if self.memory_total == 0 { 0.0 } else { (self.memory_used as f64 * 100.0 / self.memory_total as f64) as f32 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// e.g. `realesrgan-x4plus`, `realesr-animevideov3-x2`, `scrfd`, `face-restoration`.
    pub name: String,
    /// `super_resolution`, `face_detection` or `face_restoration`.
    pub kind: String,
    pub path: String,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub version: String,
    pub models: Vec<ModelInfo>,
    /// The provider sessions actually run on (`cpu`, `openvino`, `cuda`, `tensorrt`).
    pub execution_provider: String,
    /// The provider that was asked for; differs from `execution_provider` after a fallback.
    pub requested_execution_provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuInfo>,
    /// Every GPU of the worker, in device order (`gpu` is the first of them, kept for older
    /// readers); empty on CPU workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuInfo>,
    /// CPU and memory load of the worker's host; absent where it cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostInfo>,
    /// Jobs this worker runs at once.
    pub capacity: u32,
    /// Jobs accepted and not finished.
    pub in_flight: u32,
    pub ready: bool,
}

/// `POST /v1/jobs` response body (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAccepted {
    pub id: String,
    pub state: JobState,
    /// True when the id was already known and the request attached to the existing job.
    pub existing: bool,
}

/// Error body of every worker 4xx/5xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_a_type_tag() {
        let e = JobEvent::Progress { progress: 0.5, stage: "tiles".into() };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"type":"progress","progress":0.5,"stage":"tiles"}"#);
        assert_eq!(e.sse_name(), "progress");
    }
}
