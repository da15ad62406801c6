//! Uploaded files (seeds 001 and 003): streamed into storage under the upload rules of
//! [`ingest`], recorded per user in the `uploads` table, counted against a per-user storage
//! quota, deleted only by their owner, and resolved by id when a task is made from one.

pub mod base64_text;
pub mod ingest;
mod service;
pub mod video;

pub use service::{Staged, UploadError, UploadService, UploadSettings, UploadedFile, new_upload_id, sanitize_file_name};
