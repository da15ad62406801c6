-- Recharge packages and orders paid through WeChat Pay API v3 (seeds 000 and 001, DESIGN
-- section 12). Prices are BIGINT fen, credits BIGINT hundredths. An order is credited by one
-- `recharge` ledger entry whose ref is its out_trade_no, in the same transaction as the
-- conditional status change pending -> paid; a refund takes credits back with one `refund`
-- entry whose ref is its out_refund_no.

CREATE TABLE packages (
    id           TEXT NOT NULL PRIMARY KEY,
    name         TEXT NOT NULL,
    price_fen    BIGINT NOT NULL CHECK (price_fen > 0),
    credits      BIGINT NOT NULL CHECK (credits > 0),
    bonus        BIGINT NOT NULL DEFAULT 0 CHECK (bonus >= 0),
    active       BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    sort         BIGINT NOT NULL DEFAULT 0
);

-- Defaults an admin can change in the database: 6 CNY -> 60 credits, 30 -> 300 + 30,
-- 98 -> 980 + 120.
INSERT INTO packages (id, name, price_fen, credits, bonus, active, sort) VALUES
    ('basic', '60 credits', 600, 6000, 0, 1, 10),
    ('standard', '300 credits + 30 bonus', 3000, 30000, 3000, 1, 20),
    ('premium', '980 credits + 120 bonus', 9800, 98000, 12000, 1, 30);

CREATE TABLE orders (
    -- The merchant order number sent to WeChat (`P` + 24 alphanumerics).
    out_trade_no   TEXT NOT NULL PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id),
    package_id     TEXT NOT NULL REFERENCES packages (id),
    -- Copied from the package when ordered, so later package edits never change an order.
    description    TEXT NOT NULL,
    amount_fen     BIGINT NOT NULL CHECK (amount_fen > 0),
    credits        BIGINT NOT NULL CHECK (credits > 0),
    bonus          BIGINT NOT NULL CHECK (bonus >= 0),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'paid', 'closed', 'refunding', 'refunded')),
    prepay_id      TEXT,
    transaction_id TEXT,
    created_at     BIGINT NOT NULL,
    paid_at        BIGINT,
    -- After this WeChat accepts no payment (the order's time_expire); the reconciler closes it.
    expires_at     BIGINT NOT NULL
);

CREATE INDEX orders_user_created ON orders (user_id, created_at);
CREATE INDEX orders_status_created ON orders (status, created_at);

CREATE TABLE refunds (
    out_refund_no  TEXT NOT NULL PRIMARY KEY,
    out_trade_no   TEXT NOT NULL REFERENCES orders (out_trade_no),
    amount_fen     BIGINT NOT NULL CHECK (amount_fen > 0),
    -- processing until WeChat reports it: success, or failed (REFUND.CLOSED/ABNORMAL).
    status         TEXT NOT NULL DEFAULT 'processing' CHECK (status IN ('processing', 'success', 'failed')),
    -- The admin who asked for it.
    requested_by   TEXT NOT NULL,
    reason         TEXT,
    -- Hundredths actually taken back when it succeeded (less than the order's credits only
    -- when the user spent them between the request and the settlement).
    credits_taken  BIGINT,
    created_at     BIGINT NOT NULL,
    settled_at     BIGINT
);

CREATE INDEX refunds_status_created ON refunds (status, created_at);
CREATE INDEX refunds_order ON refunds (out_trade_no);
