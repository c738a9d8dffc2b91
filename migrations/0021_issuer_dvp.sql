-- The issuer as a securities-leg agent of delivery versus payment (issue 11, docs/dvp.md):
-- a CertID reserved for a settlement instruction is committed to the exchange's sell order (so
-- no reissue, hand-over or other transfer can take it) until settlement commits (the name
-- transfer) or releases it (the commitment it had before comes back).
SET search_path TO issuer;

CREATE TABLE reservations (
    instruction        bigint PRIMARY KEY,          -- the exchange's matching number
    attempt            bigint NOT NULL,
    cert_id            uuid NOT NULL REFERENCES register,
    shares             bigint NOT NULL CHECK (shares > 0),
    request            jsonb NOT NULL,              -- the reserve message, to transfer on commit
    previous_order     bigint,                      -- the commitment before the reservation
    previous_by        text,
    status             text NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
    name_transfer_number bigint,
    delivery           jsonb,                       -- what the commit produced, for a repeated commit
    reserved_at        timestamptz NOT NULL DEFAULT now(),
    ended_at           timestamptz
);
CREATE UNIQUE INDEX reservations_one_per_certificate ON reservations (cert_id) WHERE status = 'reserved';

-- A partially settled instruction transfers in several parts, each retiring its own CertID (the
-- first the sold certificate, the next its remainder): one name transfer per retired CertID of a
-- match, no longer one per match.
DROP INDEX name_transfers_one_per_match;
CREATE UNIQUE INDEX name_transfers_one_per_part ON name_transfers (matching_number, old_cert_id)
    WHERE matching_number IS NOT NULL;
