-- Issue 8 (a cost that grew with history): the metrics sampler counts each agent's pending and
-- parked outbox rows every few seconds. It read the whole outbox to do it, and the outbox keeps
-- every row it ever published: 64 ms a sample for the exchange after a minute of order entry at
-- 1,000 orders/s, and growing (docs/performance.md, stop 24). Pending rows have had a partial
-- index since 0001; parked rows (failed, waiting for an operator) get one here, so both counts
-- read only the rows they count.
DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format('CREATE INDEX outbox_parked ON %I.outbox (seq) WHERE failed_at IS NOT NULL', agent);
    END LOOP;
END $do$;
