//! [`UploadService`]: receive files into storage (two steps, so a batch is all-or-nothing),
//! record them against the owner's storage quota, resolve and delete them by owner, and open
//! them by their unguessable id for capability-URL reads.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use purrify_imaging::Limits;
use purrify_inference::storage::Storage;
use purrify_store::{Db, StoreError, Upload, UploadKind};
use rand::TryRngCore;

use super::ingest::{self, Accept, IngestError, Ingested, Media, Rules};
use crate::domain::storage_deletions::DeletionSweeper;
use crate::domain::{DomainError, DomainResult};

/// Settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct UploadSettings {
    /// Bytes of files and thumbnails one user may keep (`PURRIFY_UPLOAD_QUOTA_BYTES`).
    pub quota_bytes: u64,
    /// Largest single file (`PURRIFY_MAX_UPLOAD_BYTES`).
    pub max_bytes: u64,
    pub limits: Limits,
    /// Longest side of thumbnails.
    pub thumbnail_side: u32,
}

impl UploadSettings {
    pub const DEFAULT_QUOTA_BYTES: u64 = 1 << 30;
    pub const THUMBNAIL_SIDE: u32 = 320;
}

/// An uploaded file as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// 128 random bits, URL-safe base64: the capability key of its URLs.
    pub id: String,
    pub owner: String,
    pub uri: String,
    pub thumbnail_uri: Option<String>,
    pub file_name: String,
    pub content_type: String,
    pub kind: UploadKind,
    pub bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
    pub created_at: i64,
    /// Extension of the stored object (`jpg`, `mp4`, ...): `<id>.<extension>` is its name.
    pub extension: String,
}

impl UploadedFile {
    /// The stored file's name, `<id>.<extension>`, which `DELETE /api/upload/{fileName}` takes.
    pub fn stored_name(&self) -> String {
        format!("{}.{}", self.id, self.extension)
    }
}

fn extension_of(uri: &str) -> String {
    uri.rsplit('/').next().and_then(|n| n.split_once('.')).map(|(_, e)| e.to_string()).unwrap_or_default()
}

impl From<Upload> for UploadedFile {
    fn from(u: Upload) -> Self {
        UploadedFile {
            extension: extension_of(&u.uri),
            id: u.id,
            owner: u.user_id,
            uri: u.uri,
            thumbnail_uri: u.thumbnail_uri,
            file_name: u.file_name,
            content_type: u.content_type,
            kind: u.kind,
            bytes: u.bytes,
            width: u.width,
            height: u.height,
            duration_ms: u.duration_ms,
            created_at: u.created_at,
        }
    }
}

/// A file in storage, checked, not yet recorded: [`UploadService::commit`] records it (or
/// [`UploadService::discard`] deletes it).
#[derive(Debug, Clone)]
pub struct Staged {
    row: Upload,
}

impl Staged {
    pub fn bytes(&self) -> u64 {
        self.row.bytes
    }
}

/// Why an upload was refused. `E` is the caller's chunk-stream error.
#[derive(Debug)]
pub enum UploadError<E> {
    Ingest(IngestError<E>),
    /// The owner's stored files plus this one would pass the quota.
    Quota {
        used: u64,
        quota: u64,
    },
    Domain(DomainError),
}

impl<E> From<DomainError> for UploadError<E> {
    fn from(e: DomainError) -> Self {
        UploadError::Domain(e)
    }
}

impl<E> From<StoreError> for UploadError<E> {
    fn from(e: StoreError) -> Self {
        UploadError::Domain(e.into())
    }
}

/// Longest kept file name, in characters.
const MAX_NAME: usize = 120;

/// The client's file name made safe to store and echo: the last path component, without
/// control characters or quotes, bounded; `fallback` when nothing is left.
pub fn sanitize_file_name(name: Option<&str>, fallback: &str) -> String {
    let last = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | '`'))
        .take(MAX_NAME)
        .collect::<String>()
        .trim()
        .to_string();
    if clean.is_empty() || clean.chars().all(|c| c == '.') { fallback.to_string() } else { clean }
}

