-- Recharge codes (seed 002, DESIGN section 12): an admin creates a batch of codes, each
-- worth `amount` hundredths of a credit and redeemable by up to `max_uses` different users
-- before `expires_at`. A redemption is a `redeem` ledger entry (ref `{code}:{user_id}`)
-- written in the same transaction as the code's use count and the redemption row.

CREATE TABLE recharge_batches (
    id           TEXT NOT NULL PRIMARY KEY,
    -- The admin's description of the batch (seed 002's `description`).
    name         TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    -- Uses allowed per code.
    max_uses     BIGINT NOT NULL CHECK (max_uses > 0),
    expires_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL,
    -- Codes in the batch.
    count        BIGINT NOT NULL CHECK (count > 0)
);

CREATE TABLE recharge_codes (
    id           TEXT NOT NULL PRIMARY KEY,
    -- Canonical form `OWL-XXXX-XXXX-XXXX`, upper case; input is normalised before lookup.
    code         TEXT NOT NULL UNIQUE,
    batch_id     TEXT NOT NULL REFERENCES recharge_batches (id),
    -- Copied from the batch so a redemption reads and updates one row.
    amount       BIGINT NOT NULL CHECK (amount > 0),
    max_uses     BIGINT NOT NULL CHECK (max_uses > 0),
    -- Only ever raised by the conditional UPDATE of a redemption, which is what keeps
    -- concurrent redemptions within max_uses; the CHECK is the last line of defence.
    used_count   BIGINT NOT NULL DEFAULT 0 CHECK (used_count >= 0 AND used_count <= max_uses),
    expires_at   BIGINT NOT NULL,
    disabled     BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at   BIGINT NOT NULL
);

CREATE INDEX recharge_codes_batch ON recharge_codes (batch_id);
CREATE INDEX recharge_codes_created ON recharge_codes (created_at);

CREATE TABLE recharge_redemptions (
    id           TEXT NOT NULL PRIMARY KEY,
    code         TEXT NOT NULL REFERENCES recharge_codes (code),
    user_id      TEXT NOT NULL REFERENCES users (id),
    amount       BIGINT NOT NULL,
    -- The `redeem` ledger entry's ref.
    ledger_ref   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    -- One user redeems a code once.
    UNIQUE (code, user_id)
);

CREATE INDEX recharge_redemptions_user ON recharge_redemptions (user_id, created_at);
