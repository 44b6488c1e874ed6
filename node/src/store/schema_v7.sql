-- Schema v7 (issue 13): where a release was actually written. A local release charged for one
-- file but written later (after a failure) to another is recorded with the path it went to;
-- `counterpart` keeps what it was charged for, and `sent_to`, once set, never changes.
ALTER TABLE release ADD COLUMN sent_to TEXT;

CREATE TRIGGER release_sent_to_is_fixed
BEFORE UPDATE OF sent_to ON release
WHEN OLD.sent_to IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'where a release was sent cannot be changed');
END;
