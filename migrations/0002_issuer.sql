-- The issuing agent's books (seed 001 §2.3): offerings, the shareholder register (DB16),
-- the certificates it signed, the examination of every request, and the CertID list version.
SET search_path TO issuer;

CREATE TABLE offerings (
    issue_code               text PRIMARY KEY,
    company_name             text NOT NULL,
    incorporated_on          date NOT NULL,
    share_class              text NOT NULL,
    par_value_per_share      numeric(20, 4),
    currency                 char(3) NOT NULL DEFAULT 'JPY',
    offer_price              numeric(20, 4) NOT NULL CHECK (offer_price > 0),
    shares_offered           bigint NOT NULL CHECK (shares_offered > 0),
    shares_remaining         bigint NOT NULL CHECK (shares_remaining >= 0),
    minimum_lot              integer NOT NULL DEFAULT 1 CHECK (minimum_lot > 0),
    transfer_restriction     text NOT NULL DEFAULT 'none',
    convertible_details      text,
    certificate_validity_days integer NOT NULL DEFAULT 3650 CHECK (certificate_validity_days > 0),
    issuance_conditions      jsonb NOT NULL DEFAULT '{}',
    status                   text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    next_certificate_number  bigint NOT NULL DEFAULT 1,
    register_version         bigint NOT NULL DEFAULT 0,
    opened_at                timestamptz NOT NULL DEFAULT now(),
    CHECK (shares_remaining <= shares_offered)
);

-- Shareholder Register DB16 (seed 001 Fig. 7): one row per certificate; a row is never
-- deleted, it is retired when its CertID stops being valid.
CREATE TABLE register (
    cert_id              uuid PRIMARY KEY,
    issue_code           text NOT NULL REFERENCES offerings,
    certificate_number   text NOT NULL,
    holder_user_id       text NOT NULL,
    holder_name          text NOT NULL,
    holder_address       text NOT NULL,
    shares               bigint NOT NULL CHECK (shares > 0),
    share_class          text NOT NULL,
    acquired_on          date NOT NULL,
    issuance_conditions  jsonb NOT NULL DEFAULT '{}',
    dividend_method      text,
    dividend_account     text,
    status               text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'retired')),
    registered_at        timestamptz NOT NULL DEFAULT now(),
    retired_at           timestamptz
);
-- One certificate number has one valid CertID at a time (R-001-09).
CREATE UNIQUE INDEX register_one_valid_per_number
    ON register (issue_code, certificate_number) WHERE status = 'valid';
CREATE INDEX register_by_holder ON register (holder_user_id) WHERE status = 'valid';

-- Every certificate the issuer signed, byte for byte.
CREATE TABLE issued_certificates (
    cert_id    uuid PRIMARY KEY REFERENCES register,
    content    bytea NOT NULL,
    signature  bytea NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now()
);

-- The examination of each issuance request (seed 001 S51–S60) and its outcome.
CREATE TABLE issuance_requests (
    request_id  uuid PRIMARY KEY,
    user_id     text NOT NULL,
    issue_code  text NOT NULL,
    shares      bigint NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('issued', 'refused')),
    reason      text,
    cert_id     uuid REFERENCES register,
    decided_at  timestamptz NOT NULL DEFAULT now()
);
