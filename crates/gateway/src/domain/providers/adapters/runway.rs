//! Asynchronous task APIs of the Runway kind, as Runway's API reference describes them:
//!
//! - `POST {base}/v1/image_to_video` `{model, promptImage, promptText, ratio, duration}` when
//!   the job has a first frame (sent inline as a `data:` URI), else `POST
//!   {base}/v1/text_to_video` `{model, promptText, ratio, duration}`; both answer `{id}`;
//! - `GET {base}/v1/tasks/{id}`: `status` is `PENDING`, `THROTTLED` (queued behind the
//!   organisation's concurrency limit), `RUNNING` (with `progress` 0-1), `SUCCEEDED` (with
//!   `output`, a list of URLs), `FAILED` (with `failure` and `failureCode`) or `CANCELLED`;
//! - `DELETE {base}/v1/tasks/{id}` cancels a running task (or deletes a finished one).
//!
//! Every call sends `Authorization: Bearer <key>` and `X-Runway-Version` (the API version
//! the request is written for). Errors are `{"error": "...", "issues"?: [...]}`.
//!
//! Options read from `ep.options`: `runwayVersion` (default `2024-11-06`) and `ratio`
//! (e.g. `1280:720`, overriding the one derived from the resolution). Without a model the
//! defaults are `gen4_turbo` (image-to-video) and `gen4.5` (text-to-video).

use base64::Engine as _;
use serde_json::{Value, json};

use super::super::adapter::{Adapter, BoxFut, Endpoint, Job, Output, Protocol, ProviderError, Remote, Submitted, VideoJob};
use super::http::{self, Failure};

/// The API version requests are written for.
pub const DEFAULT_VERSION: &str = "2024-11-06";

pub struct Runway {
    http: reqwest::Client,
}

impl Runway {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    fn request(&self, ep: &Endpoint, method: reqwest::Method, segments: &[&str]) -> Result<reqwest::RequestBuilder, ProviderError> {
        let key = http::require_key(ep)?;
        let version = ep.options.get("runwayVersion").and_then(Value::as_str).filter(|v| !v.is_empty()).unwrap_or(DEFAULT_VERSION);
        Ok(self.http.request(method, http::url(ep, segments)?).bearer_auth(key).header("X-Runway-Version", version))
    }

    async fn start(&self, ep: &Endpoint, job: &VideoJob) -> Result<Submitted, ProviderError> {
        let ratio = ep.options.get("ratio").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| ratio(&job.resolution));
        let (path, body) = match &job.image {
            Some(image) => {
                let uri = format!("data:{};base64,{}", image.content_type, base64::engine::general_purpose::STANDARD.encode(&image.bytes));
                let mut body = json!({
                    "model": model(ep, "gen4_turbo"),
                    "promptImage": uri,
                    "ratio": ratio,
                    "duration": job.duration,
                });
                if !job.prompt.trim().is_empty() {
                    body["promptText"] = json!(job.prompt);
                }
                ("image_to_video", body)
            }
            None => (
                "text_to_video",
                json!({ "model": model(ep, "gen4.5"), "promptText": job.prompt, "ratio": ratio, "duration": job.duration }),
            ),
        };
        let req = self.request(ep, reqwest::Method::POST, &["v1", path])?.json(&body);
        let answer = http::json_body(ep, http::send(ep, req, error_message).await?).await?;
        match answer.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Submitted::Pending { remote_id: id.to_owned() }),
            _ => Err(ProviderError::Protocol(format!("{} accepted the task without an id", ep.provider))),
        }
    }

    async fn state(&self, ep: &Endpoint, id: &str) -> Result<Remote, ProviderError> {
        let req = self.request(ep, reqwest::Method::GET, &["v1", "tasks", id])?;
        let task = http::json_body(ep, http::send(ep, req, error_message).await?).await?;
        match task.get("status").and_then(Value::as_str) {
            Some("PENDING" | "THROTTLED" | "RUNNING") => Ok(Remote::Running { progress: progress(&task) }),
            Some("SUCCEEDED") => {
                let urls: Vec<Output> = task
                    .get("output")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).filter(|u| !u.is_empty()).map(|u| Output::Url(u.to_owned())).collect())
                    .unwrap_or_default();
                if urls.is_empty() {
                    return Err(ProviderError::Protocol(format!("{} finished the task without output", ep.provider)));
                }
                Ok(Remote::Finished(urls))
            }
            Some("FAILED") => {
                let why =
                    task.get("failure").and_then(Value::as_str).map(|m| http::safe_message(m, ep.api_key.as_ref())).unwrap_or_default();
                Ok(Remote::Failed(if why.is_empty() {
                    format!("{} could not make the video", ep.provider)
                } else {
                    format!("{} could not make the video: {why}", ep.provider)
                }))
            }
            Some("CANCELLED" | "CANCELED") => Ok(Remote::Failed("cancelled".into())),
            _ => Err(ProviderError::Protocol(format!("{} reported a task in an unknown state", ep.provider))),
        }
    }
}

fn model(ep: &Endpoint, default: &str) -> String {
    if ep.model.is_empty() { default.to_owned() } else { ep.model.clone() }
}

/// `progress` in 0..=1; a service that reports percent is scaled down.
fn progress(task: &Value) -> Option<f64> {
    let p = task.get("progress").and_then(Value::as_f64)?;
    Some(if p > 1.0 { p / 100.0 } else { p }.clamp(0.0, 1.0))
}

/// Runway's landscape ratio for our resolution (`1280:720` for 720p, the Gen-4 default).
fn ratio(resolution: &str) -> String {
    match resolution.trim().to_ascii_lowercase().as_str() {
        "1080p" => "1920:1080".into(),
        _ => "1280:720".into(),
    }
}

/// Runway's `error`, with its first validation issue when it gave one.
fn error_message(f: &Failure) -> Option<String> {
    let j = f.json.as_ref()?;
    let error = j.get("error").and_then(Value::as_str).or_else(|| j.get("message").and_then(Value::as_str))?;
    let Some(issue) = j.pointer("/issues/0").filter(|i| i.is_object()) else { return Some(error.to_owned()) };
    let path = issue
        .get("path")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(|s| s.as_str().map(str::to_owned).unwrap_or_else(|| s.to_string())).collect::<Vec<_>>().join("."));
    let message = issue.get("message").and_then(Value::as_str).unwrap_or_default();
    Some(match path.filter(|p| !p.is_empty()) {
        Some(p) => format!("{error}: {p}: {message}"),
        None => format!("{error}: {message}"),
    })
}

impl Adapter for Runway {
    fn protocol(&self) -> Protocol {
        Protocol::Runway
    }

    fn submit<'a>(&'a self, ep: &'a Endpoint, job: &'a Job) -> BoxFut<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            match job {
                Job::Video(j) => self.start(ep, j).await,
                other => Err(ProviderError::Unsupported(format!("this Runway adapter makes videos, not {}s", other.name()))),
            }
        })
    }

    fn poll<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<Remote, ProviderError>> {
        Box::pin(self.state(ep, remote_id))
    }

    fn cancel<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let req = self.request(ep, reqwest::Method::DELETE, &["v1", "tasks", remote_id])?;
            match http::send(ep, req, error_message).await {
                Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}
