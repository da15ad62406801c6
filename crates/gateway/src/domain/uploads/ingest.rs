//! Streaming a received file into storage with every upload rule applied on the way: the
//! byte limit counted exactly, the type decided by magic bytes, the image header checked
//! against the pixel limit, and the container checked for completeness (a file cut short is
//! refused here, not later as a failed task). Used by `/api/v1/enhance` and by every upload
//! route; the HTTP side only supplies the chunks and maps [`IngestError`] onto its envelope.
//!
//! Any refusal deletes what was written: callers never see a half-stored object.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use purrify_imaging::{Completeness, Container, Format, ImageError, Limits};
use purrify_inference::storage::Storage;

use super::video::{self, VideoFormat};

/// Bytes of the file kept in memory for the header check; the rest only streams through.
pub const HEADER_PREFIX: usize = 1 << 20;

/// What a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// JPEG, PNG, WebP or AVIF.
    Images,
    /// MP4, MOV or WebM.
    Videos,
}

/// What the bytes turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Image(Format),
    Video(VideoFormat),
}

impl Media {
    pub fn mime_type(self) -> &'static str {
        match self {
            Media::Image(f) => f.mime_type(),
            Media::Video(v) => v.mime_type(),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Media::Image(Format::Jpeg) => "jpg",
            Media::Image(Format::Png) => "png",
            Media::Image(Format::Webp) => "webp",
            Media::Image(Format::Avif) => "avif",
            Media::Image(_) => "bin",
            Media::Video(v) => v.extension(),
        }
    }
}

/// The rules of one ingestion.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub accept: Accept,
    pub max_bytes: u64,
    pub limits: Limits,
}

/// A stored, checked file.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub uri: String,
    pub bytes: u64,
    pub media: Media,
    /// Displayed size, when it could be read (images: from the header; MP4/MOV: the first
    /// video track's `tkhd`; WebM: not read).
    pub size: Option<(u32, u32)>,
    /// Video duration in milliseconds, when the container says it (MP4/MOV `mvhd`).
    pub duration_ms: Option<u64>,
}

/// Why a file was refused. `E` is the error of the caller's chunk stream (a cut or malformed
/// request body), passed back as it was.
#[derive(Debug)]
pub enum IngestError<E> {
    /// The client's stream failed.
    Client(E),
    Empty,
    TooLarge {
        limit: u64,
    },
    /// Not an accepted type; for images, what the magic bytes say when they say anything.
    Unsupported {
        accept: Accept,
        format: Option<Format>,
    },
    /// Truncated, damaged, or over the pixel limit.
    Invalid(ImageError),
    /// The storage failed (logged here); the caller may retry.
    Storage,
}

/// Decides the media type from the first bytes (at least [`purrify_imaging::SNIFF_LEN`] or
/// all there are).
fn classify<E>(prefix: &[u8], accept: Accept) -> Result<Media, IngestError<E>> {
    match accept {
        Accept::Images => match purrify_imaging::sniff(prefix) {
            Some(f) if f.is_supported() => Ok(Media::Image(f)),
            other => Err(IngestError::Unsupported { accept, format: other }),
        },
        Accept::Videos => video::sniff(prefix).map(Media::Video).ok_or(IngestError::Unsupported { accept, format: None }),
    }
}

fn container(media: Media) -> Option<Container> {
    match media {
        Media::Image(f) => Container::of(f),
        Media::Video(v) => Some(v.container()),
    }
}

/// Shared between the chunk stream (which runs inside the storage write) and the caller.
struct Watch<E> {
    count: u64,
    head: BytesMut,
    check: Option<Completeness>,
    fault: Option<IngestError<E>>,
}

