//! End-to-end tests of the real `mbc-node` binary. One test binary; modules by area.

mod browser;
mod dashboard;
mod directory;
mod fhir;
mod import;
mod matching;
mod network;
mod node;
mod privacy;
mod rounds;
mod stats;
mod support;
mod users;
