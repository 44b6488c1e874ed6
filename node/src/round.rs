//! A clinic's side of secure-aggregation rounds (DESIGN.md §9): decide by local policy whether
//! to join, charge the ledger, add the noise share, and step the SecAgg participant
//! ([`protocol::secagg::Participant`]) as the aggregator's requests arrive.
//!
//! Joining a `benchmark` round, in order: the announcement is checked (signed by the pinned
//! coordinator, this network, this node invited, fresh); the policy allows the kind and ρ;
//! noise of scale σ/√t is drawn (OpenDP); the store is analysed and the vector encoded under
//! the round's layout; ρ is charged to the ledger with the noised vector as the payload (one
//! immediate transaction, refused beyond the budget); only then is the key advert sent. The
//! vector leaves only masked. An announcement seen again (the aggregator retrying, this node
//! restarted) reuses the charged vector: never a second charge, never fresh noise.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use protocol::dp::Mechanism;
use protocol::keys::{NodeKey, Signer};
use protocol::messages::{RoundRequest, RoundResponse};
use protocol::round::{RoundKind, SignedRoundSpec, bench_vector};
use protocol::secagg::{Advert, Participant};
use serde_json::json;
use tracing::{info, warn};

use crate::config::Config;
use crate::ledger::{self, Draft, Policy};
use crate::{cli, network, release, stats};

/// Ledger kind of a benchmark round contribution.
pub const LEDGER_KIND: &str = "round:benchmark";

/// Test hook: with this variable set in a debug build, contributions carry no noise (so a test
/// can check the decoded sum exactly). Release builds ignore it.
pub const NO_NOISE_ENV: &str = "MBC_NODE_TEST_NO_NOISE";

/// Test and benchmark hook: with this variable set to a step's request ("keys", "shares",
/// "survivors" or "unmask"), the process aborts when that request arrives (a clinic killed
/// mid-round).
pub const EXIT_AT_ENV: &str = "MBC_NODE_TEST_EXIT_AT";

/// Announcements older than this are refused.
const MAX_ANNOUNCE_AGE_MS: u64 = 60 * 60 * 1000;

/// Whether the no-noise test switch is on (debug builds only).
pub fn noise_off() -> bool {
    cfg!(debug_assertions) && std::env::var_os(NO_NOISE_ENV).is_some()
}

/// The ledger's counterpart string for a round.
pub fn counterpart(spec: &SignedRoundSpec) -> String {
    format!(
        "round {} via {}",
        spec.spec.id_hex(),
        network::peer_id(&spec.spec.aggregator)
    )
}

struct Joined {
    spec: SignedRoundSpec,
    participant: Participant,
    advert: Advert,
    /// Ledger entry to mark sent once the masked vector has left.
    ledger_id: Option<String>,
}

/// This node's rounds in progress, shared by the request handlers.
pub struct Participation {
    dir: PathBuf,
    signer: Arc<Signer>,
    network_id: String,
    coordinator: NodeKey,
    rounds: Mutex<HashMap<[u8; 32], Joined>>,
}

impl Participation {
    /// For the node in `dir`.
    pub fn new(
        dir: PathBuf,
        signer: Arc<Signer>,
        network_id: String,
        coordinator: NodeKey,
    ) -> Self {
        Self {
            dir,
            signer,
            network_id,
            coordinator,
            rounds: Mutex::new(HashMap::new()),
        }
    }

