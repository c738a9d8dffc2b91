-- The custody agent's books (issue 11 §2, seed 003's custodian 800): safekeeping accounts per
-- client at the custodians the agent hosts, book-entry positions in four sub-balances, locks
-- (pledges), a per-client journal of position changes that holdings deltas are read from, and
-- the certificates custody holds as holder of record at the issuer (its vault).
SET search_path TO custody;

-- A client's counter of position changes: taking the next number locks the client's row until
-- commit, so changes become visible in number order and a cursor never skips one.
CREATE TABLE clients (
    client         text PRIMARY KEY,
    last_sequence  bigint NOT NULL DEFAULT 0 CHECK (last_sequence >= 0)
);

CREATE TABLE accounts (
    account_id  text PRIMARY KEY,
    client      text NOT NULL REFERENCES clients,
    -- The custodian (an institution custody hosts) that keeps the account.
    custodian   text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_by_client ON accounts (client);

-- Shares are conserved: the sub-balances never go below zero, whatever the code above does.
CREATE TABLE positions (
    account_id        text NOT NULL REFERENCES accounts,
    issue_code        text NOT NULL,
    available         bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    locked            bigint NOT NULL DEFAULT 0 CHECK (locked >= 0),
    pending_delivery  bigint NOT NULL DEFAULT 0 CHECK (pending_delivery >= 0),
    pending_receipt   bigint NOT NULL DEFAULT 0 CHECK (pending_receipt >= 0),
    PRIMARY KEY (account_id, issue_code)
);

-- Every change to a position, numbered per client: holdings deltas since a cursor.
CREATE TABLE position_changes (
    client            text NOT NULL REFERENCES clients,
    sequence          bigint NOT NULL CHECK (sequence > 0),
    account_id        text NOT NULL,
    issue_code        text NOT NULL,
    available         bigint NOT NULL,
    locked            bigint NOT NULL,
    pending_delivery  bigint NOT NULL,
    pending_receipt   bigint NOT NULL,
    cause             text NOT NULL,
    reference         text NOT NULL,
    changed_at        timestamptz NOT NULL,
    PRIMARY KEY (client, sequence)
);

CREATE TABLE locks (
    lock_id               uuid PRIMARY KEY,
    account_id            text NOT NULL REFERENCES accounts,
    client                text NOT NULL,
    lock_holder           text NOT NULL,
    reason                text NOT NULL,
    obligation_reference  text NOT NULL,
    -- The placing request's content, so the same lock id with other content is refused.
    request_digest        text NOT NULL,
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'released', 'sold')),
    placed_at             timestamptz NOT NULL
);

CREATE TABLE lock_positions (
    lock_id     uuid NOT NULL REFERENCES locks,
    issue_code  text NOT NULL,
    placed      bigint NOT NULL CHECK (placed > 0),
    -- What the lock still holds; released or sold shares leave it.
    quantity    bigint NOT NULL CHECK (quantity >= 0 AND quantity <= placed),
    PRIMARY KEY (lock_id, issue_code)
);

-- Each release once: a repeated release id gets the same answer.
CREATE TABLE lock_releases (
    release_id      uuid PRIMARY KEY,
    lock_id         uuid NOT NULL REFERENCES locks,
    request_digest  text NOT NULL,
    released        jsonb NOT NULL,
    released_at     timestamptz NOT NULL
);

-- The certificates custody holds as holder of record, for all its clients together.
CREATE TABLE vault (
    cert_id     uuid PRIMARY KEY,
    issue_code  text NOT NULL,
    shares      bigint NOT NULL CHECK (shares > 0),
    -- The signed certificate, once the issuer sent it (a registered transfer comes first).
    signed      jsonb,
    -- held: free; busy: being split, merged, handed over or sold; gone: no longer custody's.
    status      text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'busy', 'gone')),
    busy_with   text,
    arrived_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vault_held ON vault (issue_code) WHERE status <> 'gone';
