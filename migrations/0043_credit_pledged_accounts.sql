-- A purchaser may pledge only some of its safekeeping accounts (R-003-12): none listed = all.
SET search_path TO credit;

ALTER TABLE purchasers ADD COLUMN pledged_accounts text[];
