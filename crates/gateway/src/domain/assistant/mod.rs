//! The AI assistant (DESIGN section 13, seed 003's `/api/v1/assistant/*`): a user's message
//! goes to the configured chat provider with the conversation's recent history, and the
//! provider's tokens come back as a stream of [`ChatEvent`]s that the HTTP layer relays as
//! Server-Sent Events. Conversations persist:
//!
//! - The user's message is stored before the provider is called. When the call fails before
//!   the answer starts (no chat provider configured, every provider down), the message is
//!   taken back and the request fails as a whole: an error status leaves nothing behind, and
//!   a new conversation that never got an answer does not exist.
//! - Once the answer streams, the user's message stays. The answer is stored when the stream
//!   ends: complete, or, when the provider fails mid-answer, the client goes away or the
//!   gateway shuts down, with what arrived marked incomplete (nothing, when nothing arrived).
//! - The stream owns the provider's token stream: dropping it (a client that disconnects)
//!   drops the upstream request. A provider silent for [`AssistantSettings::idle_timeout`]
//!   ends the stream with an error event, so no connection hangs.
//!
//! Bounds: a message of at most [`AssistantSettings::max_message_chars`]; the provider sees
//! at most [`AssistantSettings::history_messages`] messages and
//! [`AssistantSettings::history_chars`] characters of history (oldest dropped first); a
//! conversation holds at most [`AssistantSettings::max_conversation_messages`].

mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use purrify_store::conversations::{Conversation, MessageRole, NewMessage};
pub use purrify_store::conversations::{ConversationMessage, ConversationSummary};
use purrify_store::{Db, StoreError, now_ms};
use tokio_util::sync::CancellationToken;

use crate::domain::accounts::{Page, PageRequest};
use crate::domain::providers::adapter::{BoxFut, ChatMessage};
use crate::domain::providers::{ChatReply, ProviderService};
use crate::domain::{DomainError, DomainResult};

/// What the client sees of an answer, in order: tokens, then exactly one of `Done` or
/// `Error`, then the end of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    Token(String),
    /// The answer is complete and stored.
    Done {
        conversation_id: String,
    },
    /// The answer ended early (what arrived is stored, marked incomplete); the message is
    /// safe to show.
    Error {
        conversation_id: String,
        message: String,
    },
}

/// Where answers come from: the provider service in the gateway, a hand-made stream in
/// tests. It resolves once an answer has started (retries and fallback happen before), or
/// fails with [`DomainError::Unavailable`] when no provider can answer.
pub trait ChatSource: Send + Sync + 'static {
    fn chat(&self, messages: Vec<ChatMessage>) -> BoxFut<'_, DomainResult<ChatReply>>;
}

impl ChatSource for ProviderService {
    fn chat(&self, messages: Vec<ChatMessage>) -> BoxFut<'_, DomainResult<ChatReply>> {
        Box::pin(ProviderService::chat(self, messages))
    }
}

#[derive(Debug, Clone)]
pub struct AssistantSettings {
    /// Longest message a user may send, in characters.
    pub max_message_chars: usize,
    /// Most messages of a conversation sent to the provider (the new one included).
    pub history_messages: u32,
    /// Most characters of history sent to the provider; older messages are dropped first,
    /// the new message always goes.
    pub history_chars: usize,
    /// Most messages a conversation holds (questions and answers).
    pub max_conversation_messages: u64,
    /// Longest answer kept; a provider that goes on is stopped there.
    pub max_answer_chars: usize,
    /// Characters of the first message that make a conversation's title.
    pub title_chars: usize,
    /// How long the provider may stay silent in the middle of an answer.
    pub idle_timeout: Duration,
    /// Sent first, as the `system` message, when set.
    pub system_prompt: Option<String>,
}

impl Default for AssistantSettings {
    fn default() -> Self {
        Self {
            max_message_chars: 8_000,
            history_messages: 20,
            history_chars: 24_000,
            max_conversation_messages: 200,
            max_answer_chars: 64_000,
            title_chars: 30,
            idle_timeout: Duration::from_secs(120),
            system_prompt: None,
        }
    }
}

/// Cheap to clone; clones share one service.
#[derive(Clone)]
pub struct AssistantService {
    db: Db,
    source: Arc<dyn ChatSource>,
    settings: Arc<AssistantSettings>,
}

/// A conversation with its messages, in order.
#[derive(Debug, Clone)]
pub struct ConversationDetail {
    pub conversation: Conversation,
    pub messages: Vec<ConversationMessage>,
}

impl AssistantService {
    pub fn new(db: Db, source: Arc<dyn ChatSource>, settings: AssistantSettings) -> Self {
        Self { db, source, settings: Arc::new(settings) }
    }

    pub fn settings(&self) -> &AssistantSettings {
        &self.settings
    }

