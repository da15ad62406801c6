//! Stability AI's REST API v2beta, as its API reference describes it:
//!
//! - text-to-image: `POST {base}/v2beta/stable-image/generate/core`, multipart: `prompt`,
//!   `negative_prompt`, `aspect_ratio` (one of 16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21, the
//!   nearest to the asked width/height), `seed`, `style_preset`, `output_format=png`;
//! - image-to-image: `POST {base}/v2beta/stable-image/generate/sd3`, multipart with
//!   `mode=image-to-image`, the source picture as `image`, `strength` (0-1), and `model` when
//!   the endpoint's model is an SD3 one (`sd3.5-large`, ...).
//!
//! Both send `authorization: Bearer <key>` and `accept: image/*`, and the answer is the image
//! itself (its type in `content-type`, the outcome in the `finish-reason` header:
//! `CONTENT_FILTERED` means the output was refused). One image per call: a job asking for
//! several makes that many calls (seeds counted up from the asked one, so they differ).
//! Errors are `{"id", "name", "errors": [..]}`; a 403 named `content_moderation` refuses the
//! prompt or picture (not the key). Video and workflows are not Stability's.

use serde_json::Value;

use super::super::adapter::{Adapter, BoxFut, Endpoint, ImageJob, Job, Output, Protocol, ProviderError, Submitted};
use super::http::{self, Failure};

/// Stability's aspect ratios, as (name, width/height).
const RATIOS: [(&str, f64); 9] = [
    ("21:9", 21.0 / 9.0),
    ("16:9", 16.0 / 9.0),
    ("3:2", 1.5),
    ("5:4", 1.25),
    ("1:1", 1.0),
    ("4:5", 0.8),
    ("2:3", 2.0 / 3.0),
    ("9:16", 9.0 / 16.0),
    ("9:21", 9.0 / 21.0),
];

/// Style presets Stability knows; another style is not sent (it would refuse the call).
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

/// Largest seed Stability takes.
const MAX_SEED: u64 = 4_294_967_294;

pub struct Stability {
    http: reqwest::Client,
}

