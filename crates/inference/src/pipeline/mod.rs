//! The enhancement pipeline (DESIGN section 5):
//! check sizes from the header -> decode -> tiled super-resolution -> detect faces on the
//! input -> align, restore and paste back (feathered) each face -> alpha -> encode.
//!
//! [`Engine`] owns the sessions (created once, warmed up, reused by every job) and is shared
//! by the worker server and the CLI. Everything here is blocking; the server runs it on the
//! blocking pool.

pub mod adaptive;
pub mod face;
pub mod sr;
pub mod tiling;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use purrify_imaging::{Header, ImageError, Limits};

use crate::protocol::{EnhanceParams, ErrorReason, FaceRestoration, JobError, OutputFormat, QualityLevel};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};
use face::{DetectorKind, FaceDetector, FaceError, FaceRestorer};
use sr::{SrError, SrModel, SrOptions};

/// Overlap pad per quality level. x4plus uses Real-ESRGAN's own default (10); animevideov3's
/// receptive field is 18 px (18 stacked 3x3 convolutions), so `medium` pads 20 and is exactly
/// seam-free, while `fast` trades a few border pixels of context for less overlap work.
pub fn tile_pad(q: QualityLevel) -> u32 {
    match q {
        QualityLevel::High => 10,
        QualityLevel::Medium => 20,
        QualityLevel::Fast => 6,
    }
}

/// File names of the converted models in the models directory.
pub const MODEL_X4PLUS: &str = "realesrgan-x4plus";
pub const MODEL_ANIME_X2: &str = "realesr-animevideov3-x2";
pub const MODEL_ANIME_X4: &str = "realesr-animevideov3-x4";

/// Default of [`EngineConfig::max_output_pixels`]: the largest default input (50 MP) at x2.
/// The result is the one buffer that grows with the image (3 bytes per pixel, plus alpha).
pub const DEFAULT_MAX_OUTPUT_PIXELS: u64 = 200_000_000;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub runtime: RuntimeConfig,
    /// Directory with the converted `*.onnx` models, `scrfd.onnx` and `mtcnn/`.
    pub models_dir: PathBuf,
    /// Quality levels this engine serves; their models are loaded at start.
    pub quality_levels: Vec<QualityLevel>,
    pub face_detector: DetectorKind,
    /// GFPGAN/CodeFormer-signature ONNX model. `None`: background-only enhancement.
    pub face_model: Option<PathBuf>,
    /// Input limits, checked from the header before decoding.
    pub limits: Limits,
    /// Largest result (width x height after scaling), checked from the header before
    /// decoding, like the output format's own per-side limit.
    pub max_output_pixels: u64,
    pub jpeg_quality: u8,
    /// Overrides the per-quality tile pad (benchmarks compare against a fixed pad).
    pub tile_pad: Option<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            models_dir: crate::runtime::paths::models_dir(),
            quality_levels: vec![QualityLevel::High, QualityLevel::Medium, QualityLevel::Fast],
            face_detector: DetectorKind::Scrfd,
            face_model: None,
            limits: Limits::default(),
            max_output_pixels: DEFAULT_MAX_OUTPUT_PIXELS,
            jpeg_quality: 92,
            tile_pad: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("{0}")]
    InvalidParams(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("face restoration: {0}")]
    Face(String),
    #[error("model output: {0}")]
    Output(String),
}

impl EngineError {
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Image(
                ImageError::TooLarge { .. }
                | ImageError::DimensionTooLarge { .. }
                | ImageError::OutputTooLarge { .. }
                | ImageError::OutputTooManyPixels { .. },
            ) => ErrorReason::TooLarge,
            Self::Image(ImageError::Encode(_)) => ErrorReason::Internal,
            Self::Image(_) => ErrorReason::BadInput,
            Self::InvalidParams(_) => ErrorReason::InvalidParams,
            Self::Cancelled => ErrorReason::Cancelled,
            Self::Runtime(_) | Self::Face(_) | Self::Output(_) => ErrorReason::Inference,
        }
    }

    pub fn to_job_error(&self) -> JobError {
        JobError { reason: self.reason(), message: self.to_string() }
    }
}

impl From<FaceError> for EngineError {
    fn from(e: FaceError) -> Self {
        match e {
            FaceError::Runtime(r) => Self::Runtime(r),
            FaceError::Cancelled => Self::Cancelled,
            other => Self::Face(other.to_string()),
        }
    }
}

