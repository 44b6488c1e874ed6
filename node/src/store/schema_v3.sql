-- Schema v3: the privacy ledger (issue 4, DESIGN.md §2 P4).
--
-- One row per release, inserted in the same transaction that checks the budget, before any
-- byte of the release leaves the node. `payload` holds exactly the bytes that leave, so that a
-- release interrupted after charging is sent later from here, never recomputed (which would be
-- a second release) and never sent uncharged. Rows are never deleted and their cost never
-- changes (triggers below); only status and sent_at move forward.
CREATE TABLE release (
    release_id            TEXT PRIMARY KEY,        -- 128-bit random, hex
    kind                  TEXT NOT NULL,           -- e.g. 'local-benchmark'
    counterpart           TEXT NOT NULL,           -- where it goes: a file, a round's aggregator
    period                TEXT NOT NULL,           -- budget period charged: '2026', '2026-Q4', '2026-11'
    rho                   REAL NOT NULL CHECK (rho > 0),
    epsilon               REAL NOT NULL,           -- (ε, δ) equivalent of rho, for display
    delta                 REAL NOT NULL,
    sigma                 REAL NOT NULL,           -- noise SD in the released sum (encoded units)
    share_sigma           REAL NOT NULL,           -- noise SD this node added
    threshold             INTEGER NOT NULL,        -- shares summed (1 for a central release)
    sensitivity           REAL NOT NULL,           -- per-patient L2 sensitivity (encoded units)
    therapist_sensitivity REAL,                    -- P3, for therapist-level blocks
    therapist_rho         REAL,
    layout                TEXT NOT NULL,           -- JSON: layout version, blocks, bounds, scales
    payload               BLOB NOT NULL,
    payload_sha256        TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('charged', 'sent', 'aborted')),
    charged_at            TEXT NOT NULL,
    sent_at               TEXT
);
CREATE INDEX release_by_period ON release (period);

CREATE TRIGGER release_is_append_only BEFORE DELETE ON release
BEGIN
    SELECT RAISE(ABORT, 'the privacy ledger is append-only');
END;

CREATE TRIGGER release_cost_is_fixed
BEFORE UPDATE OF release_id, kind, counterpart, period, rho, epsilon, delta, sigma, share_sigma,
    threshold, sensitivity, therapist_sensitivity, therapist_rho, layout, payload, payload_sha256,
    charged_at ON release
BEGIN
    SELECT RAISE(ABORT, 'a charged release cannot be changed');
END;
