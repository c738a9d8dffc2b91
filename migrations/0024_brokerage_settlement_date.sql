-- Issue 11: a regular (4th-day) brokered trade settles its customer legs on the intended
-- settlement date (seed 002 R-002-72); a customer who cannot pay then is a recorded fail.
SET search_path TO brokerage;

ALTER TABLE orders ADD COLUMN settlement_date date;            -- intended settlement date of the customer legs
ALTER TABLE orders ADD COLUMN cut_off date;                    -- last day a customer fail is retried
ALTER TABLE orders ADD COLUMN legs jsonb;                      -- the ledger legs, posted on the date
ALTER TABLE orders ADD COLUMN fail_reason text;                -- customer fail: reason code
ALTER TABLE orders ADD COLUMN fail_amount numeric(20, 4);      -- customer fail: what the customer owes
ALTER TABLE orders ADD COLUMN failed_on date;                  -- customer fail: first day it failed
ALTER TABLE orders ADD COLUMN attempts integer NOT NULL DEFAULT 0;

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN (
    'holding', 'relayed', 'refused', 'done', 'settling', 'settled', 'settlement_failed', 'cancelled',
    'awaiting_settlement_date', 'customer_fail', 'customer_failed'));
CREATE INDEX orders_due ON orders (settlement_date) WHERE status IN ('awaiting_settlement_date', 'customer_fail');
ALTER TABLE orders ADD COLUMN last_attempt_on date;            -- the as-of date of the last posting sent
