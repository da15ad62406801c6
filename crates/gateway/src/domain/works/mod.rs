//! Works (DESIGN section 10): what a logged-in user keeps of their tasks, whichever surface
//! shows them (seed 001's `/api/works`, seed 003's `/api/v1/works`, the admin list).
//!
//! - A work exists from the moment its owner's task is seen (the [`recorder`] follows the
//!   task events and sweeps the database for what it missed) and its status is the task's:
//!   queued, processing, completed, failed or cancelled, which each surface words its own way.
//! - Only a completed work has a file: the task's output is copied into the works' storage
//!   (`works/<id>/output.<ext>`), so the tasks' retention never takes a file a user kept, and
//!   the work reads `processing` until that copy is stored. A thumbnail (JPEG, longest side
//!   [`WorkSettings::thumbnail_side`]) is made once, next to it; failures are retried by the
//!   sweep with backoff and never hold a work back from the lists (it shows no thumbnail).
//! - File and thumbnail are served under the work's random media key, so image tags load them
//!   without a token; downloads by id check the owner.
//! - Deleting hides works at once and queues their objects; the shared
//!   [`DeletionSweeper`] deletes them from storage, retrying failures with backoff, and
//!   [`cleanup`] then purges the rows. The recorder's tick runs it for every queued object,
//!   uploads' too.

mod cleanup;
mod recorder;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use purrify_inference::storage::{Storage, StorageError};
use purrify_store::{Db, DeleteWorks, WorkChange};
pub use purrify_store::{Work, WorkFilter, WorkKind};

pub use recorder::spawn_recorder;

use crate::domain::accounts::{Page, PageRequest};
use crate::domain::storage_deletions::{DeletionSweeper, backoff};
use crate::domain::{DomainError, DomainResult};

/// Most works one delete request takes.
pub const MAX_BATCH_DELETE: usize = purrify_store::works::MAX_DELETE_BATCH;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 100;

#[derive(Debug, Clone)]
pub struct WorkSettings {
    /// Longest side of thumbnails, in pixels.
    pub thumbnail_side: u32,
    /// Decoding limits for making thumbnails (the upload limits).
    pub image_limits: purrify_imaging::Limits,
    /// Largest task output copied into a work.
    pub max_file_bytes: u64,
    /// How far back the periodic sweep looks for finished tasks without a work: the events
    /// cover the rest; it only has to catch what a crash or a lagging broadcast missed.
    pub catch_up: Duration,
    /// How far back the first sweep after a start looks, and how long a deleted work's row is
    /// kept after its task finished (a purged work's task must be out of every sweep's reach).
    pub start_catch_up: Duration,
    /// Thumbnail attempts before giving up.
    pub thumbnail_attempts: u32,
}

impl Default for WorkSettings {
    fn default() -> Self {
        Self {
            thumbnail_side: 320,
            image_limits: purrify_imaging::Limits::default(),
            max_file_bytes: 256 * 1024 * 1024,
            catch_up: Duration::from_secs(600),
            start_catch_up: Duration::from_secs(24 * 3600),
            thumbnail_attempts: 5,
        }
    }
}

/// Cheap to clone; clones share one service.
#[derive(Clone)]
pub struct WorkService {
    db: Db,
    storage: Arc<Storage>,
    settings: Arc<WorkSettings>,
    deletions: DeletionSweeper,
}

/// What a user may change about a work.
#[derive(Debug, Clone, Default)]
pub struct WorkEdit {
    pub title: Option<String>,
    pub is_favorite: Option<bool>,
    pub is_public: Option<bool>,
}

/// Which object of a work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    File,
    Thumbnail,
}

