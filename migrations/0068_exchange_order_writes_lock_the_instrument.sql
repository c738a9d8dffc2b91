-- Issue 8 (found in review): a write to an order must wait for whoever decides on that issue's
-- book. The trigger touched the instrument row only when its token was set, so with the token
-- already cleared (after a write the exchange did not make through its book, say) a command such
-- as the end of day could cancel an order while the exchange, not waiting for it, rebuilt the
-- book from rows that did not have the cancel yet and sealed that book under a fresh token: the
-- cache would then offer an expired order. Now every order write locks the instrument row first,
-- so it waits for the exchange's transaction (which holds that lock from its first book load) and
-- the exchange's next load waits for it and sees its token cleared.
SET search_path TO exchange;

CREATE OR REPLACE FUNCTION forget_book_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM instruments WHERE issue_code = NEW.issue_code FOR UPDATE;
    UPDATE instruments SET book_token = NULL WHERE issue_code = NEW.issue_code AND book_token IS NOT NULL;
    PERFORM set_config(
        'kabuto.order_rows_written',
        (coalesce(nullif(current_setting('kabuto.order_rows_written', true), ''), '0')::bigint + 1)::text,
        true
    );
    RETURN NULL;
END $$;
