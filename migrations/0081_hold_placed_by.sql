-- Who placed a hold at settlement (docs/bad-input.md B101). A brokerage's `funds.hold_release`,
-- `funds.hold_revise` and `funds.brokered_settlement` named a hold by its id alone, and settlement
-- acted on whatever hold had that id: a brokerage that knew a buyer's cover id could release the
-- earmark a delivery against earmarked cash relies on (docs/dvp.md), or another brokerage's hold.
-- A hold now records the participant whose message placed it; settlement's own holds (covers and
-- each attempt's earmark) are settlement's, by default.
--
-- Holds placed before this migration by a brokerage's `funds.hold` cannot say which brokerage
-- placed them: they keep a NULL placer, and any brokerage may still release, revise or settle
-- them, as before. They end with their orders; every hold placed from now on names its placer.
SET search_path TO settlement;

ALTER TABLE holds ADD COLUMN placed_by text;
UPDATE holds SET placed_by = 'settlement'
 WHERE hold_id IN (SELECT cover_id FROM covers UNION ALL SELECT hold_id FROM dvp_attempts);
ALTER TABLE holds ALTER COLUMN placed_by SET DEFAULT 'settlement';
