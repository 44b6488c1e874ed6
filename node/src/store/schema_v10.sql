-- Schema v10 (issues 14, 15): corrections, erasure, the therapist nobody recorded, and the
-- scores at sessions 2 and 3 in the import-maintained episode summary.
--
-- `episode_scores.score_s2` / `score_s3`: an episode's score at sessions 2 and 3 on the
-- instrument, which clinical support's dynamic variant matches on for every past episode
-- (reading them here instead of scanning every assessment). Filled for existing rows.
ALTER TABLE episode_scores ADD COLUMN score_s2 REAL;
ALTER TABLE episode_scores ADD COLUMN score_s3 REAL;
UPDATE episode_scores SET score_s2 = x.score
FROM (SELECT episode_id, instrument_id, score FROM assessment WHERE session_seq = 2) AS x
WHERE x.episode_id = episode_scores.episode_id AND x.instrument_id = episode_scores.instrument_id;
UPDATE episode_scores SET score_s3 = x.score
FROM (SELECT episode_id, instrument_id, score FROM assessment WHERE session_seq = 3) AS x
WHERE x.episode_id = episode_scores.episode_id AND x.instrument_id = episode_scores.instrument_id;
--
-- The therapist of episodes whose export names none (FHIR scores without a performer, author
-- or Encounter participant; a CSV therapist_id of "unknown"): its episodes count for the
-- clinic, and it gets no track record, label or place in the between-therapist variance.
ALTER TABLE therapist ADD COLUMN unrecorded INTEGER NOT NULL DEFAULT 0 CHECK (unrecorded IN (0, 1));
--
-- `import --corrections FILE` replaces stored values a file contradicts (a score, a session's
-- date, attendance or kind). Each replacement is one row here, kept for good: what was stored,
-- what replaced it, and the import that did it (its time is imports.imported_at).
CREATE TABLE correction (
    correction_id  INTEGER PRIMARY KEY,
    import_id      INTEGER NOT NULL REFERENCES imports (import_id),
    episode_id     INTEGER NOT NULL REFERENCES episode (episode_id),
    session_seq    INTEGER NOT NULL,
    field          TEXT NOT NULL,          -- 'score PHQ-9', 'date', 'attended', 'kind'
    old_value      TEXT NOT NULL,
    new_value      TEXT NOT NULL
);

-- `mbc-node erase --patient ID`: a patient whose data was withdrawn on request. Only the
-- pseudonym is kept (a keyed hash, meaningless without this node's secret), so that a later
-- export still holding the patient does not bring the data back: their records are skipped.
CREATE TABLE erasure (
    erasure_id         INTEGER PRIMARY KEY,
    patient_pseudonym  TEXT NOT NULL UNIQUE,
    erased_at          TEXT NOT NULL,
    episodes           INTEGER NOT NULL,
    sessions           INTEGER NOT NULL,
    assessments        INTEGER NOT NULL
);

CREATE TRIGGER correction_is_append_only_u BEFORE UPDATE ON correction
BEGIN SELECT RAISE(ABORT, 'corrections are append-only'); END;

-- Only an erasure removes corrections, and only those of the patient being erased.
CREATE TRIGGER correction_is_append_only_d BEFORE DELETE ON correction
WHEN NOT EXISTS (
    SELECT 1 FROM erasure er
    JOIN patient p ON p.pseudonym = er.patient_pseudonym
    JOIN episode e ON e.patient_id = p.patient_id
    WHERE e.episode_id = OLD.episode_id
)
BEGIN SELECT RAISE(ABORT, 'corrections are append-only (only an erasure removes them)'); END;

CREATE TRIGGER erasure_is_append_only_u BEFORE UPDATE ON erasure
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;

CREATE TRIGGER erasure_is_append_only_d BEFORE DELETE ON erasure
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;
