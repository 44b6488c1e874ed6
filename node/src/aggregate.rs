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
use protocol::analysis::FEATURES;
use protocol::dropout::document::{DropoutModel, Iteration};
use protocol::dropout::{self, DropoutLayout};
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
pub mod record;
pub mod schedule;
mod status;

use document::{dropout_document, release_document, sum_sigma};
pub use status::{
    IterationStatus, ParticipantStatus, Reached, RoundStatus, RoundStep, StartRequest,
    TrainingStatus,
};

/// Default per-step deadline.
pub const DEFAULT_DEADLINE_S: f64 = 60.0;

/// Default most iterations of a dropout-model training.
pub const DEFAULT_ITERATIONS: u32 = 5;

/// The coordinator's rounds.
pub struct Aggregation {
    node: Arc<Node>,
    client: Client,
    participation: Arc<Participation>,
    rounds: Mutex<BTreeMap<String, RoundStatus>>,
    /// Trainings by id: the one record of each, attached to its rounds' status when read.
    trainings: Mutex<BTreeMap<String, TrainingStatus>>,
}

/// How the rounds of a start request are made, iteration after iteration.
#[derive(Debug, Clone, Copy)]
struct Plan {
    threshold: Option<u32>,
    deadline_ms: u64,
}

/// The decoded sum of a secure round and the SecAgg indices of the clinics in it.
struct Summed {
    sum: Vec<u64>,
    survivors: Vec<u32>,
}

fn cbor_len<T: Serialize>(value: &T) -> u64 {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).map_or(0, |()| buf.len() as u64)
}

impl Aggregation {
    /// For `node`, reaching the participants through `client`; its own contribution goes
    /// through `participation` in process.
    ///
    /// Rounds the store records as running were interrupted by the last stop and are recorded
    /// as aborted here ([`record::close_interrupted`]).
    pub fn new(node: Arc<Node>, client: Client, participation: Arc<Participation>) -> Self {
        match record::close_interrupted(node.store().conn(), &clock::now()) {
            Ok(0) => {}
            Ok(n) => warn!(rounds = n, "{}", record::INTERRUPTED),
            Err(e) => warn!("couldn't close the rounds the last stop interrupted: {e:#}"),
        }
        Self {
            node,
            client,
            participation,
            rounds: Mutex::new(BTreeMap::new()),
            trainings: Mutex::new(BTreeMap::new()),
        }
    }

    /// `r` with its training's current status.
    fn attach(&self, mut r: RoundStatus) -> RoundStatus {
        if let Some(t) = &r.training {
            let trainings = self.trainings.lock().expect("trainings lock");
            r.training = trainings.get(&t.training_id).cloned().or(r.training);
        }
        r
    }

    /// The status of round `id` (a prefix will do; a training's id gives its latest
    /// iteration), or of the latest round.
    pub fn status(&self, id: Option<&str>) -> Option<RoundStatus> {
        // A training's id: the round of its current iteration.
        let current = id.and_then(|id| {
            let trainings = self.trainings.lock().expect("trainings lock");
            trainings
                .values()
                .find(|t| t.training_id.starts_with(id))
                .map(|t| t.round_id.clone())
        });
        let id = current.as_deref().or(id);
        let found = {
            let rounds = self.rounds.lock().expect("rounds lock");
            rounds
                .values()
                .filter(|r| id.is_none_or(|id| r.round_id.starts_with(id)))
                .max_by(|a, b| a.started_at.cmp(&b.started_at))
                .cloned()
        };
        match found {
            Some(r) => Some(self.attach(r)),
            // A round of an earlier run of the daemon, as recorded.
            None => record::find(self.node.store().conn(), id).unwrap_or_else(|e| {
                warn!("couldn't read the recorded rounds: {e:#}");
                None
            }),
        }
    }

