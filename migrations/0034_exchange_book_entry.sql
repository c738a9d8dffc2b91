-- Book-entry orders at the exchange (issue 11 §2): a custody client's order names its
-- safekeeping account instead of a certificate; its securities leg is a position move at
-- custody. Book-entry orders form their own segment of the issue's book.
SET search_path TO exchange;

ALTER TABLE orders ADD COLUMN safekeeping_account text;
