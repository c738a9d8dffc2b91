-- Issue 11: the customer sees the intended settlement date and the settlement status of a brokered trade.
SET search_path TO investor;

ALTER TABLE brokered_orders ADD COLUMN settlement_date date;
ALTER TABLE brokered_orders ADD COLUMN settlement_status text;
