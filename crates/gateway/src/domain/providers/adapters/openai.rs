//! OpenAI-compatible services (OpenAI itself and the many services that copy its API), as
//! OpenAI's API reference describes them:
//!
//! - chat: `POST {base}/chat/completions` with `stream: true`; the answer is server-sent
//!   events, each `data: {chat.completion.chunk}` carrying `choices[0].delta.content`, the last
//!   `data: [DONE]`. An error after the head arrives as `data: {"error": {...}}`.
//! - images: `POST {base}/images/generations` (JSON) and `POST {base}/images/edits`
//!   (multipart, the source picture as `image`); the answer's `data[]` holds `b64_json` or a
//!   `url` each.
//! - videos (Sora): `POST {base}/videos` (multipart: `prompt`, `model`, `seconds`, `size`,
//!   optional `input_reference`) answers a job `{id, status, progress}`; `GET
//!   {base}/videos/{id}` reports `queued` / `in_progress` / `completed` / `failed` with a
//!   `progress` of 0-100; the MP4 is `GET {base}/videos/{id}/content`, which needs the key, so
//!   it is fetched here and handed on as bytes; `DELETE {base}/videos/{id}` removes a job.
//!
//! Every call sends `Authorization: Bearer <key>`. Errors are `{"error": {"message", "type",
//! "param", "code"}}`.
//!
//! Options read from `ep.options`: `temperature` (number) and `maxTokens` (integer) for chat;
//! `imagesPerCall` (integer) caps `n` per image call (default 1 for `dall-e-3`, which refuses
//! more); `videoSize` (`WxH`) overrides the size derived from the resolution.

use bytes::Bytes;
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use super::super::adapter::{
    Adapter, BoxFut, ChatMessage, Endpoint, ImageJob, Job, Output, Protocol, ProviderError, Remote, Submitted, TokenStream, VideoJob,
};
use super::http::{self, Failure};
use super::sse;

pub struct OpenAi {
    http: reqwest::Client,
}

impl OpenAi {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn images(&self, ep: &Endpoint, job: &ImageJob) -> Result<Vec<Output>, ProviderError> {
        let key = http::require_key(ep)?;
        let per_call = ep
            .options
            .get("imagesPerCall")
            .and_then(Value::as_u64)
            .map(|n| n.max(1) as u32)
            .unwrap_or(if ep.model == "dall-e-3" { 1 } else { u32::MAX });
        let mut outputs = Vec::new();
        let mut left = job.count.max(1);
        while left > 0 {
            let n = left.min(per_call);
            left -= n;
            let req = match &job.init {
                None => {
                    let mut body = json!({ "prompt": job.prompt, "n": n, "size": size(job) });
                    if !ep.model.is_empty() {
                        body["model"] = json!(ep.model);
                    }
                    if asks_format(ep) {
                        body["response_format"] = json!("b64_json");
                    }
                    self.http.post(http::url(ep, &["images", "generations"])?).bearer_auth(key).json(&body)
                }
                Some(init) => {
                    let image = Part::bytes(init.bytes.to_vec())
                        .file_name(http::file_name(&init.content_type))
                        .mime_str(&init.content_type)
                        .map_err(|_| ProviderError::Rejected {
                            status: 400,
                            message: "the source picture has an invalid content type".into(),
                        })?;
                    let mut form = Form::new()
                        .part("image", image)
                        .text("prompt", job.prompt.clone())
                        .text("n", n.to_string())
                        .text("size", size(job));
                    if !ep.model.is_empty() {
                        form = form.text("model", ep.model.clone());
                    }
                    if asks_format(ep) {
                        form = form.text("response_format", "b64_json");
                    }
                    self.http.post(http::url(ep, &["images", "edits"])?).bearer_auth(key).multipart(form)
                }
            };
            let resp = http::send(ep, req, error_message).await?;
            outputs.extend(image_outputs(ep, &http::json_body(ep, resp).await?)?);
        }
        Ok(outputs)
    }

