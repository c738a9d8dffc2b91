-- Issue 8 (order entry): a standing cover — cash a buyer sets aside once, which buy orders
-- sealed with the same account box draw on at the exchange, so such an order is booked in the
-- hop that receives it instead of waiting for a per-order cover (docs/dvp.md, "Standing cover").
--
-- Each table this migration alters is locked first, in the strongest mode it needs, so nothing
-- here upgrades a lock a running agent could be waiting behind.

SET search_path TO exchange;

LOCK TABLE orders, matches IN ACCESS EXCLUSIVE MODE;

CREATE TABLE standing_covers (
    cover_id      uuid PRIMARY KEY,
    user_id       text NOT NULL,
    -- The account box the buyer seals its orders with, kept unopened: an order draws on the
    -- cover only when its box is byte for byte this one.
    account       text NOT NULL,
    amount        numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency      char(3) NOT NULL,
    status        text NOT NULL CHECK (status IN ('requested', 'active', 'refused', 'closing', 'closed')),
    reason        text,
    -- The close request's conversation, in which `standing_cover.closed` answers it later.
    closing_conversation uuid,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One live standing cover per box: an order's box names at most one cover to draw on.
CREATE UNIQUE INDEX standing_covers_one_per_box ON standing_covers (user_id, account)
    WHERE status IN ('requested', 'active');

-- The worst price per share an order drew on its standing cover (orders.cover_id names the
-- cover); NULL for an order whose cover_id is a per-order cover, or that has none.
ALTER TABLE orders ADD COLUMN cover_unit numeric(20, 4) CHECK (cover_unit > 0);
CREATE INDEX orders_by_standing_cover ON orders (cover_id) WHERE cover_unit IS NOT NULL;

-- What each standing cover has drawn, kept as a running total (broker.running_totals, as in
-- 0068): an open order's share is remaining × cover_unit; an execution of such an order adds
-- its share below.
CREATE TABLE standing_cover_drawn (
    cover_id  uuid PRIMARY KEY,
    amount    numeric NOT NULL
);
CREATE TABLE standing_cover_drawn_changes (
    cover_id  uuid NOT NULL,
    change    numeric NOT NULL
);
CREATE INDEX standing_cover_drawn_changes_by_cover ON standing_cover_drawn_changes (cover_id);
ALTER TABLE standing_cover_drawn_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE FUNCTION order_draw(side text, status text, remaining bigint, cover_unit numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN side = 'buy' AND status = 'open' AND cover_unit IS NOT NULL THEN remaining * cover_unit ELSE 0 END
$$;

CREATE FUNCTION record_order_draw_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    was numeric := 0;
    now_ numeric := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := order_draw(OLD.side, OLD.status, OLD.remaining, OLD.cover_unit);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := order_draw(NEW.side, NEW.status, NEW.remaining, NEW.cover_unit);
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.cover_id IS NOT DISTINCT FROM NEW.cover_id THEN
        IF now_ <> was THEN
            INSERT INTO standing_cover_drawn_changes (cover_id, change) VALUES (NEW.cover_id, now_ - was);
        END IF;
        RETURN NULL;
    END IF;
    IF was <> 0 THEN
        INSERT INTO standing_cover_drawn_changes (cover_id, change) VALUES (OLD.cover_id, -was);
    END IF;
    IF now_ <> 0 THEN
        INSERT INTO standing_cover_drawn_changes (cover_id, change) VALUES (NEW.cover_id, now_);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER orders_record_draw_change
    AFTER INSERT OR DELETE OR UPDATE OF side, status, remaining, cover_unit, cover_id ON orders
    FOR EACH ROW EXECUTE FUNCTION record_order_draw_change();

-- An execution's share, on its buy order's standing cover: until it settles, its shares at the
-- order's cover_unit (what the order drew for them), so that S131 putting a failed execution's
-- shares back on the order moves nothing (review found a restore drawing beyond the amount when
-- a cheaper fill's difference had been given back and drawn again); once completed, its
-- amount (a fill below the limit gives the difference back then); once failed, nothing.
CREATE FUNCTION execution_draw(status text, shares bigint, price numeric, unit numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status WHEN 'failed' THEN 0 WHEN 'completed' THEN shares * price ELSE shares * unit END
$$;

CREATE FUNCTION record_execution_draw_change() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    cover uuid;
    unit numeric;
    was numeric := 0;
    now_ numeric := 0;
BEGIN
    SELECT o.cover_id, o.cover_unit INTO cover, unit FROM orders o
    WHERE o.acceptance_number = coalesce(NEW.buy_order, OLD.buy_order) AND o.cover_unit IS NOT NULL;
    IF cover IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        was := execution_draw(OLD.status, OLD.shares, OLD.price, unit);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := execution_draw(NEW.status, NEW.shares, NEW.price, unit);
    END IF;
    IF now_ <> was THEN
        INSERT INTO standing_cover_drawn_changes (cover_id, change) VALUES (cover, now_ - was);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER matches_record_draw_change
    AFTER INSERT OR DELETE OR UPDATE OF status, shares, price ON matches
    FOR EACH ROW EXECUTE FUNCTION record_execution_draw_change();


SET search_path TO settlement;

LOCK TABLE covers IN ACCESS EXCLUSIVE MODE;

-- A standing cover is measured in cash (`unspent`), a per-order cover in shares at a unit price.
ALTER TABLE covers
    ADD COLUMN kind text NOT NULL DEFAULT 'order' CHECK (kind IN ('order', 'standing')),
    ADD COLUMN amount numeric(20, 4),
    ADD COLUMN unspent numeric(20, 4),
    ALTER COLUMN client_order_id DROP NOT NULL,
    ALTER COLUMN quantity DROP NOT NULL,
    ALTER COLUMN remaining DROP NOT NULL,
    ALTER COLUMN unit_price DROP NOT NULL,
    ADD CONSTRAINT covers_kind_fields CHECK (
        (kind = 'order' AND client_order_id IS NOT NULL AND quantity IS NOT NULL AND remaining IS NOT NULL
             AND unit_price IS NOT NULL AND amount IS NULL AND unspent IS NULL)
        OR (kind = 'standing' AND amount > 0 AND unspent >= 0 AND unspent <= amount
             AND quantity IS NULL AND remaining IS NULL AND unit_price IS NULL));
