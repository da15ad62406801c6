-- Task management (issue 12, seeds 001 and 002): what the detail and list endpoints show of a
-- task beyond its lifecycle, the indexes behind their filters and sorts, and scenes (named
-- presets of task parameters). TEXT/BIGINT/DOUBLE PRECISION only; times are unix ms.

-- The task kind (DESIGN section 10: one task table; `enhance` runs on GPU workers, the
-- generation kinds come later).
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'enhance';
-- Seed 002's free-text title and description.
ALTER TABLE tasks ADD COLUMN title TEXT;
ALTER TABLE tasks ADD COLUMN description TEXT;
-- The scene whose preset made the task (seed 001), if any; kept when the scene is deleted.
ALTER TABLE tasks ADD COLUMN scene_id TEXT;
-- Where the task's outcome is POSTed (signed) when it finishes.
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
-- A retry is a new task: this names the failed or cancelled task it runs again. A task is
-- retried once (retry the retry to go again), so a double click cannot charge twice.
ALTER TABLE tasks ADD COLUMN retry_of TEXT;
-- Seed 002's estimated_duration, in seconds, as the client gave it.
ALTER TABLE tasks ADD COLUMN estimated_seconds BIGINT;
-- Set when the owner deleted the (finished) task: hidden from every list and detail; the row
-- and its objects go with the retention housekeeping.
ALTER TABLE tasks ADD COLUMN hidden_at BIGINT;

CREATE UNIQUE INDEX tasks_retry_of ON tasks (retry_of);

-- Lists (seed 002 `GET /api/tasks`, seed 001 `/api/tasks/user/list`, `/api/admin/tasks`):
-- one user's tasks, optionally of one status, newest change or creation first; every user's
-- tasks likewise for admins. Priority sorts and kind filters are served from a user's rows
-- (few) or scan the status range.
CREATE INDEX tasks_user_updated ON tasks (user_id, updated_at);
CREATE INDEX tasks_user_status_updated ON tasks (user_id, status, updated_at);
CREATE INDEX tasks_user_status_created ON tasks (user_id, status, created_at);
CREATE INDEX tasks_updated ON tasks (updated_at);
CREATE INDEX tasks_created ON tasks (created_at);
CREATE INDEX tasks_status_updated ON tasks (status, updated_at);
CREATE INDEX tasks_status_created ON tasks (status, created_at);
-- Page totals over every user (admins): a covering index, far smaller than the table.
CREATE INDEX tasks_hidden_status ON tasks (hidden_at, status);
-- Average wait of recently started tasks (queue statistics).
CREATE INDEX tasks_started ON tasks (started_at);

CREATE TABLE scenes (
    id             TEXT NOT NULL PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    cover_url      TEXT,
    -- The task kind it makes; its price is the kind's unless `price` is set.
    kind           TEXT NOT NULL DEFAULT 'enhance',
    -- JSON of the enhance parameters (quality_level, scale, face_enhance, tile_size).
    params         TEXT NOT NULL,
    -- Hundredths of a credit per task; NULL: the kind's price (`price_<kind>` setting).
    price          BIGINT CHECK (price IS NULL OR price >= 0),
    sort_order     BIGINT NOT NULL DEFAULT 0,
    active         BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE INDEX scenes_active_sort ON scenes (active, sort_order, created_at);