/// A new upload id: 16 bytes from the operating system's RNG, URL-safe base64 (22 chars).
pub fn new_upload_id() -> String {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut raw).expect("the operating system's RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Whether `id` could be an upload id (saves a query on obvious junk).
fn plausible_id(id: &str) -> bool {
    id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Clone)]
pub struct UploadService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    storage: Arc<Storage>,
    settings: UploadSettings,
    deletions: DeletionSweeper,
}

impl UploadService {
    pub fn new(db: Db, storage: Arc<Storage>, settings: UploadSettings) -> Self {
        let deletions = DeletionSweeper::new(db.clone(), storage.clone());
        UploadService { inner: Arc::new(Inner { db, storage, settings, deletions }) }
    }

    pub fn settings(&self) -> &UploadSettings {
        &self.inner.settings
    }

    /// Bytes `owner` has stored, and the quota.
    pub async fn usage(&self, owner: &str) -> DomainResult<(u64, u64)> {
        Ok((self.inner.db.upload_bytes_used(owner).await?, self.inner.settings.quota_bytes))
    }

    /// Streams one file into storage under the upload rules, plus a JPEG thumbnail next to
    /// it when `thumbnail` (images only). `reserved` is what earlier files of the same batch
    /// will take from the quota. Nothing is recorded yet; on refusal nothing stays stored.
    pub async fn receive<S, E>(
        &self,
        owner: &str,
        accept: Accept,
        file_name: Option<&str>,
        thumbnail: bool,
        reserved: u64,
        chunks: S,
    ) -> Result<Staged, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Send + 'static,
    {
        let s = &self.inner.settings;
        let used = self.inner.db.upload_bytes_used(owner).await?.saturating_add(reserved);
        let remaining = s.quota_bytes.saturating_sub(used);
        if remaining == 0 {
            return Err(UploadError::Quota { used, quota: s.quota_bytes });
        }
        let id = new_upload_id();
        let rules = Rules { accept, max_bytes: s.max_bytes.min(remaining), limits: s.limits };
        let file = match ingest::ingest(&self.inner.storage, &format!("files/{id}"), rules, chunks).await {
            Ok(f) => f,
            Err(IngestError::TooLarge { limit }) if limit < s.max_bytes => return Err(UploadError::Quota { used, quota: s.quota_bytes }),
            Err(e) => return Err(UploadError::Ingest(e)),
        };
        let (kind, fallback) = match file.media {
            Media::Image(_) => (UploadKind::Image, format!("image.{}", file.media.extension())),
            Media::Video(_) => (UploadKind::Video, format!("video.{}", file.media.extension())),
        };
        let (thumbnail_uri, thumb_bytes, size) = match (thumbnail, kind) {
            (true, UploadKind::Image) => match self.make_thumbnail(&file, &id).await {
                Ok(t) => (Some(t.0), t.1, Some(t.2)),
                Err(e) => {
                    self.delete_objects(&[&file.uri]).await;
                    return Err(e);
                }
            },
            _ => (None, 0, file.size),
        };
        if file.bytes + thumb_bytes > remaining {
            self.delete_objects(&[&file.uri, thumbnail_uri.as_deref().unwrap_or_default()]).await;
            return Err(UploadError::Quota { used, quota: s.quota_bytes });
        }
        let row = Upload {
            id,
            user_id: owner.to_string(),
            uri: file.uri,
            thumbnail_uri,
            file_name: sanitize_file_name(file_name, &fallback),
            content_type: file.media.mime_type().to_string(),
            kind,
            bytes: file.bytes,
            stored_bytes: file.bytes + thumb_bytes,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            duration_ms: file.duration_ms,
            created_at: purrify_store::now_ms(),
        };
        Ok(Staged { row })
    }