impl From<SrError> for EngineError {
    fn from(e: SrError) -> Self {
        match e {
            SrError::Runtime(r) => Self::Runtime(r),
            SrError::Cancelled => Self::Cancelled,
            other => Self::Output(other.to_string()),
        }
    }
}

/// Where a job is; reported with progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Faces,
    Tiles,
    Encode,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Faces => "faces",
            Self::Tiles => "tiles",
            Self::Encode => "encode",
        }
    }
}

// Share of the job's progress bar per stage, in pipeline order: tiles dominate the run time.
const P_DECODE: f32 = 0.02;
const P_TILES: f32 = 0.83;
const P_FACES: f32 = 0.10;

/// Per-job hooks: cancellation (polled between tiles and between faces) and progress.
pub struct JobControl<'a> {
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    pub progress: &'a mut (dyn FnMut(Stage, f32) + Send),
    /// Called after each super-resolution tile with the time ONNX Runtime spent on it
    /// (the worker's tile-duration histogram).
    pub tile_model_time: Option<&'a mut (dyn FnMut(Duration) + Send)>,
}

impl<'a> JobControl<'a> {
    pub fn new(cancelled: &'a (dyn Fn() -> bool + Sync), progress: &'a mut (dyn FnMut(Stage, f32) + Send)) -> Self {
        Self { cancelled, progress, tile_model_time: None }
    }
}

/// Time spent per stage of one job.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub decode: Duration,
    /// Detection, restoration and pasting of faces.
    pub faces: Duration,
    /// Super-resolution, tiles cut, run and stitched.
    pub tiles: Duration,
    /// Inside ONNX Runtime during the tile stage.
    pub sr_model: Duration,
    pub encode: Duration,
    pub total: Duration,
}

#[derive(Debug)]
pub struct Enhanced {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub faces: u32,
    pub face_restoration: FaceRestoration,
    pub model: String,
    pub tiles: u32,
    /// How the tiles adapted to the device's memory (splits after allocation failures).
    pub tile_adaptation: adaptive::Adaptation,
    pub timings: Timings,
}

/// What an engine loaded, for `/v1/info` and metrics.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub name: String,
    pub kind: &'static str,
    pub path: PathBuf,
    pub load_time: Duration,
    pub provider: &'static str,
}

pub struct Engine {
    config: EngineConfig,
    runtime: Runtime,
    x4plus: Option<SrModel>,
    anime_x2: Option<SrModel>,
    anime_x4: Option<SrModel>,
    detector: Option<FaceDetector>,
    restorer: Option<FaceRestorer>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish()
    }
}

fn model_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.onnx"))
}

impl Engine {
    /// Loads every model the configuration needs. Slow (seconds); call once per process.
    pub fn load(config: EngineConfig) -> Result<Self, EngineError> {
        let runtime = Runtime::new(config.runtime.clone())?;
        let dir = &config.models_dir;
        let wants = |q| config.quality_levels.contains(&q);
        // Only GPU devices report free memory; on the CPU the tile default is the API's.
        let free_memory = std::cell::OnceCell::new();
        let load_sr = |name: &str, native| -> Result<SrModel, EngineError> {
            let model = runtime.load(name, &model_path(dir, name))?;
            let free =
                if model.selection().active.is_gpu() { *free_memory.get_or_init(crate::server::gpu::free_memory_blocking) } else { None };
            let limits = adaptive::TileLimits::new(name, free);
            tracing::info!(model = name, default_tile = limits.default_tile(), free_device_memory = ?free, "tile size");
            Ok(SrModel { model, native_scale: native, limits })
        };
        let x4plus = if wants(QualityLevel::High) { Some(load_sr(MODEL_X4PLUS, 4)?) } else { None };
        let anime = wants(QualityLevel::Medium) || wants(QualityLevel::Fast);
        let anime_x2 = if anime { Some(load_sr(MODEL_ANIME_X2, 2)?) } else { None };
        let anime_x4 = if anime { Some(load_sr(MODEL_ANIME_X4, 4)?) } else { None };
        // Detecting faces nobody will restore is wasted work: the detector is loaded only
        // alongside a restoration model.
        let (detector, restorer) = match &config.face_model {
            Some(path) => {
                let restorer = FaceRestorer::load(&runtime, path).map_err(|e| EngineError::Face(e.to_string()))?;
                let detector = FaceDetector::load(&runtime, config.face_detector, dir)?;
                (Some(detector), Some(restorer))
            }
            None => (None, None),
        };
        Ok(Self { config, runtime, x4plus, anime_x2, anime_x4, detector, restorer })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The provider sessions actually run on (after any fallback).
    pub fn active_provider(&self) -> &'static str {
        self.sr_models().next().map(|m| m.model.selection().active.as_str()).unwrap_or_else(|| self.config.runtime.provider.as_str())
    }

