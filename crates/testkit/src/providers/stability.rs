//! A local Stability AI REST API v2beta as its API reference describes it:
//!
//! - `POST /v2beta/stable-image/generate/core`, multipart: `prompt` required (1-10000
//!   characters), `aspect_ratio` (16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21, default 1:1),
//!   `negative_prompt`, `seed` (0-4294967294), `style_preset` (Stability's list),
//!   `output_format` (png, jpeg, webp; default png);
//! - `POST /v2beta/stable-image/generate/sd3`: the same, plus `mode` (`text-to-image` or
//!   `image-to-image`, which needs an `image` file and a `strength` in 0-1) and `model`.
//!
//! `authorization: Bearer <key>` is required (401 otherwise). `accept: image/*` answers the
//! image bytes with `content-type`, `finish-reason: SUCCESS` and `seed` headers;
//! `accept: application/json` answers `{image: base64, finish_reason, seed}`. Errors are
//! `{"id", "name", "errors": [...]}`: 400 `bad_request`, 401 `unauthorized`, 403
//! `content_moderation`, 413 `payload_too_large` (bodies over 10 MiB), 422
//! `invalid_language`, 429 `rate_limit_exceeded`, 500 `internal_error`. One image per call.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;

use super::{Core, Dialect, FakeServer, Form};

const RATIOS: [(&str, u32, u32); 9] = [
    ("16:9", 16, 9),
    ("1:1", 8, 8),
    ("21:9", 21, 9),
    ("2:3", 8, 12),
    ("3:2", 12, 8),
    ("4:5", 8, 10),
    ("5:4", 10, 8),
    ("9:16", 9, 16),
    ("9:21", 9, 21),
];
const STYLES: [&str; 17] = [
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
];
const SD3_MODELS: [&str; 7] =
    ["sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large", "sd3-large-turbo", "sd3-medium"];

struct St {
    next: AtomicU64,
}

/// The fake; stopped when dropped. Derefs to [`FakeServer`] for the script and the log.
pub struct FakeStability {
    server: FakeServer,
}

impl Deref for FakeStability {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeStability {
    /// Serves on 127.0.0.1, accepting `key`.
    pub async fn start(key: &str) -> Self {
        let core = Core::new(key, Dialect { error, authorize, body_limit: 10 << 20 });
        let st = Arc::new(St { next: AtomicU64::new(0) });
        let routes = axum::Router::new()
            .route("/v2beta/stable-image/generate/{model}", post(generate))
            .route("/media/{name}", get(super::media))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "The requested resource was not found.") })
            .with_state(st);
        Self { server: FakeServer::start(core, routes).await }
    }

    /// What the adapter's base URL should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "content_moderation",
        404 => "not_found",
        413 => "payload_too_large",
        422 => "invalid_language",
        429 => "rate_limit_exceeded",
        503 => "service_unavailable",
        _ => "internal_error",
    };
    let message = match status.as_u16() {
        403 => "Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.",
        413 => "body: payloads cannot be larger than 10MiB in size",
        429 => "You have exceeded the rate limit of 150 requests within a 10 second period, and have been timed out for 60 seconds.",
        _ => message,
    };
    let id = format!("{:032x}", (crate::providers::unix_now() as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (status, Json(json!({ "id": id, "name": name, "errors": [message] }))).into_response()
}

fn bad(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn authorize(core: &Core, parts: &axum::http::request::Parts, _: &[u8]) -> Result<(), Response> {
    if core.bearer_ok(&parts.headers) {
        return Ok(());
    }
    let why = if parts.headers.contains_key(header::AUTHORIZATION) { "authorization: invalid API key" } else { "authorization: missing" };
    Err(error(StatusCode::UNAUTHORIZED, why))
}

async fn generate(State(st): State<Arc<St>>, Path(model): Path<String>, req: Request) -> Response {
    if !["core", "sd3"].contains(&model.as_str()) {
        return error(StatusCode::NOT_FOUND, "The requested resource was not found.");
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("image/*").to_owned();
    let json_answer = match accept.as_str() {
        "image/*" => false,
        "application/json" => true,
        _ => return bad("accept: must be image/* or application/json"),
    };
    let form = match Form::read(req).await {
        Ok(f) => f,
        Err(_) => return bad("content-type: must be multipart/form-data"),
    };
    let prompt = form.text("prompt").unwrap_or_default();
    if prompt.trim().is_empty() {
        return bad("prompt: is required");
    }
    if prompt.chars().count() > 10_000 {
        return bad("prompt: must be at most 10000 characters");
    }
    let ratio = form.text("aspect_ratio").unwrap_or("1:1");
    let Some(&(_, mut w, mut h)) = RATIOS.iter().find(|r| r.0 == ratio) else {
        return bad("aspect_ratio: must be one of 16:9, 1:1, 21:9, 2:3, 3:2, 4:5, 5:4, 9:16, 9:21");
    };
    let seed = match form.text("seed").map(str::parse::<u64>) {
        None => st.next.fetch_add(1, Ordering::SeqCst) + 1,
        Some(Ok(s)) if s <= 4_294_967_294 => s,
        Some(_) => return bad("seed: must be an integer between 0 and 4294967294"),
    };
    if let Some(s) = form.text("style_preset")
        && !STYLES.contains(&s)
    {
        return bad("style_preset: must be one of Stability's style presets");
    }
    let (format, content_type) = match form.text("output_format").unwrap_or("png") {
        "png" => (image::ImageFormat::Png, "image/png"),
        "jpeg" => (image::ImageFormat::Jpeg, "image/jpeg"),
        "webp" => (image::ImageFormat::WebP, "image/webp"),
        _ => return bad("output_format: must be one of png, jpeg, webp"),
    };
    if model == "sd3" {
        if let Some(m) = form.text("model")
            && !SD3_MODELS.contains(&m)
        {
            return bad(&format!("model: must be one of {}", SD3_MODELS.join(", ")));
        }
        match form.text("mode").unwrap_or("text-to-image") {
            "text-to-image" => {}
            "image-to-image" => {
                let Some((ct, bytes)) = form.files.get("image") else { return bad("image: is required when mode is image-to-image") };
                let Ok(init) = image::load_from_memory(bytes) else {
                    return bad(&format!("image: could not be decoded ({ct})"));
                };
                match form.text("strength").map(str::parse::<f64>) {
                    Some(Ok(s)) if (0.0..=1.0).contains(&s) => {}
                    Some(_) => return bad("strength: must be a number between 0 and 1"),
                    None => return bad("strength: is required when mode is image-to-image"),
                }
                (w, h) = (init.width().clamp(1, 64), init.height().clamp(1, 64));
            }
            _ => return bad("mode: must be text-to-image or image-to-image"),
        }
    } else if form.files.contains_key("image") || form.texts.contains_key("mode") {
        return bad("image: Stable Image Core is text-to-image only");
    }
    let bytes = super::picture(w, h, seed as u8, format);
    if json_answer {
        return Json(json!({
            "image": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "finish_reason": "SUCCESS",
            "seed": seed,
        }))
        .into_response();
    }
    let mut resp = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    resp.headers_mut().insert("finish-reason", HeaderValue::from_static("SUCCESS"));
    resp.headers_mut().insert("seed", HeaderValue::from(seed));
    resp
}
