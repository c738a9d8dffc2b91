-- A sale's proceeds are paid on from custody's own settlement account to the lock holder's
-- proceeds account (one balanced ledger entry); the lock holder is told once settlement answered.
SET search_path TO custody;

ALTER TABLE sales ADD COLUMN payover text CHECK (payover IN ('sent', 'posted', 'failed'));
