-- Schema v4: network membership (issue 5, DESIGN.md §8).
--
-- `network` pins, once, the network this node belongs to and the coordinator whose signature
-- every later roster must carry. `roster` keeps every accepted roster version as the signed
-- JSON document it arrived as; the newest row is the allow-list. Both only grow.
CREATE TABLE network (
    network_id      TEXT NOT NULL,
    coordinator_key TEXT NOT NULL,                 -- Ed25519 public key, hex
    is_coordinator  INTEGER NOT NULL CHECK (is_coordinator IN (0, 1)),
    joined_at       TEXT NOT NULL,
    one_row         INTEGER PRIMARY KEY CHECK (one_row = 1)
);
CREATE TABLE roster (
    version     INTEGER PRIMARY KEY CHECK (version >= 1),
    signed_json TEXT NOT NULL,                     -- protocol::roster::SignedRoster as JSON
    received_at TEXT NOT NULL
);
CREATE TRIGGER network_is_pinned BEFORE UPDATE ON network
BEGIN SELECT RAISE(ABORT, 'the network and coordinator are pinned at join'); END;
CREATE TRIGGER network_is_kept BEFORE DELETE ON network
BEGIN SELECT RAISE(ABORT, 'the network and coordinator are pinned at join'); END;
CREATE TRIGGER roster_is_append_only_u BEFORE UPDATE ON roster
BEGIN SELECT RAISE(ABORT, 'rosters are append-only'); END;
CREATE TRIGGER roster_is_append_only_d BEFORE DELETE ON roster
BEGIN SELECT RAISE(ABORT, 'rosters are append-only'); END;
