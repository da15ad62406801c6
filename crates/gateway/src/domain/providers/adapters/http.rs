//! What every adapter does the same way around one HTTP exchange: the per-request timeout,
//! turning reqwest's failures and the provider's error answers into [`ProviderError`]s the
//! call policy can act on, `Retry-After`, and keeping messages safe to show a client.
//!
//! Classification (DESIGN section 13): 429 and 5xx are worth another try and carry the
//! provider's `Retry-After`; 401/403 mean the key (a configuration problem); any other 4xx
//! means this request is refused and would be refused again; a timeout or a connection that
//! could not be made or broke is worth another try. Stability's 403 content refusal is the one
//! protocol-specific exception and is handled in its adapter.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::super::adapter::{ApiKey, Endpoint, ProviderError};

/// Longest provider message quoted in an error.
const MAX_MESSAGE: usize = 200;
/// Most of an error body read: error bodies are small, and a provider that answers a
/// failure with megabytes is not read to the end.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A failed answer, read: its status, `Retry-After`, and body (JSON when it parsed).
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub json: Option<serde_json::Value>,
    /// The body as text, when it was not JSON (a proxy's HTML page, plain text).
    pub text: String,
}

/// Reads a non-2xx answer's status, `Retry-After` and (the start of) its body.
pub(crate) async fn read_failure(mut resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let json = serde_json::from_slice(&body).ok();
    let text = if json.is_some() { String::new() } else { String::from_utf8_lossy(&body).into_owned() };
    Failure { status, retry_after, json, text }
}

/// The error a failed answer means. `message` is what the provider said (already extracted
/// from its error body by the adapter); it is quoted cut short and without URLs or the key.
/// For 401/403 the provider's words are left out: they often echo part of the key.
pub(crate) fn classify(ep: &Endpoint, failure: &Failure, message: Option<&str>) -> ProviderError {
    let status = failure.status;
    let said = message.map(|m| safe_message(m, ep.api_key.as_ref())).filter(|m| !m.is_empty());
    let with = |what: &str| match &said {
        Some(m) => format!("{} {what} ({status}): {m}", ep.provider),
        None => format!("{} {what} ({status})", ep.provider),
    };
    match status {
        429 => ProviderError::Transient { status: Some(status), retry_after: failure.retry_after, message: with("is rate limiting") },
        500..=599 => ProviderError::Transient { status: Some(status), retry_after: failure.retry_after, message: with("failed") },
        401 | 403 => ProviderError::Auth { status, message: format!("{} refused the API key ({status})", ep.provider) },
        400..=499 => ProviderError::Rejected { status, message: with("refused the request") },
        _ => ProviderError::Protocol(format!("{} answered with status {status}", ep.provider)),
    }
}

/// A request that did not get an answer: worth another try, except a request that could not
/// even be built (a bad base URL: configuration).
pub(crate) fn transport(ep: &Endpoint, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "could not be reached"
    } else if e.is_builder() {
        return ProviderError::Protocol(format!("{}: the request could not be built (check the base URL)", ep.provider));
    } else if e.is_body() || e.is_decode() {
        "broke off its answer"
    } else {
        "could not be reached"
    };
    ProviderError::Transient { status: None, retry_after: None, message: format!("{} {what}", ep.provider) }
}

/// The provider's `Retry-After`: delay seconds or an HTTP date (RFC 9110), or the
/// millisecond variant some OpenAI-compatible services send. A date in the past is zero.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// A provider's message made fit for a client: one line, URLs and the key replaced, cut
/// at a character boundary.
pub(crate) fn safe_message(message: &str, key: Option<&ApiKey>) -> String {
    let mut out = message.split_whitespace().map(|w| if w.contains("://") { "<url>" } else { w }).collect::<Vec<_>>().join(" ");
    if let Some(k) = key.map(ApiKey::expose).filter(|k| k.len() >= 4) {
        out = out.replace(k, "<key>");
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    out
}

/// Sends `req` with the endpoint's per-request timeout (covering the whole exchange,
/// body included) and returns a 2xx answer; anything else is classified with the message
/// `extract` finds in the error body.
pub(crate) async fn send(
    ep: &Endpoint,
    req: reqwest::RequestBuilder,
    extract: fn(&Failure) -> Option<String>,
) -> Result<reqwest::Response, ProviderError> {
    let resp = req.timeout(ep.timeout).send().await.map_err(|e| transport(ep, &e))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let failure = read_failure(resp).await;
    Err(classify(ep, &failure, extract(&failure).as_deref()))
}

/// Like [`send`] for answers read as a stream (chat): the timeout bounds only the wait for
/// the answer's head (and a failure's body), not the stream that follows.
pub(crate) async fn send_streaming(
    ep: &Endpoint,
    req: reqwest::RequestBuilder,
    extract: fn(&Failure) -> Option<String>,
) -> Result<reqwest::Response, ProviderError> {
    let timed_out =
        || ProviderError::Transient { status: None, retry_after: None, message: format!("{} did not answer in time", ep.provider) };
    let resp = tokio::time::timeout(ep.timeout, req.send()).await.map_err(|_| timed_out())?.map_err(|e| transport(ep, &e))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let failure = tokio::time::timeout(ep.timeout, read_failure(resp)).await.map_err(|_| timed_out())?;
    Err(classify(ep, &failure, extract(&failure).as_deref()))
}

/// `{base}/seg/seg…`, each segment percent-encoded (remote ids come from the provider).
pub(crate) fn url(ep: &Endpoint, segments: &[&str]) -> Result<url::Url, ProviderError> {
    let bad = || ProviderError::Protocol(format!("{}: the base URL is not a valid http(s) URL", ep.provider));
    let mut u = url::Url::parse(ep.base_url.trim_end_matches('/')).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad());
    }
    {
        let mut path = u.path_segments_mut().map_err(|_| bad())?;
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    Ok(u)
}

/// The body of a 2xx answer as JSON; anything else is a protocol error.
pub(crate) async fn json_body(ep: &Endpoint, resp: reqwest::Response) -> Result<serde_json::Value, ProviderError> {
    let bytes = resp.bytes().await.map_err(|e| transport(ep, &e))?;
    serde_json::from_slice(&bytes).map_err(|_| ProviderError::Protocol(format!("{} answered with a body that is not JSON", ep.provider)))
}

/// The key the endpoint must have for protocols that authenticate with one.
pub(crate) fn require_key(ep: &Endpoint) -> Result<&str, ProviderError> {
    match &ep.api_key {
        Some(k) if !k.expose().is_empty() => Ok(k.expose()),
        _ => Err(ProviderError::Auth { status: 401, message: format!("{} has no API key configured", ep.provider) }),
    }
}

/// The file name a multipart part of this content type gets.
pub(crate) fn file_name(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "image.png",
        "image/webp" => "image.webp",
        "image/gif" => "image.gif",
        _ => "image.jpg",
    }
}

/// The content type of image bytes from their signature (providers that answer base64 do
/// not say); PNG when unknown, the format asked for.
pub(crate) fn sniff_image(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "image/png"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_fractions_dates_and_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past waits nothing");
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn messages_lose_urls_and_the_key_and_are_cut() {
        let key = ApiKey::new("sk-secret-123");
        let m = safe_message("Incorrect key sk-secret-123, see https://example.com/keys\nfor help", Some(&key));
        assert_eq!(m, "Incorrect key <key>, see <url> for help");
        let long = "é".repeat(500);
        let cut = safe_message(&long, None);
        assert_eq!(cut.chars().count(), MAX_MESSAGE + 1);
    }
}
