-- Client webhooks (issue 12): the delivery of a task's `callback_url` (set at creation, see
-- 20261202070000_task_management.sql) once the task finished. One row per task, created when
-- the task's end is seen (the hub event, or the periodic sweep of finished tasks with a
-- callback_url and no row yet). TEXT/BIGINT only; times are unix milliseconds.

CREATE TABLE callback_deliveries (
    task_id          TEXT NOT NULL PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    -- The URL as it was when the delivery was created.
    url              TEXT NOT NULL,
    -- Attempts made (claimed) so far.
    attempts         BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is due. Claiming an attempt moves it forward by a lease (one
    -- request timeout and a margin), so a gateway that dies mid-attempt leaves it due again
    -- later; the claim is one conditional UPDATE naming the attempts it saw, so two gateways
    -- never both send the same attempt.
    next_attempt_at  BIGINT NOT NULL,
    -- HTTP status of the last attempt (NULL: no response: refused address, connection error,
    -- timeout), and what went wrong with it.
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    given_up_at      BIGINT,
    created_at       BIGINT NOT NULL
);

-- Due deliveries (neither delivered nor given up), by due time.
CREATE INDEX callback_deliveries_due ON callback_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
-- The sweep for finished tasks with a callback_url: only such tasks are indexed.
CREATE INDEX tasks_callback_finished ON tasks (finished_at) WHERE callback_url IS NOT NULL;
