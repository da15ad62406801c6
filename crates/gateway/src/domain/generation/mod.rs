//! Generation (seed 003's `/generate/*`, seed 001's workflow scene tasks; DESIGN section
//! 13): a request becomes a task of the one task table with its kind (`text_to_image`,
//! `image_to_image`, `text_to_video`, `image_to_video`, `workflow`), its provider and model
//! and the request itself. It is paid like every task (a hold on the kind's price, captured
//! on success) and counted against the daily quota first; a refused request costs nothing.
//!
//! Who runs it: an image-to-image task on the built-in `purrify` provider runs on the
//! enhancement engine like any upload; every other one on the provider runner
//! ([`runner`]), which calls the provider through the policy and the fallback, copies the
//! results into our storage and completes the task, so works, credits, callbacks and `/ws`
//! follow it as they follow every task.

pub mod outputs;
pub mod runner;
pub mod workflow;

use purrify_api::EnhanceParams;
use purrify_store::{Generation, Runner, TaskMeta};
use serde::{Deserialize, Serialize};

use crate::domain::accounts::Principal;
use crate::domain::postcards::PostcardSpec;
use crate::domain::providers::adapter::{ImageJob, InputImage, Job, VideoJob, WorkflowJob};
use crate::domain::providers::{BUILTIN_ID, Kind, Provider, ProviderService};
use crate::domain::quotas::{self, QuotaService};
use crate::domain::tasks::{NewUpload, TaskOptions, TaskService};
use crate::domain::{DomainError, DomainResult};

