//! `WorkerClient`: one typed method per worker endpoint (DESIGN section 4).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use tracing::{debug, instrument};
use url::Url;

use super::sse::SseParser;
use super::{ClientError, ConfigError};
use crate::protocol::{
    ErrorReason, JobAccepted, JobError, JobEvent, JobRequest, JobResult, JobState, JobStatus, WorkerErrorBody, WorkerInfo,
};

/// Forwarded on every request when set, so one id follows a task from the mini-program to
/// the worker's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Bodies of JSON answers are small; anything bigger is a misbehaving peer.
const MAX_BODY_BYTES: usize = 1 << 20;
/// What a 429 without a usable `Retry-After` means.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A worker asking for more than this is treated as asking for this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Whole-request deadline for request/response calls, and the deadline for the response
    /// headers of the event stream (whose body is open-ended).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// An event stream that delivers neither an event nor a keep-alive comment for this long is
    /// considered dropped.
    pub event_idle_timeout: Duration,
    /// Status polling period of [`WorkerClient::wait`] once the event stream is gone.
    pub poll_interval: Duration,
    /// Consecutive failed polls after which `wait` gives up on the worker.
    pub max_poll_failures: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            event_idle_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            max_poll_failures: 3,
        }
    }
}

/// How a job ended, as seen by [`WorkerClient::wait`].
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded(JobResult),
    Failed(JobError),
    Cancelled,
}

/// Events of one job; ends after the terminal event. A stream that stops before it yields
/// one `Unavailable` error as its last item, so callers can tell a drop from a finish.
pub type EventStream = BoxStream<'static, Result<JobEvent, ClientError>>;

/// Client of one worker. Cheap to clone: the connection pool is shared.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    base: Arc<Url>,
    config: Arc<ClientConfig>,
    request_id: Option<Arc<str>>,
}

impl WorkerClient {
    /// A client with default timeouts and its own connection pool.
    pub fn new(endpoint: &str) -> Result<Self, ConfigError> {
        Self::with_config(endpoint, ClientConfig::default())
    }

    pub fn with_config(endpoint: &str, config: ClientConfig) -> Result<Self, ConfigError> {
        let http = Self::http_client(&config)?;
        Self::from_parts(http, endpoint, config)
    }

    /// A client sharing `http`'s connection pool (the fleet gives all workers one pool).
    pub fn from_parts(http: reqwest::Client, endpoint: &str, config: ClientConfig) -> Result<Self, ConfigError> {
        let base = parse_endpoint(endpoint)?;
        Ok(Self { http, base: Arc::new(base), config: Arc::new(config), request_id: None })
    }

    /// The `reqwest::Client` this crate would build for `config`. No total timeout is set on
    /// it: each call sets its own, because the event stream must outlive any fixed deadline.
    pub fn http_client(config: &ClientConfig) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("purrify-inference-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))
    }

    /// A copy that sends `X-Request-ID: id` on every request.
    pub fn with_request_id(&self, id: impl Into<String>) -> Self {
        let id: String = id.into();
        Self { request_id: Some(id.into()), ..self.clone() }
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `POST /v1/jobs`. Resubmitting a known id attaches to the running job
    /// (`JobAccepted::existing`), so a retry after an ambiguous failure is safe.
    #[instrument(level = "debug", skip_all, fields(worker = %self.base, job = %req.id))]
    pub async fn submit(&self, req: &JobRequest) -> Result<JobAccepted, ClientError> {
        let rb = self.request(Method::POST, &["v1", "jobs"]).json(req);
        let resp = self.send(rb, false).await?;
        read_json(resp).await
    }

    /// `GET /v1/jobs/{id}`.
    #[instrument(level = "debug", skip_all, fields(worker = %self.base, job = %id))]
    pub async fn status(&self, id: &str) -> Result<JobStatus, ClientError> {
        let resp = self.send(self.request(Method::GET, &["v1", "jobs", id]), true).await?;
        read_json(resp).await
    }

    /// `DELETE /v1/jobs/{id}`.
    #[instrument(level = "debug", skip_all, fields(worker = %self.base, job = %id))]
    pub async fn cancel(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, &["v1", "jobs", id]), true).await?;
        Ok(())
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<WorkerInfo, ClientError> {
        let resp = self.send(self.request(Method::GET, &["v1", "info"]), false).await?;
        read_json(resp).await
    }

