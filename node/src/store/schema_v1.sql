-- Schema version 1 of the node's local store (DOMAIN.md §10, DESIGN.md §5).
-- Identifiers of patients, therapists and episodes are HMAC pseudonyms (P6): the raw local
-- identifier is never stored. Dates are ISO 8601 'YYYY-MM-DD' text.

-- One row: this node's clinic.
CREATE TABLE clinic (
    clinic_id     INTEGER PRIMARY KEY CHECK (clinic_id = 1),
    name          TEXT NOT NULL,
    country       TEXT,
    service_type  TEXT,
    created_at    TEXT NOT NULL
);

-- Outcome measures; built-ins are inserted by `init`, others by `instruments add`.
CREATE TABLE instrument (
    instrument_id     TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    aliases           TEXT NOT NULL,          -- JSON array of strings
    min_score         REAL NOT NULL,
    max_score         REAL NOT NULL,
    direction         TEXT NOT NULL CHECK (direction IN ('lower_is_better', 'higher_is_better')),
    caseness_cutoff   REAL,
    reliable_change   REAL,
    reliability       REAL,
    norm_func_mean    REAL,
    norm_func_sd      REAL,
    norm_clin_mean    REAL,
    norm_clin_sd      REAL,
    bands             TEXT NOT NULL,          -- JSON array of [lower_bound, label]
    loinc_panel       TEXT,
    loinc_total       TEXT,
    snomed_total      TEXT,
    items             TEXT NOT NULL,          -- JSON array of {code, min, max}
    licence           TEXT NOT NULL,
    builtin           INTEGER NOT NULL
) WITHOUT ROWID;

-- Problem domains, each measured by one instrument.
CREATE TABLE domain (
    domain_id           TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    instrument_id       TEXT NOT NULL REFERENCES instrument (instrument_id),
    score_transform     TEXT NOT NULL CHECK (score_transform IN ('raw', 'z')),
    elevated_threshold  REAL,
    builtin             INTEGER NOT NULL
) WITHOUT ROWID;

-- Therapists, with the profile attributes used for matching. Lists are ';'-separated.
CREATE TABLE therapist (
    therapist_id   INTEGER PRIMARY KEY,
    pseudonym      TEXT NOT NULL UNIQUE,
    profession     TEXT,
    grade          TEXT,
    start_year     INTEGER,
    gender         TEXT,
    languages      TEXT,
    modalities     TEXT,
    accepting_new  INTEGER,
    wait_weeks     REAL,
    payers         TEXT,
    location       TEXT
);

CREATE TABLE patient (
    patient_id          INTEGER PRIMARY KEY,
    pseudonym           TEXT NOT NULL UNIQUE,
    birth_year          INTEGER,
    sex                 TEXT,
    ethnicity_group     TEXT,
    deprivation_decile  INTEGER CHECK (deprivation_decile BETWEEN 1 AND 10)
);

-- A referral / course of treatment: the unit of outcome analysis.
CREATE TABLE episode (
    episode_id         INTEGER PRIMARY KEY,
    pseudonym          TEXT NOT NULL UNIQUE,
    patient_id         INTEGER NOT NULL REFERENCES patient (patient_id),
    therapist_id       INTEGER NOT NULL REFERENCES therapist (therapist_id),
    referral_date      TEXT,
    start_date         TEXT,
    end_date           TEXT,
    end_reason         TEXT CHECK (end_reason IN ('completed', 'dropout', 'referred_on', 'unknown')),
    sessions_planned   INTEGER,
    sessions_attended  INTEGER,
    step               TEXT CHECK (step IN ('LI', 'HI')),
    provisional_dx     TEXT
);
CREATE INDEX episode_by_patient ON episode (patient_id);
CREATE INDEX episode_by_therapist ON episode (therapist_id);

-- Every therapist who saw the episode's patient, with the session range (therapist changes).
CREATE TABLE episode_therapist (
    episode_id     INTEGER NOT NULL REFERENCES episode (episode_id),
    therapist_id   INTEGER NOT NULL REFERENCES therapist (therapist_id),
    first_session  INTEGER NOT NULL,
    last_session   INTEGER NOT NULL,
    PRIMARY KEY (episode_id, therapist_id)
) WITHOUT ROWID;

CREATE TABLE session (
    session_id  INTEGER PRIMARY KEY,
    episode_id  INTEGER NOT NULL REFERENCES episode (episode_id),
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    date        TEXT NOT NULL,
    attended    INTEGER NOT NULL CHECK (attended IN (0, 1)),
    kind        TEXT NOT NULL CHECK (kind IN ('assessment', 'treatment', 'review')),
    UNIQUE (episode_id, seq)
);

-- One administration of an instrument at a session.
CREATE TABLE assessment (
    assessment_id    INTEGER PRIMARY KEY,
    episode_id       INTEGER NOT NULL REFERENCES episode (episode_id),
    session_id       INTEGER NOT NULL REFERENCES session (session_id),
    session_seq      INTEGER NOT NULL,       -- = session.seq, kept here so outcome scans need no join
    instrument_id    TEXT NOT NULL REFERENCES instrument (instrument_id),
    score            REAL NOT NULL,
    n_missing_items  INTEGER NOT NULL DEFAULT 0,
    prorated         INTEGER NOT NULL DEFAULT 0,
    UNIQUE (session_id, instrument_id)
);

-- First and last valid score per episode and instrument, maintained by import (assessments are
-- only ever added), so that statistics read one row per episode instead of every assessment.
CREATE TABLE episode_scores (
    episode_id     INTEGER NOT NULL REFERENCES episode (episode_id),
    instrument_id  TEXT NOT NULL REFERENCES instrument (instrument_id),
    first_seq      INTEGER NOT NULL,
    first_score    REAL NOT NULL,
    last_seq       INTEGER NOT NULL,
    last_score     REAL NOT NULL,
    n              INTEGER NOT NULL,
    PRIMARY KEY (episode_id, instrument_id)
) WITHOUT ROWID;

-- Attended treatment sessions per episode (NHS TT "finished course"), maintained by import.
CREATE TABLE episode_attendance (
    episode_id          INTEGER PRIMARY KEY REFERENCES episode (episode_id),
    attended_treatment  INTEGER NOT NULL
);

-- Optional item-level answers (needed for PHQ-9 item 9 alerts and prorating audits).
CREATE TABLE item_response (
    assessment_id  INTEGER NOT NULL REFERENCES assessment (assessment_id),
    item_no        INTEGER NOT NULL CHECK (item_no >= 1),
    item_code      TEXT NOT NULL,
    value          REAL NOT NULL,
    PRIMARY KEY (assessment_id, item_no)
) WITHOUT ROWID;

-- Intake covariates for risk adjustment and nearest-neighbour features (one row per episode).
CREATE TABLE casemix (
    episode_id                INTEGER PRIMARY KEY REFERENCES episode (episode_id),
    age                       INTEGER,
    employment                TEXT,
    prior_treatment           INTEGER,
    psychotropic_med          INTEGER,
    long_term_condition       INTEGER,
    disability                INTEGER,
    duration_of_problem_months REAL,
    comorbidity_count         INTEGER,
    referral_source           TEXT,
    wsas                      REAL
);

-- Audit of every file imported: content hash makes re-imports no-ops.
CREATE TABLE imports (
    import_id    INTEGER PRIMARY KEY,
    file_name    TEXT NOT NULL,
    sha256       TEXT NOT NULL UNIQUE,
    format       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    inserted     INTEGER NOT NULL,
    imported_at  TEXT NOT NULL
);
