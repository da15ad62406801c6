//! What an adapter is: one outside protocol (OpenAI-compatible, Stability AI's REST API, a
//! Runway-style asynchronous task API, a signed webhook) spoken to one configured provider.
//! Adapters only translate: a job in our terms becomes the provider's request, its answer
//! becomes [`Submitted`] / [`Remote`] / tokens, and its failures become [`ProviderError`]
//! classified for the call policy (`policy.rs`: deadline, retries honouring `Retry-After`,
//! the per-provider breaker, fallback). Adapters never retry, never store anything and never
//! log the API key; their error messages are safe to show a client (no URLs, no keys).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

/// A boxed future, so adapters can sit behind `dyn Adapter`.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The assistant's answer as it streams: text fragments in order.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<String, ProviderError>> + Send>>;

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The built-in provider: image-to-image through the enhancement engine (no adapter
    /// call; the task runs on the engine backend).
    Purrify,
    /// OpenAI-compatible: `POST /chat/completions` (streaming), `POST /images/generations`,
    /// `POST /images/edits`, `POST /videos` + `GET /videos/{id}` (+ `/content`).
    Openai,
    /// Stability AI's REST API v2beta: `POST /v2beta/stable-image/generate/{core,sd3}`.
    Stability,
    /// An asynchronous task API of the Runway kind: `POST /v1/text_to_video` or
    /// `/v1/image_to_video`, then `GET /v1/tasks/{id}`, `DELETE /v1/tasks/{id}`.
    Runway,
    /// A signed webhook (seed 001's n8n workflow): the task is POSTed, and finished by a
    /// signed call to `/api/callback/task-complete` or `/task-failed`.
    Webhook,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [Self::Purrify, Self::Openai, Self::Stability, Self::Runway, Self::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purrify => "purrify",
            Self::Openai => "openai",
            Self::Stability => "stability",
            Self::Runway => "runway",
            Self::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// An API key, decrypted only for the call. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where and as whom one call goes: a provider's configuration with its key decrypted and
/// the model chosen.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider's id (`stability`, an admin's custom id), for logs and metrics.
    pub provider: String,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`,
    /// `https://api.stability.ai`, `https://api.dev.runwayml.com`, an n8n webhook URL.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// The model the call asks for (may be empty when the protocol has none).
    pub model: String,
    /// Free-form protocol options an admin set (`config` of a custom provider), e.g.
    /// `{"runwayVersion": "2024-11-06"}`; adapters document the keys they read.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// How long one HTTP exchange may take (the policy adds the overall deadline).
    pub timeout: Duration,
}

/// A picture sent along (image-to-image, image-to-video).
#[derive(Debug, Clone)]
pub struct InputImage {
    pub bytes: Bytes,
    /// `image/jpeg`, `image/png`, `image/webp`.
    pub content_type: String,
}

/// An image generation in our terms (seed 003's fields).
#[derive(Debug, Clone)]
pub struct ImageJob {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    /// 1..=4.
    pub count: u32,
    pub style: Option<String>,
    pub seed: Option<u64>,
    /// Image-to-image: the source picture and how far to move from it (0..=1).
    pub init: Option<InputImage>,
    pub strength: f32,
}

/// A video generation in our terms (seed 003's fields).
#[derive(Debug, Clone)]
pub struct VideoJob {
    pub prompt: String,
    /// Seconds.
    pub duration: u32,
    /// `720p`, `1080p`, ...
    pub resolution: String,
    pub fps: u32,
    pub style: Option<String>,
    /// Image-to-video: the first frame.
    pub image: Option<InputImage>,
}

/// A task handed to a workflow (seed 001's scene tasks posted to n8n).
#[derive(Debug, Clone)]
pub struct WorkflowJob {
    /// Our task id: the workflow names it when it calls back.
    pub task_id: String,
    /// The scene or kind the workflow runs.
    pub workflow: String,
    /// The task's parameters as the client sent them.
    pub params: serde_json::Value,
    /// A short-lived URL of the input file, when the task has one.
    pub input_url: Option<String>,
    /// Where the workflow reports: `.../api/callback/task-complete` and `.../task-failed`.
    pub complete_url: String,
    pub failed_url: String,
}

/// What a provider is asked to make.
#[derive(Debug, Clone)]
pub enum Job {
    Image(ImageJob),
    Video(VideoJob),
    Workflow(WorkflowJob),
}

impl Job {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Image(_) => "image",
            Self::Video(_) => "video",
            Self::Workflow(_) => "workflow",
        }
    }
}

