//! mbc-node: a clinic's node in a measurement-based-care research network.
//!
//! This crate does the I/O; pure logic lives in the `protocol` crate. Modules:
//! - [`cli`]: the `mbc-node` command line (clap) and dispatch.
//! - [`clock`]: every read of the wall clock.
//! - [`hooks`]: every test switch (`MBC_NODE_TEST_*`) and which builds honour it.
//! - [`node`]: the node handle (data directory, config, store, keys) every service holds.
//! - [`config`]: `config.toml` in the data directory.
//! - [`keystore`]: identity seed and pseudonymisation secret files.
//! - [`store`]: the SQLite store, its schema and migrations.
//! - [`registry`]: instruments and domains, built-in and clinic-defined.
//! - [`report`]: the self-contained HTML report (`mbc-node report`).
//! - [`import`]: CSV and FHIR R4 import, all or nothing per file.
//! - [`erasure`]: a patient's data withdrawn on request (`mbc-node erase`).
//! - [`synth`]: the synthetic clinic-data generator (DOMAIN.md §11).
//! - [`stats`]: the local effectiveness engine over the store (`mbc-node stats`).
//! - [`support`]: one patient's expected trajectory and signals (`mbc-node support`).
//! - [`status`]: the offline summary of a node's store.
//! - [`membership`]: network membership: create, join requests, admit, join, remove, roster updates.
//! - [`net`]: the libp2p network: `Client`, events, and the `EventLoop` that owns the Swarm.
//! - [`daemon`]: `mbc-node run`: the network, the local API and the node loop.
//! - [`api`]: the local HTTP API on 127.0.0.1 (bearer token) and its blocking client.
//! - [`ledger`], [`release`]: the privacy ledger and releases.
//! - [`round`]: a clinic's side of secure-aggregation rounds (policy, ledger, noise, SecAgg).
//! - [`aggregate`]: the coordinator's side: drives rounds, post-processes, signs releases.
//! - [`benchmark`]: signed benchmark releases: verify, keep, list, show, export (JSON, HTML).

pub mod aggregate;
pub mod alerts;
pub mod api;
pub mod benchmark;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod directory;
pub mod erasure;
pub mod hooks;
pub mod import;
pub mod keystore;
pub mod ledger;
pub mod matching;
pub mod membership;
pub mod net;
pub mod node;
pub mod registry;
pub mod release;
pub mod report;
pub mod round;
pub mod staff;
pub mod stats;
pub mod status;
pub mod store;
pub mod support;
pub mod synth;
pub mod users;