/// A generation request in the domain's terms, stored with its task (`tasks.job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    TextToImage(ImageSpec),
    ImageToImage(ImageSpec),
    TextToVideo(VideoSpec),
    ImageToVideo(VideoSpec),
    Workflow {
        workflow: String,
        params: serde_json::Value,
    },
    /// Seed 004's postcard: run by `postcards::run` (text, then picture, then card).
    Postcard(PostcardSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    pub count: u32,
    pub style: Option<String>,
    pub seed: Option<u64>,
    /// Image-to-image: 0..=1.
    pub strength: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoSpec {
    pub prompt: String,
    pub duration: u32,
    pub resolution: String,
    pub fps: u32,
    pub style: Option<String>,
}

/// Limits of what a request may ask.
pub const MAX_PROMPT: usize = 2000;
pub const MAX_IMAGES: u32 = 4;
pub const MIN_SIDE: u32 = 256;
pub const MAX_SIDE: u32 = 2048;
pub const MAX_DURATION: u32 = 20;
pub const RESOLUTIONS: &[&str] = &["480p", "720p", "1080p"];

impl JobSpec {
    /// The task kind.
    pub fn task_kind(&self) -> &'static str {
        match self {
            Self::TextToImage(_) => "text_to_image",
            Self::ImageToImage(_) => "image_to_image",
            Self::TextToVideo(_) => "text_to_video",
            Self::ImageToVideo(_) => "image_to_video",
            Self::Workflow { .. } => "workflow",
            Self::Postcard(_) => "postcard",
        }
    }

    /// The kind of provider that serves it.
    pub fn provider_kind(&self) -> Kind {
        match self {
            Self::TextToImage(_) | Self::ImageToImage(_) | Self::Postcard(_) => Kind::Image,
            Self::TextToVideo(_) | Self::ImageToVideo(_) => Kind::Video,
            Self::Workflow { .. } => Kind::Workflow,
        }
    }

    pub fn needs_input(&self) -> bool {
        matches!(self, Self::ImageToImage(_) | Self::ImageToVideo(_))
    }

    /// Seconds to expect when nothing has been measured yet (seed 003's examples).
    pub fn default_estimate(&self) -> u64 {
        match self.provider_kind() {
            Kind::Video => 120,
            _ => 30,
        }
    }

    /// Checks the fields; every problem is reported at once.
    pub fn validate(&self) -> DomainResult<()> {
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        let mut prompt = |p: &str| {
            if p.trim().is_empty() || p.chars().count() > MAX_PROMPT {
                errors.push(("prompt", format!("must be 1 to {MAX_PROMPT} characters")));
            }
        };
        match self {
            Self::TextToImage(s) | Self::ImageToImage(s) => {
                prompt(&s.prompt);
                for (field, v) in [("width", s.width), ("height", s.height)] {
                    if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                        errors.push((field, format!("must be {MIN_SIDE} to {MAX_SIDE}")));
                    }
                }
                if !(1..=MAX_IMAGES).contains(&s.count) {
                    errors.push(("numImages", format!("must be 1 to {MAX_IMAGES}")));
                }
                if !(0.0..=1.0).contains(&s.strength) || !s.strength.is_finite() {
                    errors.push(("strength", "must be between 0 and 1".into()));
                }
                if s.negative_prompt.as_ref().is_some_and(|n| n.chars().count() > MAX_PROMPT) {
                    errors.push(("negativePrompt", format!("must be at most {MAX_PROMPT} characters")));
                }
            }
            Self::TextToVideo(s) | Self::ImageToVideo(s) => {
                prompt(&s.prompt);
                if !(1..=MAX_DURATION).contains(&s.duration) {
                    errors.push(("duration", format!("must be 1 to {MAX_DURATION} seconds")));
                }
                if !RESOLUTIONS.contains(&s.resolution.as_str()) {
                    errors.push(("resolution", format!("must be one of {}", RESOLUTIONS.join(", "))));
                }
                if !(1..=60).contains(&s.fps) {
                    errors.push(("fps", "must be 1 to 60".into()));
                }
            }
            Self::Workflow { workflow, .. } => {
                if workflow.is_empty() {
                    errors.push(("workflow", "must name the workflow".into()));
                }
            }
            Self::Postcard(p) => p.check(&mut errors),
        }
        if errors.is_empty() { Ok(()) } else { Err(DomainError::Fields(errors)) }
    }

    /// The adapter's job. `input` is the task's input picture; `workflow` the webhook
    /// details for workflow tasks.
    pub fn to_job(&self, input: Option<InputImage>, workflow: Option<WorkflowJob>) -> DomainResult<Job> {
        let missing = || DomainError::Internal("the task's input picture is missing".into());
        Ok(match self {
            Self::TextToImage(s) | Self::ImageToImage(s) => Job::Image(ImageJob {
                prompt: s.prompt.clone(),
                negative_prompt: s.negative_prompt.clone(),
                width: s.width,
                height: s.height,
                count: s.count,
                style: s.style.clone(),
                seed: s.seed,
                init: if matches!(self, Self::ImageToImage(_)) { Some(input.ok_or_else(missing)?) } else { None },
                strength: s.strength,
            }),
            Self::TextToVideo(s) | Self::ImageToVideo(s) => Job::Video(VideoJob {
                prompt: s.prompt.clone(),
                duration: s.duration,
                resolution: s.resolution.clone(),
                fps: s.fps,
                style: s.style.clone(),
                image: if matches!(self, Self::ImageToVideo(_)) { Some(input.ok_or_else(missing)?) } else { None },
            }),
            Self::Workflow { .. } => Job::Workflow(workflow.ok_or_else(|| DomainError::Internal("workflow details missing".into()))?),
            Self::Postcard(_) => return Err(DomainError::Internal("postcards are run by postcards::run, not as one job".into())),
        })
    }
}

/// A generation to create.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub spec: JobSpec,
    /// The stored input picture (image-to-*): its uri, type and size.
    pub input: Option<(String, String, u64)>,
    /// A provider id the client asked for (seed 003's video `model`: sora, veo, runway).
    pub provider: Option<String>,
    pub model: Option<String>,
    pub task_id: String,
    pub request_id: String,
    pub title: Option<String>,
    pub scene_id: Option<String>,
    pub price: Option<i64>,
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub task_id: String,
    pub provider: String,
    pub model: String,
    pub estimated_seconds: u64,
}

/// Creates generation tasks.
#[derive(Clone)]
pub struct GenerationService {
    tasks: TaskService,
    providers: ProviderService,
    quotas: QuotaService,
    /// How results a workflow reports are copied in.
    copy: outputs::CopyRules,
    http: reqwest::Client,
}

