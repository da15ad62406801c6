//! The worker's job table: admission (bounded, idempotent by id), execution on the blocking
//! pool, progress as a watch channel per job, cancellation, and retention of finished jobs so
//! a dispatcher that re-attaches after a restart still finds the result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, info, info_span, warn};

use super::metrics::{Metrics, ModelLabels, OutcomeLabels};
use crate::pipeline::{Engine, JobControl, Stage};
use crate::protocol::{ErrorReason, JobAccepted, JobError, JobRequest, JobResult, JobState, JobStatus, TileAdaptation};
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("worker is at capacity ({capacity} jobs in flight)")]
    Full { capacity: usize, retry_after: Duration },
    #[error("job {0} already exists with different input, output or parameters")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("worker is not ready (models loading)")]
    NotReady,
    #[error("worker is shutting down")]
    ShuttingDown,
}

pub struct Job {
    request: JobRequest,
    request_id: Option<String>,
    status: watch::Sender<JobStatus>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    finished_at: Mutex<Option<Instant>>,
    /// Set when the job's tiles adapted to memory; sent with its result.
    tile_adaptation: OnceLock<TileAdaptation>,
}

impl Job {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Jobs accepted at once (running + waiting); beyond it, 429.
    pub capacity: usize,
    /// Jobs the engine runs at once.
    pub parallel: usize,
    /// Largest input object read.
    pub max_input_bytes: u64,
    /// How long finished jobs stay queryable.
    pub retain: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self { capacity: 4, parallel: 1, max_input_bytes: 100 * 1024 * 1024, retain: Duration::from_secs(3600) }
    }
}

pub struct Jobs {
    config: JobsConfig,
    engine: OnceLock<Arc<Engine>>,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    table: Mutex<HashMap<String, Arc<Job>>>,
    in_flight: AtomicUsize,
    run_slots: Arc<Semaphore>,
    accepting: AtomicBool,
    /// Set when the shutdown grace period ran out and running jobs were cancelled.
    aborted: AtomicBool,
    /// Moving average of job wall time in ms, for `Retry-After`.
    avg_job_ms: AtomicU64,
    idle: Notify,
}

