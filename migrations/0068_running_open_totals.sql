-- Issue 8 (cost independent of depth): the exchange's usage-limit check read a buyer's open
-- buy exposure as a sum over every open buy of that user, and settlement's cover read what is
-- held on an account as a sum over every placed hold on it. Both were read for every new
-- order, so a buyer with thousands of resting buys paid for each of them on every order.
--
-- Each total is now kept as a folded amount plus the changes not folded yet:
-- * a trigger on the rows records every change of a row's share as a row of its own in
--   `..._changes` — an insert, so no writer ever waits on another writer's lock because of it
--   (a total updated in place would be a row every writer of that buyer or account locks until
--   commit, in whatever order its writes come: review found it deadlocking the end of day with
--   the exchange's batch, and settlement's batch with its own recycle);
-- * the agent folds the changes into the amounts every second (`fold` in order_repo and
--   funds_repo, a background job), in one short transaction that is the only writer of the
--   amounts and takes them in key order;
-- * a reader adds the amount and the changes not folded yet — about a second's worth, plus the
--   index entries of folded ones until autovacuum clears them (set below to vacuum the change
--   tables each round they have a thousand dead rows) — however many orders rest or holds are
--   placed.
-- A row's share of its total: an open buy's remaining × price (a market order has no price and
-- adds nothing, as the sum skipped it); a placed hold's amount. Each table is locked against
-- writes for this migration, so no write can fall between the backfill and its trigger, and
-- nothing here takes a stronger lock on it after that (a running agent that read the table
-- before the lock and writes it after would deadlock with a lock upgrade). The
-- trigger functions carry their schema's search path, so a write from any session is recorded.
-- The totals equal the sums unless a statement bypasses row triggers (TRUNCATE, triggers
-- disabled); tests and the fault suite compare them (order_repo.exposure_drift,
-- funds_repo.held_drift).

SET search_path TO exchange;

LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE open_buy_exposure (
    user_id  text PRIMARY KEY,
    amount   numeric NOT NULL
);

CREATE TABLE open_buy_exposure_changes (
    user_id  text NOT NULL,
    change   numeric NOT NULL
);
CREATE INDEX open_buy_exposure_changes_by_user ON open_buy_exposure_changes (user_id);
-- Folded changes are deleted, and a reader's index scan passes their entries until a vacuum
-- clears them: vacuum this table every autovacuum round it has a thousand dead rows in.
ALTER TABLE open_buy_exposure_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

INSERT INTO open_buy_exposure (user_id, amount)
SELECT user_id, sum(remaining * price) FROM orders
WHERE side = 'buy' AND status = 'open' AND price IS NOT NULL GROUP BY user_id;

CREATE FUNCTION order_exposure(side text, status text, remaining bigint, price numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN side = 'buy' AND status = 'open' THEN coalesce(remaining * price, 0) ELSE 0 END
$$;

CREATE FUNCTION record_open_buy_exposure_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
    IF TG_OP = 'UPDATE' AND OLD.user_id = NEW.user_id THEN
        IF now_ <> was THEN
            INSERT INTO open_buy_exposure_changes (user_id, change) VALUES (NEW.user_id, now_ - was);
        END IF;
        RETURN NULL;
    END IF;
    IF was <> 0 THEN
        INSERT INTO open_buy_exposure_changes (user_id, change) VALUES (OLD.user_id, -was);
    END IF;
    IF now_ <> 0 THEN
        INSERT INTO open_buy_exposure_changes (user_id, change) VALUES (NEW.user_id, now_);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_record_open_buy_exposure_change
    AFTER INSERT OR DELETE OR UPDATE OF user_id, side, status, remaining, price ON orders
    FOR EACH ROW EXECUTE FUNCTION record_open_buy_exposure_change();


SET search_path TO settlement;

LOCK TABLE holds IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE placed_holds (
    account_id  text PRIMARY KEY,
    amount      numeric NOT NULL
);

CREATE TABLE placed_holds_changes (
    account_id  text NOT NULL,
    change      numeric NOT NULL
);
CREATE INDEX placed_holds_changes_by_account ON placed_holds_changes (account_id);
ALTER TABLE placed_holds_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

INSERT INTO placed_holds (account_id, amount)
SELECT account_id, sum(amount) FROM holds WHERE status = 'placed' GROUP BY account_id;

CREATE FUNCTION record_placed_holds_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
    IF TG_OP = 'UPDATE' AND OLD.account_id = NEW.account_id THEN
        IF now_ <> was THEN
            INSERT INTO placed_holds_changes (account_id, change) VALUES (NEW.account_id, now_ - was);
        END IF;
        RETURN NULL;
    END IF;
    IF was <> 0 THEN
        INSERT INTO placed_holds_changes (account_id, change) VALUES (OLD.account_id, -was);
    END IF;
    IF now_ <> 0 THEN
        INSERT INTO placed_holds_changes (account_id, change) VALUES (NEW.account_id, now_);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER holds_record_placed_holds_change
    AFTER INSERT OR DELETE OR UPDATE OF account_id, status, amount ON holds
    FOR EACH ROW EXECUTE FUNCTION record_placed_holds_change();
