-- Packed bundles (issue 8, stop 32; broker/bundle.py): what one batch of an agent's consumer
-- sends to one of Kabuto's queues under one key is one outbox row, a bundle of its messages
-- sealed once. `outbox` holds what the relay publishes, a row a publication; `outbox_messages`
-- holds what the agent sent, a row a message, for anyone who asks what was sent (an operator, a
-- test): the rows that are messages as they are, and each packed bundle's items in its place.
--
-- A packed item's routing key is its recipient's, as it would have travelled alone (an answer
-- to the recipient's answers queue, as the bundle's own key says for all of its items); its
-- headers are the bundle's seal, its only signature. Unpacking reads every bundle row: this is
-- a view to read what was sent, not a path the agents take.

CREATE FUNCTION public.kabuto_bundle_items(bundle bytea)
RETURNS TABLE (place integer, message_id text, message_type text, signed boolean, body bytea)
LANGUAGE plpgsql IMMUTABLE STRICT
AS $fn$
DECLARE
    -- broker/bundle.py: 'KBB1', a u32 count, then per item: its id and type (a byte of length
    -- each), a byte of header count and per header a byte-long name and a u32-long value, then
    -- a u32-long body. Offsets are 0-based, as get_byte's.
    here integer := 8;
    items integer;
    size integer;
    headers integer;
BEGIN
    IF substring(bundle FROM 1 FOR 4) <> '\x4b424231'::bytea THEN
        RAISE EXCEPTION 'not a Kabuto bundle';
    END IF;
    items := (get_byte(bundle, 4) << 24) | (get_byte(bundle, 5) << 16) | (get_byte(bundle, 6) << 8) | get_byte(bundle, 7);
    FOR n IN 1 .. items LOOP
        place := n;
        size := get_byte(bundle, here);
        message_id := convert_from(substring(bundle FROM here + 2 FOR size), 'UTF8');
        here := here + 1 + size;
        size := get_byte(bundle, here);
        message_type := convert_from(substring(bundle FROM here + 2 FOR size), 'UTF8');
        here := here + 1 + size;
        headers := get_byte(bundle, here);
        here := here + 1;
        signed := headers > 0;
        FOR h IN 1 .. headers LOOP
            here := here + 1 + get_byte(bundle, here);
            here := here + 4 + ((get_byte(bundle, here) << 24) | (get_byte(bundle, here + 1) << 16)
                                | (get_byte(bundle, here + 2) << 8) | get_byte(bundle, here + 3));
        END LOOP;
        size := (get_byte(bundle, here) << 24) | (get_byte(bundle, here + 1) << 16)
                | (get_byte(bundle, here + 2) << 8) | get_byte(bundle, here + 3);
        body := substring(bundle FROM here + 5 FOR size);
        here := here + 4 + size;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- How many messages an outbox row holds, read from the bundle's count alone (its bytes 5 to 8,
-- fetched without the rest of a body stored out of line): `kabuto status` counts messages
-- published, as the receivers' inboxes count messages delivered.
CREATE FUNCTION public.kabuto_messages_in(message_type text, body bytea) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT
AS $fn$
    SELECT CASE WHEN message_type = 'kabuto.bundle'
                THEN (get_byte(c, 0) << 24) | (get_byte(c, 1) << 16) | (get_byte(c, 2) << 8) | get_byte(c, 3)
                ELSE 1 END
      FROM (SELECT substring(body FROM 5 FOR 4) AS c) AS count_bytes
$fn$;

DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format($v$
            CREATE VIEW %1$I.outbox_messages AS
            SELECT o.seq, 1 AS place, o.message_id, o.message_type, o.exchange, o.routing_key, o.body,
                   o.headers, o.created_at, o.published_at, o.failed_at, o.error, NULL::uuid AS bundle_id
              FROM %1$I.outbox o
             WHERE o.message_type <> 'kabuto.bundle'
            UNION ALL
            SELECT o.seq, i.place, i.message_id::uuid, i.message_type, o.exchange,
                   (convert_from(i.body, 'UTF8')::jsonb ->> 'recipient')
                       || CASE WHEN o.routing_key LIKE '%%.answers' THEN '.answers' ELSE '' END,
                   i.body, o.headers, o.created_at, o.published_at, o.failed_at, o.error, o.message_id
              FROM %1$I.outbox o, public.kabuto_bundle_items(o.body) i
             WHERE o.message_type = 'kabuto.bundle'$v$, agent);
    END LOOP;
END $do$;
