-- Schema version 2: derived tables of the local effectiveness engine (issue 3). All are
-- recomputed by `mbc-node stats` / `report` and carry the algorithm version that made them.

-- One row per derivation run.
CREATE TABLE derivation (
    derivation_id      INTEGER PRIMARY KEY,
    algorithm_version  INTEGER NOT NULL,
    computed_at        TEXT NOT NULL,
    settings           TEXT NOT NULL,          -- JSON: rule, minimums, IAPT switches, ridge
    last_import_id     INTEGER                 -- the data it saw
);

-- Per episode and instrument with at least two valid scores.
CREATE TABLE episode_outcome (
    episode_id              INTEGER NOT NULL REFERENCES episode (episode_id),
    instrument_id           TEXT NOT NULL REFERENCES instrument (instrument_id),
    pre                     REAL NOT NULL,
    post                    REAL NOT NULL,
    change                  REAL NOT NULL,
    reliable_improvement    INTEGER,
    reliable_deterioration  INTEGER,
    caseness_pre            INTEGER,
    caseness_post           INTEGER,
    expected_post           REAL,               -- risk model, domain-score units
    residual                REAL,               -- negative = better than expected
    algorithm_version       INTEGER NOT NULL,
    PRIMARY KEY (episode_id, instrument_id)
) WITHOUT ROWID;

-- NHS Talking Therapies metrics per episode, over the paired measures.
CREATE TABLE episode_metrics (
    episode_id              INTEGER PRIMARY KEY REFERENCES episode (episode_id),
    finished_course         INTEGER NOT NULL,
    caseness_pre            INTEGER NOT NULL,
    caseness_post           INTEGER NOT NULL,
    recovered               INTEGER NOT NULL,
    reliable_improvement    INTEGER NOT NULL,
    reliable_deterioration  INTEGER NOT NULL,
    reliable_recovery       INTEGER NOT NULL,
    algorithm_version       INTEGER NOT NULL
);

-- Risk model and variance components per domain.
CREATE TABLE domain_model (
    domain_id          TEXT PRIMARY KEY REFERENCES domain (domain_id),
    episodes           INTEGER NOT NULL,
    eligible           INTEGER NOT NULL,
    features           TEXT,                   -- JSON array of names
    beta               TEXT,                   -- JSON array of coefficients
    residual_sd        REAL,
    therapists         INTEGER,
    tau2               REAL,
    tau2_lo            REAL,
    tau2_hi            REAL,
    sigma2             REAL,
    icc                REAL,
    algorithm_version  INTEGER NOT NULL
) WITHOUT ROWID;

-- Therapist × domain track records: the only therapist-level artefact later DP releases read.
CREATE TABLE therapist_domain_stat (
    therapist_id       INTEGER NOT NULL REFERENCES therapist (therapist_id),
    domain_id          TEXT NOT NULL REFERENCES domain (domain_id),
    n                  INTEGER NOT NULL,
    mean_residual      REAL NOT NULL,
    se                 REAL NOT NULL,
    shrinkage          REAL NOT NULL,
    eb_estimate        REAL NOT NULL,
    eb_lo              REAL NOT NULL,
    eb_hi              REAL NOT NULL,
    label              TEXT NOT NULL,
    rule               TEXT NOT NULL,
    algorithm_version  INTEGER NOT NULL,
    PRIMARY KEY (therapist_id, domain_id)
) WITHOUT ROWID;
