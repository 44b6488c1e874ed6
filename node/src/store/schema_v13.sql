-- The training (a dropout-model fit of several rounds) a round contribution is an iteration
-- of: 16 hex digits, NULL for a round that is a release by itself. Fixed once written.
ALTER TABLE ledger.round_contribution ADD COLUMN training_id TEXT;
CREATE INDEX IF NOT EXISTS ledger.round_contribution_training
    ON round_contribution (training_id);
CREATE TRIGGER IF NOT EXISTS ledger.round_contribution_training_is_fixed
BEFORE UPDATE OF training_id ON round_contribution
BEGIN SELECT RAISE(ABORT, 'a round contribution cannot be rebound'); END;
