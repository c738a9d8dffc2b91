-- Brokered trading at settlement (seed 002 §8–§9): accounts the intermediary and the securities
-- companies keep for themselves, holds that block a customer's free use of funds until the
-- order settles (R-002-74), and the brokered settlement entries.
SET search_path TO settlement;

-- 'institution' accounts are an intermediary's or a securities company's own (clearing,
-- commission, tax payable, the inter-company accounts); like external ones they may run
-- negative, because they record what one institution owes another.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('customer', 'external', 'institution'));
-- Where the account is held, for the brokerage's screens and settlement means (R-002-13/56).
ALTER TABLE accounts ADD COLUMN institution text NOT NULL DEFAULT 'settlement';
ALTER TABLE accounts ADD COLUMN label text;

ALTER TABLE entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE entries ADD CONSTRAINT entries_kind_check CHECK (kind IN ('deposit', 'withdrawal', 'trade', 'brokered'));

CREATE TABLE holds (
    hold_id     uuid NOT NULL,
    account_id  text NOT NULL REFERENCES accounts,
    owner       text NOT NULL,
    amount      numeric(20, 4) NOT NULL CHECK (amount > 0),
    status      text NOT NULL CHECK (status IN ('placed', 'consumed', 'released')),
    placed_at   timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    entry_id    bigint REFERENCES entries,
    PRIMARY KEY (hold_id, account_id)
);
CREATE INDEX holds_placed ON holds (account_id) WHERE status = 'placed';
