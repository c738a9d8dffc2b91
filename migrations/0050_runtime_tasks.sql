-- Heartbeats and progress of each agent's supervised tasks (consumer, relay, background
-- jobs), written by the running agent and read by `kabuto health`; and an index that lets
-- the inbox pruner find rows older than the freshness window without a full scan.
DO $$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format($f$
            CREATE TABLE %I.runtime_tasks (
                task         text PRIMARY KEY,
                state        text NOT NULL
                             CHECK (state IN ('starting', 'running', 'waiting', 'stopped', 'failed')),
                detail       text NOT NULL DEFAULT '',
                state_since  timestamptz NOT NULL,
                beat_at      timestamptz NOT NULL,
                progress_at  timestamptz,
                busy_since   timestamptz,
                pid          integer NOT NULL
            )$f$, agent);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.runtime_tasks TO %I',
                       agent, 'kabuto_' || agent);
        EXECUTE format('CREATE INDEX inbox_received_at ON %I.inbox (received_at)', agent);
    END LOOP;
END
$$;