    /// Decodes the stored image and writes its thumbnail at `files/<id>.thumb.jpg`:
    /// `(uri, bytes, source size)`. A file that does not decode is refused as invalid.
    async fn make_thumbnail<E>(&self, file: &Ingested, id: &str) -> Result<(String, u64, (u32, u32)), UploadError<E>> {
        let s = self.inner.settings;
        let data = self.inner.storage.get(&file.uri, s.max_bytes).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read an upload back for its thumbnail");
            UploadError::Ingest(IngestError::Storage)
        })?;
        let made = tokio::task::spawn_blocking(move || purrify_imaging::thumbnail(&data, &s.limits, s.thumbnail_side))
            .await
            .map_err(|e| UploadError::Domain(DomainError::Internal(format!("thumbnail task: {e}"))))?;
        let thumb = made.map_err(|e| UploadError::Ingest(IngestError::Invalid(e)))?;
        let uri = self.inner.storage.uri_for(&format!("files/{id}.thumb.jpg"));
        let bytes = thumb.jpeg.len() as u64;
        if let Err(e) = self.inner.storage.put(&uri, Bytes::from(thumb.jpeg)).await {
            tracing::error!(error = %e, "cannot store a thumbnail");
            return Err(UploadError::Ingest(IngestError::Storage));
        }
        Ok((uri, bytes, (thumb.source_width, thumb.source_height)))
    }

    /// Records staged files of `owner` together, within the quota; on any refusal every one
    /// of them is deleted from storage and nothing is recorded.
    pub async fn commit<E>(&self, owner: &str, staged: Vec<Staged>) -> Result<Vec<UploadedFile>, UploadError<E>> {
        let rows: Vec<Upload> = staged.into_iter().map(|s| s.row).collect();
        match self.inner.db.insert_uploads_within_quota(&rows, self.inner.settings.quota_bytes).await {
            Ok(()) => Ok(rows.into_iter().map(UploadedFile::from).collect()),
            Err(e) => {
                self.discard_rows(&rows).await;
                match e {
                    StoreError::LimitReached(_) => {
                        let used = self.inner.db.upload_bytes_used(owner).await.unwrap_or(0);
                        Err(UploadError::Quota { used, quota: self.inner.settings.quota_bytes })
                    }
                    other => Err(other.into()),
                }
            }
        }
    }

    /// Deletes staged files from storage (a batch refused part-way).
    pub async fn discard(&self, staged: Vec<Staged>) {
        let rows: Vec<Upload> = staged.into_iter().map(|s| s.row).collect();
        self.discard_rows(&rows).await;
    }

    async fn discard_rows(&self, rows: &[Upload]) {
        for r in rows {
            self.delete_objects(&[&r.uri, r.thumbnail_uri.as_deref().unwrap_or_default()]).await;
        }
    }

    /// Deletes objects no row references (a refused upload's); one storage refuses now is
    /// queued for the deletion sweeper, which retries it.
    async fn delete_objects(&self, uris: &[&str]) {
        for uri in uris.iter().filter(|u| !u.is_empty()) {
            match self.inner.storage.delete(uri).await {
                Ok(()) => {}
                Err(e) if e.is_client_error() => tracing::warn!(error = %e, "an upload's object cannot be deleted here"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete an upload's object now; queued for the sweeper");
                    if let Err(e) = self.inner.deletions.queue(uri, None).await {
                        tracing::error!(uri = %uri, error = %e, "cannot queue an upload's object for deletion; it is left in storage");
                    }
                }
            }
        }
    }

    /// `owner`'s file `file_id` (the id alone, or the stored name `<id>.<ext>`), for making a
    /// task from it; `None` when there is none of theirs.
    pub async fn resolve(&self, owner: &str, file_id: &str) -> DomainResult<Option<UploadedFile>> {
        let id = file_id.split_once('.').map_or(file_id, |(id, _)| id);
        if !plausible_id(id) {
            return Ok(None);
        }
        Ok(self.inner.db.user_upload(owner, id).await?.map(UploadedFile::from))
    }

    /// Deletes `owner`'s file and its thumbnail. `false` when there is none of theirs (another
    /// user's file is reported the same way, so ids cannot be probed). The row goes (and its
    /// bytes leave the quota) at once, in the transaction that queues its objects; the
    /// [`DeletionSweeper`] removes them from storage, retrying while storage refuses, so a
    /// deleted upload never leaves an object behind.
    pub async fn delete(&self, owner: &str, file_id: &str) -> DomainResult<bool> {
        let id = file_id.split_once('.').map_or(file_id, |(id, _)| id);
        if !plausible_id(id) {
            return Ok(false);
        }
        let Some(row) = self.inner.db.delete_user_upload(owner, id).await? else {
            return Ok(false);
        };
        tracing::info!(upload = %row.id, "upload deleted; its objects are queued for deletion");
        Ok(true)
    }

    /// Opens a file (or its thumbnail) by its capability key `<id>.<ext>` /
    /// `<id>.thumb.jpg`: `(content type, size, bytes)`; `None` when no such file.
    pub async fn open(&self, key: &str) -> DomainResult<Option<(String, u64, BoxStream<'static, std::io::Result<Bytes>>)>> {
        let Some((id, rest)) = key.split_once('.') else {
            return Ok(None);
        };
        if !plausible_id(id) {
            return Ok(None);
        }
        let Some(row) = self.inner.db.upload(id).await? else {
            return Ok(None);
        };
        let (uri, content_type) = match rest {
            "thumb.jpg" => match row.thumbnail_uri {
                Some(t) => (t, purrify_imaging::Thumbnail::MIME_TYPE.to_string()),
                None => return Ok(None),
            },
            ext if ext == extension_of(&row.uri) => (row.uri, row.content_type),
            _ => return Ok(None),
        };
        match self.inner.storage.get_stream(&uri).await {
            Ok((size, stream)) => {
                use futures::StreamExt;
                Ok(Some((content_type, size, stream.map(|r| r.map_err(std::io::Error::other)).boxed())))
            }
            Err(e) if e.is_client_error() => Ok(None),
            Err(e) => Err(DomainError::Unavailable(format!("the file cannot be read now: {e}"))),
        }
    }

    /// Copies `owner`'s file to `<key_stem>.<ext>` in storage and returns it with the copy's
    /// uri: a task made from an upload owns its input copy, so the task's housekeeping can
    /// delete that copy without touching the upload (and deleting the upload does not break
    /// a queued task). `None` when there is no such file of theirs.
    pub async fn copy_for_task(&self, owner: &str, file_id: &str, key_stem: &str) -> DomainResult<Option<UploadedFile>> {
        let Some(mut file) = self.resolve(owner, file_id).await? else {
            return Ok(None);
        };
        let storage = &self.inner.storage;
        let unavailable =
            |e: purrify_inference::storage::StorageError| DomainError::Unavailable(format!("the uploaded file cannot be read now: {e}"));
        let (_, stream) = storage.get_stream(&file.uri).await.map_err(unavailable)?;
        let copy = storage.uri_for(&format!("{key_stem}.{}", file.extension));
        if let Err(e) = storage.put_stream(&copy, stream).await {
            let _ = storage.delete(&copy).await;
            return Err(unavailable(e));
        }
        file.uri = copy;
        Ok(Some(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitize_file_name(Some("../../etc/passwd"), "x"), "passwd");
        assert_eq!(sanitize_file_name(Some("C:\\Users\\me\\cat.jpg"), "x"), "cat.jpg");
        assert_eq!(sanitize_file_name(Some("a\u{0}b\r\n\"<c>.png"), "x"), "abc.png");
        assert_eq!(sanitize_file_name(Some(".."), "image.jpg"), "image.jpg");
        assert_eq!(sanitize_file_name(None, "image.jpg"), "image.jpg");
        assert_eq!(sanitize_file_name(Some(&"x".repeat(500)), "f").len(), MAX_NAME);
    }

    #[test]
    fn ids_are_random_url_safe_and_128_bit() {
        let a = new_upload_id();
        let b = new_upload_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(plausible_id(&a) && plausible_id(&b));
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
        assert!(!plausible_id("../../etc/passwd"));
        assert_eq!(extension_of("file:///s/files/abc.thumb.jpg"), "thumb.jpg");
        assert_eq!(extension_of("file:///s/files/abc.mp4"), "mp4");
    }
}
