-- The investor client's wallet (seed 001 §2.2): the certificates it holds, byte for byte,
-- and the requests it sent with what became of them.
SET search_path TO investor;

CREATE TABLE wallet (
    cert_id             uuid PRIMARY KEY,
    holder_user_id      text NOT NULL,
    issue_code          text NOT NULL,
    certificate_number  text NOT NULL,
    shares              bigint NOT NULL CHECK (shares > 0),
    content             bytea NOT NULL,
    issuer_signature    bytea NOT NULL,
    issuer_certificate  bytea NOT NULL,
    status              text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'surrendered')),
    received_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_by_holder ON wallet (holder_user_id) WHERE status = 'held';

CREATE TABLE requests (
    request_id  uuid PRIMARY KEY,
    user_id     text NOT NULL,
    kind        text NOT NULL,
    issue_code  text NOT NULL,
    shares      bigint NOT NULL,
    status      text NOT NULL DEFAULT 'sent' CHECK (status IN ('sent', 'fulfilled', 'refused')),
    reason      text,
    detail      text,
    cert_id     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