    /// Sends `message` (in a new conversation, or continuing `user_id`'s `conversation_id`)
    /// and returns the answer as it streams. Errors here come before anything is streamed:
    /// a bad message, someone else's or a missing conversation, no provider. `stop` ends the
    /// stream early (the gateway draining).
    pub async fn chat(
        &self,
        user_id: &str,
        message: &str,
        conversation_id: Option<&str>,
        stop: CancellationToken,
    ) -> DomainResult<BoxStream<'static, ChatEvent>> {
        let message = self.check_message(message)?;
        let now = now_ms();
        let question =
            NewMessage { role: MessageRole::User, content: message, complete: true, provider: None, model: None, created_at: now };
        let (conversation_id, seq) = match conversation_id.map(str::trim).filter(|c| !c.is_empty()) {
            Some(id) => (id.to_owned(), self.append_question(user_id, id, &question).await?),
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let title = title_of(&question.content, self.settings.title_chars);
                let c = Conversation { id: id.clone(), user_id: user_id.to_owned(), title, created_at: now, updated_at: now };
                self.db.start_conversation(&c, &question).await?;
                (id, 1)
            }
        };
        let history = self.db.conversation_messages(&conversation_id, Some(self.settings.history_messages)).await;
        let started = match history {
            Ok(history) => self.source.chat(self.upstream_messages(&history)).await,
            Err(e) => Err(e.into()),
        };
        let answer = match started {
            Ok(a) => a,
            Err(e) => {
                if let Err(w) = self.db.withdraw_message(&conversation_id, seq).await {
                    tracing::warn!(conversation = %conversation_id, error = %w, "a failed chat request's message could not be taken back");
                }
                return Err(e);
            }
        };
        let pending = relay::PendingAnswer::new(self.db.clone(), user_id.to_owned(), conversation_id, answer.provider, answer.model);
        Ok(relay::relay(pending, answer.tokens, stop, self.settings.idle_timeout, self.settings.max_answer_chars))
    }

    /// A page of `user_id`'s conversations, most recently active first.
    pub async fn conversations(&self, user_id: &str, page: PageRequest) -> DomainResult<Page<ConversationSummary>> {
        Ok(self.db.conversations(user_id, page).await?)
    }

    /// One of `user_id`'s conversations with its messages; anyone else's is missing.
    pub async fn conversation(&self, user_id: &str, id: &str) -> DomainResult<ConversationDetail> {
        let conversation = self.db.user_conversation(user_id, id).await?.ok_or_else(not_found)?;
        let messages = self.db.conversation_messages(id, None).await?;
        Ok(ConversationDetail { conversation, messages })
    }

    fn check_message(&self, message: &str) -> DomainResult<String> {
        let message = message.trim();
        if message.is_empty() {
            return Err(DomainError::invalid("message", "must not be empty"));
        }
        let chars = message.chars().count();
        let max = self.settings.max_message_chars;
        if chars > max {
            return Err(DomainError::invalid("message", format!("is {chars} characters long; at most {max} are accepted")));
        }
        Ok(message.to_owned())
    }

    /// Appends the user's message to their conversation, leaving room for its answer.
    async fn append_question(&self, user_id: &str, id: &str, question: &NewMessage) -> DomainResult<i64> {
        let limit = self.settings.max_conversation_messages.saturating_sub(1);
        match self.db.append_message(user_id, id, question, Some(limit)).await {
            Ok(Some(seq)) => Ok(seq),
            Ok(None) => Err(not_found()),
            Err(StoreError::LimitReached(_)) => Err(DomainError::invalid(
                "conversationId",
                format!("this conversation has reached {} messages; start a new one", self.settings.max_conversation_messages),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// What the provider is sent: the system prompt, then the latest messages that fit the
    /// character budget (the newest, the user's question, always).
    fn upstream_messages(&self, history: &[ConversationMessage]) -> Vec<ChatMessage> {
        let mut budget = self.settings.history_chars;
        let mut kept = Vec::new();
        for m in history.iter().rev() {
            let chars = m.content.chars().count();
            if !kept.is_empty() && chars > budget {
                break;
            }
            budget = budget.saturating_sub(chars);
            kept.push(ChatMessage { role: m.role.as_str().to_owned(), content: m.content.clone() });
        }
        let system = self.settings.system_prompt.iter().map(|p| ChatMessage { role: "system".into(), content: p.clone() });
        system.chain(kept.into_iter().rev()).collect()
    }
}

fn not_found() -> DomainError {
    DomainError::NotFound("conversation not found".into())
}

/// A conversation's title: the first message's first `chars` characters, its whitespace
/// runs (line breaks included) as single spaces, with an ellipsis when cut.
pub fn title_of(message: &str, chars: usize) -> String {
    let words = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= chars {
        return words;
    }
    let mut title: String = words.chars().take(chars).collect::<String>().trim_end().to_owned();
    title.push('…');
    title
}