    /// The `limit` latest rounds, oldest first: those recorded by earlier runs of the daemon
    /// ([`record::recent`]) and this run's as they stand now.
    pub fn history(&self, limit: usize) -> Vec<RoundStatus> {
        let recorded = record::recent(self.node.store().conn(), limit).unwrap_or_else(|e| {
            warn!("couldn't read the recorded rounds: {e:#}");
            Vec::new()
        });
        let mut all: BTreeMap<String, RoundStatus> = recorded
            .into_iter()
            .map(|r| (r.round_id.clone(), r))
            .collect();
        all.extend(self.list().into_iter().map(|r| (r.round_id.clone(), r)));
        let mut all: Vec<RoundStatus> = all.into_values().collect();
        all.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        let skip = all.len().saturating_sub(limit);
        all.split_off(skip)
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
        all.into_iter().map(|r| self.attach(r)).collect()
    }

    /// Whether a round (or a training) is running.
    pub fn busy(&self) -> bool {
        self.list().iter().any(|r| !r.finished())
            || self
                .trainings
                .lock()
                .expect("trainings lock")
                .values()
                .any(|t| !t.finished)
    }

    /// Signs and starts a round (or the first round of a training); returns its first status
    /// while it runs in the background.
    pub fn start(self: &Arc<Self>, request: &StartRequest) -> Result<RoundStatus> {
        if self.busy() {
            bail!("a round is already running (see `mbc-node round status`)");
        }
        let config = self.node.config();
        let deadline = request.deadline_s.unwrap_or(DEFAULT_DEADLINE_S);
        if !(deadline.is_finite() && deadline > 0.0) {
            bail!("--deadline must be a positive number of seconds");
        }
        let plan = Plan {
            threshold: request.threshold,
            deadline_ms: (deadline * 1000.0).round() as u64,
        };
        if request.iterations.is_some() && request.kind != "dropout-model" {
            bail!("--iterations is for dropout-model trainings only");
        }
        let (kind, rho) = match request.kind.as_str() {
            "benchmark" | "trajectories" | "dropout-model" => {
                release::check_rho_arg(request.rho)?;
                let layout = release::benchmark_layout(&self.node.store(), config)?;
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
                match request.kind.as_str() {
                    "benchmark" => (
                        RoundKind::benchmark(&protocol::benchmark::BenchmarkLayout::new(
                            specs, params,
                        )?),
                        request.rho,
                    ),
                    "trajectories" => (
                        RoundKind::trajectories(&protocol::trajectories::TrajectoriesLayout::new(
                            specs,
                            params.max_episodes,
                        )?),
                        request.rho,
                    ),
                    _ => first_iteration(request, specs, params.max_episodes)?,
                }
            }
            "bench" => (
                RoundKind::Bench {
                    dim: request.dim.unwrap_or(10_000),
                    plain: request.plain,
                },
                0.0,
            ),
            other => bail!(
                "unknown round kind {other:?} (benchmark, trajectories, dropout-model or bench)"
            ),
        };
        if let Some(t) = kind.training() {
            self.trainings
                .lock()
                .expect("trainings lock")
                .insert(t.id.clone(), TrainingStatus::new(t, String::new()));
        }
        let begun = self.begin(kind, rho, plan);
        let (status, signed) = match begun {
            Ok(b) => b,
            Err(e) => {
                // A training whose first round cannot start never ran.
                self.trainings
                    .lock()
                    .expect("trainings lock")
                    .retain(|_, t| t.finished);
                return Err(e);
            }
        };
        if let Some(t) = signed.spec.kind.training() {
            self.update_training(&t.id, |x| x.round_id = signed.spec.id_hex());
        }
        let this = self.clone();
        if signed.spec.kind.training().is_some() {
            tokio::spawn(async move { this.train(signed, plan).await });
        } else {
            tokio::spawn(async move { this.drive(signed).await });
        }
        Ok(self.attach(status))
    }