    async fn start_video(&self, ep: &Endpoint, job: &VideoJob) -> Result<Submitted, ProviderError> {
        let key = http::require_key(ep)?;
        let size = ep.options.get("videoSize").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| video_size(&job.resolution));
        let mut form =
            Form::new().text("prompt", job.prompt.clone()).text("seconds", seconds(ep, job.duration).to_string()).text("size", size);
        if !ep.model.is_empty() {
            form = form.text("model", ep.model.clone());
        }
        if let Some(image) = &job.image {
            let part = Part::bytes(image.bytes.to_vec())
                .file_name(http::file_name(&image.content_type))
                .mime_str(&image.content_type)
                .map_err(|_| ProviderError::Rejected { status: 400, message: "the first frame has an invalid content type".into() })?;
            form = form.part("input_reference", part);
        }
        let req = self.http.post(http::url(ep, &["videos"])?).bearer_auth(key).multipart(form);
        let body = http::json_body(ep, http::send(ep, req, error_message).await?).await?;
        match body.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Submitted::Pending { remote_id: id.to_owned() }),
            _ => Err(ProviderError::Protocol(format!("{} accepted the video without a job id", ep.provider))),
        }
    }

    async fn video_state(&self, ep: &Endpoint, id: &str) -> Result<Remote, ProviderError> {
        let key = http::require_key(ep)?;
        let req = self.http.get(http::url(ep, &["videos", id])?).bearer_auth(key);
        let body = http::json_body(ep, http::send(ep, req, error_message).await?).await?;
        let progress = body.get("progress").and_then(Value::as_f64).map(|p| (p / 100.0).clamp(0.0, 1.0));
        match body.get("status").and_then(Value::as_str) {
            Some("queued" | "in_progress") => Ok(Remote::Running { progress }),
            Some("completed") => {
                let req = self.http.get(http::url(ep, &["videos", id, "content"])?).bearer_auth(key);
                let resp = http::send(ep, req, error_message).await?;
                let content_type = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .filter(|t| t.starts_with("video/"))
                    .unwrap_or("video/mp4")
                    .to_owned();
                let bytes = resp.bytes().await.map_err(|e| http::transport(ep, &e))?;
                if bytes.is_empty() {
                    return Err(ProviderError::Protocol(format!("{} finished the video without content", ep.provider)));
                }
                Ok(Remote::Finished(vec![Output::Bytes { bytes, content_type }]))
            }
            Some("failed") => {
                let why = body.pointer("/error/message").and_then(Value::as_str).map(|m| http::safe_message(m, ep.api_key.as_ref()));
                Ok(Remote::Failed(match why {
                    Some(m) if !m.is_empty() => format!("{} could not make the video: {m}", ep.provider),
                    _ => format!("{} could not make the video", ep.provider),
                }))
            }
            Some("cancelled") => Ok(Remote::Failed("cancelled".into())),
            _ => Err(ProviderError::Protocol(format!("{} reported a video job in an unknown state", ep.provider))),
        }
    }

    async fn start_chat(&self, ep: &Endpoint, messages: &[ChatMessage]) -> Result<TokenStream, ProviderError> {
        let key = http::require_key(ep)?;
        let mut body = json!({
            "model": ep.model,
            "messages": messages.iter().map(|m| json!({ "role": m.role, "content": m.content })).collect::<Vec<_>>(),
            "stream": true,
        });
        if let Some(t) = ep.options.get("temperature").and_then(Value::as_f64) {
            body["temperature"] = json!(t);
        }
        if let Some(n) = ep.options.get("maxTokens").and_then(Value::as_u64) {
            body["max_tokens"] = json!(n);
        }
        let req = self
            .http
            .post(http::url(ep, &["chat", "completions"])?)
            .bearer_auth(key)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        let resp = http::send_streaming(ep, req, error_message).await?;
        let is_stream = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !is_stream {
            return Err(ProviderError::Protocol(format!("{} did not answer with an event stream", ep.provider)));
        }
        Ok(Box::pin(tokens(ep.clone(), resp)))
    }
}

/// The chat answer's text fragments, read as they arrive. Each wait for more bytes is bounded
/// by the endpoint's timeout (a provider that stops sending is a failure, not a hang).
/// Dropping the stream drops the response and with it the connection.
fn tokens(ep: Endpoint, resp: reqwest::Response) -> impl futures::Stream<Item = Result<String, ProviderError>> + Send {
    async_stream::stream! {
        let mut body = resp.bytes_stream();
        let mut parser = sse::Parser::default();
        loop {
            let chunk = match tokio::time::timeout(ep.timeout, body.next()).await {
                Err(_) => {
                    yield Err(broke(&ep, "stopped sending mid-answer"));
                    return;
                }
                Ok(None) => {
                    yield Err(broke(&ep, "ended the answer early"));
                    return;
                }
                Ok(Some(Err(e))) => {
                    yield Err(broke(&ep, if e.is_timeout() { "stopped sending mid-answer" } else { "broke off the answer" }));
                    return;
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(why) => {
                    yield Err(ProviderError::Protocol(format!("{}: {why}", ep.provider)));
                    return;
                }
            };
            for event in events {
                match chunk_token(&ep, &event) {
                    Ok(Some(Piece::Text(t))) => yield Ok(t),
                    Ok(Some(Piece::Done)) => return,
                    Ok(None) => {}
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
        }
    }
}

enum Piece {
    Text(String),
    Done,
}

/// What one event of the stream says.
fn chunk_token(ep: &Endpoint, event: &sse::Event) -> Result<Option<Piece>, ProviderError> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Ok(Some(Piece::Done));
    }
    let v: Value =
        serde_json::from_str(data).map_err(|_| ProviderError::Protocol(format!("{} sent a stream event that is not JSON", ep.provider)))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let said = err.get("message").and_then(Value::as_str).or_else(|| err.as_str()).unwrap_or_default();
        let said = http::safe_message(said, ep.api_key.as_ref());
        return Err(ProviderError::Transient {
            status: None,
            retry_after: None,
            message: if said.is_empty() {
                format!("{} failed mid-answer", ep.provider)
            } else {
                format!("{} failed mid-answer: {said}", ep.provider)
            },
        });
    }
    match v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(Some(Piece::Text(t.to_owned()))),
        _ => Ok(None),
    }
}

