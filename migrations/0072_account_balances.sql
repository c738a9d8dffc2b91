-- Issue 8 (a cost that grew with history): an account's balance was the sum of every posting it
-- ever had, read for the buyer and the seller of every trade and summed again, for every customer
-- account an entry touches, by the overdraft check at commit (0005's check_entry). A statement
-- log of a 600-trade burst showed the read growing fourfold over the burst (34 → 138 µs) on
-- accounts a few hundred postings deep; a participant's account with a year of trades would pay
-- for each of them on each trade.
--
-- The balance is now kept as stop 18's totals are (migration 0068, broker/running_totals.py): a
-- folded amount per account plus the changes not folded yet, which a trigger on `postings` inserts
-- with every posting, in the posting's own transaction; the agent folds them every second. The
-- ledger stays what a balance is: postings are still append-only (0005 revokes UPDATE and DELETE),
-- the statement an operator reads still sums them, and the tests and the fault suite compare the
-- kept balances with the sums (repo.balance_drift). `postings` is locked against writes for this
-- migration, so no posting falls between the backfill and the trigger.
--
-- Unlike 0068's totals, this one is what the database's own overdraft check trusts, so the agent
-- may not write it (review found one stray row through the agent's login enough to let an
-- overdraft commit, where 0005 made the ledger unwritable to it): the agent's role may only read
-- the two tables; the trigger and the fold are SECURITY DEFINER functions of the migrating role,
-- and the only ways to change a kept balance are a posting and a fold.
SET search_path TO settlement;
LOCK TABLE postings IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE account_balances (
    account_id  text PRIMARY KEY,
    amount      numeric NOT NULL
);
CREATE TABLE account_balances_changes (
    account_id  text NOT NULL,
    change      numeric NOT NULL
);
CREATE INDEX account_balances_changes_by_account ON account_balances_changes (account_id);
ALTER TABLE account_balances_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

INSERT INTO account_balances (account_id, amount)
SELECT account_id, sum(amount) FROM postings GROUP BY account_id;

-- UPDATE and DELETE are recorded too, so that a superuser's correction (the agent may not
-- rewrite the ledger) leaves the kept balance equal to the sum rather than drifting.
CREATE FUNCTION record_account_balance_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO account_balances_changes (account_id, change) VALUES (OLD.account_id, -OLD.amount);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO account_balances_changes (account_id, change) VALUES (NEW.account_id, NEW.amount);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_record_account_balance_change
    AFTER INSERT OR DELETE OR UPDATE OF account_id, amount ON postings
    FOR EACH ROW EXECUTE FUNCTION record_account_balance_change();

-- The fold (broker/running_totals.py's, as a function the agent may run but not rewrite): every
-- committed change moved into its account's amount, in account order; returns how many moved.
CREATE FUNCTION fold_account_balances() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    WITH moved AS (DELETE FROM account_balances_changes RETURNING account_id, change),
         summed AS (SELECT account_id, sum(change) AS change FROM moved GROUP BY account_id),
         folded AS (INSERT INTO account_balances AS t (account_id, amount)
                    SELECT account_id, change FROM summed ORDER BY account_id
                    ON CONFLICT (account_id) DO UPDATE SET amount = t.amount + excluded.amount
                    RETURNING 1)
    SELECT count(*) FROM folded
$$;

-- 0001's default privileges gave the agent every write on the new tables: reading is all it needs.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON account_balances, account_balances_changes FROM kabuto_settlement;

-- The overdraft check at commit reads the kept balance (the entry's own changes are among the
-- changes not folded yet: the row trigger above ran before this deferred one). Unchanged otherwise.
CREATE OR REPLACE FUNCTION check_entry(id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    total      numeric;
    legs       bigint;
    currencies bigint;
    overdrawn  text;
BEGIN
    IF NOT EXISTS (SELECT FROM settlement.entries WHERE entry_id = id) THEN
        RETURN;  -- the entry itself is gone (only possible for a superuser): nothing to balance
    END IF;
    SELECT coalesce(sum(p.amount), 0), count(*), count(DISTINCT a.currency)
      INTO total, legs, currencies
      FROM settlement.postings p JOIN settlement.accounts a USING (account_id)
     WHERE p.entry_id = id;
    IF total <> 0 OR legs < 2 OR currencies <> 1 THEN
        RAISE EXCEPTION 'ledger entry % is not balanced: % postings in % currencies summing to %',
            id, legs, currencies, total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT a.account_id INTO overdrawn
      FROM settlement.postings p JOIN settlement.accounts a USING (account_id)
     WHERE p.entry_id = id AND a.kind = 'customer'
       AND coalesce((SELECT b.amount FROM settlement.account_balances b WHERE b.account_id = a.account_id), 0)
           + coalesce((SELECT sum(c.change) FROM settlement.account_balances_changes c
                       WHERE c.account_id = a.account_id), 0) < 0
     LIMIT 1;
    IF overdrawn IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry % overdraws customer account %', id, overdrawn
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;
