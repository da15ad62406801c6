-- The AI assistant's conversations (seed 003's `/api/v1/assistant/*`, DESIGN section 13):
-- one row per conversation, owned by one user, and its messages in order. `updated_at` is
-- the time of its latest message: the list shows conversations newest first by it. The
-- message count and the last message are read from `conversation_messages` when listing
-- (one indexed probe per listed conversation), so no counter can drift from the messages.

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The first message's first characters.
    title       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- A user's conversations, most recently active first.
CREATE INDEX conversations_user ON conversations (user_id, updated_at);

-- `seq` orders a conversation's messages (1, 2, ...); it is assigned under the
-- conversation's write lock (crates/store/src/conversations.rs). `complete` is 0 for an
-- assistant answer cut short (the provider failed mid-stream, the client went away, the
-- gateway shut down): what arrived is kept and marked. `provider` and `model` name who
-- answered (assistant messages only).
CREATE TABLE conversation_messages (
    conversation_id  TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content          TEXT NOT NULL,
    complete         BIGINT NOT NULL DEFAULT 1 CHECK (complete IN (0, 1)),
    provider         TEXT,
    model            TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
