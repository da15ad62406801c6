//! A generic signed webhook (seed 001's n8n workflows): the task is POSTed to the
//! provider's URL and the workflow reports back later by calling us, so jobs are not polled.
//!
//! The task, `POST {base_url}` (the webhook's full URL) with JSON
//!
//! ```json
//! {"taskId": "…", "workflow": "…", "params": {…}, "inputUrl": "…" | null,
//!  "callbacks": {"complete": "https://…/api/callback/task-complete",
//!                "failed": "https://…/api/callback/task-failed"}}
//! ```
//!
//! Any 2xx accepts it (n8n answers `{"message": "Workflow was started"}`).
//!
//! The callbacks the workflow makes, `POST` to the URL it was given, with JSON
//!
//! - complete: `{"taskId": "…", "outputUrl": "https://…"}` (a workflow with several results
//!   may send `"resultUrls": ["https://…", …]` as well or instead);
//! - failed: `{"taskId": "…", "error": "why"}`.
//!
//! Both directions are signed the same way (the scheme of our client callbacks): headers
//! `X-Purrify-Timestamp: <unix seconds>` and `X-Purrify-Signature: sha256=<hex
//! HMAC-SHA256(secret, "<timestamp>.<body>")>` over the exact body bytes, the secret being
//! the provider's API key. A receiver checks both with [`verify`], which refuses a
//! timestamp further than its tolerance from now (a replayed old call).

use std::time::Duration;

use serde_json::json;
use subtle::ConstantTimeEq;

use super::super::adapter::{Adapter, BoxFut, Endpoint, Job, Protocol, ProviderError, Submitted, WorkflowJob};
use super::http::{self, Failure};
use crate::domain::callbacks::send::signature;

pub use crate::domain::callbacks::send::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// How far a callback's timestamp may be from now by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The `X-Purrify-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    signature(secret, timestamp, body)
}

/// Checks a signed call: `timestamp` and `header` are the `X-Purrify-Timestamp` and
/// `X-Purrify-Signature` values as received, `body` the exact bytes, `now` the receiver's
/// unix time in seconds. The signature is compared in constant time.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str, now: i64, tolerance: Duration) -> Result<(), &'static str> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| "the timestamp is not a unix time")?;
    if ts.abs_diff(now) > tolerance.as_secs() {
        return Err("the timestamp is too far from now");
    }
    let given = header.trim();
    if !given.starts_with("sha256=") {
        return Err("the signature is not sha256=<hex>");
    }
    let expected = sign(secret, ts, body);
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(()) } else { Err("the signature does not match") }
}

pub struct Webhook {
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn post(&self, ep: &Endpoint, job: &WorkflowJob) -> Result<Submitted, ProviderError> {
        let secret = ep
            .api_key
            .as_ref()
            .filter(|k| !k.expose().is_empty())
            .ok_or_else(|| ProviderError::Auth { status: 401, message: format!("{} has no signing secret configured", ep.provider) })?;
        let body = serde_json::to_vec(&json!({
            "taskId": job.task_id,
            "workflow": job.workflow,
            "params": job.params,
            "inputUrl": job.input_url,
            "callbacks": { "complete": job.complete_url, "failed": job.failed_url },
        }))
        .map_err(|_| ProviderError::Protocol("the task could not be encoded".into()))?;
        let now = chrono::Utc::now().timestamp();
        let url = url::Url::parse(&ep.base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ProviderError::Protocol(format!("{}: the webhook URL is not a valid http(s) URL", ep.provider)))?;
        let req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, sign(secret.expose().as_bytes(), now, &body))
            .body(body);
        http::send(ep, req, error_message).await?;
        Ok(Submitted::Pending { remote_id: job.task_id.clone() })
    }
}

/// n8n answers errors as `{"code", "message"}`; other receivers as `{"error"}` or text.
fn error_message(f: &Failure) -> Option<String> {
    match &f.json {
        Some(j) => j.get("message").or_else(|| j.get("error")).and_then(|v| v.as_str()).map(str::to_owned),
        None => {
            let t = f.text.trim();
            (!t.is_empty() && !t.starts_with('<')).then(|| t.to_owned())
        }
    }
}

impl Adapter for Webhook {
    fn protocol(&self) -> Protocol {
        Protocol::Webhook
    }

    fn polls(&self) -> bool {
        false
    }

    fn submit<'a>(&'a self, ep: &'a Endpoint, job: &'a Job) -> BoxFut<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            match job {
                Job::Workflow(j) => self.post(ep, j).await,
                other => Err(ProviderError::Unsupported(format!("a webhook runs workflows, not {}s", other.name()))),
            }
        })
    }
}
