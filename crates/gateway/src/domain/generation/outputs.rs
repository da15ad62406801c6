//! Copying what a provider made into our storage: provider URLs never reach clients, and a
//! result outlives the provider's retention. A file is accepted only when its bytes are an
//! image we decode the header of or a video container we recognise, and within the size
//! limit; downloads stream with that limit and a timeout.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use purrify_api::{FaceRestoration, JobResult};
use purrify_inference::storage::Storage;
use serde::{Deserialize, Serialize};

use crate::domain::providers::adapter::Output;
use crate::domain::uploads::video;

/// One stored file of a task, as kept in `tasks.outputs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub uri: String,
    pub content_type: String,
    /// 0 when unknown (WebM).
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// The task result of a generation: its first file (all of them are in `tasks.outputs`).
pub fn job_result(first: &StoredFile, model: String, elapsed_ms: u64) -> JobResult {
    JobResult {
        output_uri: first.uri.clone(),
        content_type: first.content_type.clone(),
        width: first.width,
        height: first.height,
        bytes: first.bytes,
        faces: 0,
        face_restoration: FaceRestoration::Disabled,
        model,
        elapsed_ms,
    }
}

/// Why outputs could not be stored. The message is client-safe.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The provider's file is unusable (not an image or video, too large, unreachable URL).
    #[error("{0}")]
    Bad(String),
    /// Our storage failed; worth another try later.
    #[error("storage: {0}")]
    Storage(String),
}

/// What a file's bytes are.
fn describe(bytes: &[u8], limits: &purrify_imaging::Limits) -> Result<(String, &'static str, u32, u32), OutputError> {
    if let Some(v) = video::sniff(bytes) {
        let (w, h) = video::probe(bytes).and_then(|i| i.size).unwrap_or((0, 0));
        return Ok((v.mime_type().to_string(), v.extension(), w, h));
    }
    match purrify_imaging::read_header(bytes, limits) {
        Ok(h) => {
            let ext = match h.format {
                purrify_imaging::Format::Png => "png",
                purrify_imaging::Format::Webp => "webp",
                purrify_imaging::Format::Avif => "avif",
                _ => "jpg",
            };
            Ok((h.format.mime_type().to_string(), ext, h.width, h.height))
        }
        Err(e) => Err(OutputError::Bad(format!("the provider returned a file that is neither an image nor a video we read: {e}"))),
    }
}

/// Fetches `url` with at most `max_bytes`.
async fn download(http: &reqwest::Client, url: &str, max_bytes: u64, timeout: Duration, allow_private: bool) -> Result<Bytes, OutputError> {
    let parsed = crate::domain::outbound::check_url(url, "outputUrl", allow_private, "result downloads")
        .map_err(|e| OutputError::Bad(format!("the provider's result URL is refused: {e}")))?;
    let fetch = async {
        let resp = http
            .get(parsed)
            .send()
            .await
            .map_err(|e| OutputError::Bad(format!("cannot download the provider's result: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(OutputError::Bad(format!("downloading the provider's result answered {}", resp.status().as_u16())));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(OutputError::Bad(format!("the provider's result is larger than {max_bytes} bytes")));
        }
        let mut body = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| OutputError::Bad(format!("the provider's result download broke: {}", e.without_url())))?;
            if body.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(OutputError::Bad(format!("the provider's result is larger than {max_bytes} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, fetch).await.map_err(|_| OutputError::Bad("downloading the provider's result timed out".into()))?
}

/// Where the task's files go: the first at its `output_uri`, the others next to it.
fn uri_for(storage: &Storage, task_id: &str, output_uri: &str, index: usize, ext: &str) -> String {
    if index == 0 { output_uri.to_string() } else { storage.uri_for(&format!("results/{task_id}-{}.{ext}", index + 1)) }
}

/// The settings of one copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyRules {
    pub max_bytes: u64,
    pub timeout: Duration,
    pub allow_private: bool,
    pub limits: purrify_imaging::Limits,
}

/// Stores every output of a task; on failure nothing stays stored.
pub async fn store(
    storage: &Storage,
    http: &reqwest::Client,
    task_id: &str,
    output_uri: &str,
    outputs: Vec<Output>,
    rules: CopyRules,
) -> Result<Vec<StoredFile>, OutputError> {
    if outputs.is_empty() {
        return Err(OutputError::Bad("the provider finished without a result".into()));
    }
    let mut stored: Vec<StoredFile> = Vec::new();
    let outcome = async {
        for (i, out) in outputs.into_iter().enumerate() {
            let bytes = match out {
                Output::Bytes { bytes, .. } => bytes,
                Output::Url(url) => download(http, &url, rules.max_bytes, rules.timeout, rules.allow_private).await?,
            };
            if bytes.len() as u64 > rules.max_bytes {
                return Err(OutputError::Bad(format!("the provider's result is larger than {} bytes", rules.max_bytes)));
            }
            let (content_type, ext, width, height) = describe(&bytes, &rules.limits)?;
            let uri = uri_for(storage, task_id, output_uri, i, ext);
            let len = bytes.len() as u64;
            storage.put(&uri, bytes).await.map_err(|e| OutputError::Storage(e.to_string()))?;
            stored.push(StoredFile { uri, content_type, width, height, bytes: len });
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        for f in &stored {
            let _ = storage.delete(&f.uri).await;
        }
        return Err(e);
    }
    Ok(stored)
}
