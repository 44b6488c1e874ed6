//! The pure core of mbc-node.
//!
//! Nothing in this crate touches the network, the disk or the clock: every function is a
//! function of its inputs, so it is unit-tested without a runtime (DESIGN.md §3). The `node`
//! crate does all I/O and calls in here.
//!
//! - [`analysis`]: the effectiveness engine as one pure function.
//! - [`instrument`]: outcome measures (PHQ-9, GAD-7, CORE-10, user-defined), their ranges,
//!   thresholds and codes, and the problem domains they back.
//! - [`scoring`]: totals from item responses, prorating, FHIR answer codes.
//! - [`pseudonym`]: HMAC-SHA256 pseudonyms that replace local identifiers at import (P6).
//! - [`outcome`]: pre/post change, reliable change, caseness, NHS Talking Therapies metrics.
//! - [`risk`]: the risk model (ridge least squares from sufficient statistics).
//! - [`transcript`]: domain-separated, length-prefixed bytes: the only bytes ever signed.
//! - [`keys`]: Ed25519 identity keys from the node seed; signing and verifying transcripts.
//! - [`roster`]: the coordinator-signed membership list and clinics' join requests.
//! - [`messages`]: the wire (versioned, size-bounded, signed envelopes), strict decoding,
//!   replay protection.
//! - [`secagg`]: secure aggregation (Bonawitz et al. 2017) as sans-IO participant and
//!   aggregator state machines; Shamir sharing over GF(2^61 − 1).
//! - [`round`]: signed round specifications (what is summed, ρ, t, who, deadlines) and signed
//!   releases.
//! - [`benchmark`]: the versioned `benchmark` release vector and its post-processing.
//! - [`trajectories`]: the `trajectories` release vector: the network's score percentiles by
//!   domain × intake band × session and its expected-trajectory model.
//! - [`dp`]: the one wrapper around OpenDP: blocks, sensitivity, calibration, noise.
//! - [`therapist`]: variance components, empirical-Bayes track records, labels, Wilson intervals.
//! - [`trajectory`]: nearest-neighbour expected trajectories, on-track and safety signals.
//! - [`matching`]: outcome-informed shortlists of therapists (levels, reasons, trade-off) and
//!   the oversight of allocations (caseload fairness, outcomes by level, equity).
#![warn(missing_docs)]

pub mod analysis;
pub mod benchmark;
mod cbor;
pub mod directory;
pub mod dp;
pub mod dropout;
pub mod instrument;
pub mod keys;
pub mod matching;
pub mod messages;
pub mod outcome;
pub mod pseudonym;
pub mod risk;
pub mod roster;
pub mod round;
pub mod scoring;
pub mod secagg;
pub mod therapist;
pub mod trajectories;
pub mod trajectory;
pub mod transcript;

/// Version of the wire protocol and of every domain-separation label built on it.
pub const PROTOCOL_VERSION: u16 = 1;
