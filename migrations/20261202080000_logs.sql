-- Logs (seed 002's /api/logs/*, issue 12): the gateway's own log events at INFO and above,
-- what users did (logins, admin actions, payments, deletions), and each task's timeline.
-- None of them ever holds a secret: fields named like one are dropped before they are
-- written (crates/gateway/src/domain/logs). Rows older than PURRIFY_LOG_RETENTION_DAYS are
-- deleted in bounded batches by the housekeeping loop; `created_at` indexes serve that and
-- the date filters.

CREATE TABLE system_logs (
    id          TEXT NOT NULL PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    -- Seed 002's words: DEBUG, INFO, WARNING, ERROR, CRITICAL.
    level       TEXT NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    -- The event's module path (`purrify_gateway::domain::tasks`).
    target      TEXT NOT NULL,
    message     TEXT NOT NULL,
    -- JSON object of the event's structured fields, secrets removed.
    fields      TEXT NOT NULL DEFAULT '{}',
    request_id  TEXT
);

CREATE INDEX system_logs_created ON system_logs (created_at);
CREATE INDEX system_logs_level_created ON system_logs (level, created_at);

CREATE TABLE user_actions (
    id           TEXT NOT NULL PRIMARY KEY,
    created_at   BIGINT NOT NULL,
    -- No reference to users: failed logins of unknown accounts have no user, and the record
    -- of what an account did outlives the account.
    user_id      TEXT,
    -- login, login_failed, create, update, delete, admin_create, admin_update, admin_delete,
    -- order_paid, refund.
    action       TEXT NOT NULL,
    method       TEXT,
    -- The route template (`/api/works/{id}`), never the raw path or query.
    route        TEXT,
    -- The id the route names, when it names one.
    target_id    TEXT,
    status       BIGINT,
    client_addr  TEXT,
    -- JSON object of details (the login method, an order's amount), secrets removed.
    detail       TEXT NOT NULL DEFAULT '{}',
    request_id   TEXT
);

CREATE INDEX user_actions_created ON user_actions (created_at);
CREATE INDEX user_actions_user_created ON user_actions (user_id, created_at);
CREATE INDEX user_actions_action_created ON user_actions (action, created_at);

CREATE TABLE task_events (
    task_id     TEXT NOT NULL,
    -- Names the event within the task, so the same event seen twice (two gateway replicas
    -- watching the same custom resources, a replayed broadcast) is stored once:
    -- `queued:<attempts so far>`, `dispatched:<attempt>`, `progress:<attempt>:<25|50|75>`,
    -- `completed`, `failed:<attempts>`, `cancelled`.
    event_key   TEXT NOT NULL,
    -- queued, dispatched, progress, completed, failed, cancelled.
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    attempt     BIGINT NOT NULL DEFAULT 0,
    worker      TEXT,
    progress    DOUBLE PRECISION,
    error_code  TEXT,
    message     TEXT,
    PRIMARY KEY (task_id, event_key)
);

CREATE INDEX task_events_created ON task_events (created_at);
