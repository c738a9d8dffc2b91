-- Idempotent client order ids (issue 9): the digest of each accepted order's payload, so that the
-- same client order id sent again is answered with the same acceptance when the payload is the same,
-- and refused as a conflict when it is not. Orders accepted before this column existed have NULL:
-- a resubmission of one of those is a conflict, since it cannot be shown to be the same order.
ALTER TABLE exchange.orders ADD COLUMN payload_digest text;
