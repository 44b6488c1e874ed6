//! A clinic's side of secure-aggregation rounds (DESIGN.md §9): decide by local policy whether
//! to join, charge the ledger, add the noise share, and step the SecAgg participant
//! ([`protocol::secagg::Participant`]) as the aggregator's requests arrive.
//!
//! Joining, in order, cheapest and policy checks first: the announcement is checked (signed by
//! the pinned coordinator, this network, this node invited, fresh); the policy allows the kind;
//! the round is safe by the clinic's `[privacy]` policy ([`protocol::round::Safety`]: enough
//! other participants, a threshold above the floor); every participant is on the roster; for a
//! `benchmark` round, a contribution already charged to this round id is reused only for the
//! byte-identical specification and only while its masked vector has not left; ρ, the
//! period's budget and the round caps allow it. Only then is ρ calibrated, noise of scale
//! σ/√(t − 1) drawn (OpenDP), the store analysed and the vector encoded; ρ is charged to the
//! ledger with the noised vector as the payload, in the same transaction as the round's
//! `round_contribution` row (binding spec digest and expiry); then the key advert is sent. The
//! vector leaves only masked, once.
//!
//! Before signing the survivor list (and so before revealing anything), the clinic checks the
//! survivors against its policy again (enough others; optionally not a set that differs from
//! its previous round's by only a few clinics). A contribution whose masked vector has not
//! left when the round expires is refunded ([`Participation::expire`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use protocol::dp::Mechanism;
use protocol::keys::NodeKey;
use protocol::messages::{RoundRequest, RoundResponse};
use protocol::round::{RoundKind, RoundSpec, SignedRoundSpec, bench_vector};
use protocol::secagg::{Advert, Participant};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use tracing::{info, warn};

use crate::config::Config;
use crate::ledger::{self, Draft, Policy};
use crate::node::Node;
use crate::store::Store;
use crate::{clock, hooks, membership, release, stats};

/// Ledger kind of a round contribution: `round:` and the round kind (`round:benchmark`,
/// `round:trajectories`).
pub fn ledger_kind(kind: &RoundKind) -> String {
    format!("round:{}", kind.name())
}

/// Announcements older than this are refused.
const MAX_ANNOUNCE_AGE_MS: u64 = 60 * 60 * 1000;

/// The ledger's counterpart string for a round.
pub fn counterpart(spec: &SignedRoundSpec) -> String {
    format!(
        "round {} via {}",
        spec.spec.id_hex(),
        membership::peer_id(&spec.spec.aggregator)
    )
}

struct Joined {
    spec: SignedRoundSpec,
    participant: Participant,
    advert: Advert,
    /// Ledger entry to mark sent once the masked vector has left (benchmark rounds).
    ledger_id: Option<String>,
}

/// This node's rounds in progress, shared by the request handlers.
pub struct Participation {
    node: Arc<Node>,
    network_id: String,
    coordinator: NodeKey,
    rounds: Mutex<HashMap<[u8; 32], Joined>>,
    /// The contributions read for the current training's iterations.
    training_data: Mutex<Option<TrainingData>>,
}

/// A training's contributions as read: (training id, domains, data).
type TrainingData = (
    String,
    Vec<protocol::benchmark::DomainSpec>,
    Arc<release::ClinicData>,
);

impl Participation {
    /// For `node`, a member of network `network_id` with coordinator `coordinator`.
    pub fn new(node: Arc<Node>, network_id: String, coordinator: NodeKey) -> Self {
        Self {
            node,
            network_id,
            coordinator,
            rounds: Mutex::new(HashMap::new()),
            training_data: Mutex::new(None),
        }
    }

    /// This node's key.
    pub fn key(&self) -> NodeKey {
        self.node.signer().key()
    }

    /// The pinned coordinator (the only aggregator).
    pub fn coordinator(&self) -> NodeKey {
        self.coordinator
    }

