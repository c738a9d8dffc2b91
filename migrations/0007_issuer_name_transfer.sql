-- Name transfer at the issuer (seed 001 §2.3, §3.6): the name-transfer history list 17, and
-- the commitment of a seller's remainder certificate to the exchange order still selling it.
SET search_path TO issuer;

CREATE SEQUENCE name_transfer_numbers;

ALTER TABLE register ADD COLUMN committed_order bigint;
ALTER TABLE register ADD COLUMN committed_by text;
ALTER TABLE register ADD CHECK ((committed_order IS NULL) = (committed_by IS NULL));

-- Name-Transfer History List 17 (Fig. 16), one row per name transfer.
CREATE TABLE name_transfers (
    name_transfer_number  bigint PRIMARY KEY,
    issue_code            text NOT NULL REFERENCES offerings,
    cert_id               uuid NOT NULL REFERENCES register,   -- the transferee's new CertID
    shares                bigint NOT NULL CHECK (shares > 0),
    buyer_user_id         text NOT NULL,
    seller_user_id        text NOT NULL,
    old_cert_id           uuid NOT NULL REFERENCES register,
    remainder_cert_id     uuid REFERENCES register,
    matching_number       bigint,                             -- set for a transfer on the exchange
    kind                  text NOT NULL CHECK (kind IN ('exchange', 'off_exchange')),
    transferred_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX name_transfers_one_per_match ON name_transfers (matching_number)
    WHERE matching_number IS NOT NULL;

-- The signing certificate, so a certificate can be sent again byte for byte after a key rotation.
ALTER TABLE issued_certificates ADD COLUMN signer_certificate bytea;
