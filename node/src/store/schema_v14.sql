-- Schema v14 (issue 17): matching. The therapist profile fields logistics need, and the audit
-- of every shortlist: what was asked, what was offered and why, and what was chosen.

-- Lists are ';'-separated, as the other profile fields: delivery modes (in-person, video),
-- weekly windows with clinic hours (mon-pm, weekdays-eve, …), and the weekly cap of new
-- patients.
ALTER TABLE therapist ADD COLUMN delivery TEXT;
ALTER TABLE therapist ADD COLUMN availability TEXT;
ALTER TABLE therapist ADD COLUMN new_per_week INTEGER CHECK (new_per_week >= 0);

-- One row per shortlist shown (`mbc-node match`): the request (intake, preferences,
-- logistics, settings), the equity groups known for the patient, and the shortlist as shown.
CREATE TABLE match_request (
    request_id   INTEGER PRIMARY KEY,
    created_at   TEXT NOT NULL,
    by_whom      TEXT,
    patient_id   INTEGER REFERENCES patient (patient_id),   -- a stored patient, else NULL
    urgent       INTEGER NOT NULL CHECK (urgent IN (0, 1)),
    request      TEXT NOT NULL,                              -- JSON
    groups       TEXT NOT NULL,                              -- JSON: attribute → group
    shortlist    TEXT NOT NULL,                              -- JSON
    reference    TEXT NOT NULL                               -- what the track records used
);
CREATE INDEX match_request_by_patient ON match_request (patient_id);

-- The therapists offered, in order, with their level (for rotation and oversight).
CREATE TABLE match_offer (
    request_id    INTEGER NOT NULL REFERENCES match_request (request_id),
    rank          INTEGER NOT NULL CHECK (rank >= 1),
    therapist_id  INTEGER NOT NULL REFERENCES therapist (therapist_id),
    level         INTEGER NOT NULL CHECK (level BETWEEN 0 AND 3),
    PRIMARY KEY (request_id, rank)
) WITHOUT ROWID;
CREATE INDEX match_offer_by_therapist ON match_offer (therapist_id);

-- What happened (`mbc-node match record`): the therapist chosen (once per request), or a
-- decline (of one therapist, or of the whole list when therapist_id is NULL).
CREATE TABLE match_outcome (
    outcome_id    INTEGER PRIMARY KEY,
    request_id    INTEGER NOT NULL REFERENCES match_request (request_id),
    kind          TEXT NOT NULL CHECK (kind IN ('chosen', 'declined')),
    therapist_id  INTEGER REFERENCES therapist (therapist_id),
    level         INTEGER CHECK (level BETWEEN 0 AND 3),
    reason        TEXT,
    by_whom       TEXT NOT NULL CHECK (length(trim(by_whom)) > 0),
    at            TEXT NOT NULL,
    CHECK (kind = 'declined' OR therapist_id IS NOT NULL)
);
CREATE UNIQUE INDEX match_one_choice ON match_outcome (request_id) WHERE kind = 'chosen';
CREATE INDEX match_outcome_by_therapist ON match_outcome (therapist_id, at);

-- The audit is append-only; only an erasure removes a patient's requests and what followed.
CREATE TRIGGER match_request_is_append_only_u BEFORE UPDATE ON match_request
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only'); END;

CREATE TRIGGER match_request_is_kept_d BEFORE DELETE ON match_request
WHEN OLD.patient_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM erasure er JOIN patient p ON p.pseudonym = er.patient_pseudonym
    WHERE p.patient_id = OLD.patient_id
)
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only (only an erasure removes a patient''s requests)'); END;

CREATE TRIGGER match_offer_is_append_only_u BEFORE UPDATE ON match_offer
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only'); END;

CREATE TRIGGER match_offer_is_kept_d BEFORE DELETE ON match_offer
WHEN NOT EXISTS (
    SELECT 1 FROM match_request r
    JOIN patient p ON p.patient_id = r.patient_id
    JOIN erasure er ON er.patient_pseudonym = p.pseudonym
    WHERE r.request_id = OLD.request_id
)
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only (only an erasure removes a patient''s requests)'); END;

CREATE TRIGGER match_outcome_is_append_only_u BEFORE UPDATE ON match_outcome
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only'); END;

CREATE TRIGGER match_outcome_is_kept_d BEFORE DELETE ON match_outcome
WHEN NOT EXISTS (
    SELECT 1 FROM match_request r
    JOIN patient p ON p.patient_id = r.patient_id
    JOIN erasure er ON er.patient_pseudonym = p.pseudonym
    WHERE r.request_id = OLD.request_id
)
BEGIN SELECT RAISE(ABORT, 'the matching audit is append-only (only an erasure removes a patient''s requests)'); END;
