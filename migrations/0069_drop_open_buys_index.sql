-- Migration 0067's partial index of open buys served only the sum of a buyer's open buy
-- exposure, which the readers no longer take (0068 keeps the total); it made a partial fill a
-- non-HOT update. Dropped in a migration of its own: DROP INDEX locks the table exclusively,
-- and taken as its transaction's first lock it cannot deadlock with a running agent, as it
-- could after 0068's weaker lock on the same table.
SET search_path TO exchange;
DROP INDEX orders_open_buys;
