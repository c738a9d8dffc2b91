-- The certificate lifecycle off the exchange (seed 001 Phases 3 and 4).
SET search_path TO issuer;

-- Every reissue (loss, split, merge): which CertIDs it retired and which it created.
CREATE TABLE reissues (
    reissue_number  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id      uuid NOT NULL UNIQUE,
    user_id         text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('lost', 'split', 'merge')),
    retired         uuid[] NOT NULL,
    created         uuid[] NOT NULL,
    reissued_at     timestamptz NOT NULL DEFAULT now()
);

SET search_path TO investor;

ALTER TABLE wallet DROP CONSTRAINT wallet_status_check;
ALTER TABLE wallet ADD CONSTRAINT wallet_status_check
    CHECK (status IN ('held', 'surrendered', 'handed_over'));

-- Certificates handed over by another investor (P3.1–P3.2) and what became of them.
CREATE TABLE handovers (
    handover_id         uuid PRIMARY KEY,
    transferee          text NOT NULL,
    transferor          text NOT NULL,
    cert_id             uuid,
    issue_code          text,
    shares              bigint,
    certificate         jsonb NOT NULL,
    status              text NOT NULL CHECK (status IN ('received', 'rejected', 'claimed', 'registered', 'refused')),
    reason              text,
    holder_name         text,
    holder_address      text,
    dividend_method     text,
    dividend_account    text,
    request_id          uuid,
    received_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE holdings_statements (
    user_id      text PRIMARY KEY,
    statement    jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
