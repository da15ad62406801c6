-- Uploaded files (seeds 001 and 003, DESIGN sections 10-12): one row per stored file, owned by
-- one user. `id` is 128 random bits in URL-safe base64 (22 characters): it is the file's
-- capability key, so knowing an upload's URL is what grants reading it. The object lives at
-- `uri` in storage (and its JPEG thumbnail, for images from seed 003, at `thumbnail_uri`).
-- `stored_bytes` (file plus thumbnail) is what the per-user storage quota sums; the insert
-- that checks the quota runs under the user's write lock (crates/store/src/uploads.rs).

CREATE TABLE uploads (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    uri            TEXT NOT NULL,
    thumbnail_uri  TEXT,
    -- The client's name for the file, sanitised (no path, no control characters, bounded).
    file_name      TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    bytes          BIGINT NOT NULL CHECK (bytes > 0),
    stored_bytes   BIGINT NOT NULL CHECK (stored_bytes >= bytes),
    width          BIGINT,
    height         BIGINT,
    duration_ms    BIGINT,
    created_at     BIGINT NOT NULL
);

-- A user's files, newest first, and the quota's sum.
CREATE INDEX uploads_user ON uploads (user_id, created_at);
