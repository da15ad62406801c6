//! `purrify-inference`: `serve` runs the worker HTTP server, `enhance` runs the pipeline on
//! one file. Every option has an environment variable, so containers configure by env.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::pipeline::face::DetectorKind;
use crate::pipeline::{Engine, EngineConfig, JobControl, Stage};
use crate::protocol::{EnhanceParams, OutputFormat, QualityLevel};
use crate::runtime::{Provider, RuntimeConfig};
use crate::server::jobs::JobsConfig;
use crate::server::{EngineSource, WorkerConfig};
use crate::storage::{S3Options, Storage};

#[derive(Parser, Debug)]
#[command(name = "purrify-inference", version, about = "Purrify enhancement engine and inference worker")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, env = "PURRIFY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

use purrify_process::LogFormat;

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the inference worker HTTP server.
    Serve(ServeArgs),
    /// Enhance one image file; the output format follows OUT's extension (.jpg, .png, .webp).
    Enhance(EnhanceArgs),
}

#[derive(Args, Debug, Clone)]
struct EngineArgs {
    /// Execution provider: openvino (CPU, the fastest here), cpu, cuda or tensorrt; falls back
    /// to cpu with a warning when the loaded ONNX Runtime lacks it.
    #[arg(long, env = "PURRIFY_EXECUTION_PROVIDER", default_value = "openvino")]
    provider: Provider,
    /// Intra-op threads per model session; 0 = all cores.
    #[arg(long, env = "PURRIFY_THREADS", default_value_t = 0)]
    threads: usize,
    /// GPU ordinal for cuda/tensorrt.
    #[arg(long, env = "PURRIFY_DEVICE_ID", default_value_t = 0)]
    device_id: i32,
    /// Directory with the converted models (default: the cache filled by `make models`).
    #[arg(long, env = "PURRIFY_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then the cache).
    #[arg(long, env = "PURRIFY_ORT_LIBRARY")]
    ort_library: Option<PathBuf>,
    /// Face restoration model (GFPGAN/CodeFormer ONNX signature); none = background only.
    #[arg(long, env = "PURRIFY_FACE_MODEL")]
    face_model: Option<PathBuf>,
    /// Face detector: scrfd (InsightFace weights, non-commercial) or mtcnn (MIT).
    #[arg(long, env = "PURRIFY_FACE_DETECTOR", default_value = "scrfd")]
    face_detector: DetectorKind,
    /// Largest accepted image, in pixels (checked from the header before decoding).
    #[arg(long, env = "PURRIFY_MAX_PIXELS", default_value_t = purrify_imaging::Limits::default().max_pixels)]
    max_pixels: u64,
    /// Largest result, in pixels after scaling (checked from the header before decoding;
    /// the result is held in memory whole: 3 bytes per pixel, 4 with alpha).
    #[arg(long, env = "PURRIFY_MAX_OUTPUT_PIXELS", default_value_t = crate::pipeline::DEFAULT_MAX_OUTPUT_PIXELS)]
    max_output_pixels: u64,
    /// JPEG output quality.
    #[arg(long, env = "PURRIFY_JPEG_QUALITY", default_value_t = 92)]
    jpeg_quality: u8,
    /// Where TensorRT caches compiled engines.
    #[arg(long, env = "PURRIFY_TENSORRT_CACHE")]
    tensorrt_cache: Option<PathBuf>,
}

