//! `/ws`: live task updates over WebSocket (seeds 001 and 003).
//!
//! A connection authenticates with `?token=<access token>` (003) or with a first
//! `{"type":"auth","token":…}` message (001). Once it has, it receives `task_progress`,
//! `task_complete` and `task_failed` for every task of its user without subscribing: the
//! per-user index of `domain::live` wakes only the owner's connections. Anonymous tasks (seed
//! 000 uploads without an account) are followed by id with `{"type":"subscribe","taskId":…}`,
//! as before.
//!
//! Heartbeats: `{"type":"ping"}` is answered with `{"type":"pong"}`; the server sends a
//! WebSocket ping every `ping_interval` and closes (4002) a connection that sent nothing
//! back by the next one. An unauthenticated connection that neither authenticates nor follows a
//! task within `auth_timeout` is closed (4001). The access token is checked again at every
//! heartbeat: once it has expired or been revoked the server sends `{"type":"auth_expired"}`
//! and closes (4001); a client keeps its connection past the token's lifetime by sending a
//! fresh `{"type":"auth"}` message before then.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::stream::{SelectAll, SplitSink};
use futures::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tasks::LiveMessage;
use crate::app::AppState;
use crate::domain::accounts::Principal;
use crate::domain::live::UserFeed;
use crate::domain::tasks::TaskSnapshot;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ws))
}

/// Close code: authentication missing, refused, expired or revoked.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: the client answered no ping for a whole heartbeat interval.
pub const CLOSE_HEARTBEAT: u16 = 4002;
/// Tasks one connection may follow by id.
const MAX_SUBSCRIPTIONS: usize = 100;
/// Largest message a client may send (auth, ping and subscribe messages are tiny).
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Read buffer of a connection: tungstenite's default (128 KiB, allocated up front) would
/// make ten thousand idle connections cost over a gigabyte.
const READ_BUFFER: usize = 4 * 1024;
/// How long a close frame may take to go out before the connection is dropped anyway.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Client -> server messages: `{"type":"ping"}`, `{"type":"subscribe","taskId":..}`,
/// `{"type":"unsubscribe","taskId":..}`, and seed 001's `{"type":"auth","token":..}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Ping,
    /// Seed 001's first message: `{"type": "auth", "token": "<access token>"}`.
    Auth {
        #[serde(default)]
        token: String,
    },
    Subscribe {
        #[serde(rename = "taskId")]
        task_id: String,
    },
    Unsubscribe {
        #[serde(rename = "taskId")]
        task_id: String,
    },
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct WsQuery {
    /// An access token (seed 003's `/ws?token=`); or send `{type: auth, token}` first.
    pub token: Option<String>,
}

#[utoipa::path(get, path = "/ws", tag = "tasks", params(WsQuery),
    responses((status = 101, description = "WebSocket. Authenticate with `?token=` or a first `{type: auth, token}` message \
        (within the auth timeout, else closed with 4001); then `task_progress`, `task_complete` and `task_failed` arrive for \
        every task of the user. `{type: subscribe, taskId}` / `unsubscribe` follow anonymous tasks by id; `{type: ping}` \
        is answered with `{type: pong}`. The server pings every heartbeat interval and closes silent connections (4002); \
        an expired or revoked token closes the connection (4001) unless a fresh `auth` message came first.", body = LiveMessage),
              (status = 401, description = "An invalid `token`", body = ErrorBody)))]
pub async fn ws(State(state): State<AppState>, ApiQuery(q): ApiQuery<WsQuery>, upgrade: WebSocketUpgrade) -> ApiResult<Response> {
    let viewer = match q.token.filter(|t| !t.is_empty()) {
        Some(token) => Some(Viewer { principal: state.accounts.authenticate(&token).await?, token }),
        None => None,
    };
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, socket, viewer)))
}

/// An authenticated connection's user and the token it proved it with (checked again at
/// every heartbeat).
struct Viewer {
    principal: Principal,
    token: String,
}

type Updates = Pin<Box<dyn Stream<Item = TaskSnapshot> + Send>>;

/// What ends a session.
enum End {
    /// The client left, or the connection broke.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

struct Session {
    state: AppState,
    tx: SplitSink<WebSocket, Message>,
    viewer: Option<Viewer>,
    feed: Option<UserFeed>,
    /// Tasks followed by id, each ended by its token on unsubscribe.
    followed: HashMap<String, CancellationToken>,
    updates: SelectAll<Updates>,
    /// The last task message sent, so that an unchanged state is not sent twice in a row.
    last: Option<LiveMessage>,
    /// Authenticated or followed a task once: the auth timeout no longer applies.
    engaged: bool,
}

async fn session(state: AppState, socket: WebSocket, viewer: Option<Viewer>) {
    let settings = state.live.settings().clone();
    let (tx, mut rx) = socket.split();
    let feed = viewer.as_ref().map(|v| state.live.subscribe(&v.principal.user_id));
    let draining = state.draining.clone();
    let engaged = viewer.is_some();
    let mut s = Session { state, tx, viewer, feed, followed: HashMap::new(), updates: SelectAll::new(), last: None, engaged };
    // Until the connection authenticates or follows a task, it has `auth_timeout` to do so.
    let auth_deadline = tokio::time::sleep(settings.auth_timeout);
    tokio::pin!(auth_deadline);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + settings.ping_interval, settings.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let end = loop {
        let waiting_for_auth = !s.engaged;
        let step = tokio::select! {
            () = draining.cancelled() => Err(End::Close(1001, "server shutting down")),
            () = &mut auth_deadline, if waiting_for_auth => {
                Err(End::Close(CLOSE_UNAUTHORIZED, "authentication timeout: send {\"type\":\"auth\",\"token\":...} first"))
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    Err(End::Close(CLOSE_HEARTBEAT, "heartbeat timeout: no answer to the last ping"))
                } else {
                    awaiting_pong = true;
                    s.heartbeat().await
                }
            }
            incoming = rx.next() => {
                awaiting_pong = false;
                match incoming {
                    Some(Ok(Message::Text(text))) => s.on_text(&text).await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Err(End::Gone),
                    Some(Ok(_)) => Ok(()),
                }
            }
            Some(t) = next_feed(&mut s.feed) => s.push(&t).await,
            Some(t) = s.updates.next(), if !s.updates.is_empty() => s.push(&t).await,
        };
        if let Err(end) = step {
            break end;
        }
    };
    if let End::Close(code, reason) = end {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, s.tx.send(Message::Close(Some(frame)))).await;
    }
}

