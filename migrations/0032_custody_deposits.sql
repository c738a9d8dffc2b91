-- Certificates in and out of custody (issue 11 §2). A deposit is a certificate the client
-- handed over (seed 001 P3.1) that custody claims at the issuer (41 → 42 → 43); the client's
-- position rises when the issuer registers custody as holder. A withdrawal hands a certificate
-- of exactly the quantity to the client (split or merged at the issuer first, 46); the
-- position falls when the issuer's register no longer shows it as custody's.
SET search_path TO custody;

CREATE TABLE deposits (
    handover_id             uuid PRIMARY KEY,
    transferor              text NOT NULL,
    certificate             jsonb NOT NULL,        -- the endorsed certificate as handed over
    cert_id                 uuid,
    issue_code              text,
    shares                  bigint CHECK (shares > 0),
    account_id              text REFERENCES accounts,
    status                  text NOT NULL CHECK (status IN
                                ('rejected', 'received', 'claimed', 'registered', 'completed', 'refused')),
    reason                  text,
    transfer_request_id     uuid UNIQUE,           -- our 41
    certificate_request_id  uuid UNIQUE,           -- our 43
    new_cert_id             uuid,
    received_at             timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);

CREATE TABLE withdrawals (
    withdrawal_id       uuid PRIMARY KEY,
    account_id          text NOT NULL REFERENCES accounts,
    client              text NOT NULL,
    issue_code          text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    status              text NOT NULL CHECK (status IN ('preparing', 'handed_over', 'completed', 'cancelled')),
    cert_id             uuid,                  -- the certificate handed over
    reissue_request_id  uuid UNIQUE,           -- our 46, while preparing
    reason              text,
    requested_at        timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX withdrawals_open ON withdrawals (status) WHERE status IN ('preparing', 'handed_over');

-- Custody's holdings inquiries (44) to the issuer: a statement counts only for withdrawals
-- handed over before the inquiry was sent.
CREATE TABLE register_inquiries (
    inquiry_id  uuid PRIMARY KEY,
    sent_at     timestamptz NOT NULL
);