    /// Test-only: makes `model`'s runs fail as out of memory when `fails` says so.
    #[cfg(test)]
    pub(crate) fn inject_oom(&self, model: &str, fails: Option<crate::runtime::InjectOom>) {
        let m = self.sr_models().find(|m| m.model.name() == model).expect("model loaded");
        m.model.inject_oom(fails);
    }

    /// The largest tile edge `model` is known to hold after an allocation failure.
    pub fn remembered_tile(&self, model: &str) -> Option<u32> {
        self.sr_models().find(|m| m.model.name() == model).and_then(|m| m.limits.remembered())
    }

    fn sr_models(&self) -> impl Iterator<Item = &SrModel> {
        [&self.x4plus, &self.anime_x2, &self.anime_x4].into_iter().flatten()
    }

    pub fn models(&self) -> Vec<LoadedModel> {
        let mut out: Vec<LoadedModel> = self.sr_models().map(|m| describe(&m.model, "super_resolution")).collect();
        if let Some(d) = &self.detector {
            out.extend(d.models().into_iter().map(|m| describe(m, "face_detection")));
        }
        if let Some(r) = &self.restorer {
            out.push(describe(r.model(), "face_restoration"));
        }
        out
    }

    pub fn face_restoration_configured(&self) -> bool {
        self.restorer.is_some()
    }

