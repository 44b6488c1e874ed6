-- Schema v15 (issue 17, part 4): the network's referral directory, in the ledger's file
-- beside the other network records. One row per clinic: its newest entry that verified
-- (signed by that clinic, on the roster, for this network, not stale), exactly as signed.
-- A newer entry of the clinic replaces the row; nothing else changes it. Clinic level only:
-- an entry names services, never a therapist, and carries no patient data.
CREATE TABLE IF NOT EXISTS ledger.directory_entry (
    clinic        TEXT PRIMARY KEY,                -- the clinic's node key, hex
    name          TEXT NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    document      BLOB NOT NULL,                   -- the signed CBOR bytes
    signature     TEXT NOT NULL,                   -- Ed25519 by the clinic, hex
    sha256        TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