    /// `GET /healthz`: the process is alive.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.send(self.request(Method::GET, &["healthz"]), false).await?;
        Ok(())
    }

    /// `GET /readyz`: `Ok(false)` while the worker answers 503 (models still loading), so a
    /// warming worker is told apart from a dead one.
    pub async fn readyz(&self) -> Result<bool, ClientError> {
        let resp = self.send_raw(self.request(Method::GET, &["readyz"])).await?;
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(false);
        }
        check(resp, false).await?;
        Ok(true)
    }

    /// `GET /v1/jobs/{id}/events`, parsed. The connection is opened on first poll.
    pub fn events(&self, id: &str) -> EventStream {
        let start = EventsState::Start { client: self.clone(), id: id.to_owned() };
        stream::unfold(start, next_event).boxed()
    }

    /// Follows a job to its end: events while the stream lasts, then `status` polling if it
    /// drops. `on_event` sees every event, including progress synthesised from polls and the
    /// terminal one. No overall deadline: wrap in `tokio::time::timeout` for one.
    ///
    /// `Err(NotFound)` means the worker no longer knows the job (it restarted): resubmit.
    #[instrument(level = "debug", skip_all, fields(worker = %self.base, job = %id))]
    pub async fn wait<F>(&self, id: &str, mut on_event: F) -> Result<JobOutcome, ClientError>
    where
        F: FnMut(&JobEvent) + Send,
    {
        let mut events = self.events(id);
        let mut last_progress: Option<(f32, String)> = None;
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    on_event(&event);
                    match event {
                        JobEvent::Progress { progress, stage } => last_progress = Some((progress, stage)),
                        JobEvent::Done { result } => return Ok(JobOutcome::Succeeded(result)),
                        JobEvent::Error { error } => return Ok(outcome_of_error(error)),
                    }
                }
                Err(e) if e.is_worker_failure() => {
                    debug!(error = %e, "event stream lost; polling status");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        drop(events);

        let mut failures = 0;
        loop {
            match self.status(id).await {
                Ok(status) => {
                    failures = 0;
                    if status.state.is_terminal() {
                        let (event, outcome) = terminal_from_status(status)?;
                        on_event(&event);
                        return Ok(outcome);
                    }
                    let stage = status.stage.unwrap_or_else(|| status.state.as_str().to_owned());
                    let current = (status.progress, stage);
                    if last_progress.as_ref() != Some(&current) {
                        on_event(&JobEvent::Progress { progress: current.0, stage: current.1.clone() });
                        last_progress = Some(current);
                    }
                }
                Err(e) if e.is_worker_failure() => {
                    failures += 1;
                    if failures > self.config.max_poll_failures {
                        return Err(e);
                    }
                    debug!(error = %e, failures, "status poll failed");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = (*self.base).clone();
        // parse_endpoint guarantees a base that can carry path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let rb = self.http.request(method, self.url(segments)).timeout(self.config.timeout);
        match &self.request_id {
            Some(id) => rb.header(REQUEST_ID_HEADER, &**id),
            None => rb,
        }
    }

    /// Sends and turns every non-2xx answer into the matching `ClientError`. `job_scoped`
    /// says whether a 404 means "unknown job" or "this is not a worker".
    async fn send(&self, rb: RequestBuilder, job_scoped: bool) -> Result<Response, ClientError> {
        check(self.send_raw(rb).await?, job_scoped).await
    }

    async fn send_raw(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        rb.send().await.map_err(|e| ClientError::from_reqwest(&e))
    }
}

async fn check(resp: Response, job_scoped: bool) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = resp.url().path().to_owned();
    // The body only improves the message; a failure reading it must not hide the status.
    let body = read_limited(resp).await.unwrap_or_default();
    Err(error_for_status(status, retry_after.as_deref(), &body, job_scoped, &path))
}

/// Maps a non-2xx answer to the dispatcher's decision. Pure, for unit tests.
pub(crate) fn error_for_status(status: StatusCode, retry_after: Option<&str>, body: &[u8], job_scoped: bool, path: &str) -> ClientError {
    let message = || match serde_json::from_slice::<WorkerErrorBody>(body) {
        Ok(b) => b.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(256) {
                Some((i, _)) => format!("{}…", &text[..i]),
                None => text.to_owned(),
            }
        }
    };
    match status.as_u16() {
        429 => ClientError::Busy { retry_after: parse_retry_after(retry_after) },
        404 if job_scoped => ClientError::NotFound,
        404 => ClientError::Protocol(format!("{path} not found: is this a purrify worker?")),
        400..=499 => ClientError::Rejected { status: status.as_u16(), message: message() },
        500..=599 => {
            let m = message();
            if m.is_empty() {
                ClientError::Unavailable(format!("HTTP {} from {path}", status.as_u16()))
            } else {
                ClientError::Unavailable(format!("HTTP {} from {path}: {m}", status.as_u16()))
            }
        }
        other => ClientError::Protocol(format!("unexpected HTTP {other} from {path}")),
    }
}

/// `Retry-After` in delta-seconds; the HTTP-date form is not used by workers and falls back
/// to the default rather than trusting a clock comparison across machines.
pub(crate) fn parse_retry_after(value: Option<&str>) -> Duration {
    value.and_then(|v| v.trim().parse::<u64>().ok()).map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER)).unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Endpoint as the fleet keys it: scheme defaulted to http, no trailing slash, no query.
