-- Issue 8 (order entry) for hosted investors: the standing covers the investor agent opened for
-- them (docs/dvp.md, "Standing cover"). The account is kept in clear, as the orders table keeps
-- it, and beside it the box the agent sealed it into once: a buy order on that account carries
-- this very box while the cover is active, so the exchange draws the order on the cover.
SET search_path TO investor;

CREATE TABLE standing_covers (
    cover_id     uuid PRIMARY KEY,
    user_id      text NOT NULL,
    account      text NOT NULL,
    box          text NOT NULL,
    amount       numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency     char(3) NOT NULL,
    -- The standing_cover.open message, whose answer a waiting command looks for.
    request_id   uuid NOT NULL UNIQUE,
    status       text NOT NULL DEFAULT 'requested' CHECK (status IN
                     ('requested', 'active', 'refused', 'closing', 'closed')),
    reason       text,
    detail       text,
    spent        numeric(20, 4),
    opened_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- One live cover per account: a buy order on the account has one box to carry, and a cover
-- still closing keeps the account until the exchange has released it.
CREATE UNIQUE INDEX standing_covers_one_live_per_account ON standing_covers (user_id, account)
    WHERE status IN ('requested', 'active', 'closing');