/// Streams `chunks` to `storage` under `key_stem` + the type's extension (e.g. `uploads/ab12`
/// becomes `uploads/ab12.jpg`), applying `rules`. On any refusal nothing stays stored.
pub async fn ingest<S, E>(storage: &Storage, key_stem: &str, rules: Rules, mut chunks: S) -> Result<Ingested, IngestError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: Send + 'static,
{
    let mut prefix = BytesMut::new();
    let mut first = Vec::new();
    while prefix.len() < purrify_imaging::SNIFF_LEN {
        match chunks.next().await {
            Some(Ok(c)) => {
                prefix.extend_from_slice(&c);
                first.push(c);
            }
            Some(Err(e)) => return Err(IngestError::Client(e)),
            None => break,
        }
    }
    if prefix.is_empty() {
        return Err(IngestError::Empty);
    }
    let media = classify(&prefix, rules.accept)?;
    let uri = storage.uri_for(&format!("{key_stem}.{}", media.extension()));
    let watch =
        Arc::new(Mutex::new(Watch::<E> { count: 0, head: BytesMut::new(), check: container(media).map(Completeness::new), fault: None }));
    let seen = watch.clone();
    let limit = rules.max_bytes;
    let stream = futures::stream::iter(first.into_iter().map(Ok)).chain(chunks).map(move |r| {
        let mut w = seen.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |w: &mut Watch<E>, e: IngestError<E>| {
            w.fault = Some(e);
            Err(std::io::Error::other("upload refused"))
        };
        let c = match r {
            Ok(c) => c,
            Err(e) => return fail(&mut w, IngestError::Client(e)),
        };
        w.count += c.len() as u64;
        if w.count > limit {
            return fail(&mut w, IngestError::TooLarge { limit });
        }
        if w.head.len() < HEADER_PREFIX {
            let take = (HEADER_PREFIX - w.head.len()).min(c.len());
            w.head.extend_from_slice(&c[..take]);
        }
        if let Some(Err(e)) = w.check.as_mut().map(|check| check.update(&c)) {
            return fail(&mut w, IngestError::Invalid(e));
        }
        Ok(c)
    });
    let written = storage.put_stream(&uri, Box::pin(stream)).await;
    let mut w = std::mem::replace(
        &mut *watch.lock().unwrap_or_else(|p| p.into_inner()),
        Watch { count: 0, head: BytesMut::new(), check: None, fault: None },
    );
    let refuse = |e: IngestError<E>| async {
        if let Err(d) = storage.delete(&uri).await {
            tracing::warn!(error = %d, "cannot delete a refused upload");
        }
        Err(e)
    };
    if let Err(e) = written {
        if let Some(fault) = w.fault.take() {
            tracing::info!(error = %e, "upload refused while streaming");
            return refuse(fault).await;
        }
        tracing::error!(error = %e, "cannot store an upload");
        return refuse(IngestError::Storage).await;
    }
    if let Some(Err(e)) = w.check.as_ref().map(Completeness::finish) {
        return refuse(IngestError::Invalid(e)).await;
    }
    let bytes = w.count;
    let (size, duration_ms) = match media {
        Media::Image(_) => match purrify_imaging::read_header(&w.head, &rules.limits) {
            Ok(h) => (Some((h.width, h.height)), None),
            // The file is known complete, so a header error is definitive when the whole
            // file fit in the prefix or the size is over the limit; a header cut off by the
            // prefix (huge metadata) is left to the worker, which fails the task with a reason.
            Err(e)
                if (bytes as usize) <= w.head.len() || matches!(e, ImageError::TooLarge { .. } | ImageError::DimensionTooLarge { .. }) =>
            {
                return refuse(IngestError::Invalid(e)).await;
            }
            Err(_) => (None, None),
        },
        Media::Video(_) => {
            let info = match w.check.as_ref().and_then(|c| c.top_box(b"moov")) {
                Some(moov) => video::read_moov(storage, &uri, moov).await,
                None => video::VideoInfo::default(),
            };
            (info.size, info.duration_ms)
        }
    };
    Ok(Ingested { uri, bytes, media, size, duration_ms })
}
