-- Works (DESIGN section 10, "one works table"): what a logged-in user keeps of their tasks.
-- A work exists from the moment its task is seen and its status follows the task; only a
-- completed work has a file and a thumbnail, copied into the works' own storage so the
-- tasks' retention never takes a kept work's file. Deleting a work hides it at once
-- (`deleted_at`) and queues its objects in `storage_deletions`; a sweeper deletes them,
-- retrying storage failures, and then purges the row. Same portability rules as the first
-- migration: TEXT, BIGINT and DOUBLE PRECISION only, times in unix milliseconds, flags 0/1.

CREATE TABLE works (
    id              TEXT NOT NULL PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id),
    -- One work per task: recording a task twice (an event and the sweep, two replicas) is
    -- a no-op.
    task_id         TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    title           TEXT NOT NULL,
    -- The task's status, in the core's words; surfaces map them onto their own.
    status          TEXT NOT NULL
                    CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    error_message   TEXT,
    -- Random, unguessable: the key of the file and thumbnail URLs, which clients load
    -- without an Authorization header (an <image> tag cannot send one).
    media_key       TEXT NOT NULL UNIQUE,
    -- Set once the work is completed.
    output_uri      TEXT,
    content_type    TEXT,
    width           BIGINT,
    height          BIGINT,
    file_size       BIGINT,
    -- Set once, when the thumbnail was made; attempts and the next try while it was not.
    thumbnail_uri   TEXT,
    thumb_attempts  BIGINT NOT NULL DEFAULT 0,
    thumb_retry_at  BIGINT,
    is_favorite     BIGINT NOT NULL DEFAULT 0 CHECK (is_favorite IN (0, 1)),
    is_public       BIGINT NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1)),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT
);

-- A user's list (newest first, optionally by status) and the admin list, over visible works
-- only (partial indexes: a list's count then never visits the rows); works whose task has
-- moved on, thumbnails due, and deleted works to purge.
CREATE INDEX works_user_created ON works (user_id, created_at) WHERE deleted_at IS NULL;
CREATE INDEX works_user_status_created ON works (user_id, status, created_at) WHERE deleted_at IS NULL;
CREATE INDEX works_created ON works (created_at) WHERE deleted_at IS NULL;
CREATE INDEX works_status ON works (status);
CREATE INDEX works_thumb_retry ON works (thumb_retry_at);
CREATE INDEX works_deleted ON works (deleted_at) WHERE deleted_at IS NOT NULL;

-- Storage objects to delete, with retries: a row leaves only once its object is gone.
CREATE TABLE storage_deletions (
    uri             TEXT NOT NULL PRIMARY KEY,
    -- The deleted work it belonged to (its row is purged once none is left).
    work_id         TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);

CREATE INDEX storage_deletions_due ON storage_deletions (next_attempt_at);
CREATE INDEX storage_deletions_work ON storage_deletions (work_id);