    /// Signs a round of `kind` at `rho` over the roster as it is now, records it and returns
    /// its first status (the caller drives it).
    fn begin(
        &self,
        kind: RoundKind,
        rho: f64,
        plan: Plan,
    ) -> Result<(RoundStatus, SignedRoundSpec)> {
        let config = self.node.config();
        let store = self.node.store();
        let m = membership::load(store.conn())?.context("this node is not in a network")?;
        if !m.is_coordinator {
            bail!("only the network's coordinator runs rounds");
        }
        let members = &m.roster.roster.members;
        let n = members.len();
        // The coordinator is on its own roster, so it contributes too (which raises the floor).
        let threshold = plan.threshold.unwrap_or_else(|| default_threshold(n, true));
        let training = kind.training();
        let spec = RoundSpec {
            network_id: m.network_id.clone(),
            round_id: rand::random(),
            kind,
            rho,
            threshold,
            participants: members.iter().map(|p| p.key).collect(),
            aggregator: self.node.signer().key(),
            issued_at_ms: crate::clock::now_ms(),
            step_deadline_ms: plan.deadline_ms,
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
            training: training.map(|t| TrainingStatus::new(t, signed.spec.id_hex())),
        };
        record::insert(store.conn(), &status, &signed)?;
        drop(store);
        self.rounds
            .lock()
            .expect("rounds lock")
            .insert(status.round_id.clone(), status.clone());
        info!(round = %status.round_id, kind = %status.kind, n, threshold, "round started");
        Ok((status, signed))
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
        let started = Instant::now();
        let outcome = self.complete(&signed).await;
        self.finish(&signed.spec.id_hex(), started, outcome.as_ref().err());
    }

    /// Records the end of round `id`, started at `started`: done, or aborted with `error`.
    fn finish(&self, id: &str, started: Instant, error: Option<&anyhow::Error>) {
        let elapsed = started.elapsed().as_millis() as u64;
        match error {
            None => {
                info!(round = %id, elapsed_ms = elapsed, "round done");
                self.update(id, |r| {
                    r.step = RoundStep::Done;
                    r.elapsed_ms = Some(elapsed);
                });
            }
            Some(e) => {
                warn!(round = %id, "round aborted, nothing released: {e:#}");
                self.update(id, |r| {
                    r.step = RoundStep::Aborted;
                    r.error = Some(format!("{e:#}"));
                    r.elapsed_ms = Some(elapsed);
                });
            }
        }
    }

    /// A round that is a release by itself (or a bench round), from announcement to release.
    async fn complete(&self, signed: &SignedRoundSpec) -> Result<()> {
        let spec = &signed.spec;
        let id = spec.id_hex();
        if let RoundKind::Bench { plain: true, .. } = spec.kind {
            return self.plain(signed).await;
        }
        let summed = self.secure(signed).await?;
        let t0 = Instant::now();
        if let RoundKind::Bench { dim, .. } = spec.kind {
            let keys: Vec<NodeKey> = summed
                .survivors
                .iter()
                .map(|i| spec.participants[*i as usize])
                .collect();
            let expected = bench_sum(&signed.digest(), &keys, dim as usize);
            self.update(&id, |r| r.exact = Some(summed.sum == expected));
        } else {
            let values = as_values(&summed.sum);
            let names = self.names(&id, &summed.survivors);
            let document = release_document(self.node.config(), signed, &values, &names)?;
            self.publish(&id, document).await?;
        }
        self.update(&id, |r| {
            r.step_ms
                .insert("release".into(), t0.elapsed().as_millis() as u64);
        });
        Ok(())
    }

    /// The roster names of round `id`'s clinics at SecAgg indices `survivors`.
    fn names(&self, id: &str, survivors: &[u32]) -> Vec<String> {
        let rounds = self.rounds.lock().expect("rounds lock");
        let r = &rounds[id];
        survivors
            .iter()
            .filter_map(|i| r.participants.get(*i as usize))
            .map(|p| p.name.clone())
            .collect()
    }

    /// Signs `document`, keeps it and gossips it as round `id`'s release; its id.
    async fn publish(&self, id: &str, document: Vec<u8>) -> Result<String> {
        let release = SignedRelease::sign(self.node.signer(), document);
        let release_id = benchmark::accept(self.node.store().conn_mut(), &release, &clock::now())?
            .context("the new release was already stored")?;
        if let Err(e) = self.client.publish(Gossip::Release(release)).await {
            warn!(round = %id, "couldn't gossip the release (peers will not have it): {e}");
        }
        info!(round = %id, release = %release_id, "release published");
        self.update(id, |r| r.release_id = Some(release_id.clone()));
        Ok(release_id)
    }

    fn update_training(&self, id: &str, f: impl FnOnce(&mut TrainingStatus)) {
        if let Some(t) = self.trainings.lock().expect("trainings lock").get_mut(id) {
            f(t);
        }
    }

