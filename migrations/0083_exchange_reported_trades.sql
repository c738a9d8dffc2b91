-- Trades agreed off the order book and reported to the exchange for settlement (docs/dvp.md,
-- "Reported trades"). The exchange instructs settlement for them as for its own matches — a
-- matching number from the same sequence, the seller's certificate countersigned for it — and
-- keeps them here, so that settlement's statuses are recognised and the CertID list moves when
-- the trade settles. No order backs them: the parties agreed the terms between themselves.
SET search_path TO exchange;

CREATE TABLE reported_trades (
    matching_number       bigint PRIMARY KEY,
    report_id             text NOT NULL,   -- the parties' reference; the seller's endorsement names it
    issue_code            text NOT NULL REFERENCES instruments,
    cert_id               uuid NOT NULL,
    shares                bigint NOT NULL CHECK (shares > 0),
    price                 numeric(20, 4) NOT NULL CHECK (price > 0),
    seller_user_id        text NOT NULL,
    buyer_user_id         text NOT NULL CHECK (buyer_user_id <> seller_user_id),
    status                text NOT NULL CHECK (status IN ('transfer_requested', 'completed', 'failed')),
    instruction_id        uuid NOT NULL,   -- the settlement instruction sent for it
    instruction_hash      text NOT NULL,
    settlement_status     text,
    settlement_failure    text,
    name_transfer_number  bigint,
    new_cert_id           uuid,
    reported_at           timestamptz NOT NULL DEFAULT now(),
    ended_at              timestamptz,
    UNIQUE (seller_user_id, report_id)
);
-- A CertID is in at most one unsettled reported trade.
CREATE UNIQUE INDEX reported_trades_one_live_per_certificate ON reported_trades (cert_id)
    WHERE status = 'transfer_requested';
