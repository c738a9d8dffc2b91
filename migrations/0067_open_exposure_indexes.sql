-- Issue 8: the reads behind every order's acceptance and every cover read a participant's open
-- exposure. The exchange summed it over every order the user ever placed (found through the
-- (user_id, client_order_id) key, filled and cancelled ones included), so an order cost more
-- the longer its sender had traded; settlement summed placed holds through an index without
-- their amounts. Both now read only the open rows, from the index alone where the visibility
-- map allows.
SET search_path TO exchange;
CREATE INDEX orders_open_buys ON orders (user_id) INCLUDE (remaining, price) WHERE side = 'buy' AND status = 'open';

SET search_path TO settlement;
CREATE INDEX holds_placed_amounts ON holds (account_id) INCLUDE (amount) WHERE status = 'placed';
DROP INDEX holds_placed;
