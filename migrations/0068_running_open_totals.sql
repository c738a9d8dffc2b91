-- Issue 8 (cost independent of depth): the exchange's usage-limit check read a buyer's open
-- buy exposure as a sum over every open buy of that user, and settlement's cover read what is
-- held on an account as a sum over every placed hold on it. Both were read for every new
-- order, so a buyer with thousands of resting buys paid for each of them on every order. Each
-- total is now kept in a row of its own, beside the rows it sums, by a trigger on those rows:
-- every write to them — through the agents, a command, or SQL by hand — moves the total in the
-- same transaction, so the total cannot drift from the rows it stands for
-- (tests/integration/test_running_totals.py compares them after every kind of write).
-- A row's share of its total: an open buy's remaining × price (a market order has no price
-- and adds nothing, as the sum skipped it); a placed hold's amount. The trigger functions carry
-- their schema's search path, so a write made from any session moves the right total.

SET search_path TO exchange;

CREATE TABLE open_buy_exposure (
    user_id  text PRIMARY KEY,
    amount   numeric NOT NULL CHECK (amount >= 0)
);

INSERT INTO open_buy_exposure (user_id, amount)
SELECT user_id, sum(remaining * price) FROM orders
WHERE side = 'buy' AND status = 'open' AND price IS NOT NULL GROUP BY user_id;

CREATE FUNCTION order_exposure(side text, status text, remaining bigint, price numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN side = 'buy' AND status = 'open' THEN coalesce(remaining * price, 0) ELSE 0 END
$$;

CREATE FUNCTION track_open_buy_exposure() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    was numeric := 0;
    now_ numeric := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := order_exposure(OLD.side, OLD.status, OLD.remaining, OLD.price);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := order_exposure(NEW.side, NEW.status, NEW.remaining, NEW.price);
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.user_id = NEW.user_id THEN  -- one total moves by the difference
        IF now_ >= was THEN
            now_ := now_ - was;
            was := 0;
        ELSE
            was := was - now_;
            now_ := 0;
        END IF;
    END IF;
    IF was > 0 THEN  -- a fall: the total's row is there (an upsert would check a negative row first)
        UPDATE open_buy_exposure SET amount = amount - was WHERE user_id = OLD.user_id;
    END IF;
    IF now_ > 0 THEN
        INSERT INTO open_buy_exposure AS e (user_id, amount) VALUES (NEW.user_id, now_)
        ON CONFLICT (user_id) DO UPDATE SET amount = e.amount + excluded.amount;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_track_open_buy_exposure
    AFTER INSERT OR DELETE OR UPDATE OF user_id, side, status, remaining, price ON orders
    FOR EACH ROW EXECUTE FUNCTION track_open_buy_exposure();


SET search_path TO settlement;

CREATE TABLE placed_holds (
    account_id  text PRIMARY KEY REFERENCES accounts,
    amount      numeric NOT NULL CHECK (amount >= 0)
);

INSERT INTO placed_holds (account_id, amount)
SELECT account_id, sum(amount) FROM holds WHERE status = 'placed' GROUP BY account_id;

CREATE FUNCTION track_placed_holds() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    was numeric := 0;
    now_ numeric := 0;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'placed' THEN
        was := OLD.amount;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'placed' THEN
        now_ := NEW.amount;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.account_id = NEW.account_id THEN  -- one total moves by the difference
        IF now_ >= was THEN
            now_ := now_ - was;
            was := 0;
        ELSE
            was := was - now_;
            now_ := 0;
        END IF;
    END IF;
    IF was > 0 THEN  -- a fall: the total's row is there (an upsert would check a negative row first)
        UPDATE placed_holds SET amount = amount - was WHERE account_id = OLD.account_id;
    END IF;
    IF now_ > 0 THEN
        INSERT INTO placed_holds AS p (account_id, amount) VALUES (NEW.account_id, now_)
        ON CONFLICT (account_id) DO UPDATE SET amount = p.amount + excluded.amount;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER holds_track_placed_holds
    AFTER INSERT OR DELETE OR UPDATE OF account_id, status, amount ON holds
    FOR EACH ROW EXECUTE FUNCTION track_placed_holds();