    /// Answers one round request from `from` (the authenticated peer). Failures become a
    /// `Declined` answer with the reason; the aggregator counts this node as dropped.
    pub async fn handle(self: &Arc<Self>, from: NodeKey, request: RoundRequest) -> RoundResponse {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || this.step(&from, request))
            .await
            .context("round handler panicked")
            .and_then(|r| r);
        match result {
            Ok(response) => response,
            Err(e) => {
                warn!("round: {e:#}");
                RoundResponse::Declined(truncate(&format!("{e:#}")))
            }
        }
    }

    /// Forgets rounds past their expiry and refunds every charged contribution whose round
    /// expired before its masked vector left. Returns the refunded round ids.
    pub fn expire(&self) -> Result<Vec<String>> {
        let now = clock::now_ms();
        self.rounds
            .lock()
            .expect("round table lock")
            .retain(|_, j| j.spec.spec.expires_at_ms() >= now);
        let refunded = refund_expired(self.node.store().conn(), now)?;
        for round in &refunded {
            info!(round = %round, "refunded a round contribution that never left (the round expired)");
        }
        Ok(refunded)
    }

    fn step(&self, from: &NodeKey, request: RoundRequest) -> Result<RoundResponse> {
        if *from != self.coordinator {
            bail!("round requests come from the coordinator only");
        }
        {
            let name = match &request {
                RoundRequest::Keys { .. } => "keys",
                RoundRequest::Shares { .. } => "shares",
                RoundRequest::Survivors { .. } => "survivors",
                RoundRequest::Unmask { .. } => "unmask",
                _ => "",
            };
            let iteration = match &request {
                RoundRequest::Keys { round, .. }
                | RoundRequest::Shares { round, .. }
                | RoundRequest::Survivors { round, .. }
                | RoundRequest::Unmask { round, .. } => self.iteration_of(round),
                _ => None,
            };
            if hooks::exit_at(name, iteration) {
                warn!("{}={name}: aborting as if killed", hooks::EXIT_AT);
                std::process::abort();
            }
        }
        let mut rng = rand::rngs::OsRng;
        let with_round =
            |round: &[u8; 32], f: &mut dyn FnMut(&mut Joined) -> Result<RoundResponse>| {
                let mut rounds = self.rounds.lock().expect("round table lock");
                let joined = rounds.get_mut(round).context(
                    "no such round in progress here (restarted, expired, or never joined)",
                )?;
                if joined.spec.spec.expires_at_ms() < clock::now_ms() {
                    bail!("the round has expired here");
                }
                f(joined)
            };
        match request {
            RoundRequest::Announce(spec) => self.announce(spec),
            RoundRequest::Plain(spec) => self.plain(&spec),
            RoundRequest::Keys { round, adverts } => with_round(&round, &mut |j| {
                Ok(RoundResponse::Shares(
                    j.participant.on_keys(&adverts, &mut rng)?,
                ))
            }),
            RoundRequest::Shares { round, shares } => with_round(&round, &mut |j| {
                let y = j.participant.on_shares(&shares)?;
                // The masked vector is about to leave: the charged release is sent. This moves
                // the ledger row from charged to sent atomically, so a refund that got there
                // first stops the vector here.
                if let Some(id) = j.ledger_id.take() {
                    ledger::mark_sent(self.node.store().conn(), &id, None, clock::now_utc())?;
                }
                Ok(RoundResponse::Masked(y))
            }),
            RoundRequest::Survivors { round, survivors } => with_round(&round, &mut |j| {
                let store = self.node.store();
                let contributors =
                    check_survivors(self.node.config(), store.conn(), j, &survivors)?;
                let confirmation = j.participant.on_survivors(&survivors, self.node.signer())?;
                if let Some(names) = contributors {
                    store.conn().execute(
                        "UPDATE round_contribution SET survivors = ?2, confirmed_at = ?3
                         WHERE round_id = ?1",
                        params![
                            j.spec.spec.id_hex(),
                            serde_json::to_string(&names)?,
                            clock::now()
                        ],
                    )?;
                }
                Ok(RoundResponse::Confirmed(confirmation))
            }),
            RoundRequest::Unmask {
                round,
                survivors,
                confirmations,
            } => {
                let response = with_round(&round, &mut |j| {
                    Ok(RoundResponse::Revealed(
                        j.participant.on_unmask(&survivors, &confirmations)?,
                    ))
                });
                self.rounds.lock().expect("round table lock").remove(&round);
                response
            }
        }
    }

    /// The training iteration of joined round `round`, if it is one.
    fn iteration_of(&self, round: &[u8; 32]) -> Option<u32> {
        let rounds = self.rounds.lock().expect("round table lock");
        Some(rounds.get(round)?.spec.spec.kind.training()?.iteration)
    }

    /// Checks an announcement: signed by the pinned coordinator, for this network, fresh.
    fn check_spec(&self, spec: &SignedRoundSpec) -> Result<()> {
        spec.verify()
            .map_err(|_| anyhow::anyhow!("the round announcement's signature does not verify"))?;
        let s = &spec.spec;
        if s.aggregator != self.coordinator {
            bail!("the round's aggregator is not this network's coordinator");
        }
        if s.network_id != self.network_id {
            bail!("the round is for network {:?}", s.network_id);
        }
        s.validate()?;
        let now = clock::now_ms();
        if now.saturating_sub(s.issued_at_ms) > MAX_ANNOUNCE_AGE_MS
            || s.issued_at_ms > now + MAX_ANNOUNCE_AGE_MS
        {
            bail!("the round announcement is stale or from the future");
        }
        if s.session()?.index_of(&self.key()).is_none() {
            bail!("this node is not invited to the round");
        }
        Ok(())
    }

    fn plain(&self, spec: &SignedRoundSpec) -> Result<RoundResponse> {
        self.check_spec(spec)?;
        let RoundKind::Bench { dim, plain: true } = spec.spec.kind else {
            bail!("only plain bench rounds are answered unmasked");
        };
        Ok(RoundResponse::Plain(bench_vector(
            &spec.digest(),
            &self.key(),
            dim as usize,
        )))
    }

    fn announce(&self, spec: SignedRoundSpec) -> Result<RoundResponse> {
        self.check_spec(&spec)?;
        let digest = spec.digest();
        if let Some(j) = self.rounds.lock().expect("round table lock").get(&digest) {
            return Ok(RoundResponse::Joined(j.advert.clone()));
        }
        let config = self.node.config();
        // The store is held for the checks and the charge only: a step of another round holds
        // the round table and then takes the store, so this must not take them the other way.
        let mut store = self.node.store();
        let id = spec.spec.id_hex();
        let kind = spec.spec.kind.name();
        let decline = |why: String| {
            info!(round = %id, kind, "declined a round: {why}");
            Ok(RoundResponse::Declined(truncate(&why)))
        };
        if !config.privacy.round_kinds.iter().any(|k| k == kind) {
            return decline(format!(
                "this clinic does not join {kind} rounds ([privacy] round_kinds)"
            ));
        }
        if let Err(e) = config.privacy.safety()?.check_spec(&spec.spec) {
            return decline(e.to_string());
        }
        if let Err(e) = check_roster(store.conn(), &spec.spec) {
            return decline(format!("{e:#}"));
        }
        if let Some(t) = spec.spec.kind.training()
            && hooks::decline_iteration() == Some(t.iteration)
        {
            return decline(format!(
                "{} is set: declining iteration {}",
                hooks::DECLINE_ITERATION,
                t.iteration
            ));
        }
        let session = spec.spec.session()?;
        let (input, ledger_id) = match &spec.spec.kind {
            RoundKind::Bench { plain: true, .. } => {
                bail!("a plain bench round is answered by one plain request")
            }
            RoundKind::Bench { dim, .. } => {
                (bench_vector(&digest, &self.key(), *dim as usize), None)
            }
            RoundKind::Benchmark { .. }
            | RoundKind::Trajectories { .. }
            | RoundKind::DropoutModel { .. } => {
                match self.contribution(config, &mut store, &spec) {
                    Ok(v) => v,
                    Err(e) => return decline(format!("{e:#}")),
                }
            }
        };
        drop(store);
        let (participant, advert) =
            Participant::new(session, self.node.signer(), input, &mut rand::rngs::OsRng)?;
        info!(round = %id, kind, "joined a round");
        self.rounds.lock().expect("round table lock").insert(
            digest,
            Joined {
                spec,
                participant,
                advert: advert.clone(),
                ledger_id,
            },
        );
        Ok(RoundResponse::Joined(advert))
    }

    /// The noised benchmark vector for a round, charged to the ledger first (or, for the same
    /// round announced again with the identical spec and its vector not yet sent, found
    /// there).
    fn contribution(
        &self,
        config: &Config,
        store: &mut Store,
        spec: &SignedRoundSpec,
    ) -> Result<(Vec<u64>, Option<String>)> {
        let s = &spec.spec;
        let id = s.id_hex();
        let spec_sha = hex::encode(spec.digest());
        refund_expired(store.conn(), clock::now_ms())?;
        if let Some((earlier_sha, release_id)) = contribution_of(store.conn(), &id)? {
            if earlier_sha != spec_sha {
                bail!(
                    "round {id} was announced to this clinic before with other parameters; a \
                     charged contribution is reused only for the identical round"
                );
            }
            let charged = ledger::get(store.conn(), &release_id)?
                .context("the ledger lost a round's charge")?;
            return match charged.entry.status.as_str() {
                "charged" => {
                    info!(round = %id, "round seen before: reusing its charged contribution");
                    Ok((from_payload(&charged.payload)?, Some(release_id)))
                }
                "sent" => bail!(
                    "this clinic already sent its masked contribution to round {id}; a \
                     contribution leaves once"
                ),
                _ => bail!(
                    "this clinic's contribution to round {id} was refunded when the round \
                     expired; start a new round"
                ),
            };
        }
        let policy = Policy::from_config(&config.privacy)?;
        let now = clock::now_utc();
        // Policy before any calibration or data work: ρ, the period's budget, the round caps.
        let ledger_kind = ledger_kind(&s.kind);
        let training = s.kind.training();
        ledger::precheck(
            store.conn(),
            &policy,
            &ledger_kind,
            s.rho,
            training.as_ref(),
            now,
        )?;
        let layout = s
            .kind
            .data_layout()?
            .context("not a round over clinic data")?;
        let sensitivity = layout.layout().sensitivity();
        let mechanism = Mechanism::distributed(sensitivity.patient, s.rho, s.threshold)?;
        // Noise first, before any data-dependent work (timing).
        let noise = if hooks::no_noise() {
            warn!(
                "{} is set: this test build contributes without noise",
                hooks::NO_NOISE
            );
            vec![0; layout.layout().len()]
        } else {
            mechanism.noise(layout.layout().len())?
        };
        let settings = stats::settings(&config.stats, store.registry()?.instruments())?;
        let values = match &training {
            // A training's iterations read the store once while it is unchanged (the same
            // episodes at every iteration; an import or an erasure is read again).
            Some(t) => self
                .training_data(&t.id, store, settings, layout.domains(), now)?
                .noised(&layout, &noise, mechanism.total_sigma)?,
            None => {
                release::noised_vector(
                    store,
                    settings,
                    &layout,
                    &noise,
                    mechanism.total_sigma,
                    now,
                )?
                .0
            }
        };
        let payload = serde_json::to_vec(&json!({
            "round_id": id,
            "network_id": s.network_id,
            "spec_sha256": spec_sha,
            "threshold": s.threshold,
            "note": "this clinic's noised contribution; it left only masked (SecAgg)",
            "values": values,
        }))?;
        let release_id = ledger::new_id()?;
        let charged = ledger::charge_with(
            store.conn_mut(),
            &policy,
            Draft {
                id: release_id.clone(),
                kind: ledger_kind,
                counterpart: counterpart(spec),
                mechanism,
                threshold: s.threshold,
                therapist_sensitivity: sensitivity.therapist,
                layout: layout.record(),
                payload,
                training: training.clone(),
            },
            now,
            |tx| {
                tx.execute(
                    "INSERT INTO round_contribution (round_id, spec_sha256, release_id,
                        expires_at_ms, training_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        spec_sha,
                        release_id,
                        s.expires_at_ms() as i64,
                        training.as_ref().map(|t| t.id.as_str())
                    ],
                )?;
                Ok(())
            },
        )?;
        Ok((
            values.into_iter().map(|x| x as u64).collect(),
            Some(charged.entry.release_id),
        ))
    }

    /// The clinic's contributions for training `id`: those read for its last iteration while
    /// the store is unchanged, else read now.
    fn training_data(
        &self,
        id: &str,
        store: &mut Store,
        settings: protocol::analysis::Settings,
        domains: &[protocol::benchmark::DomainSpec],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Arc<release::ClinicData>> {
        let mut cache = self.training_data.lock().expect("training data lock");
        let fingerprint = release::fingerprint(store)?;
        if let Some((cached_id, cached_domains, data)) = cache.as_ref()
            && cached_id == id
            && cached_domains.as_slice() == domains
            && data.fingerprint == fingerprint
        {
            return Ok(data.clone());
        }
        let data = Arc::new(release::ClinicData::read(store, settings, domains, now)?);
        *cache = Some((id.to_string(), domains.to_vec(), data.clone()));
        Ok(data)
    }

    /// Rounds in progress (for status).
    pub fn in_progress(&self) -> Vec<String> {
        self.rounds
            .lock()
            .expect("round table lock")
            .values()
            .map(|j| j.spec.spec.id_hex())
            .collect()
    }
}

