-- Quotas (seed 003, DESIGN section 12): how many generations and API calls each user made
-- in the current window. One row per (user, bucket, window); a bucket names what is counted
-- and the window's length (`image:day`, `video:day`, `api:hour`), and `window_start` is the
-- window's first millisecond, aligned to the UTC hour or day. A new window is a new row, so
-- nothing ever resets a counter; old rows are purged.

CREATE TABLE quota_counters (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bucket        TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    -- Only ever raised by the conditional upsert in crates/store/src/quotas.rs, which never
    -- takes it past the limit in force.
    count         BIGINT NOT NULL CHECK (count >= 0),
    PRIMARY KEY (user_id, bucket, window_start)
);

-- The purge of old windows.
CREATE INDEX quota_counters_window ON quota_counters (window_start);