pub(crate) fn parse_endpoint(endpoint: &str) -> Result<Url, ConfigError> {
    let err = |reason: &str| ConfigError::Endpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(err("empty"));
    }
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
    let mut url = Url::parse(&with_scheme).map_err(|e| err(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err("scheme must be http or https"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(err("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("query and fragment are not allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("credentials in the URL are not allowed"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

async fn read_limited(mut resp: Response) -> Result<Vec<u8>, ClientError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ClientError::Protocol(format!("response body over {MAX_BODY_BYTES} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::from_reqwest(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ClientError::Protocol(format!("response body over {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
    let path = resp.url().path().to_owned();
    let body = read_limited(resp).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("bad JSON from {path}: {e}")))
}

fn outcome_of_error(error: JobError) -> JobOutcome {
    if error.reason == ErrorReason::Cancelled { JobOutcome::Cancelled } else { JobOutcome::Failed(error) }
}

/// The event `wait` reports for a job found finished by polling, so `on_event` sees the same
/// terminal event whichever way the end was observed.
fn terminal_from_status(status: JobStatus) -> Result<(JobEvent, JobOutcome), ClientError> {
    match status.state {
        JobState::Succeeded => {
            let result = status.result.ok_or_else(|| ClientError::Protocol(format!("job {} succeeded without a result", status.id)))?;
            Ok((JobEvent::Done { result: result.clone() }, JobOutcome::Succeeded(result)))
        }
        JobState::Cancelled => {
            let error = status.error.unwrap_or_else(|| JobError { reason: ErrorReason::Cancelled, message: "job cancelled".into() });
            Ok((JobEvent::Error { error }, JobOutcome::Cancelled))
        }
        _ => {
            let error =
                status.error.unwrap_or_else(|| JobError { reason: ErrorReason::Internal, message: "job failed without a reason".into() });
            Ok((JobEvent::Error { error: error.clone() }, outcome_of_error(error)))
        }
    }
}

enum EventsState {
    Start { client: WorkerClient, id: String },
    Open { resp: Box<Response>, parser: SseParser, pending: VecDeque<JobEvent>, idle: Duration },
    Done,
}

async fn next_event(mut state: EventsState) -> Option<(Result<JobEvent, ClientError>, EventsState)> {
    loop {
        state = match state {
            EventsState::Done => return None,
            EventsState::Start { client, id } => match open_events(&client, &id).await {
                Ok(resp) => EventsState::Open {
                    resp: Box::new(resp),
                    parser: SseParser::new(),
                    pending: VecDeque::new(),
                    idle: client.config.event_idle_timeout,
                },
                Err(e) => return Some((Err(e), EventsState::Done)),
            },
            EventsState::Open { mut resp, mut parser, mut pending, idle } => {
                if let Some(event) = pending.pop_front() {
                    let terminal = !matches!(event, JobEvent::Progress { .. });
                    let next = if terminal { EventsState::Done } else { EventsState::Open { resp, parser, pending, idle } };
                    return Some((Ok(event), next));
                }
                let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                    Ok(Ok(Some(chunk))) => chunk,
                    Ok(Ok(None)) => {
                        let e = ClientError::Unavailable("event stream ended before the job finished".into());
                        return Some((Err(e), EventsState::Done));
                    }
                    Ok(Err(e)) => {
                        return Some((Err(ClientError::from_reqwest(&e)), EventsState::Done));
                    }
                    Err(_) => {
                        let e = ClientError::Unavailable(format!("event stream idle for {idle:?}"));
                        return Some((Err(e), EventsState::Done));
                    }
                };
                let events = match parser.feed(&chunk) {
                    Ok(events) => events,
                    Err(e) => return Some((Err(e), EventsState::Done)),
                };
                for sse in events {
                    // Unknown event names are skipped so workers can add kinds without breaking us.
                    if !matches!(sse.event.as_str(), "progress" | "done" | "error" | "message") {
                        continue;
                    }
                    match serde_json::from_str::<JobEvent>(&sse.data) {
                        Ok(event) => pending.push_back(event),
                        Err(e) => {
                            let e = ClientError::Protocol(format!("bad {} event: {e}", sse.event));
                            return Some((Err(e), EventsState::Done));
                        }
                    }
                }
                EventsState::Open { resp, parser, pending, idle }
            }
        };
    }
}

async fn open_events(client: &WorkerClient, id: &str) -> Result<Response, ClientError> {
    let mut rb = client.http.get(client.url(&["v1", "jobs", id, "events"])).header(header::ACCEPT, "text/event-stream");
    if let Some(rid) = &client.request_id {
        rb = rb.header(REQUEST_ID_HEADER, &**rid);
    }
    // The total timeout would cut a long job's stream; bound only the wait for the headers.
    let resp = tokio::time::timeout(client.config.timeout, client.send(rb, true))
        .await
        .map_err(|_| ClientError::Unavailable(format!("no answer to the event stream request within {:?}", client.config.timeout)))??;
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("text/event-stream") {
        return Err(ClientError::Protocol(format!("event stream has content type {content_type:?}")));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, retry_after: Option<&str>, body: &str, job_scoped: bool) -> ClientError {
        error_for_status(StatusCode::from_u16(status).unwrap(), retry_after, body.as_bytes(), job_scoped, "/v1/jobs")
    }

    #[test]
    fn statuses_map_to_decisions() {
        assert_eq!(err(429, Some("7"), "", false), ClientError::Busy { retry_after: Duration::from_secs(7) });
        assert_eq!(err(404, None, "", true), ClientError::NotFound);
        assert!(matches!(err(404, None, "", false), ClientError::Protocol(_)));
        assert_eq!(
            err(422, None, r#"{"error":"invalid_params","message":"scale must be 2 or 4"}"#, false),
            ClientError::Rejected { status: 422, message: "scale must be 2 or 4".into() }
        );
        assert_eq!(err(400, None, "  plain text  ", false), ClientError::Rejected { status: 400, message: "plain text".into() });
        assert!(matches!(err(500, None, "", false), ClientError::Unavailable(m) if m == "HTTP 500 from /v1/jobs"));
        assert!(matches!(err(503, None, "warming", false), ClientError::Unavailable(m) if m == "HTTP 503 from /v1/jobs: warming"));
        assert!(matches!(err(302, None, "", false), ClientError::Protocol(_)));
    }

    #[test]
    fn long_plain_bodies_are_truncated_in_messages() {
        let body = "é".repeat(1000);
        let ClientError::Rejected { message, .. } = err(400, None, &body, false) else { panic!() };
        assert_eq!(message.chars().count(), 257);
    }

    #[test]
    fn retry_after_defaults_and_caps() {
        assert_eq!(parse_retry_after(None), Duration::from_secs(1));
        assert_eq!(parse_retry_after(Some(" 3 ")), Duration::from_secs(3));
        assert_eq!(parse_retry_after(Some("0")), Duration::ZERO);
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), Duration::from_secs(1));
        assert_eq!(parse_retry_after(Some("86400")), Duration::from_secs(300));
    }

    #[test]
    fn endpoints_normalise_and_bad_ones_are_refused() {
        let ok = |s: &str| parse_endpoint(s).unwrap().to_string();
        assert_eq!(ok("http://10.0.0.1:8080"), "http://10.0.0.1:8080/");
        assert_eq!(ok("http://10.0.0.1:8080/"), "http://10.0.0.1:8080/");
        assert_eq!(ok("10.0.0.1:8080"), "http://10.0.0.1:8080/");
        assert_eq!(ok("https://gpu.example/worker-1/"), "https://gpu.example/worker-1");
        for bad in ["", "ftp://x", "http://", "http://h/?q=1", "http://u:p@h/", "mailto:x@y"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_escape_ids() {
        let c = WorkerClient::new("http://h:1/prefix/").unwrap();
        assert_eq!(c.url(&["v1", "jobs", "a/b c"]).as_str(), "http://h:1/prefix/v1/jobs/a%2Fb%20c");
        let c = WorkerClient::new("http://h:1").unwrap();
        assert_eq!(c.url(&["readyz"]).as_str(), "http://h:1/readyz");
    }

    #[test]
    fn futures_and_streams_can_move_to_spawned_tasks() {
        fn is_send<T: Send + 'static>(_: &T) {}
        let c = WorkerClient::new("http://h:1").unwrap();
        is_send(&c.events("j"));
        let c2 = c.clone();
        is_send(&async move { c2.wait("j", |_| {}).await });
        is_send(&async move {
            c.submit(&JobRequest { id: "j".into(), input_uri: String::new(), output_uri: String::new(), params: Default::default() }).await
        });
    }

    #[test]
    fn polled_terminal_states_become_terminal_events() {
        let status = |state, result, error| JobStatus { id: "j".into(), state, progress: 1.0, stage: None, result, error };
        assert!(matches!(terminal_from_status(status(JobState::Succeeded, None, None)), Err(ClientError::Protocol(_))));
        let (event, outcome) = terminal_from_status(status(JobState::Cancelled, None, None)).unwrap();
        assert_eq!(outcome, JobOutcome::Cancelled);
        assert!(matches!(event, JobEvent::Error { error } if error.reason == ErrorReason::Cancelled));
        let (_, outcome) = terminal_from_status(status(JobState::Failed, None, None)).unwrap();
        assert!(matches!(outcome, JobOutcome::Failed(e) if e.reason == ErrorReason::Internal));
    }
}
