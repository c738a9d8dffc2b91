-- Issue 8: a message written to an agent's outbox wakes that agent's relay by itself.
--
-- The relay listens on `kabuto_outbox_<agent>` (broker/outbox.py) and was woken by a
-- `SELECT pg_notify(...)` the consumer sent after writing a batch's outbox rows: a round trip of
-- its own in every batch of every agent, about a millisecond of the exchange's batch under
-- order entry (docs/performance.md, stop 24). A statement-level trigger sends the same
-- notification from the insert. NOTIFY is transactional either way: it is delivered when the
-- transaction commits, not at all when it (or the savepoint that wrote the rows) rolls back, and
-- the notifications of one transaction on one channel with one payload are delivered once.
DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format($f$
            CREATE FUNCTION %I.outbox_wakes_relay() RETURNS trigger LANGUAGE plpgsql AS $b$
            BEGIN
                PERFORM pg_notify('kabuto_outbox_' || TG_TABLE_SCHEMA, '');
                RETURN NULL;
            END $b$$f$, agent);
        EXECUTE format(
            'CREATE TRIGGER outbox_wakes_relay AFTER INSERT ON %I.outbox
                 FOR EACH STATEMENT EXECUTE FUNCTION %I.outbox_wakes_relay()', agent, agent);
    END LOOP;
END $do$;