impl GenerationService {
    pub fn new(tasks: TaskService, providers: ProviderService, quotas: QuotaService, copy: outputs::CopyRules) -> Self {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(3)).build().expect("a default HTTP client builds");
        Self { tasks, providers, quotas, copy, http }
    }

    pub fn providers(&self) -> &ProviderService {
        &self.providers
    }

    /// The providers that may serve `spec`, first choice first.
    async fn chain_for(&self, spec: &JobSpec, asked: Option<&str>, with_input: bool) -> DomainResult<Vec<Provider>> {
        let kind = spec.provider_kind();
        if let Some(id) = asked {
            let p = self.providers.provider(id).await.map_err(|_| DomainError::invalid("model", format!("no provider {id:?}")))?;
            if p.kind != kind {
                return Err(DomainError::invalid("model", format!("{id} does not make {}", kind.as_str())));
            }
        }
        let mut chain = self.providers.chain(kind, asked).await?;
        // The built-in provider only transforms a picture.
        if !(matches!(spec, JobSpec::ImageToImage(_)) || (matches!(spec, JobSpec::Postcard(_)) && with_input)) {
            chain.retain(|p| p.id != BUILTIN_ID);
        }
        if chain.is_empty() {
            return Err(DomainError::Unavailable(format!(
                "no {} provider is available for {}; an admin configures one",
                kind.as_str(),
                spec.task_kind()
            )));
        }
        Ok(chain)
    }

    /// Validates, counts the quota, pays and creates the task. Nothing is counted or paid
    /// when it is refused.
    pub async fn create(&self, user: &Principal, req: GenerateRequest) -> DomainResult<Created> {
        req.spec.validate()?;
        if req.spec.needs_input() && req.input.is_none() {
            return Err(DomainError::invalid("image", "send the picture in the `image` field"));
        }
        let chain = self.chain_for(&req.spec, req.provider.as_deref(), req.input.is_some()).await?;
        let first = &chain[0];
        let model = first.model_or_default(req.model.as_deref());
        // A postcard runs on the provider runner even with the built-in provider first: its
        // photo goes to the engine as a child task of it.
        let runner = if first.id == BUILTIN_ID && !matches!(req.spec, JobSpec::Postcard(_)) { Runner::Engine } else { Runner::Provider };
        let quota = match req.spec.provider_kind() {
            Kind::Image => Some(quotas::Generation::Image),
            Kind::Video => Some(quotas::Generation::Video),
            Kind::Assistant | Kind::Workflow => None,
        };
        let counted_at = purrify_store::now_ms();
        if let Some(q) = quota {
            self.quotas.consume(user, q).await?;
        }
        let estimated = self
            .providers
            .estimate_seconds(req.spec.task_kind(), &first.id, &model, req.spec.default_estimate())
            .await
            .unwrap_or(req.spec.default_estimate());
        let job = serde_json::to_string(&req.spec).map_err(|e| DomainError::Internal(e.to_string()))?;
        let (input_uri, content_type, bytes) = req.input.clone().unwrap_or_default();
        // The built-in provider's models are the engine's quality levels.
        let mut params = EnhanceParams::default();
        if runner == Runner::Engine {
            params.quality_level = serde_json::from_value(serde_json::Value::String(model.clone())).unwrap_or_default();
        }
        let upload = NewUpload {
            task_id: req.task_id.clone(),
            input_uri,
            content_type: if content_type.is_empty() { "application/json".into() } else { content_type },
            bytes,
            params,
            request_id: req.request_id.clone(),
            owner: Some(user.user_id.clone()),
            client: String::new(),
        };
        let meta = TaskMeta {
            kind: req.spec.task_kind().into(),
            title: req.title.clone(),
            scene_id: req.scene_id.clone(),
            estimated_seconds: Some(estimated as i64),
            generation: Some(Generation {
                runner,
                provider: first.id.clone(),
                model: model.clone(),
                job,
                served_by: None,
                remote_id: None,
                outputs: None,
            }),
            ..TaskMeta::default()
        };
        let created = self.tasks.create_task_with(upload, TaskOptions { meta, priority: 0, price: req.price }).await;
        if let Err(e) = created {
            if let Some(q) = quota
                && let Err(give) = self.quotas.give_back(user, q, counted_at).await
            {
                tracing::warn!(error = %give, "cannot give back the quota of a refused generation");
            }
            return Err(e);
        }
        Ok(Created { task_id: req.task_id, provider: first.id.clone(), model, estimated_seconds: estimated })
    }
}
