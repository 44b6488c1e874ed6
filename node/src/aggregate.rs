//! The aggregator's side of a round (DESIGN.md §9), run by the coordinator's daemon: sign the
//! round specification, drive the SecAgg steps over request-response with a deadline per step
//! ([`protocol::secagg::Aggregator`] does the bookkeeping and the unmasking), post-process the
//! sum, sign the release, keep it, gossip it.
//!
//! A participant that declines, fails or misses a deadline is a dropout at that step, logged
//! with its reason; the round goes on while at least t remain, and aborts with nothing released
//! otherwise. The aggregator keeps the signed specification and who reached which step (table
//! `round`), never a participant's vector: masked inputs live in memory only until the sum.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::future::join_all;
use protocol::keys::NodeKey;
use protocol::messages::{Gossip, Request, Response, RoundRequest, RoundResponse};
use protocol::round::{
    RoundKind, RoundSpec, SignedRelease, SignedRoundSpec, bench_vector, default_threshold,
};
use protocol::secagg::{Aggregator, SecAggError};
use serde::Serialize;
use tracing::{info, warn};

use crate::net::Client;
use crate::node::Node;
use crate::round::Participation;
use crate::{benchmark, clock, membership, release};

mod document;
mod record;
mod status;

use document::release_document;
pub use status::{ParticipantStatus, Reached, RoundStatus, RoundStep, StartRequest};

/// Default per-step deadline.
pub const DEFAULT_DEADLINE_S: f64 = 60.0;

/// The coordinator's rounds.
pub struct Aggregation {
    node: Arc<Node>,
    client: Client,
    participation: Arc<Participation>,
    rounds: Mutex<BTreeMap<String, RoundStatus>>,
}

fn cbor_len<T: Serialize>(value: &T) -> u64 {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).map_or(0, |()| buf.len() as u64)
}

impl Aggregation {
    /// For `node`, reaching the participants through `client`; its own contribution goes
    /// through `participation` in process.
    pub fn new(node: Arc<Node>, client: Client, participation: Arc<Participation>) -> Self {
        Self {
            node,
            client,
            participation,
            rounds: Mutex::new(BTreeMap::new()),
        }
    }

    /// The status of round `id` (a prefix will do), or of the latest round.
    pub fn status(&self, id: Option<&str>) -> Option<RoundStatus> {
        let rounds = self.rounds.lock().expect("rounds lock");
        match id {
            Some(id) => rounds
                .values()
                .filter(|r| r.round_id.starts_with(id))
                .max_by(|a, b| a.started_at.cmp(&b.started_at))
                .cloned(),
            None => rounds
                .values()
                .max_by(|a, b| a.started_at.cmp(&b.started_at))
                .cloned(),
        }
    }