fn broke(ep: &Endpoint, what: &str) -> ProviderError {
    ProviderError::Transient { status: None, retry_after: None, message: format!("{} {what}", ep.provider) }
}

/// `error.message` of an OpenAI error body, else a short non-HTML text body.
fn error_message(f: &Failure) -> Option<String> {
    if let Some(j) = &f.json {
        let err = j.get("error")?;
        return err.get("message").and_then(Value::as_str).or_else(|| err.as_str()).map(str::to_owned);
    }
    let t = f.text.trim();
    (!t.is_empty() && !t.starts_with('<')).then(|| t.to_owned())
}

/// `gpt-image-*` models always answer base64 and refuse `response_format`.
fn asks_format(ep: &Endpoint) -> bool {
    !ep.model.starts_with("gpt-image")
}

fn size(job: &ImageJob) -> String {
    format!("{}x{}", job.width, job.height)
}

/// Sora's sizes for our resolutions (landscape).
fn video_size(resolution: &str) -> String {
    let r = resolution.trim().to_ascii_lowercase();
    if let Some((w, h)) = r.split_once('x')
        && w.parse::<u32>().is_ok()
        && h.parse::<u32>().is_ok()
    {
        return r;
    }
    match r.as_str() {
        "1080p" => "1792x1024".into(),
        _ => "1280x720".into(),
    }
}

/// Sora models take 4, 8 or 12 seconds: the nearest of them (ties go to the longer clip).
/// Other models get the duration as asked.
fn seconds(ep: &Endpoint, duration: u32) -> u32 {
    if !ep.model.starts_with("sora") {
        return duration;
    }
    [4u32, 8, 12].into_iter().min_by_key(|s| (s.abs_diff(duration), u32::MAX - s)).unwrap_or(4)
}

/// The pictures of an images answer: `b64_json` decoded, `url` passed on for the runner to
/// download (OpenAI's image URLs are pre-signed and need no key).
fn image_outputs(ep: &Endpoint, body: &Value) -> Result<Vec<Output>, ProviderError> {
    use base64::Engine as _;
    let bad = |what: &str| ProviderError::Protocol(format!("{} {what}", ep.provider));
    let data = body.get("data").and_then(Value::as_array).ok_or_else(|| bad("answered without images"))?;
    let mut out = Vec::with_capacity(data.len());
    for item in data {
        if let Some(b64) = item.get("b64_json").and_then(Value::as_str) {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad("sent an image that is not base64"))?;
            let content_type = http::sniff_image(&bytes).to_owned();
            out.push(Output::Bytes { bytes: Bytes::from(bytes), content_type });
        } else if let Some(url) = item.get("url").and_then(Value::as_str) {
            out.push(Output::Url(url.to_owned()));
        } else {
            return Err(bad("sent an image without b64_json or url"));
        }
    }
    if out.is_empty() {
        return Err(bad("answered without images"));
    }
    Ok(out)
}

impl Adapter for OpenAi {
    fn protocol(&self) -> Protocol {
        Protocol::Openai
    }

    fn submit<'a>(&'a self, ep: &'a Endpoint, job: &'a Job) -> BoxFut<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            match job {
                Job::Image(j) => self.images(ep, j).await.map(Submitted::Finished),
                Job::Video(j) => self.start_video(ep, j).await,
                Job::Workflow(_) => Err(ProviderError::Unsupported("OpenAI-compatible providers do not run workflows".into())),
            }
        })
    }

    fn poll<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<Remote, ProviderError>> {
        Box::pin(self.video_state(ep, remote_id))
    }

    fn cancel<'a>(&'a self, ep: &'a Endpoint, remote_id: &'a str) -> BoxFut<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let key = http::require_key(ep)?;
            let req = self.http.delete(http::url(ep, &["videos", remote_id])?).bearer_auth(key);
            match http::send(ep, req, error_message).await {
                Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn chat<'a>(&'a self, ep: &'a Endpoint, messages: &'a [ChatMessage]) -> BoxFut<'a, Result<TokenStream, ProviderError>> {
        Box::pin(self.start_chat(ep, messages))
    }
}