    /// This node's key.
    pub fn key(&self) -> NodeKey {
        self.signer.key()
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
            if std::env::var(EXIT_AT_ENV).is_ok_and(|v| v == name) {
                warn!("{EXIT_AT_ENV}={name}: aborting as if killed");
                std::process::abort();
            }
        }
        let mut rng = rand::rngs::OsRng;
        let with_round =
            |round: &[u8; 32], f: &mut dyn FnMut(&mut Joined) -> Result<RoundResponse>| {
                let mut rounds = self.rounds.lock().expect("round table lock");
                let joined = rounds
                    .get_mut(round)
                    .context("no such round in progress here (restarted, or never joined)")?;
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
                // The masked vector is about to leave: the charged release is sent.
                if let Some(id) = j.ledger_id.take() {
                    let (_, store) = cli::open_node(&self.dir)?;
                    ledger::mark_sent(store.conn(), &id, cli::now_utc())?;
                }
                Ok(RoundResponse::Masked(y))
            }),
            RoundRequest::Survivors { round, survivors } => with_round(&round, &mut |j| {
                Ok(RoundResponse::Confirmed(
                    j.participant.on_survivors(&survivors, &self.signer)?,
                ))
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
        let now = crate::net::now_ms();
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
        let config = Config::load(&self.dir)?;
        let kind = spec.spec.kind.name();
        if !config.privacy.round_kinds.iter().any(|k| k == kind) {
            info!(round = %spec.spec.id_hex(), kind, "declined a round: kind not in [privacy] round_kinds");
            return Ok(RoundResponse::Declined(format!(
                "this clinic does not join {kind} rounds ([privacy] round_kinds)"
            )));
        }
        let session = spec.spec.session()?;
        let (input, ledger_id) = match &spec.spec.kind {
            RoundKind::Bench { plain: true, .. } => {
                bail!("a plain bench round is answered by one plain request")
            }
            RoundKind::Bench { dim, .. } => {
                (bench_vector(&digest, &self.key(), *dim as usize), None)
            }
            RoundKind::Benchmark { .. } => match self.contribution(&config, &spec) {
                Ok(v) => v,
                Err(e) => {
                    info!(round = %spec.spec.id_hex(), "declined a round: {e:#}");
                    return Ok(RoundResponse::Declined(truncate(&format!("{e:#}"))));
                }
            },
        };
        let (participant, advert) =
            Participant::new(session, &self.signer, input, &mut rand::rngs::OsRng)?;
        info!(round = %spec.spec.id_hex(), kind, "joined a round");
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

    /// The noised benchmark vector for a round, charged to the ledger first (or found there).
    fn contribution(
        &self,
        config: &Config,
        spec: &SignedRoundSpec,
    ) -> Result<(Vec<u64>, Option<String>)> {
        let (_, mut store) = cli::open_node(&self.dir)?;
        let counterpart = counterpart(spec);
        let from_ledger = |payload: &[u8]| -> Result<Vec<u64>> {
            let v: serde_json::Value = serde_json::from_slice(payload)?;
            let values: Vec<i64> = serde_json::from_value(v["values"].clone())?;
            Ok(values.into_iter().map(|x| x as u64).collect())
        };
        if let Some(done) = ledger::find(store.conn(), LEDGER_KIND, &counterpart)? {
            info!(round = %spec.spec.id_hex(), "round seen before: reusing its charged contribution");
            let id = (done.entry.status == "charged").then(|| done.entry.release_id.clone());
            return Ok((from_ledger(&done.payload)?, id));
        }
        let s = &spec.spec;
        let layout = s.kind.layout()?.context("not a benchmark round")?;
        let policy = Policy::from_config(&config.privacy)?;
        let sensitivity = layout.layout().sensitivity();
        let mechanism = Mechanism::distributed(sensitivity.patient, s.rho, s.threshold)?;
        let now = cli::now_utc();
        ledger::precheck(store.conn(), &policy, mechanism.rho, now)?;
        // Noise first, before any data-dependent work (timing).
        let noise = if noise_off() {
            warn!("{NO_NOISE_ENV} is set: this test build contributes without noise");
            vec![0; layout.layout().len()]
        } else {
            mechanism.noise(layout.layout().len())?
        };
        let settings = stats::settings(&config.stats, store.registry()?.instruments())?;
        let (values, _) = release::noised_vector(
            &mut store,
            settings,
            &layout,
            &noise,
            mechanism.total_sigma,
            now,
        )?;
        let payload = serde_json::to_vec(&json!({
            "round_id": s.id_hex(),
            "network_id": s.network_id,
            "threshold": s.threshold,
            "note": "this clinic's noised contribution; it left only masked (SecAgg)",
            "values": values,
        }))?;
        let charged = ledger::charge(
            store.conn_mut(),
            &policy,
            Draft {
                id: ledger::new_id()?,
                kind: LEDGER_KIND.into(),
                counterpart,
                mechanism,
                threshold: s.threshold,
                therapist_sensitivity: sensitivity.therapist,
                layout: release::layout_json(&layout).to_string(),
                payload,
            },
            now,
        )?;
        Ok((
            values.into_iter().map(|x| x as u64).collect(),
            Some(charged.entry.release_id),
        ))
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

fn truncate(s: &str) -> String {
    let mut end = s.len().min(protocol::messages::MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Clinic;
    use protocol::round::{RoundKind, RoundSpec};

    /// A node with one small synthetic clinic that is its own network's coordinator.
    fn node(dir: &std::path::Path) -> (Arc<Signer>, String) {
        let data = dir.join("data");
        let summary = crate::synth::generate_to_dir(
            &crate::synth::Params {
                clinics: 1,
                seed: 3,
                patients_per_clinic: Some(120),
                ..Default::default()
            },
            &data,
        )
        .unwrap();
        let node = dir.join("node");
        let clinic = Clinic {
            name: "Test".into(),
            country: None,
            service_type: None,
        };
        cli::init_node(&node, clinic).unwrap();
        let files: Vec<_> = summary.clinics[0]
            .csv_files
            .iter()
            .map(|f| data.join(f))
            .collect();
        cli::import_files(&node, &files, Default::default()).unwrap();
        let config = Config::load(&node).unwrap();
        let seed =
            crate::keystore::read_key_file(&node.join(&config.keys.identity_key_file)).unwrap();
        let signer = crate::keystore::signer(seed);
        let (_, mut store) = cli::open_node(&node).unwrap();
        network::create(store.conn_mut(), &signer, "net", "Test", vec![], (0, "t")).unwrap();
        (Arc::new(signer), node.to_str().unwrap().to_owned())
    }

    fn charges(dir: &str) -> Vec<(String, f64)> {
        let (_, store) = cli::open_node(std::path::Path::new(dir)).unwrap();
        ledger::entries(store.conn())
            .unwrap()
            .into_iter()
            .map(|e| (e.counterpart, e.rho))
            .collect()
    }

    /// An announcement seen again, by the same process or after a restart (fresh memory),
    /// joins with the contribution already charged: one ledger entry, never a second charge.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_announced_again_is_never_charged_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let (signer, dir) = node(tmp.path());
        let spec = RoundSpec {
            network_id: "net".into(),
            round_id: 1,
            kind: RoundKind::benchmark(
                &release::benchmark_layout(
                    &cli::open_node(std::path::Path::new(&dir)).unwrap().1,
                    &Config::load(std::path::Path::new(&dir)).unwrap(),
                )
                .unwrap(),
            ),
            rho: 0.25,
            threshold: 1,
            participants: vec![signer.key()],
            aggregator: signer.key(),
            issued_at_ms: crate::net::now_ms(),
            step_deadline_ms: 10_000,
        }
        .sign(&signer);
        let me = signer.key();
        let participation = |s: &Arc<Signer>| {
            Arc::new(Participation::new(
                dir.clone().into(),
                s.clone(),
                "net".into(),
                me,
            ))
        };
        let first = participation(&signer);
        let announce = || RoundRequest::Announce(spec.clone());
        let a = first.handle(me, announce()).await;
        let b = first.handle(me, announce()).await;
        assert!(matches!(a, RoundResponse::Joined(_)), "{a:?}");
        assert_eq!(a, b, "the same process answers with the same advert");
        assert_eq!(charges(&dir).len(), 1);
        // "Restart": fresh memory, same store.
        let again = participation(&signer).handle(me, announce()).await;
        assert!(matches!(again, RoundResponse::Joined(_)), "{again:?}");
        let c = charges(&dir);
        assert_eq!(c.len(), 1, "charged twice: {c:?}");
        assert!((c[0].1 - 0.25).abs() < 1e-9);
        assert_eq!(c[0].0, counterpart(&spec));
        // A request from anyone but the coordinator is declined.
        let other = Signer::from_seed(&[5; 32]).key();
        assert!(matches!(
            first.handle(other, announce()).await,
            RoundResponse::Declined(_)
        ));
    }
}
