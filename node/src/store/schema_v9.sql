-- Schema v9 (issue 14): episodes the importer derived from dated scores (FHIR exports without
-- EpisodeOfCare: a patient's scores until a gap of more than [import] episode_gap_weeks), so a
-- later export of the same patient continues the same episode instead of opening another.
ALTER TABLE episode ADD COLUMN derived INTEGER NOT NULL DEFAULT 0 CHECK (derived IN (0, 1));
