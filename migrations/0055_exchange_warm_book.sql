-- Issue 8: the exchange keeps each issue's book warm in memory between orders.
-- book_token names the in-memory book that matches the committed rows; any write to an
-- order clears it (so a cancel from the command line, a rolled-back transaction or another
-- process all make the next order rebuild the book from rows); the exchange sets a new token
-- at the end of each handler that used the book (agents/exchange/warm_book.py).
SET search_path TO exchange;

ALTER TABLE instruments ADD COLUMN book_token uuid;

CREATE FUNCTION forget_book_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE instruments SET book_token = NULL WHERE issue_code = NEW.issue_code AND book_token IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_forget_book_token AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION forget_book_token();
