-- The brokerage intermediary's books (seeds 000 and 002): customers with their ids and personal
-- authentication, their available accounts and priorities, transaction conditions, the
-- securities companies it intermediates for and how each settles, the securities it shows,
-- book-entry positions, orders with their holds, executions and settlement information.
SET search_path TO brokerage;

CREATE TABLE companies (
    company_id        text PRIMARY KEY,
    name              text NOT NULL,
    design            text NOT NULL CHECK (design IN ('sc_holds_im_account', 'im_holds_sc_account')),
    clearing          text NOT NULL,   -- the settlement accounts of seed 002 §8 for this company
    commission        text NOT NULL,
    tax               text NOT NULL,
    im_account_at_sc  text NOT NULL,
    im_cash           text NOT NULL,
    sc_account_at_im  text NOT NULL,
    im_fees           text NOT NULL
);

CREATE TABLE customers (
    customer_id      text PRIMARY KEY,          -- the intermediary-side customer id
    user_id          text NOT NULL UNIQUE,      -- the participant the customer's terminal signs as
    company_ids      jsonb NOT NULL DEFAULT '{}',  -- securities-company-side ids, by company (R-002-27)
    pin_salt         bytea NOT NULL,
    pin_hash         bytea NOT NULL,            -- scrypt; the PIN itself is never stored
    conditions       jsonb NOT NULL,            -- transaction conditions (seed 000 claim 2)
    registered_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_accounts (
    customer_id  text NOT NULL REFERENCES customers,
    account_id   text NOT NULL,
    institution  text NOT NULL,                 -- 'intermediary' or a company id
    kind         text NOT NULL CHECK (kind IN ('bank', 'fund')),
    priority     integer NOT NULL CHECK (priority > 0),
    PRIMARY KEY (customer_id, account_id)
);

CREATE TABLE securities (
    issue_code       text PRIMARY KEY,
    reference_price  numeric(20, 4) NOT NULL CHECK (reference_price > 0),
    last_price       numeric(20, 4)
);

CREATE TABLE positions (
    customer_id  text NOT NULL REFERENCES customers,
    company_id   text NOT NULL REFERENCES companies,
    issue_code   text NOT NULL,
    shares       bigint NOT NULL CHECK (shares >= 0),
    PRIMARY KEY (customer_id, company_id, issue_code)
);

CREATE TABLE identifications (
    inquiry_id   uuid PRIMARY KEY,              -- the balance inquiry sent for it
    request_id   uuid NOT NULL,
    customer_id  text NOT NULL REFERENCES customers,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id           uuid PRIMARY KEY,        -- R-002-39: unique per order
    client_order_id    text NOT NULL,
    customer_id        text NOT NULL REFERENCES customers,
    user_id            text NOT NULL,
    company_id         text NOT NULL REFERENCES companies,
    issue_code         text NOT NULL,
    side               text NOT NULL,
    order_type         text NOT NULL,
    price              numeric(20, 4),
    quantity           bigint NOT NULL CHECK (quantity > 0),
    time_in_force      text NOT NULL,
    settlement_type    text NOT NULL,
    rule               text NOT NULL,
    instruction        jsonb NOT NULL,          -- the trade-instruction information as received (R-002-41)
    trial              jsonb,
    balances           jsonb,
    exchange_order_id  text NOT NULL UNIQUE,    -- the client order id used at the exchange
    cert_id            uuid,                    -- the nominee certificate a sell is made from
    acceptance_number  bigint,
    status             text NOT NULL CHECK (status IN ('holding', 'relayed', 'refused', 'done',
                                                       'settling', 'settled', 'settlement_failed', 'cancelled')),
    cancelled          boolean NOT NULL DEFAULT false,
    reason             text,
    detail             text,
    information        jsonb,                   -- the settlement information produced
    entry_id           bigint,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, client_order_id)
);

CREATE TABLE executions (
    matching_number  bigint PRIMARY KEY,
    order_id         uuid NOT NULL REFERENCES orders,
    price            numeric(20, 4) NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    status           text NOT NULL CHECK (status IN ('executed', 'completed', 'reversed')),
    executed_at      timestamptz NOT NULL DEFAULT now()
);

-- Certificates registered to the brokerage as nominee, from which customers' sells are made.
CREATE TABLE nominee_certificates (
    cert_id             uuid PRIMARY KEY,
    issue_code          text NOT NULL,
    shares              bigint NOT NULL CHECK (shares > 0),
    content             bytea NOT NULL,
    issuer_signature    bytea NOT NULL,
    issuer_certificate  bytea NOT NULL,
    status              text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'committed', 'surrendered'))
);

-- R-002-68: intermediary fees received, for reconciliation with the company's records.
CREATE TABLE fees_received (
    order_id    uuid PRIMARY KEY REFERENCES orders,
    company_id  text NOT NULL,
    fee         numeric(20, 4) NOT NULL,
    entry_id    bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- The brokerage's configurable tables (R-002-34, R-002-45, R-002-83): the commission table,
-- consumption tax rate, intermediary fee share and allowance policy; defaults apply when absent.
CREATE TABLE fee_schedule (
    singleton             boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    bands                 jsonb NOT NULL,      -- [[consideration up to, commission], …]
    above_rate            numeric(10, 6) NOT NULL,
    consumption_tax_rate  numeric(10, 6) NOT NULL,
    intermediary_share    numeric(10, 6) NOT NULL,
    allowance_factor      numeric(10, 6) NOT NULL,
    regular_share         numeric(10, 6) NOT NULL
);
