-- Issue 8: the exchange seals its warm books once per batch instead of once per handler
-- (agents/exchange/warm_book.py). Between two handlers of one batch the book is reused
-- without reading its token, which is right only if every order row written in the batch
-- went through the exchange's order_repo, which tells the warm books. So the trigger that
-- forgets the token also counts, for the transaction, every order row written; the batch's
-- seal compares that count with the one the exchange kept, and a write it did not see
-- (a statement outside order_repo) makes the seal fail: the batch is rolled back and run
-- again one delivery at a time, where every handler reads the token as before.
--
-- And every order write now locks the instrument row first (found in review): the trigger
-- touched the row only when its token was set, so with the token already cleared a command
-- such as the end of day could cancel an order while the exchange, not waiting for it,
-- rebuilt the book from rows that did not have the cancel yet and sealed that book under a
-- fresh token: the cache would then offer an expired order. Now such a write waits for the
-- exchange's transaction (which holds that lock from its first book load), and the exchange's
-- next load waits for it and sees its token cleared.
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