impl Stability {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    async fn one(&self, ep: &Endpoint, job: &ImageJob, seed: Option<u64>) -> Result<Output, ProviderError> {
        use reqwest::multipart::{Form, Part};
        let key = http::require_key(ep)?;
        let mut form = Form::new().text("prompt", job.prompt.clone()).text("output_format", "png");
        if let Some(n) = job.negative_prompt.as_deref().filter(|n| !n.trim().is_empty()) {
            form = form.text("negative_prompt", n.to_owned());
        }
        if let Some(s) = seed {
            form = form.text("seed", s.to_string());
        }
        let path = match &job.init {
            None => {
                form = form.text("aspect_ratio", aspect_ratio(job.width, job.height));
                if let Some(style) = job.style.as_deref().filter(|s| STYLES.contains(s)) {
                    form = form.text("style_preset", style.to_owned());
                }
                "core"
            }
            Some(init) => {
                let image =
                    Part::bytes(init.bytes.to_vec()).file_name(http::file_name(&init.content_type)).mime_str(&init.content_type).map_err(
                        |_| ProviderError::Rejected { status: 400, message: "the source picture has an invalid content type".into() },
                    )?;
                form = form
                    .text("mode", "image-to-image")
                    .part("image", image)
                    .text("strength", format!("{:.2}", job.strength.clamp(0.0, 1.0)));
                if ep.model.starts_with("sd3") {
                    form = form.text("model", ep.model.clone());
                }
                "sd3"
            }
        };
        let req = self
            .http
            .post(http::url(ep, &["v2beta", "stable-image", "generate", path])?)
            .bearer_auth(key)
            .header(reqwest::header::ACCEPT, "image/*")
            .multipart(form);
        let resp = req.timeout(ep.timeout).send().await.map_err(|e| http::transport(ep, &e))?;
        if !resp.status().is_success() {
            return Err(classify(ep, &http::read_failure(resp).await));
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if header("finish-reason").as_deref() == Some("CONTENT_FILTERED") {
            return Err(ProviderError::Rejected {
                status: 200,
                message: format!("{} filtered the image (content moderation)", ep.provider),
            });
        }
        let content_type = header("content-type").unwrap_or_default();
        if !content_type.starts_with("image/") {
            return Err(ProviderError::Protocol(format!("{} answered without an image", ep.provider)));
        }
        let bytes = resp.bytes().await.map_err(|e| http::transport(ep, &e))?;
        if bytes.is_empty() {
            return Err(ProviderError::Protocol(format!("{} answered with an empty image", ep.provider)));
        }
        let content_type = content_type.split(';').next().unwrap_or("image/png").trim().to_owned();
        Ok(Output::Bytes { bytes, content_type })
    }
}

/// The shared classification, except that a 403 named `content_moderation` refuses this
/// prompt or picture rather than the key.
fn classify(ep: &Endpoint, failure: &Failure) -> ProviderError {
    let message = error_message(failure);
    let moderated = failure.json.as_ref().and_then(|j| j.get("name")).and_then(Value::as_str) == Some("content_moderation");
    if failure.status == 403 && moderated {
        let said = message.map(|m| http::safe_message(&m, ep.api_key.as_ref())).unwrap_or_default();
        return ProviderError::Rejected {
            status: 403,
            message: if said.is_empty() {
                format!("{} refused the prompt or picture (content moderation)", ep.provider)
            } else {
                format!("{} refused the prompt or picture (content moderation): {said}", ep.provider)
            },
        };
    }
    http::classify(ep, failure, message.as_deref())
}

/// Stability's error message: its `errors` list joined, else its `name`.
fn error_message(f: &Failure) -> Option<String> {
    let j = f.json.as_ref()?;
    if let Some(errs) = j.get("errors").and_then(Value::as_array) {
        let joined = errs.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ");
        if !joined.is_empty() {
            return Some(joined);
        }
    }
    j.get("message").or_else(|| j.get("name")).and_then(Value::as_str).map(str::to_owned)
}

/// The supported aspect ratio nearest to `width`x`height` (compared on a log scale, so 2:1
/// and 1:2 are equally far from 1:1).
pub fn aspect_ratio(width: u32, height: u32) -> String {
    let want = (width.max(1) as f64 / height.max(1) as f64).ln();
    RATIOS
        .iter()
        .min_by(|a, b| (a.1.ln() - want).abs().total_cmp(&(b.1.ln() - want).abs()))
        .map(|r| r.0.to_owned())
        .unwrap_or_else(|| "1:1".into())
}

impl Adapter for Stability {
    fn protocol(&self) -> Protocol {
        Protocol::Stability
    }

    fn submit<'a>(&'a self, ep: &'a Endpoint, job: &'a Job) -> BoxFut<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            let Job::Image(job) = job else {
                return Err(ProviderError::Unsupported(format!("Stability makes images, not {}s", job.name())));
            };
            let mut outputs = Vec::with_capacity(job.count.max(1) as usize);
            for i in 0..job.count.max(1) {
                let seed = job.seed.map(|s| (s % (MAX_SEED + 1) + u64::from(i)) % (MAX_SEED + 1));
                outputs.push(self.one(ep, job, seed).await?);
            }
            Ok(Submitted::Finished(outputs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_the_nearest_ratio() {
        assert_eq!(aspect_ratio(1024, 1024), "1:1");
        assert_eq!(aspect_ratio(1920, 1080), "16:9");
        assert_eq!(aspect_ratio(1080, 1920), "9:16");
        assert_eq!(aspect_ratio(1536, 1024), "3:2");
        assert_eq!(aspect_ratio(1200, 1000), "5:4");
        assert_eq!(aspect_ratio(3000, 1000), "21:9");
        assert_eq!(aspect_ratio(0, 0), "1:1");
    }
}
