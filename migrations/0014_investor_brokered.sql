-- The customer terminal's side of brokered trading (seed 000, seed 002): what the brokerage
-- showed after identification, and each brokered order with its statement and settlement.
SET search_path TO investor;

CREATE TABLE customer_views (
    user_id      text PRIMARY KEY,
    view         jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE brokered_orders (
    user_id          text NOT NULL,
    client_order_id  text NOT NULL,
    order_id         uuid,
    status           text NOT NULL DEFAULT 'sent' CHECK (status IN
                         ('sent', 'accepted', 'refused', 'statement', 'settled')),
    reason           text,
    detail           text,
    trial            jsonb,
    statement        jsonb,
    entry_id         bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_order_id)
);
