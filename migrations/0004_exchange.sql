-- The exchange's CertID list (seed 001 §3.4): (CertID, holder) pairs of valid certificates.
-- Each entry remembers the list version that last changed it, so late or repeated lists
-- never bring a retired CertID back.
SET search_path TO exchange;

CREATE TABLE certid_lists (
    issue_code   text PRIMARY KEY,
    share_class  text NOT NULL,
    list_id      uuid NOT NULL,
    version      bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE certid_list (
    cert_id     uuid PRIMARY KEY,
    issue_code  text NOT NULL,
    user_id     text,
    shares      bigint CHECK (shares > 0),
    status      text NOT NULL CHECK (status IN ('valid', 'retired')),
    version     bigint NOT NULL,
    -- A CertID retired before the exchange saw it valid has no holder on record.
    CHECK (status = 'retired' OR (user_id IS NOT NULL AND shares IS NOT NULL))
);
CREATE INDEX certid_list_valid ON certid_list (issue_code) WHERE status = 'valid';
