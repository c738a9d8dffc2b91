-- The issuer frees a closed sell order's remainders (agents/issuer/repo.py `release_all`) by the
-- order that committed them: `committed_by` and `committed_order`. No index had those columns,
-- so each release read the whole register, every certificate ever registered; the bench's
-- database read about 2.7 million register rows by sequential scans in 40 s at 100 trades/s
-- (docs/performance.md, stop 42). Only certificates committed to an open sell order have them.
SET search_path TO issuer;

CREATE INDEX register_committed ON register (committed_by, committed_order) WHERE committed_order IS NOT NULL;