    /// Runs a dropout-model training from its first round: one round per iteration, each at
    /// the coefficients the last step gave, until the step converges or the declared number
    /// of iterations is reached; then signs and gossips the fitted model. A clinic missing
    /// from one iteration is invited to the next. An iteration that aborts ends the training:
    /// the model of the iterations before it is released, said to have stopped early (their ρ
    /// was spent). Never fails the daemon.
    async fn train(self: Arc<Self>, first: SignedRoundSpec, plan: Plan) {
        let RoundKind::DropoutModel {
            domain,
            max_episodes,
            training_id,
            iterations,
            total_rho,
            ..
        } = first.spec.kind.clone()
        else {
            return;
        };
        let rho = first.spec.rho;
        let tid = format!("{training_id:016x}");
        let began = Instant::now();
        let mut signed = first;
        let mut history: Vec<Iteration> = Vec::new();
        // The last finished iteration: its spec, decoded sum, clinics and step.
        let mut last: Option<(SignedRoundSpec, Vec<i64>, Vec<String>, dropout::Step)> = None;
        let mut stopped: Option<String> = None;
        for iteration in 1..=iterations {
            if let Some((_, _, _, step)) = &last {
                let next = DropoutLayout::new(domain.clone(), max_episodes, step.model.clone())
                    .map_err(anyhow::Error::from)
                    .and_then(|l| {
                        let kind = RoundKind::dropout_model(
                            &l,
                            training_id,
                            iteration,
                            iterations,
                            total_rho,
                        );
                        self.begin(kind, rho, plan)
                    });
                match next {
                    Ok((_, s)) => signed = s,
                    Err(e) => {
                        stopped = Some(format!("iteration {iteration} could not start: {e:#}"));
                        break;
                    }
                }
            }
            let id = signed.spec.id_hex();
            self.update_training(&tid, |t| {
                t.iteration = iteration;
                t.round_id.clone_from(&id);
            });
            let started = Instant::now();
            let outcome = self.iterate(&signed).await;
            match outcome {
                Ok((values, names, step)) => {
                    history.push(Iteration::new(
                        iteration,
                        id.clone(),
                        names.clone(),
                        signed_model(&signed),
                        &step,
                    ));
                    let converged = step.converged;
                    self.update_training(&tid, |t| {
                        t.converged = converged;
                        t.history.push(IterationStatus {
                            iteration,
                            round_id: id.clone(),
                            contributing: names.len(),
                            shift: Some(step.shift),
                            shift_noise: Some(step.shift_noise),
                            brier: step.brier,
                            error: None,
                        });
                    });
                    info!(training = %tid, iteration, shift = step.shift, noise = step.shift_noise, converged, "iteration done");
                    self.finish(&id, started, None);
                    last = Some((signed.clone(), values, names, step));
                    if converged {
                        break;
                    }
                }
                Err(e) => {
                    self.update_training(&tid, |t| {
                        t.history.push(IterationStatus {
                            iteration,
                            round_id: id.clone(),
                            contributing: 0,
                            shift: None,
                            shift_noise: None,
                            brier: None,
                            error: Some(format!("{e:#}")),
                        })
                    });
                    stopped = Some(format!("iteration {iteration} aborted: {e:#}"));
                    self.finish(&id, started, Some(&e));
                    break;
                }
            }
        }
        let last_round = signed.spec.id_hex();
        if let Some((spec, values, names, step)) = last {
            let published = async {
                let layout = spec
                    .spec
                    .kind
                    .data_layout()?
                    .context("not a round over clinic data")?;
                let protocol::round::DataLayout::Dropout(layout) = layout else {
                    bail!("not a dropout-model round");
                };
                let model = DropoutModel {
                    stopped: stopped.clone(),
                    ..DropoutModel::new(&layout, tid.clone(), iterations, rho, &step, history)
                };
                let document = dropout_document(self.node.config(), &spec, &values, &names, model)?;
                self.publish(&last_round, document).await
            };
            if let Err(e) = published.await {
                warn!(training = %tid, "couldn't release the fitted model: {e:#}");
                stopped.get_or_insert(format!("the fitted model could not be released: {e:#}"));
            }
        }
        info!(training = %tid, ?stopped, "training ended");
        self.update_training(&tid, |t| {
            t.finished = true;
            t.stopped = stopped;
            t.elapsed_ms = Some(began.elapsed().as_millis() as u64);
        });
        // Persist the last round's final state (its release id) with the training ended.
        self.update(&last_round, |_| {});
    }

