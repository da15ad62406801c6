//! ONNX Runtime, loaded dynamically (`ort` with `load-dynamic`), and the models' sessions.
//!
//! Sessions are created once per model and reused for every job; `ort` needs `&mut` to run a
//! session, so each sits behind a mutex. On CPU one session already uses every core, so
//! serialising runs costs nothing; decode, encode and storage I/O of other jobs overlap.

pub mod paths;
pub mod provider;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayD, ArrayView4};
use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

pub use provider::{Provider, Selection};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked at {searched}); run `make models` or set ORT_DYLIB_PATH")]
    LibraryNotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    LibraryLoad { path: PathBuf, message: String },
    #[error("model file {path} does not exist; run `make models` or fix the configured path")]
    ModelMissing { path: PathBuf },
    #[error("cannot create a session for {model}: {message}")]
    Session { model: String, message: String },
    #[error("model {model} failed: {message}")]
    Run { model: String, message: String },
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub provider: Provider,
    /// Threads per session for intra-op parallelism; 0 lets ONNX Runtime choose (all cores).
    pub intra_threads: usize,
    /// GPU ordinal for CUDA/TensorRT.
    pub device_id: i32,
    /// Explicit `libonnxruntime.so`; `None` searches [`paths::ort_library_candidates`].
    pub library: Option<PathBuf>,
    /// Where TensorRT keeps compiled engines between restarts (compiling takes minutes).
    pub tensorrt_cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { provider: Provider::Cpu, intra_threads: 0, device_id: 0, library: None, tensorrt_cache_dir: None }
    }
}

/// The process-wide ONNX Runtime environment. The shared library can be loaded only once per
/// process, so the first successful load wins and later callers share it.
static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

#[derive(Clone)]
pub struct Runtime {
    config: RuntimeConfig,
    env: Environment,
    library: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).field("library", &self.library).finish()
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let library = match &config.library {
            Some(p) => p.clone(),
            None => paths::find_ort_library().ok_or_else(|| RuntimeError::LibraryNotFound {
                searched: paths::ort_library_candidates().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            })?,
        };
        let loaded = ENVIRONMENT.get_or_init(|| {
            let env = ort::init_from(&library).map_err(|e| e.to_string())?.with_name("purrify").build().map_err(|e| e.to_string())?;
            Ok((library.clone(), env))
        });
        match loaded {
            Ok((path, env)) => Ok(Self { config, env: env.clone(), library: path.clone() }),
            Err(message) => Err(RuntimeError::LibraryLoad { path: library, message: message.clone() }),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Creates the session for one model, registering the configured execution providers
    /// ([`Provider::gpu_registrations`], CPU last) and skipping, with a warning, those the
    /// loaded ONNX Runtime cannot use.
    pub fn load(&self, name: &str, path: &Path) -> Result<Model, RuntimeError> {
        if !path.exists() {
            return Err(RuntimeError::ModelMissing { path: path.to_path_buf() });
        }
        let started = Instant::now();
        let session_err = |e: ort::Error| RuntimeError::Session { model: name.to_string(), message: e.to_string() };
        let mut builder = Session::builder(&self.env)
            .map_err(session_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_err(e.into()))?;
        if self.config.intra_threads > 0 {
            builder = builder.with_intra_threads(self.config.intra_threads).map_err(|e| session_err(e.into()))?;
        }

        let mut slot = Some(builder);
        let selection = provider::select(self.config.provider, |p| {
            let b = slot.take().expect("builder is always put back");
            let dispatch = match p {
                Provider::Cuda => ep::CUDA::default().with_device_id(self.config.device_id).build(),
                Provider::TensorRt => {
                    let mut trt = ep::TensorRT::default().with_device_id(self.config.device_id).with_fp16(true);
                    if let Some(dir) = &self.config.tensorrt_cache_dir {
                        trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
                    }
                    trt.build()
                }
                Provider::Cpu => unreachable!("select() never registers the CPU provider"),
            };
            match b.with_execution_providers([dispatch.error_on_failure()]) {
                Ok(b) => {
                    slot = Some(b);
                    Ok(())
                }
                Err(e) => {
                    let why = e.to_string();
                    slot = Some(e.recover());
                    Err(why)
                }
            }
        });
        for (p, why) in &selection.skipped {
            tracing::warn!(model = name, provider = %p, reason = %why, "execution provider unavailable, falling back");
        }
        let mut builder = slot.expect("builder is always put back");
        let session = builder.commit_from_file(path).map_err(session_err)?;
        let input_name = session
            .inputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| RuntimeError::Session { model: name.to_string(), message: "model has no inputs".into() })?;
        let output_names = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let load_time = started.elapsed();
        tracing::info!(model = name, path = %path.display(), provider = %selection.active, registered = ?selection.registered, load_ms = load_time.as_millis() as u64, "model loaded");
        Ok(Model {
            name: name.to_string(),
            path: path.to_path_buf(),
            session: Mutex::new(session),
            selection,
            load_time,
            input_name,
            output_names,
        })
    }
}

/// One loaded model: a reusable session plus what was decided when it was created.
pub struct Model {
    name: String,
    path: PathBuf,
    session: Mutex<Session>,
    selection: Selection,
    load_time: Duration,
    input_name: String,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).field("path", &self.path).finish()
    }
}

impl Model {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn selection(&self) -> &Selection {
        &self.selection
    }
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn run_err(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Run { model: self.name.clone(), message: e.to_string() }
    }

    /// Runs a single-input model and returns every output, in the model's output order.
    pub fn run_all(&self, input: ArrayView4<'_, f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        let tensor = TensorRef::from_array_view(input).map_err(|e| self.run_err(e))?;
        // A poisoned lock only means another run panicked; the session itself is still valid.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| self.run_err(e))?;
        let mut out = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            let view = outputs[name.as_str()].try_extract_array::<f32>().map_err(|e| self.run_err(e))?;
            out.push(view.to_owned());
        }
        Ok(out)
    }

    /// Runs the model and hands the first output to `f` as shape + contiguous data, without
    /// copying it; also returns how long ONNX Runtime itself took (the benchmark separates
    /// model time from pipeline overhead with it).
    pub fn run_raw<R>(&self, input: ArrayView4<'_, f32>, f: impl FnOnce(&[i64], &[f32]) -> R) -> Result<(R, Duration), RuntimeError> {
        let tensor = TensorRef::from_array_view(input).map_err(|e| self.run_err(e))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| self.run_err(e))?;
        let elapsed = started.elapsed();
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| self.run_err(e))?;
        Ok((f(&shape[..], data), elapsed))
    }

    /// Runs a model with one NCHW input and one NCHW output (super-resolution, restoration).
    pub fn run(&self, input: ArrayView4<'_, f32>) -> Result<Array4<f32>, RuntimeError> {
        let first = self.run_all(input)?.into_iter().next().ok_or_else(|| self.run_err("model produced no output"))?;
        first.into_dimensionality::<ndarray::Ix4>().map_err(|e| self.run_err(format!("output is not 4-D: {e}")))
    }
}