/// One produced file: its bytes, or a URL the runner downloads into our storage (provider
/// URLs never reach clients).
#[derive(Debug, Clone)]
pub enum Output {
    Bytes { bytes: Bytes, content_type: String },
    Url(String),
}

/// The provider's first answer to a job.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Made at once (synchronous image APIs).
    Finished(Vec<Output>),
    /// Accepted; follow it with [`Adapter::poll`] (or wait for the webhook's callback when
    /// the adapter's [`Adapter::polls`] is false).
    Pending { remote_id: String },
}

/// A pending job's state.
#[derive(Debug, Clone)]
pub enum Remote {
    /// Still working; `progress` in 0..=1 when the provider reports it.
    Running {
        progress: Option<f64>,
    },
    Finished(Vec<Output>),
    /// The provider gave up; the message is client-safe.
    Failed(String),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// Why a provider call failed, as the policy needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth another try: 429, 5xx, a timeout, a refused or reset connection. `retry_after`
    /// is the provider's `Retry-After` (seconds or HTTP date), when it sent one.
    #[error("{message}")]
    Transient { status: Option<u16>, retry_after: Option<Duration>, message: String },
    /// The provider refused this request (400, 404, 413, 422, a content filter): another
    /// try or another provider would refuse it too.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    /// The key was refused (401, 403 other than a content refusal): a configuration
    /// problem; not retried, counts against the provider's breaker.
    #[error("{message}")]
    Auth { status: u16, message: String },
    /// The provider answered something the protocol does not allow.
    #[error("{0}")]
    Protocol(String),
    /// This protocol cannot do that job (e.g. video on Stability).
    #[error("{0}")]
    Unsupported(String),
}

impl ProviderError {
    /// Whether the policy may try again (same provider, after backoff).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether the failure says the provider is unwell (counts against its breaker and
    /// allows the fallback); a refused request does not.
    pub fn provider_fault(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Auth { .. } | Self::Protocol(_))
    }

    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Transient { status: Some(429), .. } => "rate_limited",
            Self::Transient { .. } => "transient",
            Self::Rejected { .. } => "rejected",
            Self::Auth { .. } => "auth",
            Self::Protocol(_) => "protocol",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// One protocol. Implementations live in `adapters/`, one file each, and are tested against
/// the fakes in `purrify-testkit::providers`.
pub trait Adapter: Send + Sync {
    fn protocol(&self) -> Protocol;

    /// Whether pending jobs are followed by [`Adapter::poll`]; `false` for the webhook,
    /// whose jobs end by callback.
    fn polls(&self) -> bool {
        true
    }

    /// Starts (or, for synchronous APIs, does) a job.
    fn submit<'a>(&'a self, ep: &'a Endpoint, job: &'a Job) -> BoxFut<'a, Result<Submitted, ProviderError>>;

    /// A pending job's state.
    fn poll<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<Remote, ProviderError>> {
        let _ = (ep, remote_id);
        Box::pin(async move { Err(ProviderError::Unsupported(format!("{} jobs are not polled", self.protocol().as_str()))) })
    }

    /// Asks the provider to stop a pending job (best effort; a job already finished is not
    /// an error).
    fn cancel<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<(), ProviderError>> {
        let _ = (ep, remote_id);
        Box::pin(async move { Ok(()) })
    }

    /// Streams a chat answer. Resolves once the provider accepted the request (headers
    /// received), so the policy can retry or fall back before the first token; errors after
    /// that arrive in the stream. Dropping the stream aborts the upstream request.
    fn chat<'a>(&'a self, ep: &'a Endpoint, messages: &'a [ChatMessage]) -> BoxFut<'a, Result<TokenStream, ProviderError>> {
        let _ = (ep, messages);
        Box::pin(async move { Err(ProviderError::Unsupported(format!("{} does not chat", self.protocol().as_str()))) })
    }
}
