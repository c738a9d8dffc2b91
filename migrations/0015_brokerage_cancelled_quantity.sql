-- How much of a brokered order the exchange cancelled, so the brokerage knows an order is done by
-- counting (executed + cancelled = ordered) rather than by the order messages arrive in.
SET search_path TO brokerage;

ALTER TABLE orders ADD COLUMN cancelled_quantity bigint NOT NULL DEFAULT 0;
