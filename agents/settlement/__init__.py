"""Settlement (seed 001 §2.5, seed 002 fund settlement): the double-entry cash ledger."""
