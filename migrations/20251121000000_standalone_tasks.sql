-- Standalone mode (DESIGN sections 1 and 3): tasks, webhook-registered GPU servers and the
-- /api/v1/config settings. The same file runs on SQLite and PostgreSQL, so it sticks to
-- TEXT, BIGINT and DOUBLE PRECISION (no BOOLEAN, no timestamp types: times are unix
-- milliseconds), and to syntax both accept.

CREATE TABLE tasks (
    id             TEXT NOT NULL PRIMARY KEY,
    status         TEXT NOT NULL
                   CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress       DOUBLE PRECISION NOT NULL DEFAULT 0,
    input_uri      TEXT NOT NULL,
    output_uri     TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    input_bytes    BIGINT NOT NULL DEFAULT 0,
    -- JSON of purrify_inference::protocol::EnhanceParams.
    params         TEXT NOT NULL,
    priority       BIGINT NOT NULL DEFAULT 0,
    user_id        TEXT,
    -- Fair queuing within a priority (start-time fair queuing, unit cost per task): the
    -- group is the user ('' for anonymous uploads); the tag is assigned at insert as
    -- max(virtual time, the group's last tag + 1), where the virtual time is the smallest
    -- tag still queued. Dispatch goes by tag, so a burst gets consecutive tags while other
    -- users' tasks slot in between instead of waiting behind it.
    fair_group     TEXT NOT NULL DEFAULT '',
    fair_tag       BIGINT NOT NULL DEFAULT 0,
    worker         TEXT,
    job_id         TEXT,
    attempts       BIGINT NOT NULL DEFAULT 0,
    error_code     TEXT,
    error_message  TEXT,
    -- JSON of purrify_inference::protocol::JobResult.
    result         TEXT,
    request_id     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT,
    deadline_at    BIGINT NOT NULL
);

-- Dispatch order (queued by priority, then fair tag, then age), the virtual time of a
-- priority, a group's last tag, and the processing/deadline scans.
CREATE INDEX tasks_status_priority_tag ON tasks (status, priority, fair_tag, created_at);
CREATE INDEX tasks_priority_tag ON tasks (priority, fair_tag);
CREATE INDEX tasks_group_priority_tag ON tasks (fair_group, priority, fair_tag);
CREATE INDEX tasks_status_deadline ON tasks (status, deadline_at);
-- Housekeeping of finished tasks.
CREATE INDEX tasks_status_finished ON tasks (status, finished_at);
-- A user's history.
CREATE INDEX tasks_user_created ON tasks (user_id, created_at);

CREATE TABLE gpu_servers (
    id             TEXT NOT NULL PRIMARY KEY,
    ip             TEXT NOT NULL,
    port           BIGINT NOT NULL,
    url            TEXT NOT NULL UNIQUE,
    registered_at  BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    UNIQUE (ip, port)
);

CREATE TABLE settings (
    name           TEXT NOT NULL PRIMARY KEY,
    value          TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);
