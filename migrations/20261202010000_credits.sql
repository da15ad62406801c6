-- Credits (DESIGN section 12): one append-only ledger whose entries are the only way a
-- balance changes, and the holds that charge tasks exactly once. Amounts are BIGINT
-- hundredths of a credit.

CREATE TABLE ledger (
    id             TEXT NOT NULL PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id),
    delta          BIGINT NOT NULL,
    -- The balance right after this entry; never negative.
    balance_after  BIGINT NOT NULL CHECK (balance_after >= 0),
    kind           TEXT NOT NULL
                   CHECK (kind IN ('recharge', 'redeem', 'grant', 'hold', 'capture', 'release', 'refund', 'adjust')),
    -- What caused the entry (an order, a code redemption, a task, an admin edit). One entry
    -- per (kind, ref): replays of the same event are no-ops.
    ref            TEXT NOT NULL,
    note           TEXT,
    -- The admin behind an adjustment.
    actor          TEXT,
    created_at     BIGINT NOT NULL,
    UNIQUE (kind, ref)
);

CREATE INDEX ledger_user_created ON ledger (user_id, created_at);

-- A task's charge: held when it is accepted, then captured (it succeeded) or released (it
-- failed, was cancelled or timed out), exactly once, by a conditional update of `state`.
CREATE TABLE holds (
    task_id        TEXT NOT NULL PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    state          TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'captured', 'released')),
    created_at     BIGINT NOT NULL,
    settled_at     BIGINT
);

CREATE INDEX holds_state_created ON holds (state, created_at);
CREATE INDEX holds_user_state ON holds (user_id, state);
