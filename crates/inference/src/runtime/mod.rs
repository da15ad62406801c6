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
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
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
    /// The execution provider could not allocate the memory a run needs (GPU memory for a
    /// tile too large, usually). Kept apart from [`Self::Run`] because a smaller input can
    /// succeed: super-resolution splits the tile and retries.
    #[error("model {model} ran out of memory: {message}")]
    OutOfMemory { model: String, message: String },
}

/// Whether an ONNX Runtime error message reports a failed allocation. ONNX Runtime has no
/// error code for it (both come back as `ORT_FAIL` or `ORT_RUNTIME_EXCEPTION`), so the
/// providers' own wordings are matched: the CPU and CUDA arenas ("Failed to allocate
/// memory", "BFCArena"), CUDA ("out of memory", `cudaErrorMemoryAllocation`,
/// `CUBLAS_STATUS_ALLOC_FAILED`), TensorRT and OpenVINO (`std::bad_alloc`).
pub fn is_allocation_failure(message: &str) -> bool {
    const NEEDLES: &[&str] = &[
        "failed to allocate memory",
        "out of memory",
        "bfcarena",
        "cudaerrormemoryallocation",
        "cublas_status_alloc_failed",
        "cudnn_status_alloc_failed",
        "bad_alloc",
        "cannot allocate memory",
    ];
    let lower = message.to_ascii_lowercase();
    NEEDLES.iter().any(|n| lower.contains(n))
}

#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Default [`Provider::OpenVino`], falling back to the CPU provider without its build.
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
            None => {
                let (found, matches) = paths::find_ort_library_for(config.provider).ok_or_else(|| RuntimeError::LibraryNotFound {
                    searched: paths::ort_library_candidates_for(config.provider)
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                if !matches {
                    tracing::warn!(library = %found.display(), "the OpenVINO build of ONNX Runtime is missing (run `make models`); models will run on the CPU provider");
                }
                found
            }
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

    /// A session builder with `provider`'s registrations ([`Provider::registrations`]),
    /// skipping, with a warning, those the loaded ONNX Runtime cannot use.
    fn builder(&self, name: &str, provider: Provider) -> Result<(SessionBuilder, Selection), RuntimeError> {
        let session_err = |e: ort::Error| RuntimeError::Session { model: name.to_string(), message: e.to_string() };
        let mut builder = Session::builder(&self.env)
            .map_err(session_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_err(e.into()))?;
        if self.config.intra_threads > 0 {
            builder = builder.with_intra_threads(self.config.intra_threads).map_err(|e| session_err(e.into()))?;
        }

        let mut slot = Some(builder);
        let selection = provider::select(provider, |p| {
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
                // One OpenVINO stream on the CPU device: jobs are serialised per session
                // anyway, and its threads are the same budget as the CPU provider's.
                Provider::OpenVino => {
                    let mut ov = ep::OpenVINO::default().with_device_type("CPU").with_num_streams(1);
                    if self.config.intra_threads > 0 {
                        ov = ov.with_num_threads(self.config.intra_threads);
                    }
                    ov.build()
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
        Ok((slot.expect("builder is always put back"), selection))
    }

    /// Creates the session for one model, registering the configured execution providers
    /// ([`Provider::registrations`], CPU last) and skipping, with a warning, those the
    /// loaded ONNX Runtime cannot use.
    pub fn load(&self, name: &str, path: &Path) -> Result<Model, RuntimeError> {
        if !path.exists() {
            return Err(RuntimeError::ModelMissing { path: path.to_path_buf() });
        }
        let started = Instant::now();
        let session_err = |e: ort::Error| RuntimeError::Session { model: name.to_string(), message: e.to_string() };
        let (mut builder, mut selection) = self.builder(name, self.config.provider)?;
        let session = match builder.commit_from_file(path) {
            Ok(s) => s,
            // A provider that registered can still refuse the graph when it compiles it
            // (OpenVINO, TensorRT): the model then runs on the CPU rather than not at all.
            Err(e) if selection.active != Provider::Cpu => {
                let why = e.to_string();
                tracing::warn!(model = name, provider = %selection.active, reason = %why, "execution provider cannot run this model, falling back to cpu");
                let (mut cpu, mut fallback) = self.builder(name, Provider::Cpu)?;
                let session = cpu.commit_from_file(path).map_err(session_err)?;
                fallback.requested = selection.requested;
                fallback.skipped = std::mem::take(&mut selection.skipped);
                fallback.skipped.extend(selection.registered.iter().filter(|p| **p != Provider::Cpu).map(|p| (*p, why.clone())));
                selection = fallback;
                session
            }
            Err(e) => return Err(session_err(e)),
        };
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
            #[cfg(test)]
            inject_oom: Mutex::new(None),
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
    /// Test-only: decides, from the input shape, whether a run fails as if the provider had
    /// run out of memory. Never compiled into the product.
    #[cfg(test)]
    inject_oom: Mutex<Option<InjectOom>>,
}

#[cfg(test)]
pub(crate) type InjectOom = Box<dyn Fn(&[usize]) -> bool + Send + Sync>;

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
        let message = e.to_string();
        if is_allocation_failure(&message) {
            RuntimeError::OutOfMemory { model: self.name.clone(), message }
        } else {
            RuntimeError::Run { model: self.name.clone(), message }
        }
    }

    /// Test-only: from now on, runs whose input shape satisfies `fails` return the error a
    /// provider returns when it cannot allocate (`None` removes the hook).
    #[cfg(test)]
    pub(crate) fn inject_oom(&self, fails: Option<InjectOom>) {
        *self.inject_oom.lock().unwrap_or_else(|p| p.into_inner()) = fails;
    }

    #[cfg(test)]
    fn injected_oom(&self, input: &ArrayView4<'_, f32>) -> Result<(), RuntimeError> {
        let hook = self.inject_oom.lock().unwrap_or_else(|p| p.into_inner());
        match hook.as_ref() {
            // The CUDA arena's own wording, so the classification is exercised too.
            Some(fails) if fails(input.shape()) => Err(self.run_err(format!(
                "Non-zero status code returned while running Conv node. Status Message: Failed to allocate memory for requested buffer of size {} (injected)",
                input.len() * 4 * 64
            ))),
            _ => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn injected_oom(&self, _input: &ArrayView4<'_, f32>) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Runs a single-input model and returns every output, in the model's output order.
    pub fn run_all(&self, input: ArrayView4<'_, f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        self.injected_oom(&input)?;
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
        self.injected_oom(&input)?;
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

#[cfg(test)]
mod tests {
    use super::is_allocation_failure;

    #[test]
    fn allocation_failures_are_told_from_other_failures() {
        for oom in [
            "Non-zero status code returned while running Conv node. Name:'conv_1' Status Message: Failed to allocate memory for requested buffer of size 2147483648",
            "CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; file=cuda_allocator.cc",
            "BFCArena::AllocateRawInternal: Available memory of 0 is smaller than requested bytes",
            "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED",
            "Exception during initialization: std::bad_alloc",
        ] {
            assert!(is_allocation_failure(oom), "{oom}");
        }
        for other in [
            "Got invalid dimensions for input: input for the following indices index: 1 Got: 4 Expected: 3",
            "CUDA failure 700: an illegal memory access was encountered",
            "model has no inputs",
        ] {
            assert!(!is_allocation_failure(other), "{other}");
        }
    }
}
