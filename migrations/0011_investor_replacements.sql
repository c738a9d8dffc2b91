-- A replacement order remembers the order it replaces, so the client can retire the old one
-- and move its certificate over when the exchange accepts the replacement.
SET search_path TO investor;

ALTER TABLE orders ADD COLUMN replaces text;