    /// Every round this daemon ran, oldest first.
    pub fn list(&self) -> Vec<RoundStatus> {
        let mut all: Vec<RoundStatus> = self
            .rounds
            .lock()
            .expect("rounds lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        all
    }

    /// Signs and starts a round; returns its first status while it runs in the background.
    pub fn start(self: &Arc<Self>, request: &StartRequest) -> Result<RoundStatus> {
        if self
            .rounds
            .lock()
            .expect("rounds lock")
            .values()
            .any(|r| !r.finished())
        {
            bail!("a round is already running (see `mbc-node round status`)");
        }
        let config = self.node.config();
        let store = self.node.store();
        let m = membership::load(store.conn())?.context("this node is not in a network")?;
        if !m.is_coordinator {
            bail!("only the network's coordinator runs rounds");
        }
        let members = &m.roster.roster.members;
        let n = members.len();
        // The coordinator is on its own roster, so it contributes too (which raises the floor).
        let threshold = request
            .threshold
            .unwrap_or_else(|| default_threshold(n, true));
        let deadline = request.deadline_s.unwrap_or(DEFAULT_DEADLINE_S);
        if !(deadline.is_finite() && deadline > 0.0) {
            bail!("--deadline must be a positive number of seconds");
        }
        let kind = match request.kind.as_str() {
            "benchmark" | "trajectories" => {
                release::check_rho_arg(request.rho)?;
                let layout = release::benchmark_layout(&store, config)?;
                let known: Vec<&str> = layout.domains().iter().map(|d| d.id.as_str()).collect();
                if let Some(d) = request
                    .domains
                    .iter()
                    .find(|d| !known.contains(&d.as_str()))
                {
                    bail!(
                        "no domain {d:?} in the coordinator's registry (known: {})",
                        known.join(", ")
                    );
                }
                let specs: Vec<_> = layout
                    .domains()
                    .iter()
                    .filter(|d| request.domains.is_empty() || request.domains.contains(&d.id))
                    .cloned()
                    .collect();
                let params = layout.params();
                if request.kind == "benchmark" {
                    RoundKind::benchmark(&protocol::benchmark::BenchmarkLayout::new(specs, params)?)
                } else {
                    RoundKind::trajectories(&protocol::trajectories::TrajectoriesLayout::new(
                        specs,
                        params.max_episodes,
                    )?)
                }
            }
            "bench" => RoundKind::Bench {
                dim: request.dim.unwrap_or(10_000),
                plain: request.plain,
            },
            other => bail!("unknown round kind {other:?} (benchmark, trajectories or bench)"),
        };
        let rho = if matches!(kind, RoundKind::Bench { .. }) {
            0.0
        } else {
            request.rho
        };
        let spec = RoundSpec {
            network_id: m.network_id.clone(),
            round_id: rand::random(),
            kind,
            rho,
            threshold,
            participants: members.iter().map(|p| p.key).collect(),
            aggregator: self.node.signer().key(),
            issued_at_ms: crate::clock::now_ms(),
            step_deadline_ms: (deadline * 1000.0).round() as u64,
        };
        spec.validate()
            .map_err(|e| anyhow::anyhow!("round parameters: {e}"))?;
        // The coordinator takes part too: a round its own policy declines would abort anyway.
        config.privacy.safety()?.check_spec(&spec).map_err(|e| {
            anyhow::anyhow!(
                "the coordinator's own [privacy] policy declines this round ({e}); clinics apply \
                 the same rule by default: admit more clinics or raise --threshold"
            )
        })?;
        let dim = spec.dim()?;
        let signed = spec.sign(self.node.signer());
        let status = RoundStatus {
            round_id: signed.spec.id_hex(),
            kind: signed.spec.kind.name().into(),
            step: RoundStep::Announce,
            rho,
            threshold,
            dim,
            participants: members
                .iter()
                .enumerate()
                .map(|(i, p)| ParticipantStatus {
                    index: i as u32,
                    name: p.name.clone(),
                    peer_id: membership::peer_id(&p.key).to_string(),
                    reached: Reached::Invited,
                    dropped: None,
                    bytes_sent: 0,
                })
                .collect(),
            step_ms: BTreeMap::new(),
            elapsed_ms: None,
            error: None,
            release_id: None,
            exact: None,
            started_at: clock::now(),
        };
        record::insert(store.conn(), &status, &signed)?;
        drop(store);
        self.rounds
            .lock()
            .expect("rounds lock")
            .insert(status.round_id.clone(), status.clone());
        info!(round = %status.round_id, kind = %status.kind, n, threshold, "round started");
        let this = self.clone();
        tokio::spawn(async move { this.drive(signed).await });
        Ok(status)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RoundStatus)) {
        let snapshot = {
            let mut rounds = self.rounds.lock().expect("rounds lock");
            let Some(r) = rounds.get_mut(id) else { return };
            f(r);
            r.clone()
        };
        let persist = || record::progress(self.node.store().conn(), &snapshot, &clock::now());
        if let Err(e) = persist() {
            warn!(round = %id, "couldn't record the round's progress: {e:#}");
        }
    }