/// Before signing the survivor list: the survivors meet the policy (enough others), and
/// for a round over clinic data they do not differ from the previous round's contributors by
/// only a few clinics ([privacy] min_contributor_change). Returns such a round's contributors
/// (PeerIds), to record once the list is signed.
fn check_survivors(
    config: &Config,
    conn: &Connection,
    j: &Joined,
    survivors: &[u32],
) -> Result<Option<BTreeSet<String>>> {
    let spec = &j.spec.spec;
    let distinct: BTreeSet<u32> = survivors.iter().copied().collect();
    config
        .privacy
        .safety()?
        .check_survivors(spec, distinct.len())?;
    if matches!(spec.kind, RoundKind::Bench { .. }) {
        return Ok(None);
    }
    let names: BTreeSet<String> = distinct
        .iter()
        .filter_map(|i| spec.participants.get(*i as usize))
        .map(|k| membership::peer_id(k).to_string())
        .collect();
    let min_change = config.privacy.min_contributor_change as usize;
    if min_change > 0
        && let Some(previous) = previous_contributors(conn, &spec.id_hex())?
    {
        let changed = previous.symmetric_difference(&names).count();
        if changed > 0 && changed < min_change {
            bail!(
                "the contributors differ from this clinic's previous round by {changed} \
                 clinic(s); it reveals nothing for a round that differs by fewer than \
                 {min_change} ([privacy] min_contributor_change)"
            );
        }
    }
    Ok(Some(names))
}

