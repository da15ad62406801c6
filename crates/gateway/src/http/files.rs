//! The one streamed-file response: every route that serves a stored object (works' media and
//! downloads, uploads' capability URLs, seed 000's task download) answers through
//! [`stream_file`], so they share their headers: the content type, the exact length, a
//! `Content-Disposition` whose file name cannot break out of the header, `nosniff`, and cache
//! rules fit for URLs that are capabilities. The body is streamed from storage, never
//! buffered whole.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStream;

/// Shown in the browser, or saved as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Inline,
    Attachment,
}

/// Who may keep the response and for how long. Never `public`: these URLs are capabilities
/// (or answer for one user), so shared caches must not keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// The user's own cache may keep it `max_age` seconds; `immutable`: the bytes under this
    /// URL never change.
    Private { max_age: u32, immutable: bool },
    /// The user's own cache must ask again each time (the bytes under the URL may change).
    Revalidate,
}

/// What is said about a streamed file.
#[derive(Debug, Clone, Copy)]
pub struct FileHead<'a> {
    pub content_type: &'a str,
    pub size: u64,
    /// Suggested file name; anything unsafe in a header is replaced.
    pub file_name: &'a str,
    pub disposition: Disposition,
    pub caching: Caching,
}

/// A response streaming `body` (exactly `head.size` bytes) with `head`'s headers.
pub fn stream_file<S>(head: FileHead<'_>, body: S) -> Response
where
    S: TryStream + Send + 'static,
    S::Ok: Into<Bytes>,
    S::Error: Into<axum::BoxError>,
{
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    let content_type = HeaderValue::from_str(head.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(head.size));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, cache_control(head.caching));
    h.insert(header::CONTENT_DISPOSITION, content_disposition(head.disposition, head.file_name));
    resp
}

fn cache_control(caching: Caching) -> HeaderValue {
    let v = match caching {
        Caching::Private { max_age, immutable: true } => format!("private, max-age={max_age}, immutable"),
        Caching::Private { max_age, immutable: false } => format!("private, max-age={max_age}"),
        Caching::Revalidate => "private, no-cache".to_owned(),
    };
    HeaderValue::from_str(&v).expect("a cache directive is visible ASCII")
}

/// `inline` / `attachment` with the name as a quoted ASCII `filename` (quotes, backslashes,
/// path separators, controls and non-ASCII replaced by `_`) and, when the name is not plain
/// ASCII, the exact name as RFC 6266's percent-encoded UTF-8 `filename*`.
fn content_disposition(disposition: Disposition, name: &str) -> HeaderValue {
    let kind = match disposition {
        Disposition::Inline => "inline",
        Disposition::Attachment => "attachment",
    };
    let ascii: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '/' | ';' | '%') { c } else { '_' })
        .collect();
    let mut v = format!("{kind}; filename=\"{ascii}\"");
    if ascii != name {
        v.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                v.push(char::from(b));
            } else {
                v.push_str(&format!("%{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&v).expect("the disposition is visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_break_the_header() {
        let d = |n: &str| content_disposition(Disposition::Attachment, n).to_str().unwrap().to_owned();
        assert_eq!(d("purrify-1.jpg"), "attachment; filename=\"purrify-1.jpg\"");
        assert_eq!(d("a\"b\r\n; x=1.jpg"), "attachment; filename=\"a_b___ x=1.jpg\"; filename*=UTF-8''a%22b%0D%0A%3B%20x%3D1.jpg");
        assert_eq!(d("../猫.png"), "attachment; filename=\"..__.png\"; filename*=UTF-8''..%2F%E7%8C%AB.png");
        assert_eq!(content_disposition(Disposition::Inline, "x.png"), "inline; filename=\"x.png\"");
    }

    #[test]
    fn caches_stay_private() {
        assert_eq!(cache_control(Caching::Private { max_age: 60, immutable: true }), "private, max-age=60, immutable");
        assert_eq!(cache_control(Caching::Private { max_age: 60, immutable: false }), "private, max-age=60");
        assert_eq!(cache_control(Caching::Revalidate), "private, no-cache");
    }
}
