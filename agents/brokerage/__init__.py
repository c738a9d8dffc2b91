"""The brokerage intermediary (seeds 000 and 002): customers, accounts, allowances and holds."""
