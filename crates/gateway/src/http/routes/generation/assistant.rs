//! Seed 003's AI assistant (`/api/v1/assistant/*`, login required): `POST chat` answers with
//! Server-Sent Events, each a `data:` line of JSON as the seed writes them —
//! `{"type":"token","content":"你"}` per fragment, then `{"type":"done","conversationId":"…"}`
//! — or, when the answer ends early, `{"type":"error","message":"…","conversationId":"…"}`;
//! the stream closes after either. Failures before the answer starts (a bad message, a
//! conversation that is not the user's, no chat provider) are ordinary error responses in
//! the seed's envelope. `GET conversations` lists the user's conversations, most recently
//! active first; `GET conversations/{id}` is one with its messages in order.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::PageRequest;
use crate::domain::assistant::{ChatEvent, ConversationMessage, ConversationSummary};
use crate::http::auth::CurrentUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::views::iso;

/// A comment line this often keeps proxies from closing a stream while the provider thinks.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat)).routes(routes!(conversations)).routes(routes!(conversation))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1ChatRequest {
    /// At most 8,000 characters.
    pub message: String,
    /// Continue this conversation; a new one starts without it.
    #[serde(default)]
    pub conversation_id: Option<String>,
}

/// One event of the stream (the JSON of a `data:` line).
#[derive(Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum V1ChatEvent {
    /// A fragment of the answer.
    Token { content: String },
    /// The answer is complete and saved.
    Done {
        #[serde(rename = "conversationId")]
        conversation_id: String,
    },
    /// The answer ended early; what arrived is saved, marked incomplete.
    Error {
        message: String,
        #[serde(rename = "conversationId")]
        conversation_id: String,
    },
}

impl From<ChatEvent> for V1ChatEvent {
    fn from(e: ChatEvent) -> Self {
        match e {
            ChatEvent::Token(content) => Self::Token { content },
            ChatEvent::Done { conversation_id } => Self::Done { conversation_id },
            ChatEvent::Error { conversation_id, message } => Self::Error { message, conversation_id },
        }
    }
}

fn sse_event(e: ChatEvent) -> Event {
    let e = V1ChatEvent::from(e);
    // Serialising these shapes cannot fail; a comment keeps the stream well-formed if it did.
    Event::default().json_data(&e).unwrap_or_else(|_| Event::default().comment("encode error"))
}

#[utoipa::path(post, path = "/api/v1/assistant/chat", tag = "generation", request_body = V1ChatRequest, security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream",
               description = "`data:` lines of token events, then one done or error event; the stream then closes", body = V1ChatEvent),
              (status = 401, body = V1Error), (status = 404, description = "No such conversation of this user", body = V1Error),
              (status = 422, description = "Empty or too long a message, or a full conversation", body = V1Error),
              (status = 503, description = "No chat provider is configured or none can answer now", body = V1Error)))]
pub async fn chat(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(req): ApiJson<V1ChatRequest>,
) -> ApiResult<Response> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable("the server is shutting down; please ask again"));
    }
    let events = state.assistant.chat(&user.user_id, &req.message, req.conversation_id.as_deref(), state.draining.child_token()).await?;
    let stream = events.map(|e| Ok::<_, Infallible>(sse_event(e)));
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    // nginx would otherwise buffer the tokens into chunks.
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// A conversation in the list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Conversation {
    pub id: String,
    /// The first message's first 30 characters.
    pub title: String,
    /// The start of the latest message (100 characters).
    pub last_message: Option<String>,
    pub message_count: u64,
    pub created_at: String,
    /// When the latest message was saved.
    pub updated_at: String,
}

impl From<ConversationSummary> for V1Conversation {
    fn from(s: ConversationSummary) -> Self {
        let c = s.conversation;
        Self {
            id: c.id,
            title: c.title,
            last_message: s.last_message,
            message_count: s.message_count,
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1ConversationList {
    pub list: Vec<V1Conversation>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub struct V1PageQuery {
    /// From 1.
    pub page: Option<u32>,
    /// Default 20, at most 100.
    pub page_size: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/assistant/conversations", tag = "generation", params(V1PageQuery), security(("bearer" = [])),
    responses((status = 200, description = "The user's conversations, most recently active first", body = V1<V1ConversationList>),
              (status = 401, body = V1Error)))]
pub async fn conversations(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<V1PageQuery>,
) -> ApiResult<V1<V1ConversationList>> {
    let page = state.assistant.conversations(&user.user_id, PageRequest::new(q.page, q.page_size)).await?;
    Ok(V1::ok(V1ConversationList {
        total: page.total,
        page: page.page,
        page_size: page.page_size,
        list: page.items.into_iter().map(V1Conversation::from).collect(),
    }))
}

/// One message of a conversation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Message {
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
    pub created_at: String,
    /// False for an answer cut short (the provider failed, the client left, the server
    /// stopped): `content` is what arrived.
    pub complete: bool,
}

impl From<ConversationMessage> for V1Message {
    fn from(m: ConversationMessage) -> Self {
        Self { role: m.role.as_str(), content: m.content, created_at: iso(m.created_at), complete: m.complete }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1ConversationDetail {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    /// In order, oldest first.
    pub messages: Vec<V1Message>,
}

#[utoipa::path(get, path = "/api/v1/assistant/conversations/{id}", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = V1<V1ConversationDetail>), (status = 401, body = V1Error),
              (status = 404, description = "No such conversation of this user", body = V1Error)))]
pub async fn conversation(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<V1<V1ConversationDetail>> {
    let d = state.assistant.conversation(&user.user_id, &id).await?;
    let c = d.conversation;
    Ok(V1::ok(V1ConversationDetail {
        id: c.id,
        title: c.title,
        created_at: iso(c.created_at),
        updated_at: iso(c.updated_at),
        messages: d.messages.into_iter().map(V1Message::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_seed_shapes() {
        let json = |e: ChatEvent| serde_json::to_string(&V1ChatEvent::from(e)).unwrap();
        assert_eq!(json(ChatEvent::Token("你".into())), r#"{"type":"token","content":"你"}"#);
        assert_eq!(json(ChatEvent::Done { conversation_id: "c1".into() }), r#"{"type":"done","conversationId":"c1"}"#);
        assert_eq!(
            json(ChatEvent::Error { conversation_id: "c1".into(), message: "cut".into() }),
            r#"{"type":"error","message":"cut","conversationId":"c1"}"#
        );
    }
}
