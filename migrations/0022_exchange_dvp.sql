-- The exchange's side of delivery versus payment (issue 11, docs/dvp.md). A buy order waits
-- here, accepted by every check but not yet booked, until settlement grants its cover; each
-- booked buy order remembers its cover so that instructions can draw on it and the exchange
-- can release it when the order is done. A match's 'transfer_requested' status now means
-- "instructed to settlement" and 'completed' means "settled, both legs".
SET search_path TO exchange;

CREATE TABLE pending_orders (
    cover_id         uuid PRIMARY KEY,
    user_id          text NOT NULL,
    client_order_id  text NOT NULL,
    request          jsonb NOT NULL,       -- the order as submitted
    participant      jsonb NOT NULL,       -- the sender's identity and policy, for the checks on grant
    request_hash     text NOT NULL,
    status           text NOT NULL CHECK (status IN ('awaiting_cover', 'booked', 'refused')),
    reason           text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_order_id)
);

ALTER TABLE orders ADD COLUMN cover_id uuid;
ALTER TABLE matches ADD COLUMN settlement_status text;