    /// One iteration: the round's sum, its clinics and the Newton step it gives.
    async fn iterate(
        &self,
        signed: &SignedRoundSpec,
    ) -> Result<(Vec<i64>, Vec<String>, dropout::Step)> {
        let id = signed.spec.id_hex();
        let summed = self.secure(signed).await?;
        let t0 = Instant::now();
        let protocol::round::DataLayout::Dropout(layout) = signed
            .spec
            .kind
            .data_layout()?
            .context("not a round over clinic data")?
        else {
            bail!("not a dropout-model round");
        };
        let values = as_values(&summed.sum);
        let names = self.names(&id, &summed.survivors);
        let sigma = sum_sigma(signed, names.len())?;
        let step = layout.step(&values, sigma)?;
        self.update(&id, |r| {
            r.step_ms
                .insert("step".into(), t0.elapsed().as_millis() as u64);
        });
        Ok((values, names, step))
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

    /// Runs a secure round's five steps; the decoded sum and who is in it.
    async fn secure(&self, signed: &SignedRoundSpec) -> Result<Summed> {
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

        // 2. Keys out (to each its neighbourhood's: all of them on the complete graph),
        // encrypted shares back.
        let graph = protocol::secagg::Graph::of(agg.session());
        let targets = agg
            .progress()
            .keys
            .iter()
            .map(|i| {
                let mine = adverts
                    .iter()
                    .filter(|a| graph.linked(*i, a.index))
                    .cloned()
                    .collect();
                (
                    *i,
                    RoundRequest::Keys {
                        round,
                        adverts: mine,
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
        Ok(Summed { sum, survivors })
    }

    fn step(&self, id: &str, step: RoundStep) {
        self.update(id, |r| r.step = step);
    }
}

/// The first round of a dropout-model training asked for by `request`: its kind (at β = 0)
/// and ρ per iteration.
fn first_iteration(
    request: &StartRequest,
    specs: Vec<protocol::benchmark::DomainSpec>,
    max_episodes: u32,
) -> Result<(RoundKind, f64)> {
    let iterations = request.iterations.unwrap_or(DEFAULT_ITERATIONS);
    if !(1..=dropout::MAX_ITERATIONS).contains(&iterations) {
        bail!(
            "--iterations must be 1 to {}, not {iterations}",
            dropout::MAX_ITERATIONS
        );
    }
    let domain = match specs.as_slice() {
        [one] => one.clone(),
        _ if !request.domains.is_empty() => {
            bail!("a dropout-model training takes one --domain (its intake gives the features)")
        }
        all => all
            .iter()
            .find(|d| d.id == "depression")
            .or(all.first())
            .cloned()
            .context("the coordinator's registry has no domains")?,
    };
    let rho = request.rho / f64::from(iterations);
    let (lo, _) = protocol::dp::RHO_RANGE;
    if rho < lo {
        bail!(
            "--rho {} over {iterations} iterations leaves ρ = {rho:e} per round, below {lo:e}: \
             give more ρ or fewer --iterations",
            request.rho
        );
    }
    let layout = DropoutLayout::new(domain, max_episodes, vec![0.0; FEATURES.len()])?;
    let kind = RoundKind::dropout_model(&layout, rand::random(), 1, iterations, request.rho);
    Ok((kind, rho))
}

/// The coefficients a dropout-model round evaluates at.
fn signed_model(signed: &SignedRoundSpec) -> &[f64] {
    match &signed.spec.kind {
        RoundKind::DropoutModel { model, .. } => model,
        _ => &[],
    }
}

/// A decoded sum (mod 2^64) as the signed values it encodes.
fn as_values(sum: &[u64]) -> Vec<i64> {
    sum.iter().map(|v| *v as i64).collect()
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
