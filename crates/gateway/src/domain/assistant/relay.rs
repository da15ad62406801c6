//! Relaying one answer: the provider's tokens become [`ChatEvent`]s, and the answer is stored
//! however the stream ends. The returned stream owns the token stream, so dropping it (the
//! client went away) drops the upstream request; [`PendingAnswer`]'s `Drop` then stores what
//! had arrived, marked incomplete.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use purrify_store::conversations::{MessageRole, NewMessage};
use purrify_store::{Db, now_ms};
use tokio_util::sync::CancellationToken;

use super::ChatEvent;
use crate::domain::providers::adapter::TokenStream;

/// An answer being received: what arrived so far and where it goes.
pub(super) struct PendingAnswer {
    db: Db,
    user_id: String,
    conversation_id: String,
    provider: String,
    model: String,
    text: String,
    /// Set once the answer's storage is under way, so `Drop` does not store it again.
    settled: bool,
}

impl PendingAnswer {
    pub(super) fn new(db: Db, user_id: String, conversation_id: String, provider: String, model: String) -> Self {
        Self { db, user_id, conversation_id, provider, model, text: String::new(), settled: false }
    }

    /// Stores the answer (an incomplete one only when something arrived). The write runs as
    /// its own task: a client leaving while it runs cannot cut it off.
    async fn settle(&mut self, complete: bool) -> bool {
        match self.spawn_store(complete) {
            Some(write) => write.await.unwrap_or(false),
            None => true,
        }
    }

    fn spawn_store(&mut self, complete: bool) -> Option<tokio::task::JoinHandle<bool>> {
        if self.settled || (!complete && self.text.is_empty()) {
            self.settled = true;
            return None;
        }
        self.settled = true;
        let message = NewMessage {
            role: MessageRole::Assistant,
            content: std::mem::take(&mut self.text),
            complete,
            provider: Some(self.provider.clone()),
            model: Some(self.model.clone()),
            created_at: now_ms(),
        };
        let (db, user_id, conversation_id) = (self.db.clone(), self.user_id.clone(), self.conversation_id.clone());
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(runtime.spawn(async move {
            match db.append_message(&user_id, &conversation_id, &message, None).await {
                Ok(Some(_)) => true,
                Ok(None) => {
                    tracing::warn!(conversation = %conversation_id, "the conversation was gone when its answer was stored");
                    false
                }
                Err(e) => {
                    tracing::warn!(conversation = %conversation_id, error = %e, "an assistant answer could not be stored");
                    false
                }
            }
        }))
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        // The stream was dropped mid-answer: keep what the client saw.
        drop(self.spawn_store(false));
    }
}

/// How the provider's part ended.
enum End {
    Complete,
    /// Cut short; the message is for the client.
    Cut(String),
}

/// The answer's events: a `Token` per non-empty fragment, then `Done` once the complete
/// answer is stored, or `Error` when it ended early (provider error, silence longer than
/// `idle`, more than `max_chars`, `stop`).
pub(super) fn relay(
    mut pending: PendingAnswer,
    mut tokens: TokenStream,
    stop: CancellationToken,
    idle: Duration,
    max_chars: usize,
) -> BoxStream<'static, ChatEvent> {
    async_stream::stream! {
        let mut chars = 0usize;
        let end = loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => break End::Cut("the server is shutting down; please ask again".into()),
                next = tokio::time::timeout(idle, tokens.next()) => next,
            };
            match next {
                Err(_) => break End::Cut("the assistant stopped answering".into()),
                Ok(None) => break End::Complete,
                Ok(Some(Err(e))) => {
                    tracing::warn!(conversation = %pending.conversation_id, provider = %pending.provider, error = %e,
                        category = e.category(), "the assistant's provider failed mid-answer");
                    break End::Cut(format!("the assistant's answer was interrupted: {e}"));
                }
                Ok(Some(Ok(token))) => {
                    if token.is_empty() {
                        continue;
                    }
                    chars += token.chars().count();
                    if chars > max_chars {
                        break End::Cut(format!("the answer was longer than {max_chars} characters and was cut there"));
                    }
                    pending.text.push_str(&token);
                    yield ChatEvent::Token(token);
                }
            }
        };
        // The provider's request ends here, before the database write.
        drop(tokens);
        let conversation_id = pending.conversation_id.clone();
        let complete = matches!(end, End::Complete);
        let stored = pending.settle(complete).await;
        yield match end {
            End::Complete if stored => ChatEvent::Done { conversation_id },
            End::Complete => ChatEvent::Error { conversation_id, message: "the answer could not be saved; please ask again".into() },
            End::Cut(message) => ChatEvent::Error { conversation_id, message },
        };
    }
    .boxed()
}
