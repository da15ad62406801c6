//! Seed 001's workflow callbacks, for n8n-style workflows that scene tasks were handed to:
//! `POST /api/callback/task-complete` (`{taskId, outputUrl}`; the result is copied into our
//! storage) and `POST /api/callback/task-failed` (`{taskId, error}`). Signed with the
//! workflow provider's key (`X-Purrify-Timestamp`, `X-Purrify-Signature: sha256=<hex HMAC of
//! "<timestamp>.<body>">`), fresh within five minutes, each signature accepted once, and
//! idempotent: reporting on a task that has ended changes nothing. See
//! [`crate::domain::generation::workflow`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::generation::workflow::{Outcome, Signed};
use crate::domain::providers::adapters::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::views::status_word;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(complete)).routes(routes!(failed))
}

/// The task after the callback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallbackAck {
    pub task_id: String,
    /// Seed 001's status word (`completed`, `failed`, ...).
    pub status: &'static str,
}

async fn apply(state: &AppState, outcome: Outcome, headers: &HeaderMap, body: &[u8]) -> ApiResult<Envelope<CallbackAck>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let signed = Signed { timestamp: header(TIMESTAMP_HEADER), signature: header(SIGNATURE_HEADER) };
    let status = state.generation.workflow_callback(outcome, signed, body).await?;
    let task_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("taskId").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Ok(Envelope::ok("callback received", CallbackAck { task_id, status: status_word(status) }))
}

#[utoipa::path(post, path = "/api/callback/task-complete", tag = "tasks",
    request_body(content = String, description = "`{\"taskId\": \"...\", \"outputUrl\": \"https://...\"}`, signed"),
    responses((status = 200, body = Envelope<CallbackAck>), (status = 401, description = "Bad or stale signature", body = ErrorBody),
              (status = 409, description = "A replayed signature, or a task not handed to a workflow yet", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn complete(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Envelope<CallbackAck>> {
    apply(&state, Outcome::Complete, &headers, &body).await
}

#[utoipa::path(post, path = "/api/callback/task-failed", tag = "tasks",
    request_body(content = String, description = "`{\"taskId\": \"...\", \"error\": \"why\"}`, signed"),
    responses((status = 200, body = Envelope<CallbackAck>), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn failed(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Envelope<CallbackAck>> {
    apply(&state, Outcome::Failed, &headers, &body).await
}
