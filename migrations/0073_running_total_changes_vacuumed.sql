-- Issue 8 (a cost that grew with time, not with history): every running total's change table
-- (0030, 0068, 0070, 0072; broker/running_totals.py) is written by a trigger with each change and
-- emptied by the agent's fold every second. The fold's DELETE leaves its rows dead until a vacuum,
-- and a read of a key's total walks every dead index entry of that key: after 40 s of order entry
-- at 500 orders/s the exchange's acceptance view found 2,964 index entries for a trader with 21
-- live changes, 0.36 ms for each of its two totals per order, and order entry fell from 489 to
-- about 300 orders/s as the minute went on (docs/performance.md, stop 21).
--
-- 0068, 0070 and 0072 already ask for a vacuum whenever a thousand rows are dead; 0030's custody
-- positions did not, and every one of them was vacuumed at the pace of a big table (the cost
-- delay), over a second or more for a heap that a minute's churn had grown to thousands of
-- pages. These tables are tiny when vacuumed: vacuum them at once, at 500 dead rows. How often
-- the autovacuum launcher looks at all is the server's `autovacuum_naptime` (a minute by
-- default): compose.yaml sets 5 s, `make bench` sets it for its run, and docs/performance.md
-- says why an operator should.
ALTER TABLE exchange.open_buy_exposure_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE exchange.standing_cover_drawn_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE settlement.account_balances_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE settlement.placed_holds_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE custody.position_changes SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