    /// Sends one request per target, each answered within `deadline` or counted as a dropout.
    async fn send_all(
        &self,
        spec: &RoundSpec,
        targets: Vec<(u32, RoundRequest)>,
        deadline: Duration,
    ) -> Vec<(u32, Result<RoundResponse, String>)> {
        let me = self.node.signer().key();
        let calls = targets.into_iter().map(|(i, request)| {
            let key: NodeKey = spec.participants[i as usize];
            async move {
                let call = async {
                    if key == me {
                        Ok(self.participation.handle(me, request).await)
                    } else {
                        match self
                            .client
                            .request(membership::peer_id(&key), Request::Round(request))
                            .await
                        {
                            Ok(Response::Round(r)) => Ok(r),
                            Ok(Response::Rejected(why)) => Err(format!("refused: {why}")),
                            Ok(Response::Busy) => Err("busy".into()),
                            Ok(_) => Err("answered with a non-round message".into()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                let result = tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err("missed the step's deadline".into()));
                (i, result)
            }
        });
        join_all(calls).await
    }

    /// Runs a round to its end; never fails the daemon.
    async fn drive(self: Arc<Self>, signed: SignedRoundSpec) {
        let id = signed.spec.id_hex();
        let started = Instant::now();
        let outcome = match signed.spec.kind {
            RoundKind::Bench { plain: true, .. } => self.plain(&signed).await,
            _ => self.secure(&signed).await,
        };
        let elapsed = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(()) => {
                info!(round = %id, elapsed_ms = elapsed, "round done");
                self.update(&id, |r| {
                    r.step = RoundStep::Done;
                    r.elapsed_ms = Some(elapsed);
                });
            }
            Err(e) => {
                warn!(round = %id, "round aborted, nothing released: {e:#}");
                self.update(&id, |r| {
                    r.step = RoundStep::Aborted;
                    r.error = Some(format!("{e:#}"));
                    r.elapsed_ms = Some(elapsed);
                });
            }
        }
    }

    async fn plain(&self, signed: &SignedRoundSpec) -> Result<()> {
        let spec = &signed.spec;
        let dim = spec.dim()?;
        let targets = (0..spec.participants.len() as u32)
            .map(|i| (i, RoundRequest::Plain(signed.clone())))
            .collect();
        let plain = |r| match r {
            RoundResponse::Plain(v) => Ok(v),
            other => Err(unexpected(&other)),
        };
        let (mut sum, mut answered) = (vec![0u64; dim], Vec::new());
        self.step_round(spec, RoundStep::Plain, targets, plain, |key, v| {
            if v.len() != dim {
                return Err(SecAggError::Malformed(format!(
                    "vector of length {}, not {dim}",
                    v.len()
                )));
            }
            add_into(&mut sum, &v);
            answered.push(*key);
            Ok(())
        })
        .await;
        if answered.len() < spec.threshold as usize {
            bail!(
                "{} of the needed {} answered",
                answered.len(),
                spec.threshold
            );
        }
        let expected = bench_sum(&signed.digest(), &answered, dim);
        self.update(&spec.id_hex(), |r| r.exact = Some(sum == expected));
        Ok(())
    }

    /// Sends one step's requests, waits for the answers (each within the deadline) and hands
    /// each expected answer to `accept`; anything else, or a refusal by `accept`, is a dropout
    /// at `step`, logged with its reason.
    async fn step_round<T>(
        &self,
        spec: &RoundSpec,
        step: RoundStep,
        targets: Vec<(u32, RoundRequest)>,
        expect: fn(RoundResponse) -> Result<T, String>,
        mut accept: impl FnMut(&NodeKey, T) -> Result<(), SecAggError>,
    ) {
        let id = spec.id_hex();
        let t0 = Instant::now();
        let replies = self
            .send_all(spec, targets, Duration::from_millis(spec.step_deadline_ms))
            .await;
        let ms = t0.elapsed().as_millis() as u64;
        let outcomes: Vec<(u32, u64, Result<(), String>)> = replies
            .into_iter()
            .map(|(i, reply)| {
                let bytes = reply.as_ref().map_or(0, cbor_len);
                let outcome = reply.and_then(expect).and_then(|answer| {
                    accept(&spec.participants[i as usize], answer).map_err(|e| e.to_string())
                });
                if let Err(why) = &outcome {
                    warn!(round = %id, participant = i, %step, "dropped: {why}");
                }
                (i, bytes, outcome)
            })
            .collect();
        // One write of the round's status per step, whatever the number of participants.
        self.update(&id, |r| {
            r.step_ms.insert(step.as_str().into(), ms);
            for (i, bytes, outcome) in &outcomes {
                if let Some(p) = r.participants.get_mut(*i as usize) {
                    p.bytes_sent += bytes;
                    match outcome {
                        Ok(()) => p.reached = step.reached(),
                        Err(why) => p.dropped = Some(format!("{step}: {why}")),
                    }
                }
            }
        });
    }

    async fn secure(&self, signed: &SignedRoundSpec) -> Result<()> {
        let spec = &signed.spec;
        let id = spec.id_hex();
        let mut agg = Aggregator::new(spec.session()?)?;
        let round = agg.session().round;
        let n = spec.participants.len() as u32;
        let too_few = |e: SecAggError| anyhow::anyhow!("{e}");

        // 1. Announce: policy, ledger and key adverts on each node.
        let targets = (0..n)
            .map(|i| (i, RoundRequest::Announce(signed.clone())))
            .collect();
        let joined = |r| match r {
            RoundResponse::Joined(a) => Ok(a),
            other => Err(unexpected(&other)),
        };
        self.step_round(spec, RoundStep::Announce, targets, joined, |k, a| {
            agg.add_advert(k, a)
        })
        .await;
        let adverts = agg.close_keys().map_err(too_few)?;
        self.step(&id, RoundStep::Keys);

        // 2. Keys out, encrypted shares back.
        let targets = agg
            .progress()
            .keys
            .iter()
            .map(|i| {
                (
                    *i,
                    RoundRequest::Keys {
                        round,
                        adverts: adverts.clone(),
                    },
                )
            })
            .collect();
        let shares = |r| match r {
            RoundResponse::Shares(s) => Ok(s),
            other => Err(unexpected(&other)),
        };
        self.step_round(spec, RoundStep::Keys, targets, shares, |k, s| {
            agg.add_shares(k, s)
        })
        .await;
        let routed = agg.close_shares().map_err(too_few)?;
        self.step(&id, RoundStep::Shares);

        // 3. Routed shares out, masked inputs back.
        let targets = routed
            .into_iter()
            .map(|(i, shares)| (i, RoundRequest::Shares { round, shares }))
            .collect();
        let masked = |r| match r {
            RoundResponse::Masked(y) => Ok(y),
            other => Err(unexpected(&other)),
        };
        self.step_round(spec, RoundStep::Shares, targets, masked, |k, y| {
            agg.add_masked(k, y)
        })
        .await;
        let survivors = agg.close_masked().map_err(too_few)?;
        self.step(&id, RoundStep::Confirm);

        // 4. Consistency check: survivors out, their signatures on the list back.
        let targets = survivors
            .iter()
            .map(|i| {
                (
                    *i,
                    RoundRequest::Survivors {
                        round,
                        survivors: survivors.clone(),
                    },
                )
            })
            .collect();
        let confirmed = |r| match r {
            RoundResponse::Confirmed(c) => Ok(c),
            other => Err(unexpected(&other)),
        };
        self.step_round(spec, RoundStep::Confirm, targets, confirmed, |k, c| {
            agg.add_confirmation(k, c)
        })
        .await;
        let confirmations = agg.close_confirmations().map_err(too_few)?;
        self.step(&id, RoundStep::Unmask);

        // 5. The list and its signatures out, revealed shares back; unmask.
        let targets = confirmations
            .iter()
            .map(|c| {
                (
                    c.index,
                    RoundRequest::Unmask {
                        round,
                        survivors: survivors.clone(),
                        confirmations: confirmations.clone(),
                    },
                )
            })
            .collect();
        let revealed = |r| match r {
            RoundResponse::Revealed(r) => Ok(r),
            other => Err(unexpected(&other)),
        };
        self.step_round(spec, RoundStep::Unmask, targets, revealed, |k, r| {
            agg.add_reveal(k, r)
        })
        .await;
        let (sum, survivors) = agg.finish().map_err(too_few)?;
        let t0 = Instant::now();
        match &spec.kind {
            RoundKind::Bench { dim, .. } => {
                let keys: Vec<NodeKey> = survivors
                    .iter()
                    .map(|i| spec.participants[*i as usize])
                    .collect();
                let expected = bench_sum(&round, &keys, *dim as usize);
                self.update(&id, |r| r.exact = Some(sum == expected));
            }
            RoundKind::Benchmark { .. } | RoundKind::Trajectories { .. } => {
                let values: Vec<i64> = sum.into_iter().map(|v| v as i64).collect();
                let names: Vec<String> = {
                    let rounds = self.rounds.lock().expect("rounds lock");
                    let r = &rounds[&id];
                    survivors
                        .iter()
                        .map(|i| r.participants[*i as usize].name.clone())
                        .collect()
                };
                let document = release_document(self.node.config(), signed, &values, &names)?;
                let release = SignedRelease::sign(self.node.signer(), document);
                let release_id =
                    benchmark::accept(self.node.store().conn_mut(), &release, &clock::now())?
                        .context("the new release was already stored")?;
                if let Err(e) = self.client.publish(Gossip::Release(release)).await {
                    warn!(round = %id, "couldn't gossip the release (peers will not have it): {e}");
                }
                info!(round = %id, release = %release_id, clinics = survivors.len(), "release published");
                self.update(&id, |r| r.release_id = Some(release_id));
            }
        }
        let ms = t0.elapsed().as_millis() as u64;
        self.update(&id, |r| {
            r.step_ms.insert("release".into(), ms);
        });
        Ok(())
    }

    fn step(&self, id: &str, step: RoundStep) {
        self.update(id, |r| r.step = step);
    }
}

/// acc += v, entry by entry, mod 2^64.
fn add_into(acc: &mut [u64], v: &[u64]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = a.wrapping_add(*x);
    }
}

/// The sum (mod 2^64) of the bench vectors of `keys` in round `round`: what a bench round
/// must decode to.
fn bench_sum(round: &[u8; 32], keys: &[NodeKey], dim: usize) -> Vec<u64> {
    let mut sum = vec![0u64; dim];
    for key in keys {
        add_into(&mut sum, &bench_vector(round, key, dim));
    }
    sum
}

fn unexpected(r: &RoundResponse) -> String {
    match r {
        RoundResponse::Declined(why) => format!("declined: {why}"),
        other => format!("unexpected answer {}", variant(other)),
    }
}

fn variant(r: &RoundResponse) -> &'static str {
    match r {
        RoundResponse::Joined(_) => "joined",
        RoundResponse::Declined(_) => "declined",
        RoundResponse::Shares(_) => "shares",
        RoundResponse::Masked(_) => "masked",
        RoundResponse::Confirmed(_) => "confirmed",
        RoundResponse::Revealed(_) => "revealed",
        RoundResponse::Plain(_) => "plain",
    }
}
