-- Corrects 0073, found by review: custody.position_changes is not a running total's change table
-- but custody's journal of position changes, only ever inserted into and read by cursor; no fold
-- deletes from it, so 0073's vacuum settings do nothing for it but mislead. Its table is put back
-- to the server's defaults. The running totals' change tables are exactly those of the four
-- `broker.running_totals.RunningTotal`s (exchange: open buy exposure, standing cover drawn;
-- settlement: placed holds, account balances), and 0073's settings stay on them.
--
-- Also corrects 0073's header: `make bench` does not change the server's `autovacuum_naptime`;
-- it vacuums these four tables of its own throw-away database every 5 s, as a server with that
-- naptime would (bench/vacuum.py).
ALTER TABLE custody.position_changes RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay);
