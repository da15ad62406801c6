//! Seed 004's AI postcards (DESIGN section 13). A postcard is a task of kind `postcard` in the
//! one task table, created through [`GenerationService::create`] (so it counts as one image
//! generation against the daily quota and is paid at the `postcard` kind's price) and run by
//! the provider runner, which hands it to [`run::run`]:
//!
//! 1. **text**: the assistant (chat) provider writes a short message in the asked mood, style
//!    and theme;
//! 2. **image**: with a photo and the built-in `purrify` provider chosen for images (or no
//!    outside image provider usable), the photo runs through the enhancement engine as a
//!    child task; otherwise the image provider chain makes the picture (image-to-image with
//!    the photo, text-to-image without);
//! 3. **card**: `frontend_code` is rendered ([`card`]), every string in it escaped;
//! 4. **record**: the postcard row is inserted in the transaction that completes the task,
//!    whose result is the picture, so works, `/ws` and credits follow it like every task.
//!
//! The picture is served under an unguessable media key ([`media_path`]), from the postcard's
//! own copy: the task's output goes with the tasks' retention, the postcard stays.

pub mod card;
pub(crate) mod run;
pub mod spec;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use purrify_inference::storage::{Storage, StorageError};
use purrify_store::Db;
pub use purrify_store::postcards::{MAX_LIST, Postcard};
pub use spec::PostcardSpec;

use crate::domain::accounts::Principal;
use crate::domain::generation::{GenerateRequest, GenerationService, JobSpec};
use crate::domain::providers::Kind;
use crate::domain::tasks::TaskService;
use crate::domain::uploads::UploadService;
use crate::domain::{DomainError, DomainResult};

/// The task kind of postcards.
pub const TASK_KIND: &str = "postcard";
/// Postcards a list returns unless asked otherwise.
pub const DEFAULT_LIST: u32 = 50;

/// The path the picture of the postcard with media key `key` is served under.
pub fn media_path(key: &str) -> String {
    format!("/api/v1/postcards/media/{key}")
}

/// The picture's URL: absolute under `public_url` (`PURRIFY_PUBLIC_URL`) when one is set, so
/// a card shown outside our origin still loads it; else the path.
pub fn image_url(public_url: Option<&str>, key: &str) -> String {
    match public_url.map(|u| u.trim_end_matches('/')).filter(|u| !u.is_empty()) {
        Some(base) => format!("{base}{}", media_path(key)),
        None => media_path(key),
    }
}

/// A new media key: 256 random bits, hex.
pub(crate) fn new_media_key() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn plausible_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A postcard as the client asked for it.
#[derive(Debug, Clone, Default)]
pub struct NewPostcard {
    pub mood: String,
    pub style: String,
    pub theme: String,
    pub extra: Option<String>,
    /// One of the user's uploads (`/api/v1/upload/image`, `/api/upload/single`).
    pub photo_id: Option<String>,
}

/// Where a postcard task is.
#[derive(Debug, Clone)]
pub enum PostcardState {
    Processing,
    /// The client-safe reason.
    Failed(String),
    Completed(Box<Postcard>),
}

/// A postcard's picture, to stream.
pub struct Picture {
    pub postcard: Postcard,
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, StorageError>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct PostcardService {
    db: Db,
    storage: Arc<Storage>,
    tasks: TaskService,
    uploads: UploadService,
    generation: GenerationService,
}

impl PostcardService {
    pub fn new(tasks: TaskService, uploads: UploadService, generation: GenerationService) -> Self {
        Self { db: tasks.db().clone(), storage: tasks.storage().clone(), tasks, uploads, generation }
    }

