-- The `ledger` file, version 1 (issue 13): the privacy ledger (`release`, schema v3 and v7),
-- the clinic's round contributions (v6), rounds run as aggregator and kept benchmark releases
-- (v5), and network membership (v4), as they were in the clinical data's file, with their
-- rows copied from it. A half-made copy from an interrupted upgrade is replaced first: until
-- schema v8 drops them from `main`, `main` holds these tables.
DROP TABLE IF EXISTS ledger.round_contribution;
DROP TABLE IF EXISTS ledger.release;
DROP TABLE IF EXISTS ledger.benchmark_release;
DROP TABLE IF EXISTS ledger.round;
DROP TABLE IF EXISTS ledger.roster;
DROP TABLE IF EXISTS ledger.network;

CREATE TABLE ledger.release (
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
    sent_at               TEXT,
    sent_to               TEXT                     -- where it was written, when not counterpart
);
CREATE INDEX ledger.release_by_period ON release (period);
CREATE TRIGGER ledger.release_is_append_only BEFORE DELETE ON release
BEGIN
    SELECT RAISE(ABORT, 'the privacy ledger is append-only');
END;
CREATE TRIGGER ledger.release_cost_is_fixed
BEFORE UPDATE OF release_id, kind, counterpart, period, rho, epsilon, delta, sigma, share_sigma,
    threshold, sensitivity, therapist_sensitivity, therapist_rho, layout, payload, payload_sha256,
    charged_at ON release
BEGIN
    SELECT RAISE(ABORT, 'a charged release cannot be changed');
END;
CREATE TRIGGER ledger.release_sent_to_is_fixed
BEFORE UPDATE OF sent_to ON release
WHEN OLD.sent_to IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'where a release was sent cannot be changed');
END;

CREATE TABLE ledger.round_contribution (
    round_id       TEXT PRIMARY KEY,               -- 16 hex digits
    spec_sha256    TEXT NOT NULL,                  -- digest of the signed round specification
    release_id     TEXT NOT NULL UNIQUE REFERENCES release (release_id),
    expires_at_ms  INTEGER NOT NULL,               -- after this the round cannot reach this clinic's masked step
    survivors      TEXT,                           -- JSON: PeerIds of the contributors, set when the list is signed
    confirmed_at   TEXT
);
CREATE TRIGGER ledger.round_contribution_is_kept BEFORE DELETE ON round_contribution
BEGIN SELECT RAISE(ABORT, 'round contributions are kept'); END;
CREATE TRIGGER ledger.round_contribution_binding_is_fixed
BEFORE UPDATE OF round_id, spec_sha256, release_id, expires_at_ms ON round_contribution
BEGIN SELECT RAISE(ABORT, 'a round contribution cannot be rebound'); END;

CREATE TABLE ledger.round (
    round_id     TEXT PRIMARY KEY,                 -- 16 hex digits
    kind         TEXT NOT NULL,
    spec_json    TEXT NOT NULL,                    -- protocol::round::SignedRoundSpec as JSON
    step         TEXT NOT NULL,                    -- announce, keys, shares, masked, unmask, done, aborted
    progress     TEXT NOT NULL,                    -- JSON: per participant, the last step completed or why not
    error        TEXT,
    release_id   TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT
);

CREATE TABLE ledger.benchmark_release (
    release_id   TEXT PRIMARY KEY,
    round_id     TEXT NOT NULL,
    network_id   TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    document     BLOB NOT NULL,                    -- the signed JSON bytes
    signature    TEXT NOT NULL,                    -- Ed25519 by the coordinator, hex
    sha256       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
CREATE INDEX ledger.benchmark_release_by_time ON benchmark_release (issued_at);
CREATE TRIGGER ledger.benchmark_release_is_append_only_u BEFORE UPDATE ON benchmark_release
BEGIN SELECT RAISE(ABORT, 'releases are kept as signed'); END;
CREATE TRIGGER ledger.benchmark_release_is_append_only_d BEFORE DELETE ON benchmark_release
BEGIN SELECT RAISE(ABORT, 'releases are kept as signed'); END;

CREATE TABLE ledger.network (
    network_id      TEXT NOT NULL,
    coordinator_key TEXT NOT NULL,                 -- Ed25519 public key, hex
    is_coordinator  INTEGER NOT NULL CHECK (is_coordinator IN (0, 1)),
    joined_at       TEXT NOT NULL,
    one_row         INTEGER PRIMARY KEY CHECK (one_row = 1)
);
CREATE TABLE ledger.roster (
    version     INTEGER PRIMARY KEY CHECK (version >= 1),
    signed_json TEXT NOT NULL,                     -- protocol::roster::SignedRoster as JSON
    received_at TEXT NOT NULL
);
CREATE TRIGGER ledger.network_is_pinned BEFORE UPDATE ON network
BEGIN SELECT RAISE(ABORT, 'the network and coordinator are pinned at join'); END;
CREATE TRIGGER ledger.network_is_kept BEFORE DELETE ON network
BEGIN SELECT RAISE(ABORT, 'the network and coordinator are pinned at join'); END;
CREATE TRIGGER ledger.roster_is_append_only_u BEFORE UPDATE ON roster
BEGIN SELECT RAISE(ABORT, 'rosters are append-only'); END;
CREATE TRIGGER ledger.roster_is_append_only_d BEFORE DELETE ON roster
BEGIN SELECT RAISE(ABORT, 'rosters are append-only'); END;

INSERT INTO ledger.release (release_id, kind, counterpart, period, rho, epsilon, delta, sigma,
    share_sigma, threshold, sensitivity, therapist_sensitivity, therapist_rho, layout, payload,
    payload_sha256, status, charged_at, sent_at, sent_to)
SELECT release_id, kind, counterpart, period, rho, epsilon, delta, sigma, share_sigma, threshold,
    sensitivity, therapist_sensitivity, therapist_rho, layout, payload, payload_sha256, status,
    charged_at, sent_at, sent_to
FROM main.release ORDER BY rowid;
INSERT INTO ledger.round_contribution (round_id, spec_sha256, release_id, expires_at_ms,
    survivors, confirmed_at)
SELECT round_id, spec_sha256, release_id, expires_at_ms, survivors, confirmed_at
FROM main.round_contribution ORDER BY rowid;
INSERT INTO ledger.round (round_id, kind, spec_json, step, progress, error, release_id,
    started_at, finished_at)
SELECT round_id, kind, spec_json, step, progress, error, release_id, started_at, finished_at
FROM main.round ORDER BY rowid;
INSERT INTO ledger.benchmark_release (release_id, round_id, network_id, issued_at, document,
    signature, sha256, received_at)
SELECT release_id, round_id, network_id, issued_at, document, signature, sha256, received_at
FROM main.benchmark_release ORDER BY rowid;
INSERT INTO ledger.network (network_id, coordinator_key, is_coordinator, joined_at, one_row)
SELECT network_id, coordinator_key, is_coordinator, joined_at, one_row FROM main.network;
INSERT INTO ledger.roster (version, signed_json, received_at)
SELECT version, signed_json, received_at FROM main.roster ORDER BY version;
