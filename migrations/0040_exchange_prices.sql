-- The exchange's prices as events (design flow 5, seed 003 R-003-25): each day's close, the
-- reference price rolled to it, and the participants that asked to be sent every price.
SET search_path TO exchange;

ALTER TABLE instruments ADD COLUMN previous_close numeric(20, 4) CHECK (previous_close > 0);
ALTER TABLE instruments ADD COLUMN closed_at timestamptz;

CREATE TABLE price_subscribers (
    participant    text PRIMARY KEY,
    subscribed_at  timestamptz NOT NULL DEFAULT now()
);
