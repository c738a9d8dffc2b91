-- Custody as the securities leg of a book-entry trade (docs/dvp.md): one reservation per
-- settlement instruction (settlement keeps at most one attempt outstanding). Reserving moves
-- the deliverer's shares from available to pending delivery and announces them to the
-- receiver as pending receipt; committing delivers them; releasing puts both back.
SET search_path TO custody;

CREATE TABLE reservations (
    instruction         bigint PRIMARY KEY,
    attempt             integer NOT NULL CHECK (attempt > 0),
    issue_code          text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    deliverer_account   text NOT NULL REFERENCES accounts,
    receiver_account    text NOT NULL REFERENCES accounts,
    status              text NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
    reserved_at         timestamptz NOT NULL,
    decided_at          timestamptz
);