impl Jobs {
    pub fn new(config: JobsConfig, storage: Arc<Storage>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            run_slots: Arc::new(Semaphore::new(config.parallel.max(1))),
            config,
            engine: OnceLock::new(),
            storage,
            metrics,
            table: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            aborted: AtomicBool::new(false),
            avg_job_ms: AtomicU64::new(5_000),
            idle: Notify::new(),
        })
    }

    /// Installs the engine once its models are loaded and warmed up; from then on the worker
    /// is ready.
    pub fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.get()
    }

    pub fn ready(&self) -> bool {
        self.engine.get().is_some() && self.accepting.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Stops admitting jobs (graceful shutdown); running ones continue.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Cancels every job that has not finished (the shutdown grace period is over): queued
    /// jobs stop at once, running ones at the engine's next tile or face. They end as
    /// `cancelled`, which dispatchers retry on another worker. Returns how many were asked.
    pub fn cancel_all(&self) -> usize {
        self.stop_accepting();
        self.aborted.store(true, Ordering::Relaxed);
        let jobs: Vec<Arc<Job>> = self.lock().values().cloned().collect();
        let mut n = 0;
        for job in jobs {
            if !job.status.borrow().state.is_terminal() {
                job.cancelled.store(true, Ordering::Relaxed);
                job.cancel_notify.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Resolves when no job is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retry_after(&self) -> Duration {
        let per_slot = self.avg_job_ms.load(Ordering::Relaxed) / self.config.parallel.max(1) as u64;
        Duration::from_secs((per_slot / 1000).clamp(1, 60))
    }

    pub fn submit(self: &Arc<Self>, req: JobRequest, request_id: Option<String>) -> Result<JobAccepted, SubmitError> {
        if req.id.is_empty() || req.id.len() > 128 || !req.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(SubmitError::Invalid("id must be 1-128 characters of [A-Za-z0-9._-]".into()));
        }
        req.params.validate().map_err(SubmitError::Invalid)?;
        let mut table = self.lock();
        if let Some(existing) = table.get(&req.id) {
            // Resubmitting the same job attaches to it (a dispatcher retrying after a timeout
            // or re-attaching after a restart); a different job under the same id is a bug.
            if existing.request != req {
                return Err(SubmitError::Conflict(req.id));
            }
            let state = existing.status.borrow().state;
            return Ok(JobAccepted { id: req.id, state, existing: true });
        }
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        if self.engine.get().is_none() {
            return Err(SubmitError::NotReady);
        }
        for uri in [&req.input_uri, &req.output_uri] {
            if let Err(e) = crate::storage::parse_uri(uri) {
                return Err(SubmitError::Invalid(e.to_string()));
            }
        }
        if self.in_flight() >= self.config.capacity {
            self.metrics.rejected_full.inc();
            return Err(SubmitError::Full { capacity: self.config.capacity, retry_after: self.retry_after() });
        }
        let initial = JobStatus {
            id: req.id.clone(),
            state: JobState::Queued,
            progress: 0.0,
            stage: Some("queued".into()),
            result: None,
            error: None,
        };
        let job = Arc::new(Job {
            request: req.clone(),
            request_id,
            status: watch::Sender::new(initial),
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            finished_at: Mutex::new(None),
            tile_adaptation: OnceLock::new(),
        });
        table.insert(req.id.clone(), job.clone());
        // Counted before the lock is released: the capacity check above and this increment
        // must be one step, or concurrent submissions all pass the check.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        drop(table);
        self.metrics.in_flight.inc();
        let span = info_span!("job", id = %req.id, request_id = job.request_id.as_deref().unwrap_or("-"));
        let this = self.clone();
        tokio::spawn(async move { this.run(job).await }.instrument(span));
        Ok(JobAccepted { id: req.id, state: JobState::Queued, existing: false })
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.lock().get(id).map(|j| j.status.borrow().clone())
    }

    /// How a finished job's tiles adapted, when they did.
    pub fn tile_adaptation(&self, id: &str) -> Option<TileAdaptation> {
        self.lock().get(id).and_then(|j| j.tile_adaptation.get().copied())
    }

    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<JobStatus>> {
        self.lock().get(id).map(|j| j.status.subscribe())
    }

    /// Asks a job to stop. Queued jobs stop at once, running ones at the next tile.
    pub fn cancel(&self, id: &str) -> Option<JobStatus> {
        let job = self.lock().get(id).cloned()?;
        if !job.status.borrow().state.is_terminal() {
            job.cancelled.store(true, Ordering::Relaxed);
            job.cancel_notify.notify_one();
        }
        Some(job.status.borrow().clone())
    }

    /// Forgets finished jobs older than the retention period.
    pub fn collect_garbage(&self) -> usize {
        let retain = self.config.retain;
        let mut table = self.lock();
        let before = table.len();
        table.retain(|_, j| match *j.finished_at.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(t) => t.elapsed() < retain,
            None => true,
        });
        before - table.len()
    }

    async fn run(self: Arc<Self>, job: Arc<Job>) {
        let started = Instant::now();
        let outcome = self.execute(&job).await;
        let (state, result, error) = match outcome {
            Ok(result) => (JobState::Succeeded, Some(result), None),
            Err(mut e) if e.reason == ErrorReason::Cancelled => {
                if self.aborted.load(Ordering::Relaxed) {
                    e.message = "the worker shut down before the job finished; it can run again on another worker".into();
                }
                (JobState::Cancelled, None, Some(e))
            }
            Err(e) => (JobState::Failed, None, Some(e)),
        };
        let elapsed = started.elapsed();
        match &error {
            None => info!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded"),
            Some(e) => warn!(reason = e.reason.as_str(), message = %e.message, "job {}", state.as_str()),
        }
        self.metrics
            .jobs
            .get_or_create(&OutcomeLabels { outcome: state.as_str(), reason: error.as_ref().map(|e| e.reason.as_str()).unwrap_or("none") })
            .inc();
        self.metrics.job_duration.observe(elapsed.as_secs_f64());
        if state == JobState::Succeeded {
            let ms = elapsed.as_millis() as u64;
            let avg = self.avg_job_ms.load(Ordering::Relaxed);
            self.avg_job_ms.store((avg * 7 + ms) / 8, Ordering::Relaxed);
        }
        *job.finished_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        job.status.send_modify(|s| {
            s.state = state;
            s.stage = None;
            if state == JobState::Succeeded {
                s.progress = 1.0;
            }
            s.result = result;
            s.error = error;
        });
        self.metrics.in_flight.dec();
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn execute(&self, job: &Arc<Job>) -> Result<JobResult, JobError> {
        let cancelled_err = || JobError { reason: ErrorReason::Cancelled, message: "cancelled".into() };
        let _permit = tokio::select! {
            p = self.run_slots.clone().acquire_owned() => p.map_err(|_| JobError { reason: ErrorReason::Internal, message: "worker stopped".into() })?,
            () = job.cancel_notify.notified() => return Err(cancelled_err()),
        };
        if job.is_cancelled() {
            return Err(cancelled_err());
        }
        let engine =
            self.engine.get().cloned().ok_or_else(|| JobError { reason: ErrorReason::Internal, message: "engine not loaded".into() })?;
        job.status.send_modify(|s| {
            s.state = JobState::Running;
            s.stage = Some("download".into());
        });
        let started = Instant::now();
        let req = &job.request;
        let input = self.storage.get(&req.input_uri, self.config.max_input_bytes).await.map_err(storage_error)?;

        let job2 = job.clone();
        let params = req.params;
        let tile_hist = self.metrics.tile_duration.clone();
        let span = tracing::Span::current();
        let engine2 = engine.clone();
        let enhanced = tokio::task::spawn_blocking(move || {
            let engine = engine2;
            let _entered = span.enter();
            let mut progress = |stage: Stage, p: f32| {
                job2.status.send_modify(|s| {
                    s.progress = p.clamp(0.0, 1.0);
                    s.stage = Some(stage.as_str().into());
                });
            };
            // Model time per tile, as the engine measured it: wall time between progress
            // reports would charge decode (and anything else before a tile) to a tile.
            let mut tile_time = |d: Duration| tile_hist.observe(d.as_secs_f64());
            let cancelled = || job2.is_cancelled();
            engine.enhance(
                &input,
                &params,
                JobControl { cancelled: &cancelled, progress: &mut progress, tile_model_time: Some(&mut tile_time) },
            )
        })
        .await
        .map_err(|e| JobError { reason: ErrorReason::Internal, message: format!("engine task failed: {e}") })?
        .map_err(|e| e.to_job_error())?;

        let a = enhanced.tile_adaptation;
        if a.adapted() {
            let labels = ModelLabels { model: enhanced.model.clone(), provider: engine.active_provider() };
            self.metrics.tile_splits.get_or_create(&labels).inc_by(u64::from(a.splits));
            if let Some(limit) = engine.remembered_tile(&enhanced.model) {
                self.metrics.tile_size_limit.get_or_create(&labels).set(i64::from(limit));
            }
            warn!(requested = a.requested, planned = a.planned, smallest = a.smallest, splits = a.splits, "tiles adapted to memory");
            let _ = job.tile_adaptation.set(TileAdaptation {
                requested: a.requested,
                planned: a.planned,
                smallest: a.smallest,
                splits: a.splits,
            });
        }
        job.status.send_modify(|s| s.stage = Some("upload".into()));
        let bytes = enhanced.bytes.len() as u64;
        self.storage.put(&req.output_uri, Bytes::from(enhanced.bytes)).await.map_err(storage_error)?;
        Ok(JobResult {
            output_uri: req.output_uri.clone(),
            content_type: enhanced.format.content_type().to_string(),
            width: enhanced.width,
            height: enhanced.height,
            bytes,
            faces: enhanced.faces,
            face_restoration: enhanced.face_restoration,
            model: enhanced.model,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

fn storage_error(e: StorageError) -> JobError {
    let reason = match &e {
        StorageError::TooLarge { .. } => ErrorReason::TooLarge,
        // A missing or foreign input will not appear by retrying elsewhere.
        StorageError::NotFound { .. } | StorageError::OutsideRoot { .. } | StorageError::InvalidUri { .. } => ErrorReason::BadInput,
        StorageError::Backend { .. } => ErrorReason::Storage,
    };
    JobError { reason, message: e.to_string() }
}
