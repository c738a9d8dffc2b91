-- What settlement tells an investor about its trades' instructions (issue 11): every status
-- change, refused cancels, verified trade completion notices (R-001-42) and mandates, kept as
-- received so the terminal can show them.
SET search_path TO investor;

CREATE TABLE settlement_messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          text NOT NULL,
    message_type     text NOT NULL,
    matching_number  bigint,
    body             jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settlement_messages_by_trade ON settlement_messages (user_id, matching_number, id);
