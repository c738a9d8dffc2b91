-- What the purchaser's terminal receives in seed 003 (user terminal 100): the merchant's card
-- payment answer (S1130), the collateral statement (S1150), the release notice (S8040) and
-- the sale notice (S9130), kept as received.
SET search_path TO investor;

CREATE TABLE credit_notices (
    message_id   uuid PRIMARY KEY,
    user_id      text NOT NULL,
    sender       text NOT NULL,
    kind         text NOT NULL,
    reference    text NOT NULL,           -- the purchase or obligation it is about
    content      jsonb NOT NULL,
    received_at  timestamptz NOT NULL
);
CREATE INDEX credit_notices_by_user ON credit_notices (user_id, received_at);
