-- The exchange keeps what settlement said about each trade's cash leg.
SET search_path TO exchange;

ALTER TABLE matches ADD COLUMN settled boolean;
ALTER TABLE matches ADD COLUMN settlement_failure text;
