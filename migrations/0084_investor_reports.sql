-- Trades reported off the order book that the investor agent's participants signed (docs/dvp.md,
-- "Reported trades"): what the buyer's agent needs, when the exchange says the trade settled, to
-- ask the issuer for the new certificate (its holder's name, address, dividend account), and
-- which certificate the seller's agent gives up. A notice of settlement for a report no
-- participant here signed is refused as unsolicited.
SET search_path TO investor;

CREATE TABLE reports (
    user_id             text NOT NULL,
    side                text NOT NULL CHECK (side IN ('buy', 'sell')),
    seller_user_id      text NOT NULL,
    report_id           text NOT NULL,
    terms_digest        text NOT NULL,
    issue_code          text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    price               numeric(20, 4) NOT NULL,
    cert_id             uuid NOT NULL,          -- the seller's certificate
    settlement_account  text NOT NULL,
    holder_name         text,
    holder_address      text,
    dividend_method     text,
    dividend_account    text,
    status              text NOT NULL CHECK (status IN ('signed', 'settled')),
    signed_at           timestamptz NOT NULL DEFAULT now(),
    settled_at          timestamptz,
    PRIMARY KEY (user_id, seller_user_id, report_id, side)
);
