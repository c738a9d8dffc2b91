-- The settlement agent's books (seed 001 §2.5, §3.7 Settlement Account DB 26; R-001-13, R-001-41):
-- a double-entry cash ledger. An entry is one business event (a deposit, a withdrawal, a trade's
-- cash leg); its postings move money between accounts and always sum to zero, which the database
-- itself enforces at commit. A balance is the sum of an account's postings, never a stored figure
-- that could drift from them. The ledger is append-only: a mistake is corrected by a new entry.
SET search_path TO settlement;

CREATE TABLE accounts (
    account_id     text PRIMARY KEY,
    owner_user_id  text NOT NULL,
    currency       char(3) NOT NULL DEFAULT 'JPY' CHECK (currency ~ '^[A-Z]{3}$'),
    -- 'external' accounts stand for money outside Kabuto (the banks deposits come from and
    -- withdrawals go to); they are the settlement agent's own and may run negative.
    kind           text NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'external')),
    opened_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_by_owner ON accounts (owner_user_id);

-- Where deposits come from and withdrawals go to, in yen; other currencies get theirs when the
-- first customer account in that currency is opened.
INSERT INTO accounts (account_id, owner_user_id, currency, kind)
VALUES ('external:deposits', 'settlement', 'JPY', 'external');

CREATE TABLE entries (
    entry_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'trade')),
    -- The deposit's bank reference, the withdrawal's payout reference, the trade's matching
    -- number: the same one can never post twice.
    reference    text NOT NULL CHECK (reference <> ''),
    description  text NOT NULL,
    posted_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, reference)
);

CREATE TABLE postings (
    entry_id    bigint NOT NULL REFERENCES entries,
    account_id  text NOT NULL REFERENCES accounts,
    -- Positive credits the account, negative debits it.
    amount      numeric(20, 4) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (entry_id, account_id)
);
CREATE INDEX postings_by_account ON postings (account_id, entry_id);

-- Double entry, enforced at commit: every entry has at least two postings, in one currency,
-- summing to zero; no customer account it touches is left below zero. Deferred to the end
-- of the transaction because an entry's postings are written one row at a time.
CREATE FUNCTION check_entry(id bigint) RETURNS void LANGUAGE plpgsql AS $$
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
       AND (SELECT sum(q.amount) FROM settlement.postings q WHERE q.account_id = a.account_id) < 0
     LIMIT 1;
    IF overdrawn IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry % overdraws customer account %', id, overdrawn
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

CREATE FUNCTION check_entry_of_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM settlement.check_entry(OLD.entry_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM settlement.check_entry(NEW.entry_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER postings_balance
    AFTER INSERT OR UPDATE OR DELETE ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION check_entry_of_row();

-- Catches an entry written with no postings at all, which no postings trigger would see.
CREATE CONSTRAINT TRIGGER entries_balance
    AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION check_entry_of_row();

-- The agent may add to the ledger, never rewrite it.
REVOKE UPDATE, DELETE ON entries, postings FROM kabuto_settlement;

-- Each settlement request 38 (seed 001 §4.8, S130) and what was decided for it, once per
-- matching number: a failed instruction is final, and the exchange learns it from the notice.
CREATE TABLE instructions (
    matching_number       bigint PRIMARY KEY,
    name_transfer_number  bigint NOT NULL,
    issue_code            text NOT NULL,
    shares                bigint NOT NULL CHECK (shares > 0),
    price                 numeric(20, 4) NOT NULL CHECK (price > 0),
    amount                numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency              char(3) NOT NULL,
    buyer_user_id         text NOT NULL,
    buyer_account         text NOT NULL,
    seller_user_id        text NOT NULL,
    seller_account        text NOT NULL,
    status                text NOT NULL CHECK (status IN ('settled', 'failed')),
    failure               text,
    detail                text,
    entry_id              bigint UNIQUE REFERENCES entries,
    -- The message that decided it, to trace the decision back to the exchange's request.
    request_id            uuid NOT NULL,
    received_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (
        (status = 'settled' AND entry_id IS NOT NULL AND failure IS NULL)
        OR (status = 'failed' AND entry_id IS NULL AND failure IS NOT NULL)
    )
);
