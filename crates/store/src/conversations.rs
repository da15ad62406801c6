//! The assistant's conversations (seed 003's `/api/v1/assistant/*`): `conversations`, one per
//! chat a user started, and `conversation_messages`, its turns in order. Messages get their
//! `seq` under the conversation's write lock ([`Db::begin_write`]), so two requests in one
//! conversation at once never take the same place, and a conversation's length limit holds
//! under concurrency.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::{Db, StoreError, WriteTx};

/// Characters of the last message a conversation list carries (a preview, not the text).
pub const PREVIEW_CHARS: usize = 100;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub user_id: String,
    pub title: String,
    pub created_at: i64,
    /// When its latest message was stored.
    pub updated_at: i64,
}

/// A conversation as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub message_count: u64,
    /// The first [`PREVIEW_CHARS`] characters of the latest message.
    pub last_message: Option<String>,
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub role: MessageRole,
    pub content: String,
    /// False for an answer cut short.
    pub complete: bool,
    /// Who answered (assistant messages).
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    pub conversation_id: String,
    /// 1, 2, ... in the conversation's order.
    pub seq: i64,
    pub role: MessageRole,
    pub content: String,
    pub complete: bool,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub created_at: i64,
}

const CONVERSATION_COLUMNS: &str = "id, user_id, title, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "conversation_id, seq, role, content, complete, provider, model, created_at";

fn conversation_from_row(row: &AnyRow) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<ConversationMessage, StoreError> {
    let role: String = row.try_get("role")?;
    let complete: i64 = row.try_get("complete")?;
    Ok(ConversationMessage {
        conversation_id: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        role: MessageRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("conversation_messages.role = {role:?}")))?,
        content: row.try_get("content")?,
        complete: complete != 0,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        created_at: row.try_get("created_at")?,
    })
}

fn write_scope(conversation_id: &str) -> String {
    format!("conversation:{conversation_id}")
}

/// Appends `m` as message `seq` and moves the conversation's activity time to it.
async fn insert_message(tx: &mut WriteTx, conversation_id: &str, seq: i64, m: &NewMessage) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversation_messages (conversation_id, seq, role, content, complete, provider, model, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(conversation_id)
    .bind(seq)
    .bind(m.role.as_str())
    .bind(&m.content)
    .bind(i64::from(m.complete))
    .bind(m.provider.as_deref())
    .bind(m.model.as_deref())
    .bind(m.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1")
        .bind(conversation_id)
        .bind(m.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Db {
    /// Creates `conversation` with its first message (seq 1), together.
    pub async fn start_conversation(&self, conversation: &Conversation, first: &NewMessage) -> Result<(), StoreError> {
        let mut tx = self.begin_write(&write_scope(&conversation.id)).await?;
        let done = sqlx::query("INSERT INTO conversations (id, user_id, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&conversation.id)
            .bind(&conversation.user_id)
            .bind(&conversation.title)
            .bind(conversation.created_at)
            .bind(conversation.updated_at)
            .execute(&mut *tx)
            .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!("conversation {}", conversation.id)));
            }
            Err(e) => return Err(e.into()),
        }
        insert_message(&mut tx, &conversation.id, 1, first).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends `m` to `user_id`'s conversation `conversation_id` and returns its `seq`;
    /// `None` when there is no such conversation of that user. With `limit`, a conversation
    /// already holding that many messages takes no more ([`StoreError::LimitReached`]).
    pub async fn append_message(
        &self,
        user_id: &str,
        conversation_id: &str,
        m: &NewMessage,
        limit: Option<u64>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write(&write_scope(conversation_id)).await?;
        let owned = sqlx::query("SELECT id FROM conversations WHERE id = $1 AND user_id = $2")
            .bind(conversation_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS last \
             FROM conversation_messages WHERE conversation_id = $1",
        )
        .bind(conversation_id)
        .fetch_one(&mut *tx)
        .await?;
        let (count, last): (i64, i64) = (row.try_get("n")?, row.try_get("last")?);
        if let Some(limit) = limit
            && u64::try_from(count).unwrap_or(0) >= limit
        {
            return Err(StoreError::LimitReached(format!("conversation {conversation_id} holds {count} messages (limit {limit})")));
        }
        let seq = last + 1;
        insert_message(&mut tx, conversation_id, seq, m).await?;
        tx.commit().await?;
        Ok(Some(seq))
    }

    /// Takes back message `seq` (a request that failed before its answer began leaves
    /// nothing behind): the conversation's activity time returns to its latest remaining
    /// message, and a conversation left empty is deleted.
    pub async fn withdraw_message(&self, conversation_id: &str, seq: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write(&write_scope(conversation_id)).await?;
        sqlx::query("DELETE FROM conversation_messages WHERE conversation_id = $1 AND seq = $2")
            .bind(conversation_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let latest: Option<i64> =
            sqlx::query("SELECT CAST(MAX(created_at) AS BIGINT) AS latest FROM conversation_messages WHERE conversation_id = $1")
                .bind(conversation_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("latest")?;
        match latest {
            Some(t) => {
                sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1")
                    .bind(conversation_id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?
            }
            None => sqlx::query("DELETE FROM conversations WHERE id = $1").bind(conversation_id).execute(&mut *tx).await?,
        };
        tx.commit().await?;
        Ok(())
    }

    /// `user_id`'s conversation `id`; `None` when it is not theirs or does not exist.
    pub async fn user_conversation(&self, user_id: &str, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2")))
                .bind(id)
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// A page of `user_id`'s conversations, most recently active first, each with its
    /// message count and a preview of its latest message.
    pub async fn conversations(&self, user_id: &str, page: PageRequest) -> Result<Page<ConversationSummary>, StoreError> {
        let total: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM conversations WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        // The preview length is a constant in the SQL: PostgreSQL has no substr(text, bigint).
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.id, c.user_id, c.title, c.created_at, c.updated_at, \
             (SELECT CAST(COUNT(*) AS BIGINT) FROM conversation_messages m WHERE m.conversation_id = c.id) AS message_count, \
             (SELECT SUBSTR(m.content, 1, {PREVIEW_CHARS}) FROM conversation_messages m WHERE m.conversation_id = c.id \
              ORDER BY m.seq DESC LIMIT 1) AS last_message \
             FROM conversations c WHERE c.user_id = $1 ORDER BY c.updated_at DESC, c.id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(user_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                let count: i64 = row.try_get("message_count")?;
                Ok(ConversationSummary {
                    conversation: conversation_from_row(row)?,
                    message_count: u64::try_from(count).unwrap_or(0),
                    last_message: row.try_get("last_message")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// A conversation's messages in order: all of them, or with `last` only the latest that
    /// many (still oldest first).
    pub async fn conversation_messages(&self, conversation_id: &str, last: Option<u32>) -> Result<Vec<ConversationMessage>, StoreError> {
        // The latest `last` newest first, turned back into order below.
        let sql = match last {
            None => format!("SELECT {MESSAGE_COLUMNS} FROM conversation_messages WHERE conversation_id = $1 ORDER BY seq"),
            Some(_) => format!("SELECT {MESSAGE_COLUMNS} FROM conversation_messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT $2"),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(conversation_id);
        if let Some(n) = last {
            query = query.bind(i64::from(n));
        }
        let mut messages = query.fetch_all(self.pool()).await?.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        if last.is_some() {
            messages.reverse();
        }
        Ok(messages)
    }
}
