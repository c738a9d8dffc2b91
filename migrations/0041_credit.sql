-- The credit agent's books (seed 003). It hosts two institutions with books of their own:
-- the card issuer (FI server 300: DB 600, authorisations, repayments) and the
-- securities-backed line (HIHI server 200: DB 610–640, obligations, collateral locks, audit).
SET search_path TO credit;

-- ---------------------------------------------------------------- the card issuer (FI 300)

-- DB 600 (R-003-03/04): per card the limit (a debit card's deposit balance) and the usage.
CREATE TABLE card_accounts (
    card_number    text PRIMARY KEY,
    purchaser      text NOT NULL,               -- the Kabuto participant the card maps to (R-003-11)
    card_type      text NOT NULL CHECK (card_type IN ('credit', 'debit')),
    credit_limit   bigint NOT NULL CHECK (credit_limit >= 0),
    outstanding    bigint NOT NULL DEFAULT 0 CHECK (outstanding >= 0),
    repayment_account text NOT NULL,            -- the purchaser's settlement account withdrawals draw on
    opened_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE issuer_policy (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    settlement_account text NOT NULL,           -- the card issuer's own ledger account
    capture_window     interval NOT NULL DEFAULT interval '7 days'
);

-- One per merchant purchase: how it was carried (F1, F6, F7) and what became of it.
CREATE TABLE authorisations (
    authorisation_id uuid PRIMARY KEY,
    merchant       text NOT NULL,
    purchase_id    text NOT NULL,
    card_number    text NOT NULL REFERENCES card_accounts,
    purchaser      text NOT NULL,
    card_type      text NOT NULL,
    price          bigint NOT NULL CHECK (price > 0),
    covered        bigint NOT NULL CHECK (covered >= 0),
    secured        bigint NOT NULL CHECK (secured >= 0),
    owed           bigint NOT NULL CHECK (owed >= 0),
    repaid         bigint NOT NULL DEFAULT 0 CHECK (repaid >= 0),
    status         text NOT NULL CHECK (status IN ('awaiting_line', 'approved', 'refused', 'captured',
                                                   'lapsed', 'repaid', 'defaulted', 'recovered')),
    reason         text,
    detail         text,
    capture_by     timestamptz,
    merchant_account text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant, purchase_id),
    CHECK (covered + secured = price)
);

-- S7000: each withdrawal attempt through the settlement ledger.
CREATE TABLE repayments (
    attempt_id       uuid PRIMARY KEY,
    authorisation_id uuid NOT NULL REFERENCES authorisations,
    amount           bigint NOT NULL CHECK (amount > 0),
    status           text NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    detail           text,
    requested_at     timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------- the securities-backed line (HIHI 200)

CREATE TABLE line_policy (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    settlement_account text NOT NULL,           -- the line's own ledger account
    current_within     interval NOT NULL DEFAULT interval '15 minutes',  -- older trades are "delayed"
    inquiry_timeout    interval NOT NULL DEFAULT interval '2 minutes',   -- E5: custodians must answer by then
    refresh_interval   interval NOT NULL DEFAULT interval '1 day'        -- R-003-24
);

-- The contract with each purchaser (R-003-10), its cards (R-003-11) and custodians (R-003-12).
CREATE TABLE purchasers (
    purchaser     text PRIMARY KEY,
    method        text NOT NULL CHECK (method IN ('haircut', 'rating')),
    cash_account  text NOT NULL,                -- where a surplus from a forced sale is returned
    last_refresh  timestamptz
);

CREATE TABLE purchaser_cards (
    card_number text PRIMARY KEY,
    purchaser   text NOT NULL REFERENCES purchasers
);

CREATE TABLE purchaser_custodians (
    purchaser  text NOT NULL REFERENCES purchasers,
    custodian  text NOT NULL,
    cursor     bigint NOT NULL DEFAULT 0,       -- the custodian's holdings cursor consumed so far
    PRIMARY KEY (purchaser, custodian)
);

-- DB 620 (R-003-05): each position as the custodian last reported it.
CREATE TABLE holdings (
    purchaser        text NOT NULL,
    custodian        text NOT NULL,
    account          text NOT NULL,
    issue_code       text NOT NULL,
    available        bigint NOT NULL,
    locked           bigint NOT NULL,
    pending_delivery bigint NOT NULL,
    pending_receipt  bigint NOT NULL,
    sequence         bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purchaser, custodian, account, issue_code)
);

-- DB 630 (R-003-07): haircut rates by total market value band, or one uniform band.
CREATE TABLE haircut_bands (
    minimum  bigint PRIMARY KEY CHECK (minimum >= 0),
    maximum  bigint CHECK (maximum > minimum),
    rate     numeric(10, 6) NOT NULL CHECK (rate > 0)   -- may exceed 1 (R-003-09)
);

-- DB 640 (R-003-08): per issue, the agency's rating and the discount rate it implies.
CREATE TABLE ratings (
    issue_code    text PRIMARY KEY,
    rating        text NOT NULL,
    discount_rate numeric(10, 6) NOT NULL CHECK (discount_rate > 0),
    rated_at      timestamptz NOT NULL DEFAULT now()
);

-- The exchange's prices as its events told them (R-003-25).
CREATE TABLE prices (
    issue_code      text PRIMARY KEY,
    reference_price numeric(20, 4) NOT NULL,
    last_price      numeric(20, 4),
    last_traded_at  timestamptz,
    previous_close  numeric(20, 4),
    closed_at       timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now()
);

-- DB 610 (R-003-06, R-003-30): the latest grantable credit per purchaser.
CREATE TABLE grantable (
    purchaser  text PRIMARY KEY REFERENCES purchasers,
    method     text NOT NULL,
    amount     bigint NOT NULL,
    valued_at  timestamptz NOT NULL
);

-- Every valuation with the price, source and age of each position it used.
CREATE TABLE valuations (
    valuation_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purchaser         text NOT NULL,
    obligation_id     uuid,
    method            text NOT NULL,
    total_market_value bigint,
    haircut_rate      numeric(10, 6),
    grantable         bigint,
    refusal           text,
    positions         jsonb NOT NULL DEFAULT '[]',
    valued_at         timestamptz NOT NULL
);

-- One per additional-credit inquiry: the shortfall it secures and what became of it.
CREATE TABLE obligations (
    obligation_id  uuid PRIMARY KEY,
    purchaser      text NOT NULL,
    card_number    text NOT NULL,
    shortfall      bigint NOT NULL CHECK (shortfall > 0),
    status         text NOT NULL CHECK (status IN ('refreshing', 'locking', 'approved', 'refused', 'lapsed',
                                                   'repaid', 'defaulted', 'recovered')),
    accumulated    bigint NOT NULL DEFAULT 0,
    grantable      bigint NOT NULL DEFAULT 0,
    reason         text,
    detail         text,
    deadline       timestamptz NOT NULL,
    advanced       bigint NOT NULL DEFAULT 0,     -- the shortage the line paid the card issuer
    advance_reference uuid,
    proceeds       bigint NOT NULL DEFAULT 0,
    surplus        bigint NOT NULL DEFAULT 0,
    deficit        bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX obligations_open ON obligations (deadline) WHERE status IN ('refreshing', 'locking');

-- Holdings refreshes in flight (S2000/S6000): the answer names the request.
CREATE TABLE refresh_requests (
    request_id    uuid PRIMARY KEY,
    purchaser     text NOT NULL,
    custodian     text NOT NULL,
    obligation_id uuid,                           -- none for a periodic refresh
    answered      boolean NOT NULL DEFAULT false,
    requested_at  timestamptz NOT NULL
);

-- The positions locked for an obligation (S5040): one custody lock per position.
CREATE TABLE collateral (
    lock_id        uuid PRIMARY KEY,
    obligation_id  uuid NOT NULL REFERENCES obligations,
    purchaser      text NOT NULL,
    custodian      text NOT NULL,
    account        text NOT NULL,
    issue_code     text NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    price          numeric(20, 4) NOT NULL,
    price_source   text NOT NULL,
    price_as_of    timestamptz NOT NULL,
    price_age_seconds bigint NOT NULL,
    market_value   bigint NOT NULL,
    coefficient    numeric(10, 6) NOT NULL,
    credit_value   bigint NOT NULL,
    status         text NOT NULL CHECK (status IN ('requested', 'placed', 'refused', 'releasing', 'released',
                                                   'selling', 'sold')),
    lock_cursor    bigint,                        -- custody's cursor after the lock
    quantity_sold  bigint NOT NULL DEFAULT 0,
    proceeds       bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX collateral_by_obligation ON collateral (obligation_id);
CREATE INDEX collateral_by_purchaser ON collateral (purchaser, status);

-- R-003-63: every decision, lock, unlock, sell instruction and notice, with purchaser and step.
CREATE TABLE audit_trail (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL,
    institution   text NOT NULL,                  -- card-issuer or credit
    purchaser     text NOT NULL,
    step          text NOT NULL,                  -- seed 003's step id, e.g. S5040
    action        text NOT NULL,
    obligation_id uuid,
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_purchaser ON audit_trail (purchaser, seq);