/// A stored object, streamed.
pub struct MediaStream {
    pub size: u64,
    pub content_type: String,
    /// A file name for `Content-Disposition`.
    pub file_name: String,
    pub body: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl WorkService {
    pub fn new(db: Db, storage: Arc<Storage>, settings: WorkSettings) -> Self {
        let deletions = DeletionSweeper::new(db.clone(), storage.clone());
        Self { db, storage, settings: Arc::new(settings), deletions }
    }

    /// A page of works, newest first (`filter.user_id` narrows it to one user's).
    pub async fn list(&self, filter: &WorkFilter, page: PageRequest) -> DomainResult<Page<Work>> {
        Ok(self.db.works(filter, page).await?)
    }

    /// One of `user_id`'s works; anyone else's is answered as missing.
    pub async fn get(&self, user_id: &str, id: &str) -> DomainResult<Work> {
        match self.db.work(id).await? {
            Some(w) if w.user_id == user_id => Ok(w),
            _ => Err(not_found(id)),
        }
    }

    /// The work a task of `user_id` made, if it has one yet.
    pub async fn of_task(&self, user_id: &str, task_id: &str) -> DomainResult<Option<Work>> {
        Ok(self.db.work_of_task(task_id).await?.filter(|w| w.user_id == user_id))
    }

    /// Edits one of `user_id`'s works.
    pub async fn update(&self, user_id: &str, id: &str, edit: WorkEdit) -> DomainResult<Work> {
        let title = match edit.title {
            None => None,
            Some(t) => {
                let t = t.trim().to_owned();
                if t.is_empty() || t.chars().count() > MAX_TITLE_CHARS || t.chars().any(char::is_control) {
                    return Err(DomainError::invalid("title", format!("1 to {MAX_TITLE_CHARS} characters, no control characters")));
                }
                Some(t)
            }
        };
        // `is_public` shares the work on the square (or withdraws it): only a finished work
        // can be shared, the same rule as `POST /api/v1/square`.
        if edit.is_public == Some(true) && self.get(user_id, id).await?.status != purrify_api::TaskStatus::Completed {
            return Err(DomainError::Conflict(format!("work {id} is not completed; only finished works can be made public")));
        }
        let change = WorkChange { title, is_favorite: edit.is_favorite, is_public: edit.is_public };
        self.db.update_work(Some(user_id), id, &change).await?.ok_or_else(|| not_found(id))
    }

    /// Deletes `ids`, all of `user_id`'s, or none of them: one that is not the user's (or is
    /// gone) fails the whole request with `NotFound` naming it. Returns how many were deleted.
    pub async fn delete(&self, user_id: &str, ids: &[String]) -> DomainResult<usize> {
        if ids.is_empty() || ids.len() > MAX_BATCH_DELETE {
            return Err(DomainError::invalid("work_ids", format!("1 to {MAX_BATCH_DELETE} work ids")));
        }
        match self.db.delete_works(user_id, ids).await? {
            DeleteWorks::Deleted { works, objects } => {
                tracing::info!(works, objects, "works deleted; their objects are queued for deletion");
                Ok(works)
            }
            DeleteWorks::Missing(missing) => Err(DomainError::NotFound(format!("no work {}; nothing was deleted", missing.join(", ")))),
        }
    }

    /// A visible work's file or thumbnail by its media key (the capability in its URLs).
    pub async fn media(&self, key: &str, which: Media) -> DomainResult<MediaStream> {
        let work = self.db.work_by_media_key(key).await?.ok_or_else(|| DomainError::NotFound("no such file".into()))?;
        self.open(&work, which).await
    }

    /// One of `user_id`'s works' file, for downloading.
    pub async fn download(&self, user_id: &str, id: &str) -> DomainResult<MediaStream> {
        let work = self.get(user_id, id).await?;
        self.open(&work, Media::File).await
    }

    async fn open(&self, work: &Work, which: Media) -> DomainResult<MediaStream> {
        let (uri, content_type, name) = match which {
            Media::File => (
                work.output_uri.as_deref(),
                work.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
                format!("purrify-{}.{}", work.id, extension(work.content_type.as_deref().unwrap_or_default())),
            ),
            Media::Thumbnail => (
                work.thumbnail_uri.as_deref(),
                purrify_imaging::Thumbnail::MIME_TYPE.to_owned(),
                format!("purrify-{}-thumbnail.jpg", work.id),
            ),
        };
        let Some(uri) = uri else {
            return Err(match (which, work.status) {
                (Media::File, purrify_api::TaskStatus::Completed) | (Media::Thumbnail, _) => {
                    DomainError::NotFound(format!("work {} has no {} yet", work.id, which.noun()))
                }
                (Media::File, _) => DomainError::Conflict(format!("work {} is {}; it has no file yet", work.id, work.status.as_str())),
            });
        };
        let (size, body) = self.storage.get_stream(uri).await.map_err(|e| match e {
            StorageError::NotFound { .. } => DomainError::NotFound(format!("the {} of work {} is no longer stored", which.noun(), work.id)),
            e => {
                tracing::warn!(work = %work.id, error = %e, "cannot read a work's object");
                DomainError::Unavailable(format!("storage cannot serve the {} now; try again shortly", which.noun()))
            }
        })?;
        Ok(MediaStream { size, content_type, file_name: name, body })
    }
}

impl Media {
    fn noun(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Thumbnail => "thumbnail",
        }
    }
}

fn not_found(id: &str) -> DomainError {
    DomainError::NotFound(format!("no work {id}"))
}

/// File extension for a stored content type.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/avif" => "avif",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_follow_content_types() {
        assert_eq!(extension("image/jpeg"), "jpg");
        assert_eq!(extension("image/png"), "png");
        assert_eq!(extension("text/html"), "bin");
    }
}
