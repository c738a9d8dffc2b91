-- The exchange's trading books (seed 001 §2.4, §3.5, §3.9): listed issues, every accepted
-- order (the open ones are the unexecuted-order queue), and the order matching list.
SET search_path TO exchange;

CREATE TABLE instruments (
    issue_code       text PRIMARY KEY,
    share_class      text NOT NULL,
    reference_price  numeric(20, 4) NOT NULL CHECK (reference_price > 0),
    last_price       numeric(20, 4),
    last_traded_at   timestamptz,
    listed_at        timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE acceptance_numbers;
CREATE SEQUENCE matching_numbers;

CREATE TABLE orders (
    acceptance_number   bigint PRIMARY KEY,
    client_order_id     text NOT NULL,
    user_id             text NOT NULL,
    issue_code          text NOT NULL REFERENCES instruments,
    side                text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type          text NOT NULL CHECK (order_type IN ('limit', 'market')),
    price               numeric(20, 4),
    quantity            bigint NOT NULL CHECK (quantity > 0),
    remaining           bigint NOT NULL CHECK (remaining >= 0 AND remaining <= quantity),
    time_in_force       text NOT NULL,
    priority            bigint NOT NULL,
    status              text NOT NULL CHECK (status IN ('open', 'filled', 'cancelled')),
    cancel_reason       text,
    settlement_account  text NOT NULL,
    holder_name         text,
    holder_address      text,
    cert_id             uuid,
    certificate         jsonb,          -- the endorsed certificate backing a sell order
    request_hash        text NOT NULL,
    accepted_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_order_id),
    CHECK (status <> 'open' OR remaining > 0)
);
CREATE INDEX orders_open ON orders (issue_code, priority) WHERE status = 'open';
-- A CertID backs at most one live sell order.
CREATE UNIQUE INDEX orders_one_live_per_certificate ON orders (cert_id)
    WHERE status = 'open' AND side = 'sell';

-- Order Matching List 22 (seed 001 Fig. 14), one row per execution, and its name transfer.
CREATE TABLE matches (
    matching_number       bigint PRIMARY KEY,
    issue_code            text NOT NULL,
    buy_order             bigint NOT NULL REFERENCES orders,
    sell_order            bigint NOT NULL REFERENCES orders,
    cert_id               uuid,           -- set when its name transfer is requested
    shares                bigint NOT NULL CHECK (shares > 0),
    price                 numeric(20, 4) NOT NULL,
    buyer_user_id         text NOT NULL,
    seller_user_id        text NOT NULL,
    status                text NOT NULL CHECK (status IN
                              ('pending_transfer', 'transfer_requested', 'completed', 'failed')),
    transfer_request_hash text,
    name_transfer_number  bigint,
    new_cert_id           uuid,
    failure               text,
    executed_at           timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamptz
);
CREATE INDEX matches_pending ON matches (sell_order, matching_number)
    WHERE status IN ('pending_transfer', 'transfer_requested');

-- A CertID in name transfer is held back from list merges until the issuer answers (§9.3).
ALTER TABLE certid_list DROP CONSTRAINT certid_list_status_check;
ALTER TABLE certid_list ADD CONSTRAINT certid_list_status_check
    CHECK (status IN ('valid', 'in_transfer', 'retired'));
