-- Issue 10: what the customer terminal keeps of the brokerage's answers, so that commands can
-- wait for them and `kabuto investor brokered` can show them: the funds held per account when an
-- order was accepted, what settlement released when it posted, and each identification's answer.
SET search_path TO investor;

ALTER TABLE brokered_orders
    ADD COLUMN holds    jsonb,
    ADD COLUMN released numeric;

CREATE TABLE identifications (
    request_id   uuid PRIMARY KEY,
    user_id      text NOT NULL,
    customer_id  text NOT NULL,
    status       text NOT NULL DEFAULT 'sent' CHECK (status IN ('sent', 'answered', 'refused')),
    reason       text,
    detail       text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