async fn next_feed(feed: &mut Option<UserFeed>) -> Option<Arc<TaskSnapshot>> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn send(&mut self, v: Value) -> Result<(), End> {
        self.tx.send(Message::Text(v.to_string().into())).await.map_err(|_| End::Gone)
    }

    /// A ping, after checking that the connection's token still holds.
    async fn heartbeat(&mut self) -> Result<(), End> {
        if let Some(v) = &self.viewer
            && let Err(e) = Box::pin(self.state.accounts.authenticate(&v.token)).await
        {
            let error = ApiError::from(e).message;
            self.send(json!({"type": "auth_expired", "error": error})).await?;
            return Err(End::Close(CLOSE_UNAUTHORIZED, "the access token has expired or was revoked; authenticate again"));
        }
        self.tx.send(Message::Ping(bytes::Bytes::new())).await.map_err(|_| End::Gone)
    }

    async fn push(&mut self, t: &TaskSnapshot) -> Result<(), End> {
        let msg = LiveMessage::from_snapshot(t);
        if self.last.as_ref() == Some(&msg) {
            return Ok(());
        }
        if msg.is_final()
            && let Some(token) = self.followed.remove(&t.id)
        {
            token.cancel();
        }
        let v = serde_json::to_value(&msg).unwrap_or_default();
        self.last = Some(msg);
        self.send(v).await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let reply = match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Ping) => json!({"type": "pong"}),
            Ok(ClientMessage::Auth { token }) => return self.authenticate(token).await,
            Ok(ClientMessage::Subscribe { task_id }) => return self.follow(task_id).await,
            Ok(ClientMessage::Unsubscribe { task_id }) => {
                if let Some(token) = self.followed.remove(&task_id) {
                    token.cancel();
                }
                json!({"type": "unsubscribed", "taskId": task_id})
            }
            Err(e) => json!({"type": "error", "error": format!("unknown message: {e}")}),
        };
        self.send(reply).await
    }

    /// Seed 001's auth message, first or again (a fresh token before the old one expires, or
    /// another account).
    async fn authenticate(&mut self, token: String) -> Result<(), End> {
        match Box::pin(self.state.accounts.authenticate(&token)).await {
            Ok(principal) => {
                let user_id = principal.user_id.clone();
                if self.feed.as_ref().is_none_or(|f| f.user_id() != user_id) {
                    self.feed = Some(self.state.live.subscribe(&user_id));
                }
                self.viewer = Some(Viewer { principal, token });
                self.engaged = true;
                self.send(json!({"type": "auth_ok", "userId": user_id})).await
            }
            Err(e) => {
                self.send(json!({"type": "auth_failed", "error": ApiError::from(e).message})).await?;
                if !self.engaged {
                    return Err(End::Close(CLOSE_UNAUTHORIZED, "authentication failed"));
                }
                Ok(())
            }
        }
    }

    /// Follows a task by id: its current state now, its changes from then on. The user's own
    /// tasks arrive through the feed already and are not followed twice.
    async fn follow(&mut self, task_id: String) -> Result<(), End> {
        let viewer = self.viewer.as_ref().map(|v| &v.principal);
        let task = match Box::pin(self.state.tasks.task(&task_id)).await {
            Ok(Some(t)) if t.visible_to(viewer) => t,
            _ => return self.send(json!({"type": "error", "taskId": task_id, "error": "no such task"})).await,
        };
        let own = viewer.is_some_and(|v| task.owner.as_deref() == Some(v.user_id.as_str()));
        if !own && !self.followed.contains_key(&task_id) {
            if self.followed.len() >= MAX_SUBSCRIPTIONS {
                return self.send(json!({"type": "error", "error": "too many subscriptions (100 per connection)"})).await;
            }
            let current = LiveMessage::from_snapshot(&task);
            if !current.is_final()
                && let Some(changes) = self.state.tasks.watch_task(&task_id)
            {
                let stop = CancellationToken::new();
                self.updates.push(Box::pin(changes.take_until(stop.clone().cancelled_owned())));
                self.followed.insert(task_id.clone(), stop);
            }
        }
        self.engaged = true;
        self.last = None;
        self.push(&task).await?;
        self.send(json!({"type": "subscribed", "taskId": task_id})).await
    }
}
