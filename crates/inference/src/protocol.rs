//! The worker wire protocol (DESIGN section 4): what a dispatcher sends to an inference
//! worker and what it gets back. Shared by the server (`engine` feature) and the client
//! (`client` feature); serde only, no I/O.

use serde::{Deserialize, Serialize};

/// Largest accepted `tile_size`; above this a tile's activations no longer bound memory.
pub const MAX_TILE_SIZE: u32 = 1024;
/// Smallest accepted `tile_size` other than 0.
pub const MIN_TILE_SIZE: u32 = 32;
/// Default tile size of the seed API, and what `tile_size: 0` means.
pub const DEFAULT_TILE_SIZE: u32 = 400;

/// Which super-resolution model a job uses (DESIGN section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QualityLevel {
    /// Real-ESRGAN x4plus (16.7 M parameters): best for photos, slowest.
    #[default]
    High,
    /// realesr-animevideov3 (0.6 M parameters) with the full overlap pad.
    Medium,
    /// realesr-animevideov3 with a smaller overlap pad: fastest.
    Fast,
}

impl QualityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Fast => "fast",
        }
    }
}

impl std::str::FromStr for QualityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            "fast" => Ok(Self::Fast),
            other => Err(format!("unknown quality level {other:?}: expected high, medium or fast")),
        }
    }
}

/// Encoding of the result image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }
    /// Whether the format carries an alpha channel (then alpha is resized, not dropped).
    pub fn keeps_alpha(self) -> bool {
        matches!(self, Self::Png | Self::Webp)
    }
    /// Format from a file extension (`out.png`), case-insensitive.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

fn default_tile_size() -> u32 {
    DEFAULT_TILE_SIZE
}
fn default_scale() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

/// Parameters of one enhancement (the seed's `tile_size`, `quality_level`, plus scale,
/// face restoration and output format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnhanceParams {
    /// Tile edge in input pixels, 32..=1024; 0 means the default (400). The whole image is
    /// never run in one pass: memory is bounded by the tile, not by the image.
    #[serde(default = "default_tile_size")]
    pub tile_size: u32,
    #[serde(default)]
    pub quality_level: QualityLevel,
    /// Output scale: 2 or 4.
    #[serde(default = "default_scale")]
    pub scale: u32,
    /// Restore faces when a restoration model is configured.
    #[serde(default = "default_true")]
    pub face_enhance: bool,
    #[serde(default)]
    pub output_format: OutputFormat,
}

impl Default for EnhanceParams {
    fn default() -> Self {
        Self {
            tile_size: DEFAULT_TILE_SIZE,
            quality_level: QualityLevel::default(),
            scale: default_scale(),
            face_enhance: true,
            output_format: OutputFormat::default(),
        }
    }
}

impl EnhanceParams {
    /// Checks bounds; the message is meant for the person who sent the parameters.
    pub fn validate(&self) -> Result<(), String> {
        if self.scale != 2 && self.scale != 4 {
            return Err(format!("scale must be 2 or 4, got {}", self.scale));
        }
        if self.tile_size != 0 && !(MIN_TILE_SIZE..=MAX_TILE_SIZE).contains(&self.tile_size) {
            return Err(format!(
                "tile_size must be between {MIN_TILE_SIZE} and {MAX_TILE_SIZE} (or 0 for the default {DEFAULT_TILE_SIZE}), got {}",
                self.tile_size
            ));
        }
        Ok(())
    }

    /// The tile edge a job runs with. `tile_size: 0` is accepted (the CRD and older clients
    /// send it, once meaning "no tiling") but runs with [`DEFAULT_TILE_SIZE`]: a whole-image
    /// pass would make memory grow with the image instead of the tile.
    pub fn effective_tile_size(&self) -> std::num::NonZeroU32 {
        let t = if self.tile_size == 0 { DEFAULT_TILE_SIZE } else { self.tile_size };
        std::num::NonZeroU32::new(t).unwrap_or(std::num::NonZeroU32::MIN)
    }
}

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

/// Why face restoration did or did not run on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceRestoration {
    /// Faces were detected and restored.
    Applied,
    /// The job asked for no face restoration.
    Disabled,
    /// No restoration model is configured on this worker: background-only enhancement.
    NotConfigured,
    /// A restoration model is configured but no face was found.
    NoFaces,
}

/// Metadata of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub output_uri: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Faces detected (and restored when `face_restoration` is `applied`).
    pub faces: u32,
    pub face_restoration: FaceRestoration,
    /// Super-resolution model that ran, e.g. `realesrgan-x4plus`.
    pub model: String,
    /// Wall time of the whole job on the worker, in milliseconds.
    pub elapsed_ms: u64,
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
    /// The provider sessions actually run on (`cpu`, `cuda`, `tensorrt`).
    pub execution_provider: String,
    /// The provider that was asked for; differs from `execution_provider` after a fallback.
    pub requested_execution_provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuInfo>,
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
    fn params_defaults_match_the_seed_api() {
        let p: EnhanceParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p.tile_size, 400);
        assert_eq!(p.quality_level, QualityLevel::High);
        assert_eq!(p.scale, 2);
        assert!(p.face_enhance);
        assert_eq!(p.output_format, OutputFormat::Jpeg);
    }

    #[test]
    fn params_validation_names_the_bad_field() {
        let mut p = EnhanceParams { scale: 3, ..Default::default() };
        assert!(p.validate().unwrap_err().contains("scale"));
        p.scale = 4;
        p.tile_size = 8;
        assert!(p.validate().unwrap_err().contains("tile_size"));
        p.tile_size = 0;
        assert!(p.validate().is_ok());
        p.tile_size = 2000;
        assert!(p.validate().unwrap_err().contains("between 32 and 1024"));
    }

    #[test]
    fn zero_tile_size_runs_with_the_default_tile() {
        let p = EnhanceParams { tile_size: 0, ..Default::default() };
        assert_eq!(p.effective_tile_size().get(), DEFAULT_TILE_SIZE);
        let p = EnhanceParams { tile_size: 64, ..Default::default() };
        assert_eq!(p.effective_tile_size().get(), 64);
    }

    #[test]
    fn events_carry_a_type_tag() {
        let e = JobEvent::Progress { progress: 0.5, stage: "tiles".into() };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"type":"progress","progress":0.5,"stage":"tiles"}"#);
        assert_eq!(e.sse_name(), "progress");
    }
}
