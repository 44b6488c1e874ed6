-- Schema v8 (issue 13): the privacy ledger and the node's network records move to their own
-- file, `ledger` (ledger_v1.sql made the copy, with every row, before this runs). An import
-- holds the clinical data's write lock for as long as it takes; a round's charge, a release and
-- a gossiped benchmark release write only the ledger's, so none of them waits for an import.
-- Their triggers and indexes go with them.
DROP TABLE main.round_contribution;
DROP TABLE main.release;
DROP TABLE main.benchmark_release;
DROP TABLE main.round;
DROP TABLE main.roster;
DROP TABLE main.network;
