-- Issue 8: the exchange sends an issue's last price to its price subscribers (the brokerage,
-- the credit holder) at most once per KABUTO_PRICE_INTERVAL, the latest always
-- (agents/exchange/prices.py). What they are owed is kept beside the price itself, written in
-- the transaction of the trade, so it is a fact of the database and not of one process's
-- memory: an exchange that stops with an announcement owed sends it when it starts again.
SET search_path TO exchange;

ALTER TABLE instruments
    ADD COLUMN announced_at timestamptz,
    ADD COLUMN price_owed boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN instruments.announced_at IS
    'when the price subscribers were last sent this issue''s last trade';
COMMENT ON COLUMN instruments.price_owed IS
    'a last trade the price subscribers have not been sent yet (held back within the interval)';

-- Every price stored so far went out at once, before these columns.
UPDATE instruments SET announced_at = last_traded_at;
