-- Schema v12 (issue 15): what clinical support reads of every episode, kept as one blob
-- (support/features.rs), since reading it row by row from five tables cost a patient's page
-- more than the whole clinic's statistics. Written by the first reader after an import, used
-- only while `last_import_id` is still the newest import, deleted by an erasure. A cache:
-- nothing in it is not also in the tables.
CREATE TABLE support_features (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    format          INTEGER NOT NULL,
    last_import_id  INTEGER,
    episodes        INTEGER NOT NULL,
    data            BLOB NOT NULL
);
