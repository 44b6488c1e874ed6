-- Schema v16 (issue 18): the web dashboard's local accounts and its audit of patient views.

-- One row per account (`mbc-node users add`). The password is kept only as its Argon2id hash
-- (PHC string); a removed account is disabled, never deleted, so the audit keeps its name.
CREATE TABLE dashboard_user (
    user_id     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0),
    role        TEXT NOT NULL CHECK (role IN ('clinician', 'supervisor', 'admin', 'coordinator')),
    password    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    disabled_at TEXT
);

-- The therapists an account acts for: a clinician's own caseload, a supervisor's team. By
-- pseudonym, so an account may be made before the therapist's first import.
CREATE TABLE dashboard_user_therapist (
    user_id    INTEGER NOT NULL REFERENCES dashboard_user (user_id),
    therapist  TEXT NOT NULL,                  -- therapist pseudonym
    PRIMARY KEY (user_id, therapist)
) WITHOUT ROWID;

-- Every view of a patient's page (the page, its printable form), by whom and when.
-- Append-only; only an erasure removes a patient's.
CREATE TABLE patient_view (
    view_id     INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    role        TEXT NOT NULL,
    episode_id  INTEGER NOT NULL REFERENCES episode (episode_id),
    page        TEXT NOT NULL                  -- 'patient' or 'print'
);
CREATE INDEX patient_view_by_episode ON patient_view (episode_id);

CREATE TRIGGER patient_view_is_append_only_u BEFORE UPDATE ON patient_view
BEGIN SELECT RAISE(ABORT, 'the audit of patient views is append-only'); END;

CREATE TRIGGER patient_view_is_kept_d BEFORE DELETE ON patient_view
WHEN NOT EXISTS (
    SELECT 1 FROM episode e
    JOIN patient p ON p.patient_id = e.patient_id
    JOIN erasure er ON er.patient_pseudonym = p.pseudonym
    WHERE e.episode_id = OLD.episode_id
)
BEGIN SELECT RAISE(ABORT, 'the audit of patient views is append-only (only an erasure removes a patient''s)'); END;
