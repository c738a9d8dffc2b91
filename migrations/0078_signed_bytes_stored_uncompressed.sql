-- Issue 8: a value PostgreSQL moves out of its row (a row over about 2 kB) is first run through
-- pglz, whatever it holds. Kabuto's large values are signed bytes and what carries them — message
-- bodies and headers with base64 signatures and certificates, endorsed stock certificates — which
-- do not compress: not one outbox body of a 300-trade burst came out smaller (pg_column_size
-- against octet_length), yet pglz_compress was 2.6 % of PostgreSQL's CPU in it, and writing the
-- toasted values 3.5 % with it (perf, docs/performance.md "Stop 29"). EXTERNAL keeps the
-- out-of-line storage and skips the attempt. It applies to values written from now on; rows
-- already stored stay as they are, and reading either kind is the same to every query.
DO $do$
DECLARE
    agent text;
BEGIN
    FOREACH agent IN ARRAY ARRAY['investor', 'issuer', 'exchange', 'settlement',
                                 'brokerage', 'custody', 'credit'] LOOP
        EXECUTE format('ALTER TABLE %I.outbox ALTER COLUMN body SET STORAGE EXTERNAL,
                                              ALTER COLUMN headers SET STORAGE EXTERNAL', agent);
    END LOOP;
END $do$;

-- The hot rows that carry an endorsed certificate (a trade's securities leg, seed 001 S95).
ALTER TABLE exchange.orders ALTER COLUMN certificate SET STORAGE EXTERNAL;
ALTER TABLE settlement.dvp_instructions ALTER COLUMN securities SET STORAGE EXTERNAL;
ALTER TABLE issuer.reservations ALTER COLUMN request SET STORAGE EXTERNAL,
                                ALTER COLUMN delivery SET STORAGE EXTERNAL;
