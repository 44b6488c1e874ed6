-- Schema v5: secure-aggregation rounds and benchmark releases (issue 6, DESIGN.md §9–10).
--
-- `round` is the aggregator's record of the rounds it ran: the signed specification and who
-- took part at each step, never a participant's vector (masked or not). `benchmark_release`
-- keeps every verified release exactly as signed (document bytes and signature), on every
-- node; it only grows.
CREATE TABLE round (
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
CREATE TABLE benchmark_release (
    release_id   TEXT PRIMARY KEY,
    round_id     TEXT NOT NULL,
    network_id   TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    document     BLOB NOT NULL,                    -- the signed JSON bytes
    signature    TEXT NOT NULL,                    -- Ed25519 by the coordinator, hex
    sha256       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
CREATE INDEX benchmark_release_by_time ON benchmark_release (issued_at);
CREATE TRIGGER benchmark_release_is_append_only_u BEFORE UPDATE ON benchmark_release
BEGIN SELECT RAISE(ABORT, 'releases are kept as signed'); END;
CREATE TRIGGER benchmark_release_is_append_only_d BEFORE DELETE ON benchmark_release
BEGIN SELECT RAISE(ABORT, 'releases are kept as signed'); END;