impl EngineArgs {
    fn config(&self, quality_levels: Vec<QualityLevel>) -> EngineConfig {
        let defaults = EngineConfig::default();
        EngineConfig {
            runtime: RuntimeConfig {
                provider: self.provider,
                intra_threads: self.threads,
                device_id: self.device_id,
                library: self.ort_library.clone(),
                tensorrt_cache_dir: self.tensorrt_cache.clone(),
            },
            models_dir: self.models_dir.clone().unwrap_or(defaults.models_dir),
            quality_levels,
            face_detector: self.face_detector,
            face_model: self.face_model.clone(),
            limits: purrify_imaging::Limits { max_pixels: self.max_pixels, ..defaults.limits },
            max_output_pixels: self.max_output_pixels,
            jpeg_quality: self.jpeg_quality,
            tile_pad: None,
        }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "PURRIFY_WORKER_ADDR", default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Storage root: file:///var/lib/purrify or s3://bucket/prefix. Jobs may only read and
    /// write under it.
    #[arg(long, env = "PURRIFY_STORAGE")]
    storage: String,
    /// S3-compatible endpoint (e.g. http://minio:9000); credentials from AWS_* variables.
    #[arg(long, env = "PURRIFY_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "PURRIFY_S3_REGION")]
    s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints.
    #[arg(long, env = "PURRIFY_S3_ALLOW_HTTP")]
    s3_allow_http: bool,
    /// Jobs accepted at once (running and waiting); more get 429 with Retry-After.
    #[arg(long, env = "PURRIFY_CAPACITY", default_value_t = 4)]
    capacity: usize,
    /// Jobs the engine runs at the same time.
    #[arg(long, env = "PURRIFY_PARALLEL", default_value_t = 1)]
    parallel: usize,
    /// Largest input object read, in bytes.
    #[arg(long, env = "PURRIFY_MAX_INPUT_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_input_bytes: u64,
    /// Seconds finished jobs stay queryable.
    #[arg(long, env = "PURRIFY_RETAIN_SECONDS", default_value_t = 3600)]
    retain_seconds: u64,
    /// Seconds running jobs get to finish after SIGTERM; then they are cancelled (dispatchers
    /// retry them elsewhere) and the process exits within a few seconds.
    #[arg(long, env = "PURRIFY_SHUTDOWN_GRACE", default_value_t = 60)]
    shutdown_grace: u64,
    /// Quality levels served (their models are loaded at start).
    #[arg(long, env = "PURRIFY_QUALITY_LEVELS", value_delimiter = ',', default_value = "high,medium,fast")]
    quality_levels: Vec<QualityLevel>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct EnhanceArgs {
    /// Input image (JPEG, PNG, WebP or AVIF).
    input: PathBuf,
    /// Output image; .jpg/.jpeg, .png or .webp.
    output: PathBuf,
    #[arg(long, default_value_t = 2)]
    scale: u32,
    /// Tile edge in input pixels, 32..1024 (0 = the default, 400); memory follows the tile.
    #[arg(long, default_value_t = crate::protocol::DEFAULT_TILE_SIZE)]
    tile_size: u32,
    #[arg(long, default_value = "high")]
    quality: QualityLevel,
    /// Skip face restoration even when a face model is configured.
    #[arg(long)]
    no_face: bool,
    /// Overlap pad per tile side (default depends on --quality: high 10, medium 20, fast 6).
    #[arg(long)]
    tile_pad: Option<u32>,
    /// Print a JSON line with dimensions and stage timings on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// How long the runtime waits for blocking tasks after the server has stopped. A job that
/// was cancelled in the middle of a model run finishes that run on its own thread; the
/// process does not wait for it (its result would be thrown away anyway).
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Prints a panic as one line on stderr: `purrify-inference: internal error: ...`. Installed
/// by the binary, so a bug anywhere (in `enhance`, or a worker thread) never dumps a
/// multi-line report on users; a panic on the main thread still exits non-zero. With
/// `RUST_BACKTRACE` set the backtrace follows, for whoever asked for it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", panic_line(info.payload(), info.location()));
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// The one line [`install_panic_hook`] prints.
pub fn panic_line(payload: &(dyn std::any::Any + Send), location: Option<&std::panic::Location<'_>>) -> String {
    let message =
        payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("unknown cause");
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match location {
        Some(l) => format!("purrify-inference: internal error: {message} (at {}:{}); please report it", l.file(), l.line()),
        None => format!("purrify-inference: internal error: {message}; please report it"),
    }
}

/// Entry point of the binary.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            purrify_process::init_tracing(cli.log_format, "info,ort=warn");
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let result = rt.block_on(serve(args));
            // Dropping the runtime would wait for every blocking task, including an engine
            // run stuck in a long tile: the grace period would not bound the exit.
            rt.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
            result
        }
        Command::Enhance(args) => {
            purrify_process::init_tracing(cli.log_format, "warn,ort=error");
            enhance(args)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        allow_http: args.s3_allow_http,
        ..S3Options::default()
    };
    let storage = Arc::new(Storage::new(&args.storage, s3)?);
    let config = WorkerConfig {
        addr: args.addr,
        storage,
        jobs: JobsConfig {
            capacity: args.capacity.max(1),
            parallel: args.parallel.max(1),
            max_input_bytes: args.max_input_bytes,
            retain: Duration::from_secs(args.retain_seconds),
        },
        engine: EngineSource::Load(Box::new(args.engine.config(args.quality_levels.clone()))),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    let worker = crate::server::start(config, shutdown_signal()).await?;
    tracing::info!(addr = %worker.addr, "inference worker listening");
    worker.handle.await.context("worker task failed")?
}

pub use purrify_process::shutdown_signal;

fn enhance(args: EnhanceArgs) -> anyhow::Result<()> {
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    let Some(output_format) = OutputFormat::from_extension(ext) else {
        bail!("output {} must end in .jpg, .jpeg, .png or .webp", args.output.display());
    };
    let params = EnhanceParams {
        tile_size: args.tile_size,
        quality_level: args.quality,
        scale: args.scale,
        face_enhance: !args.no_face,
        output_format,
    };
    if let Err(e) = params.validate() {
        bail!("{e}");
    }
    let input = std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut config = args.engine.config(vec![args.quality]);
    // Fail on a bad file, or a result too large to write, before spending seconds loading
    // models.
    crate::pipeline::preflight(&input, &params, &config.limits, config.max_output_pixels)
        .with_context(|| format!("{}", args.input.display()))?;
    config.tile_pad = args.tile_pad;
    let engine = Engine::load(config)?;
    // As the worker does before it reports ready: the first real run should not pay for
    // lazy initialisation (and the benchmark's Python reference warms up too).
    engine.warm_up()?;

    let tty = std::io::stderr().is_terminal();
    let mut last_shown = -1i32;
    let mut progress = |stage: Stage, p: f32| {
        let pct = (p * 100.0) as i32;
        if tty && pct != last_shown {
            last_shown = pct;
            eprint!("\r{:>3}% {:<8}", pct, stage.as_str());
        }
    };
    let result = engine.enhance(&input, &params, JobControl::new(&|| false, &mut progress));
    if tty {
        eprint!("\r              \r");
    }
    let enhanced = result.with_context(|| format!("{}", args.input.display()))?;
    let tmp = args.output.with_extension(format!("{ext}.part"));
    std::fs::write(&tmp, &enhanced.bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output).with_context(|| format!("cannot write {}", args.output.display()))?;
    let t = enhanced.timings;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "width": enhanced.width, "height": enhanced.height, "bytes": enhanced.bytes.len(),
                "model": enhanced.model, "tiles": enhanced.tiles, "faces": enhanced.faces,
                "provider": engine.active_provider(), "tile_splits": enhanced.tile_adaptation.splits,
                "total_s": t.total.as_secs_f64(), "model_s": t.sr_model.as_secs_f64(),
                "decode_s": t.decode.as_secs_f64(), "faces_s": t.faces.as_secs_f64(),
                "tiles_s": t.tiles.as_secs_f64(), "encode_s": t.encode.as_secs_f64(),
            })
        );
    }
    eprintln!(
        "{} -> {}: {}x{} {}, model {}, {} tiles, faces {} ({:?}), {:.2}s (model {:.2}s)",
        args.input.display(),
        args.output.display(),
        enhanced.width,
        enhanced.height,
        enhanced.format.as_str(),
        enhanced.model,
        enhanced.tiles,
        enhanced.faces,
        enhanced.face_restoration,
        t.total.as_secs_f64(),
        t.sr_model.as_secs_f64(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caught(f: impl FnOnce() + std::panic::UnwindSafe) -> Box<dyn std::any::Any + Send> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let payload = std::panic::catch_unwind(f).unwrap_err();
        std::panic::set_hook(previous);
        payload
    }

    #[test]
    fn a_panic_becomes_one_line() {
        let here = std::panic::Location::caller();
        let multi = caught(|| panic!("first line\n  second line\tand more"));
        let line = panic_line(multi.as_ref(), Some(here));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("purrify-inference: internal error: first line second line and more (at "), "{line}");
        assert!(line.contains(&format!("cli.rs:{}", here.line())), "{line}");

        let formatted = caught(|| panic!("index {} out of range", 7));
        assert!(panic_line(formatted.as_ref(), None).contains("index 7 out of range"));
        let odd = caught(|| std::panic::panic_any(42u8));
        assert_eq!(panic_line(odd.as_ref(), None), "purrify-inference: internal error: unknown cause; please report it");
    }
}
