-- Sales on the lock holder's instruction (seed 003 S9070–S9100): custody sells the locked
-- shares at the exchange from a certificate in its vault, and reports what sold and for how much.
SET search_path TO custody;

CREATE TABLE sales (
    instruction_id      uuid PRIMARY KEY,
    lock_id             uuid NOT NULL REFERENCES locks,
    account_id          text NOT NULL REFERENCES accounts,
    client              text NOT NULL,
    issue_code          text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    limit_price         numeric(20, 4),
    proceeds_account    text NOT NULL,
    lock_holder         text NOT NULL,
    request_digest      text NOT NULL,
    client_order_id     text NOT NULL UNIQUE,
    cert_id             uuid,                -- the certificate the order sells from (its remainder after a fill)
    reissue_request_id  uuid UNIQUE,         -- a merge first, when no certificate is large enough
    status              text NOT NULL CHECK (status IN ('preparing', 'ordered', 'completed', 'failed')),
    unsold              bigint NOT NULL DEFAULT 0 CHECK (unsold >= 0),
    detail              text NOT NULL DEFAULT '',
    instructed_at       timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE sale_fills (
    matching_number  bigint PRIMARY KEY,
    instruction_id   uuid NOT NULL REFERENCES sales,
    price            numeric(20, 4) NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    -- The name transfer is done: the shares left custody.
    transferred      boolean NOT NULL DEFAULT false,
    -- What settlement said about the cash leg: NULL until it said it.
    settled          boolean,
    amount           numeric(20, 4)
);
