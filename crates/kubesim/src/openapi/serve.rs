//! The HTTP side of `/openapi/*`: content negotiation, `?hash=` redirects and caching.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;
use crate::resource::Registry;

const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const V3_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf";

fn is_json(media: &str) -> bool {
    matches!(media.split(';').next().unwrap_or_default().trim(), "*/*" | "application/*" | "application/json")
}

/// Whether an `Accept` header allows JSON: absent, `*/*`, `application/*` or JSON itself.
pub fn accepts_json(accept: &str) -> bool {
    accept.trim().is_empty() || accept.split(',').any(is_json)
}

/// Whether the first acceptable form in `Accept` is the v2 protobuf.
fn prefers_v2_protobuf(accept: &str) -> bool {
    accept
        .split(',')
        .map(|m| m.split(';').next().unwrap_or_default().trim())
        .find(|m| is_json(m) || m.starts_with("application/com.github.proto-openapi.spec.v2"))
        .is_some_and(|m| !is_json(m))
}

fn json(code: StatusCode, v: &Value, cache: &'static str) -> Response {
    let mut r = (code, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn error(e: &ApiError) -> Response {
    let mut r = json(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status(), "no-cache, private");
    r.headers_mut().remove(header::CACHE_CONTROL);
    r
}

/// Answers `GET /openapi/{rest}` (`rest` without the leading `openapi`), or None for a
/// path that is not an OpenAPI document.
pub fn respond(reg: &Registry, rest: &[&str], hash: Option<&str>, accept: &str) -> Option<Response> {
    // v2 comes in JSON or protobuf, v3 in JSON only: a client that accepts only the v3
    // protobuf gets 406, as from a server that cannot produce what was asked.
    let refuse = |pb: &str| error(&ApiError::not_acceptable(accept, &["application/json", pb]));
    Some(match rest {
        ["v2"] if prefers_v2_protobuf(accept) => {
            let mut r = (StatusCode::OK, super::v2proto::encode(&super::v2_document(reg))).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
            r
        }
        ["v2"] if !accepts_json(accept) => refuse(V2_PROTOBUF),
        ["v2"] => json(StatusCode::OK, &super::v2_document(reg), "no-cache, private"),
        ["v3"] => json(StatusCode::OK, &super::v3_index(reg), "no-cache, private"),
        ["v3", gv @ ..] => {
            let (group, version) = match gv {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => return Some(error(&ApiError::no_route())),
            };
            let Some(doc) = super::v3_document(reg, group, version) else {
                return Some(error(&ApiError::no_route()));
            };
            if !accepts_json(accept) {
                return Some(refuse(V3_PROTOBUF));
            }
            let current = super::hash(&doc);
            match hash {
                // An old link: send the client to the current document, as the real server does.
                Some(h) if h != current => {
                    let location = format!("/openapi/v3/{}?hash={current}", super::gv_path(group, version));
                    let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
                    if let Ok(l) = HeaderValue::from_str(&location) {
                        r.headers_mut().insert(header::LOCATION, l);
                    }
                    r
                }
                Some(_) => json(StatusCode::OK, &doc, "public, immutable"),
                None => json(StatusCode::OK, &doc, "no-cache, private"),
            }
        }
        _ => return None,
    })
}