/// Every participant of `spec` must be a member of the roster this node holds.
fn check_roster(conn: &Connection, spec: &RoundSpec) -> Result<()> {
    let m = membership::load(conn)?.context("this node is not in a network")?;
    let members: BTreeSet<NodeKey> = m.roster.roster.members.iter().map(|p| p.key).collect();
    let strangers = spec
        .participants
        .iter()
        .filter(|k| !members.contains(k))
        .count();
    if strangers > 0 {
        bail!(
            "{strangers} of the round's {} participants are not on the network's roster \
             (version {}); this clinic joins only rounds among members",
            spec.participants.len(),
            m.roster.roster.version
        );
    }
    Ok(())
}

/// The spec digest and ledger entry of this clinic's contribution to round `round_id`.
fn contribution_of(conn: &Connection, round_id: &str) -> Result<Option<(String, String)>> {
    Ok(conn
        .query_row(
            "SELECT spec_sha256, release_id FROM round_contribution WHERE round_id = ?1",
            [round_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The contributors of the latest round, other than `round_id`, whose survivor list this
/// clinic signed.
fn previous_contributors(conn: &Connection, round_id: &str) -> Result<Option<BTreeSet<String>>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT survivors FROM round_contribution
             WHERE survivors IS NOT NULL AND round_id != ?1
             ORDER BY confirmed_at DESC, rowid DESC LIMIT 1",
            [round_id],
            |r| r.get(0),
        )
        .optional()?;
    json.map(|j| serde_json::from_str(&j).context("stored contributors are not JSON"))
        .transpose()
}

/// Refunds every charged contribution whose round expired at `now_ms` before its masked
/// vector left. Returns their round ids.
pub fn refund_expired(conn: &Connection, now_ms: u64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT c.round_id, c.release_id FROM round_contribution c
         JOIN release r ON r.release_id = c.release_id
         WHERE r.status = 'charged' AND c.expires_at_ms < ?1",
    )?;
    let expired: Vec<(String, String)> = stmt
        .query_map([now_ms as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut refunded = Vec::new();
    for (round, release) in expired {
        if ledger::mark_aborted(conn, &release)? {
            refunded.push(round);
        }
    }
    Ok(refunded)
}

fn from_payload(payload: &[u8]) -> Result<Vec<u64>> {
    let v: serde_json::Value = serde_json::from_slice(payload)?;
    let values: Vec<i64> = serde_json::from_value(v["values"].clone())?;
    Ok(values.into_iter().map(|x| x as u64).collect())
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(protocol::messages::MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests;
