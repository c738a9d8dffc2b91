-- One schema and one role per agent, and the runtime's inbox and outbox in each schema.
-- An agent connects as kabuto_<agent> with search_path <agent>; the role has rights on its
-- own schema only, so no agent can read or write another agent's tables.
DO $$
DECLARE
    agent text;
    role_name text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        role_name := 'kabuto_' || agent;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', agent);
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', agent);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', agent, role_name);
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
            agent, role_name);
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %I',
            agent, role_name);

        -- Inbox: every message the agent consumed, committed with the state it changed.
        -- The primary key deduplicates; the digest tells a redelivery (same bytes) from a
        -- replayed id (other bytes under an id already used).
        EXECUTE format($f$
            CREATE TABLE %I.inbox (
                message_id   uuid PRIMARY KEY,
                digest       text NOT NULL,
                message_type text NOT NULL,
                sender       text NOT NULL,
                received_at  timestamptz NOT NULL DEFAULT now()
            )$f$, agent);

        -- Outbox: sealed messages (exact body bytes and headers) waiting for the relay.
        EXECUTE format($f$
            CREATE TABLE %I.outbox (
                seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_id   uuid NOT NULL UNIQUE,
                message_type text NOT NULL,
                exchange     text NOT NULL CHECK (exchange IN ('messages', 'events')),
                routing_key  text NOT NULL,
                body         bytea NOT NULL,
                headers      jsonb NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT now(),
                published_at timestamptz,
                failed_at    timestamptz,
                error        text
            )$f$, agent);
        EXECUTE format(
            'CREATE INDEX outbox_pending ON %I.outbox (seq) WHERE published_at IS NULL AND failed_at IS NULL',
            agent);
    END LOOP;
END
$$;
