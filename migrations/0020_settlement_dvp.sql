-- Delivery versus payment at settlement (issue 11, docs/dvp.md): covers that a buy order needs
-- before the exchange books it, settlement instructions with ISO 20022-style statuses, the
-- attempts that earmark cash and drive the securities leg, and mandates (who may post on whose
-- account). Covers and earmarks are rows of `holds`, so `available = balance − holds` is one
-- sum for every debit.
SET search_path TO settlement;

CREATE TABLE covers (
    cover_id            uuid PRIMARY KEY,
    user_id             text NOT NULL,
    account_id          text NOT NULL REFERENCES accounts,
    client_order_id     text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    -- Shares of the order not yet instructed: the hold is remaining × unit_price.
    remaining           bigint NOT NULL CHECK (remaining >= 0 AND remaining <= quantity),
    unit_price          numeric(20, 4) NOT NULL CHECK (unit_price > 0),
    currency            char(3) NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'released')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    released_at         timestamptz
);

CREATE TABLE dvp_instructions (
    matching_number          bigint PRIMARY KEY,
    trade_date               date NOT NULL,
    intended_settlement_date date NOT NULL,
    issue_code               text NOT NULL,
    quantity                 bigint NOT NULL CHECK (quantity > 0),
    price                    numeric(20, 4) NOT NULL CHECK (price > 0),
    amount                   numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency                 char(3) NOT NULL,
    buyer_user_id            text NOT NULL,
    buyer_account            text NOT NULL,
    seller_user_id           text NOT NULL,
    seller_account           text NOT NULL,
    cover_id                 uuid,
    partial_allowed          boolean NOT NULL,
    securities               jsonb NOT NULL,
    leg_agent                text NOT NULL,
    processing               text NOT NULL CHECK (processing IN ('received', 'accepted', 'rejected', 'cancelled')),
    matching                 text NOT NULL CHECK (matching IN ('matched', 'unmatched')),
    settlement               text NOT NULL CHECK (settlement IN ('pending', 'partially_settled', 'settled', 'failed')),
    reason                   text,
    detail                   text NOT NULL DEFAULT '',
    settled_quantity         bigint NOT NULL DEFAULT 0 CHECK (settled_quantity >= 0 AND settled_quantity <= quantity),
    settled_amount           numeric(20, 4) NOT NULL DEFAULT 0,
    -- The attempt under way (0: none yet); at most one is outstanding at a time.
    attempt                  bigint NOT NULL DEFAULT 0,
    in_flight                boolean NOT NULL DEFAULT false,
    cancel_by_buyer          boolean NOT NULL DEFAULT false,
    cancel_by_seller         boolean NOT NULL DEFAULT false,
    request_id               uuid NOT NULL,
    received_at              timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dvp_instructions_pending ON dvp_instructions (intended_settlement_date)
    WHERE settlement IN ('pending', 'partially_settled') AND processing = 'accepted';

CREATE TABLE dvp_attempts (
    matching_number  bigint NOT NULL REFERENCES dvp_instructions,
    attempt          bigint NOT NULL CHECK (attempt > 0),
    quantity         bigint NOT NULL CHECK (quantity > 0),
    amount           numeric(20, 4) NOT NULL CHECK (amount > 0),
    hold_id          uuid NOT NULL,
    -- Shares taken off the buy order's cover for this attempt (given back if it fails).
    from_cover       bigint NOT NULL DEFAULT 0,
    status           text NOT NULL CHECK (status IN ('reserving', 'committing', 'committed', 'refused')),
    reason           text,
    entry_id         bigint REFERENCES entries,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    PRIMARY KEY (matching_number, attempt)
);

-- An account owner's consent that an agent (the brokerage) may post on the account.
CREATE TABLE mandates (
    account_id  text NOT NULL REFERENCES accounts,
    agent       text NOT NULL,
    granted_by  text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (account_id, agent)
);

-- Trade entries may be several per instruction (partial settlement): reference 'OMN/attempt'.