    /// Checks the request, copies the photo for the task and creates the task (quota and
    /// price as one image generation). Returns the task id. Nothing stays stored when it is
    /// refused.
    pub async fn create(&self, user: &Principal, req: NewPostcard, request_id: &str) -> DomainResult<String> {
        let spec = PostcardSpec::new(&req.mood, &req.style, &req.theme, req.extra.as_deref(), req.photo_id.as_deref());
        let mut errors = Vec::new();
        spec.check(&mut errors);
        if !errors.is_empty() {
            return Err(DomainError::Fields(errors));
        }
        // The text comes first: without a chat provider the task could only fail, after the
        // quota was counted.
        if self.generation.providers().chain(Kind::Assistant, None).await?.is_empty() {
            return Err(DomainError::Unavailable("no assistant provider is available to write postcards; an admin configures one".into()));
        }
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let input = match &spec.photo_id {
            None => None,
            Some(id) => match self.uploads.copy_for_task(&user.user_id, id, &format!("inputs/{task_id}")).await? {
                Some(f) if f.kind.as_str() == "image" => Some((f.uri, f.content_type, f.bytes)),
                Some(f) => {
                    let _ = self.storage.delete(&f.uri).await;
                    return Err(DomainError::invalid("photoId", format!("upload {id} is not an image")));
                }
                None => return Err(DomainError::invalid("photoId", format!("no uploaded image {id} of yours"))),
            },
        };
        let title: String = format!("明信片 · {}", spec.theme).chars().take(60).collect();
        let created = self
            .generation
            .create(
                user,
                GenerateRequest {
                    spec: JobSpec::Postcard(spec),
                    input: input.clone(),
                    provider: None,
                    model: None,
                    task_id,
                    request_id: request_id.to_owned(),
                    title: Some(title),
                    scene_id: None,
                    price: None,
                },
            )
            .await;
        match created {
            Ok(c) => Ok(c.task_id),
            Err(e) => {
                if let Some((uri, ..)) = &input {
                    let _ = self.storage.delete(uri).await;
                }
                Err(e)
            }
        }
    }

    /// A postcard task of `user` (or any, for admins): anything else reads as missing.
    pub async fn status(&self, user: &Principal, task_id: &str) -> DomainResult<PostcardState> {
        let d = self.tasks.detail(task_id, user).await?;
        if d.record.meta.kind != TASK_KIND {
            return Err(DomainError::NotFound(format!("no postcard task {task_id}")));
        }
        Ok(match d.status {
            purrify_api::TaskStatus::Queued | purrify_api::TaskStatus::Processing => PostcardState::Processing,
            purrify_api::TaskStatus::Completed => match self.db.postcard_of_task(task_id).await? {
                Some(p) => PostcardState::Completed(Box::new(p)),
                // A postcard is written with its task's completion; a completed task without
                // one was not made by this version's runner.
                None => PostcardState::Failed("the postcard of this task was not recorded".into()),
            },
            purrify_api::TaskStatus::Cancelled => PostcardState::Failed("the postcard was cancelled".into()),
            purrify_api::TaskStatus::Failed => {
                PostcardState::Failed(d.record.task.error_message.clone().unwrap_or_else(|| "the postcard could not be made".into()))
            }
        })
    }

    /// One postcard of `user` (or any, for admins).
    pub async fn get(&self, user: &Principal, id: &str) -> DomainResult<Postcard> {
        match self.db.postcard(id).await? {
            Some(p) if p.user_id == user.user_id || user.is_admin() => Ok(p),
            _ => Err(DomainError::NotFound(format!("no postcard {id}"))),
        }
    }

    /// `user`'s own postcards, newest first: `limit` (1..=[`MAX_LIST`]) after `before`.
    pub async fn list(&self, user: &Principal, before: Option<&str>, limit: u32) -> DomainResult<Vec<Postcard>> {
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(DomainError::invalid("limit", format!("must be 1 to {MAX_LIST}")));
        }
        Ok(self.db.user_postcards(&user.user_id, before, limit).await?)
    }

    /// The picture under media key `key` (no login: the key is the capability).
    pub async fn picture(&self, key: &str) -> DomainResult<Picture> {
        let missing = || DomainError::NotFound("no such picture".into());
        if !plausible_key(key) {
            return Err(missing());
        }
        let postcard = self.db.postcard_by_media_key(key).await?.ok_or_else(missing)?;
        match self.storage.get_stream(&postcard.image_uri).await {
            Ok((size, body)) => Ok(Picture { postcard, size, body }),
            Err(StorageError::NotFound { .. }) => Err(missing()),
            Err(e) => {
                tracing::warn!(postcard = %postcard.id, error = %e, "cannot read a postcard's picture");
                Err(DomainError::Unavailable("the picture cannot be read now; try again shortly".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_urls_are_ours() {
        let key = new_media_key();
        assert!(plausible_key(&key) && key != new_media_key());
        assert!(!plausible_key("../../etc/passwd") && !plausible_key(&key[1..]));
        assert_eq!(image_url(None, "k"), "/api/v1/postcards/media/k");
        assert_eq!(image_url(Some("https://cards.example.com/"), "k"), "https://cards.example.com/api/v1/postcards/media/k");
        assert_eq!(image_url(Some(""), "k"), "/api/v1/postcards/media/k");
    }
}
