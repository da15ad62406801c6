-- Providers (issue 13, DESIGN section 13): outside AI services an admin configures, and the
-- generation kinds of the one task table that they run. TEXT/BIGINT only; times are unix ms.

-- Who runs a task: `engine` (the enhancement engine: the in-process dispatcher or the
-- EnhanceTask CRs; also the built-in `purrify` provider's image-to-image) or `provider`
-- (the gateway's provider runner calling an outside service). The engine's queries read
-- only their own rows, so a generation task is never dispatched to a GPU worker.
ALTER TABLE tasks ADD COLUMN runner TEXT NOT NULL DEFAULT 'engine';
-- The provider and model asked for at creation, and the request in our terms (JSON).
ALTER TABLE tasks ADD COLUMN provider TEXT;
ALTER TABLE tasks ADD COLUMN model TEXT;
ALTER TABLE tasks ADD COLUMN job TEXT;
-- The provider that served it (the fallback's id when the first was down), its job id
-- while pending, and what was stored (JSON list of files).
ALTER TABLE tasks ADD COLUMN served_by TEXT;
ALTER TABLE tasks ADD COLUMN remote_id TEXT;
ALTER TABLE tasks ADD COLUMN outputs TEXT;

-- The provider runner's queue and its restart recovery, apart from the engine's.
CREATE INDEX tasks_runner_status ON tasks (runner, status, priority, created_at);
-- Estimated times from measured history: recent completed tasks per provider and model
-- (the built-in provider's run on the engine and count too).
CREATE INDEX tasks_provider_finished ON tasks (provider, model, finished_at) WHERE provider IS NOT NULL;

CREATE TABLE providers (
    -- `stability`, `dalle`, an admin's custom id.
    id            TEXT NOT NULL PRIMARY KEY,
    -- What it makes (seed 003's `type`), plus `workflow` for seed 001's webhook tasks.
    kind          TEXT NOT NULL CHECK (kind IN ('image', 'video', 'assistant', 'workflow')),
    name          TEXT NOT NULL,
    protocol      TEXT NOT NULL CHECK (protocol IN ('purrify', 'openai', 'stability', 'runway', 'webhook')),
    base_url      TEXT NOT NULL,
    -- JSON list of model names; the first is the default.
    models        TEXT NOT NULL,
    enabled       BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    -- Another provider of the same kind to use while this one is down.
    fallback      TEXT,
    -- The API key sealed with the configured key (AES-256-GCM, base64 of nonce|ciphertext);
    -- write-only: never returned, never logged.
    api_key_sealed TEXT,
    -- Free-form protocol options (JSON object).
    options       TEXT NOT NULL DEFAULT '{}',
    builtin       BIGINT NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Signed webhook callbacks seen (seed 001's /api/callback/task-*): a signature is accepted
-- once within the timestamp tolerance; rows older than it are purged.
CREATE TABLE webhook_replays (
    signature     TEXT NOT NULL PRIMARY KEY,
    seen_at       BIGINT NOT NULL
);
CREATE INDEX webhook_replays_seen ON webhook_replays (seen_at);
