-- Issue 8: a commit whose agent wakes its relay in process sends no notification.
--
-- The running agent's consumer stores a transaction's outbox rows in the statement that claims
-- its inbox rows (broker/inbox.py, `claim_storing`) and, once the transaction has committed,
-- wakes its own relay in process (broker/consumer.py). That statement sets `kabuto.relay_woken`
-- for its transaction, and the trigger of migration 0075 then sends nothing: a notification is
-- a wakeup of the LISTEN connection's backend and a read of the relay's socket in every batch of
-- every agent, for a relay in the same process as the commit (docs/performance.md, stop 38).
-- Every other writer (a command, a background job, the CLI in a process of its own) does not
-- set it, and its commit wakes the relay as before.
DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION %I.outbox_wakes_relay() RETURNS trigger LANGUAGE plpgsql AS $b$
            BEGIN
                IF current_setting('kabuto.relay_woken', true) IS DISTINCT FROM 'on' THEN
                    PERFORM pg_notify('kabuto_outbox_' || TG_TABLE_SCHEMA, '');
                END IF;
                RETURN NULL;
            END $b$$f$, agent);
    END LOOP;
END $do$;
