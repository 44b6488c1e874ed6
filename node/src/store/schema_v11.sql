-- Schema v11 (issue 15): clinical-support alerts with their lifecycle, the signal each open
-- episode had when its latest scores arrived, and the validation cards that switch
-- not-on-track alerts on.
--
-- An alert is raised by `import` for a session of an open episode: `safety` (a critical item,
-- always) or `not_on_track` (a red signal, once the instrument's validation card has passed).
-- Raised once (UNIQUE); a second consecutive red while the alert is unresolved sets
-- `persistent_at` (for supervision), the only change an alert row ever takes.
CREATE TABLE alert (
    alert_id       INTEGER PRIMARY KEY,
    episode_id     INTEGER NOT NULL REFERENCES episode (episode_id),
    instrument_id  TEXT NOT NULL,
    session_seq    INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('not_on_track', 'safety')),
    score          REAL NOT NULL,
    reason         TEXT NOT NULL,
    import_id      INTEGER REFERENCES imports (import_id),
    raised_at      TEXT NOT NULL,
    persistent_at  INTEGER,                -- the session of the second consecutive red
    UNIQUE (episode_id, instrument_id, session_seq, kind)
);
CREATE INDEX alert_by_episode ON alert (episode_id);

-- What staff did about an alert (`mbc-node alerts ack|resolve ID --by NAME [--note …]`):
-- its state is its latest action (none = open). Kept for good.
CREATE TABLE alert_action (
    action_id  INTEGER PRIMARY KEY,
    alert_id   INTEGER NOT NULL REFERENCES alert (alert_id),
    action     TEXT NOT NULL CHECK (action IN ('acknowledged', 'resolved')),
    by_whom    TEXT NOT NULL CHECK (length(trim(by_whom)) > 0),
    at         TEXT NOT NULL,
    note       TEXT
);
CREATE INDEX alert_action_by_alert ON alert_action (alert_id);

-- Per open episode and instrument, the latest session import assessed and its signal: the
-- caseload (`mbc-node alerts`) reads this, and the next import assesses only later sessions.
CREATE TABLE support_check (
    episode_id     INTEGER NOT NULL REFERENCES episode (episode_id),
    instrument_id  TEXT NOT NULL,
    session_seq    INTEGER NOT NULL,
    score          REAL NOT NULL,
    signal         TEXT,                   -- grey, white, green, yellow, red; NULL at intake
    checked_at     TEXT NOT NULL,
    PRIMARY KEY (episode_id, instrument_id)
);

-- Whether an episode has ended asks for the newest session date in the store
-- (support::ENDED): by index, not by scanning every session.
CREATE INDEX session_by_date ON session (date);

-- `mbc-node support validate`: one card per instrument and run, kept for good. The latest
-- card of an instrument says whether its not-on-track alerts are on.
CREATE TABLE support_validation (
    validation_id  INTEGER PRIMARY KEY,
    validated_at   TEXT NOT NULL,
    instrument_id  TEXT NOT NULL,
    cut_date       TEXT NOT NULL,
    pool           INTEGER NOT NULL,
    test           INTEGER NOT NULL,
    passed         INTEGER NOT NULL CHECK (passed IN (0, 1)),
    card           TEXT NOT NULL           -- the whole card, JSON
);

CREATE TRIGGER alert_changes_only_to_persistent BEFORE UPDATE ON alert
WHEN OLD.persistent_at IS NOT NULL OR NEW.persistent_at IS NULL
  OR NEW.alert_id IS NOT OLD.alert_id OR NEW.episode_id IS NOT OLD.episode_id
  OR NEW.instrument_id IS NOT OLD.instrument_id OR NEW.session_seq IS NOT OLD.session_seq
  OR NEW.kind IS NOT OLD.kind OR NEW.score IS NOT OLD.score OR NEW.reason IS NOT OLD.reason
  OR NEW.import_id IS NOT OLD.import_id OR NEW.raised_at IS NOT OLD.raised_at
BEGIN SELECT RAISE(ABORT, 'alerts are kept as raised (only marked persistent, once)'); END;

-- Only an erasure removes alerts and their actions, and only those of the patient erased.
CREATE TRIGGER alert_is_kept_d BEFORE DELETE ON alert
WHEN NOT EXISTS (
    SELECT 1 FROM erasure er
    JOIN patient p ON p.pseudonym = er.patient_pseudonym
    JOIN episode e ON e.patient_id = p.patient_id
    WHERE e.episode_id = OLD.episode_id
)
BEGIN SELECT RAISE(ABORT, 'alerts are kept (only an erasure removes them)'); END;

CREATE TRIGGER alert_action_is_append_only_u BEFORE UPDATE ON alert_action
BEGIN SELECT RAISE(ABORT, 'alert actions are append-only'); END;

CREATE TRIGGER alert_action_is_kept_d BEFORE DELETE ON alert_action
WHEN NOT EXISTS (
    SELECT 1 FROM alert a
    JOIN episode e ON e.episode_id = a.episode_id
    JOIN patient p ON p.patient_id = e.patient_id
    JOIN erasure er ON er.patient_pseudonym = p.pseudonym
    WHERE a.alert_id = OLD.alert_id
)
BEGIN SELECT RAISE(ABORT, 'alert actions are append-only (only an erasure removes them)'); END;

CREATE TRIGGER support_validation_is_append_only_u BEFORE UPDATE ON support_validation
BEGIN SELECT RAISE(ABORT, 'validation cards are append-only'); END;

CREATE TRIGGER support_validation_is_append_only_d BEFORE DELETE ON support_validation
BEGIN SELECT RAISE(ABORT, 'validation cards are append-only'); END;
