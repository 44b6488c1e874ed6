-- Schema v6: a clinic's record of the benchmark rounds it contributed to (issue 12).
--
-- One row per round joined, inserted in the transaction that charges the ledger. It binds the
-- charge to the exact round specification (a re-announce is served from the ledger only for a
-- byte-identical spec), says when a contribution whose masked vector never left is refunded,
-- and keeps the contributors of each round this clinic revealed shares for (the differencing
-- check compares the next round with it). No vector is kept here; the ledger has the payload.
CREATE TABLE round_contribution (
    round_id       TEXT PRIMARY KEY,               -- 16 hex digits
    spec_sha256    TEXT NOT NULL,                  -- digest of the signed round specification
    release_id     TEXT NOT NULL UNIQUE REFERENCES release (release_id),
    expires_at_ms  INTEGER NOT NULL,               -- after this the round cannot reach this clinic's masked step
    survivors      TEXT,                           -- JSON: PeerIds of the contributors, set when the list is signed
    confirmed_at   TEXT
);
CREATE TRIGGER round_contribution_is_kept BEFORE DELETE ON round_contribution
BEGIN SELECT RAISE(ABORT, 'round contributions are kept'); END;
CREATE TRIGGER round_contribution_binding_is_fixed
BEFORE UPDATE OF round_id, spec_sha256, release_id, expires_at_ms ON round_contribution
BEGIN SELECT RAISE(ABORT, 'a round contribution cannot be rebound'); END;
