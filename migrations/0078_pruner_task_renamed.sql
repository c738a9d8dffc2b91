-- The inbox pruner prunes the outbox too and its task is now called `pruner`. The heartbeat
-- row of the old name would stay behind as a task stopped at the last shutdown, and
-- `kabuto health` would call every upgraded agent unhealthy for it ever after.
DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format('DELETE FROM %I.runtime_tasks WHERE task = %L', agent, 'inbox-pruner');
    END LOOP;
END $do$;