    /// Runs every model once on a small input so the first real job does not pay for lazy
    /// initialisation (memory arenas, kernel selection; on TensorRT, engine builds).
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let tiny = RgbImage::from_pixel(24, 24, image::Rgb([128, 128, 128]));
        for m in self.sr_models() {
            let opts = SrOptions { scale: m.native_scale, tile_size: EnhanceParams::default().effective_tile_size(), pad: 0 };
            m.upscale(&tiny, opts, &|| false, &mut |_, _, _| {})?;
        }
        if let Some(d) = &self.detector {
            d.detect(&RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])))?;
        }
        if let Some(r) = &self.restorer {
            r.restore(&RgbImage::from_pixel(face::FACE_SIZE, face::FACE_SIZE, image::Rgb([128, 128, 128])))?;
        }
        Ok(())
    }

    fn pick(&self, q: QualityLevel, scale: u32) -> Result<&SrModel, EngineError> {
        let m = match q {
            QualityLevel::High => self.x4plus.as_ref(),
            QualityLevel::Medium | QualityLevel::Fast => {
                if scale == 2 {
                    self.anime_x2.as_ref()
                } else {
                    self.anime_x4.as_ref()
                }
            }
        };
        m.ok_or_else(|| {
            EngineError::InvalidParams(format!("quality_level {} is not served by this worker (its model is not loaded)", q.as_str()))
        })
    }

    /// Refuses, from the header alone, a request that cannot succeed: bad parameters, an
    /// input over the limits, or a result larger than `max_output_pixels` or than its format
    /// can store. Cheap (no pixels are decoded), so callers run it before any real work.
    pub fn preflight(&self, input: &[u8], params: &EnhanceParams) -> Result<Header, EngineError> {
        preflight(input, params, &self.config.limits, self.config.max_output_pixels)
    }

    /// Enhances one encoded image. Blocking.
    pub fn enhance(&self, input: &[u8], params: &EnhanceParams, ctl: JobControl<'_>) -> Result<Enhanced, EngineError> {
        let JobControl { cancelled, progress, mut tile_model_time } = ctl;
        let started = Instant::now();
        let mut timings = Timings::default();
        self.preflight(input, params)?;
        let sr = self.pick(params.quality_level, params.scale)?;

        progress(Stage::Decode, 0.0);
        let decoded = purrify_imaging::decode(input, &self.config.limits)?;
        timings.decode = started.elapsed();
        progress(Stage::Decode, P_DECODE);

        let t = Instant::now();
        // `tile_size: 0` asks for this device's default; any size is capped by what the
        // model's session is known to hold.
        let tile_size = match params.tile_size {
            0 => std::num::NonZeroU32::new(sr.limits.default_tile()).unwrap_or(std::num::NonZeroU32::MIN),
            _ => params.effective_tile_size(),
        };
        let opts =
            SrOptions { scale: params.scale, tile_size, pad: self.config.tile_pad.unwrap_or_else(|| tile_pad(params.quality_level)) };
        let (mut out, stats) = sr.upscale(&decoded.rgb, opts, cancelled, &mut |done, total, model_time| {
            if let Some(f) = tile_model_time.as_mut() {
                f(model_time);
            }
            progress(Stage::Tiles, P_DECODE + P_TILES * done as f32 / total as f32);
        })?;
        timings.tiles = t.elapsed();
        timings.sr_model = stats.model_time;

        // Faces are detected and aligned on the input (what the detector and restorer were
        // trained on) and pasted into the upscaled output, one at a time.
        let t = Instant::now();
        let base = P_DECODE + P_TILES;
        let mut faces_found = 0u32;
        let face_restoration = match (&self.detector, &self.restorer) {
            _ if !params.face_enhance => FaceRestoration::Disabled,
            (Some(detector), Some(restorer)) => {
                progress(Stage::Faces, base);
                let n = face::restore_faces(
                    detector,
                    Some(restorer),
                    &decoded.rgb,
                    &mut out,
                    params.scale as f32,
                    cancelled,
                    |done, total| {
                        progress(Stage::Faces, base + P_FACES * done as f32 / total as f32);
                    },
                )?;
                faces_found = n as u32;
                if n == 0 { FaceRestoration::NoFaces } else { FaceRestoration::Applied }
            }
            _ => FaceRestoration::NotConfigured,
        };
        timings.faces = t.elapsed();

        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        let t = Instant::now();
        progress(Stage::Encode, base + P_FACES);
        let (w, h) = out.dimensions();
        let alpha = match &decoded.alpha {
            Some(a) if params.output_format.keeps_alpha() => Some(purrify_imaging::resize_gray(a, w, h)),
            _ => None,
        };
        drop(decoded);
        let fmt = imaging_format(params.output_format);
        let bytes = purrify_imaging::encode(&out, alpha.as_ref(), fmt, self.config.jpeg_quality)?;
        timings.encode = t.elapsed();
        timings.total = started.elapsed();
        progress(Stage::Encode, 1.0);
        Ok(Enhanced {
            bytes,
            format: params.output_format,
            width: w,
            height: h,
            faces: faces_found,
            face_restoration,
            model: sr.model.name().to_string(),
            tiles: stats.tiles,
            tile_adaptation: stats.adaptation,
            timings,
        })
    }
}

/// [`Engine::preflight`] without an engine: the CLI runs it before loading any model.
pub fn preflight(input: &[u8], params: &EnhanceParams, limits: &Limits, max_output_pixels: u64) -> Result<Header, EngineError> {
    params.validate().map_err(EngineError::InvalidParams)?;
    let header = purrify_imaging::read_header(input, limits)?;
    let scale = u64::from(params.scale);
    purrify_imaging::check_output_size(
        u64::from(header.width) * scale,
        u64::from(header.height) * scale,
        imaging_format(params.output_format),
        max_output_pixels,
    )?;
    Ok(header)
}

fn describe(m: &crate::runtime::Model, kind: &'static str) -> LoadedModel {
    LoadedModel {
        name: m.name().to_string(),
        kind,
        path: m.path().to_path_buf(),
        load_time: m.load_time(),
        provider: m.selection().active.as_str(),
    }
}

pub fn imaging_format(f: OutputFormat) -> purrify_imaging::OutputFormat {
    match f {
        OutputFormat::Jpeg => purrify_imaging::OutputFormat::Jpeg,
        OutputFormat::Png => purrify_imaging::OutputFormat::Png,
        OutputFormat::Webp => purrify_imaging::OutputFormat::Webp,
    }
}
