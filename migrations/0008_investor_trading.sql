-- The investor client's trading records (seed 001 §2.2 units 13 and 15): its orders with
-- their acceptance numbers, executions, settlement notices and account statements.
SET search_path TO investor;

ALTER TABLE wallet ADD COLUMN committed_order text;  -- the client order id it backs

CREATE TABLE orders (
    user_id             text NOT NULL,
    client_order_id     text NOT NULL,
    issue_code          text NOT NULL,
    side                text NOT NULL,
    order_type          text NOT NULL,
    price               numeric(20, 4),
    quantity            bigint NOT NULL,
    time_in_force       text NOT NULL,
    settlement_account  text NOT NULL,
    cert_id             uuid,
    holder_name         text,
    holder_address      text,
    dividend_method     text,
    dividend_account    text,
    request_hash        text NOT NULL,
    acceptance_number   bigint,
    status              text NOT NULL DEFAULT 'sent' CHECK (status IN
                            ('sent', 'accepted', 'rejected', 'cancelled', 'filled', 'replaced')),
    filled              bigint NOT NULL DEFAULT 0,
    reason              text,
    detail              text,
    last_status         jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_order_id)
);

CREATE TABLE executions (
    matching_number       bigint NOT NULL,
    user_id               text NOT NULL,
    client_order_id       text NOT NULL,
    side                  text NOT NULL,
    issue_code            text NOT NULL,
    price                 numeric(20, 4) NOT NULL,
    quantity              bigint NOT NULL,
    status                text NOT NULL CHECK (status IN ('executed', 'completed', 'reversed')),
    name_transfer_number  bigint,
    executed_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (matching_number, user_id)
);

CREATE TABLE settlement_notices (
    matching_number  bigint NOT NULL,
    user_id          text NOT NULL,
    settled          boolean NOT NULL,
    amount           numeric(20, 4) NOT NULL,
    currency         char(3) NOT NULL,
    failure          text,
    detail           text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (matching_number, user_id)
);

CREATE TABLE account_statements (
    user_id      text NOT NULL,
    account      text NOT NULL,
    statement    jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, account)
);
