-- Seed 004's AI postcards (DESIGN section 13): one row per finished postcard task. The row is
-- written in the transaction that completes its task (crates/store/src/postcards.rs), so a
-- postcard exists exactly when its task completed. The task row is not referenced: tasks'
-- retention may purge it while the postcard stays.
--
-- `image_uri` is the postcard's own copy of its picture (`postcards/<id>.<ext>`), apart from
-- the task's output, which the tasks' retention deletes. It is served without a token under
-- `media_key` (256 random bits, hex): the key is the capability, as works' media keys are.
-- `frontend_code` is the rendered card (HTML, every generated or user-given string escaped).
-- Same portability rules as the first migration: TEXT and BIGINT only, times in unix ms.

CREATE TABLE postcards (
    id             TEXT PRIMARY KEY,
    task_id        TEXT NOT NULL UNIQUE,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mood           TEXT NOT NULL,
    style          TEXT NOT NULL,
    theme          TEXT NOT NULL,
    -- The user's free-text wishes, if any.
    extra          TEXT,
    -- The message the chat provider wrote.
    text           TEXT NOT NULL,
    image_uri      TEXT NOT NULL,
    image_type     TEXT NOT NULL,
    media_key      TEXT NOT NULL UNIQUE,
    frontend_code  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- A user's postcards, newest first (`GET /api/v1/postcards/me`, keyset by (created_at, id)).
CREATE INDEX postcards_user_created ON postcards (user_id, created_at, id);
