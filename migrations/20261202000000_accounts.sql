-- Accounts (DESIGN section 11): one users table for every surface, refresh-token families,
-- and each task's price so a user's spending comes from the task table. Same portability
-- rules as the first migration: TEXT, BIGINT and DOUBLE PRECISION only, times in unix
-- milliseconds, flags as 0/1.

CREATE TABLE users (
    id              TEXT NOT NULL PRIMARY KEY,
    -- Case-folded (trimmed, lower-cased) so Alice@Example.com and alice@example.com are one
    -- account.
    email           TEXT UNIQUE,
    -- argon2id PHC string; NULL for WeChat-only accounts.
    password_hash   TEXT,
    -- The WeChat identity: openid is unique per mini-program app id, unionid across the
    -- developer's apps.
    wechat_appid    TEXT,
    wechat_openid   TEXT,
    wechat_unionid  TEXT,
    username        TEXT,
    -- lower(username), unique: "Alice" and "alice" cannot both register.
    username_key    TEXT UNIQUE,
    full_name       TEXT,
    avatar_url      TEXT,
    role            TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    vip_level       BIGINT NOT NULL DEFAULT 0,
    vip_expires_at  BIGINT,
    is_active       BIGINT NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    -- Bumped by a password change or a deactivation: access tokens carry the version they
    -- were issued under and stop working once it moves.
    token_version   BIGINT NOT NULL DEFAULT 0,
    -- Credits in hundredths (DESIGN section 12); only the ledger changes it.
    balance         BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_login_at   BIGINT,
    UNIQUE (wechat_appid, wechat_openid)
);

CREATE INDEX users_role_active ON users (role, is_active, created_at);
CREATE INDEX users_created ON users (created_at);

-- Opaque refresh tokens, stored as SHA-256 digests. Every use rotates the token: the used
-- row is marked and a new one joins its family. Presenting a used token again means it was
-- copied, so the whole family is revoked.
CREATE TABLE refresh_tokens (
    id              TEXT NOT NULL PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id       TEXT NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT,
    revoked_at      BIGINT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- What the task cost its owner, in hundredths of a credit (0 until prices exist).
ALTER TABLE tasks ADD COLUMN cost BIGINT NOT NULL DEFAULT 0;

-- Until now `user_id` held the uploading client's address, for fair queuing only (it stays
-- in `fair_group`). From now on it names the owning account, and those tasks have none.
UPDATE tasks SET user_id = NULL;
