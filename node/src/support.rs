//! `mbc-node support PATIENT_ID`: one patient's expected trajectory against similar past
//! patients of this clinic, each observed score's signal, and safety signals. Local only: no
//! byte of it leaves the node.
//!
//! The pool, per instrument, is every other episode with at least two scores on it that has
//! ended: an end date or end reason recorded, or no session in the `[import]
//! episode_gap_weeks` before the newest session in the store. Features (DOMAIN.md §4.3): the
//! intake on the instrument (weight 2), the intakes on the other registered instruments, age,
//! sex, unemployment, duration of the problem, prior treatment, medication, comorbidity count
//! and WSAS, each as recorded or missing. The method is `protocol::trajectory`.

mod features;
pub mod html;
pub mod validate;

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use protocol::instrument::Instrument;
use protocol::pseudonym::{IdKind, Pseudonymiser};
use protocol::trajectories::DomainTrajectories;
use protocol::trajectory::{self, Band, Expectation, Feature, Safety, Settings, Signal, Space};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use self::features::Episodes;
use crate::store::Store;

/// The five clinical-support areas of the Trier Treatment Navigator (Lutz et al. 2019,
/// DOMAIN.md §4.2), offered when a patient is not on track.
pub const CONSIDER: [&str; 5] = [
    "crisis management and suicidality: assess risk",
    "motivation and therapy goals: review the goals and the patient's readiness",
    "the therapeutic relationship: ask about the alliance and ruptures",
    "social support and critical life events: ask what has changed outside therapy",
    "emotion and self-regulation: consider skills work",
];

/// Which patient.
#[derive(Debug, Clone)]
pub enum Who {
    /// The patient as the clinic's exports name them (their latest episode).
    Patient(String),
    /// One episode as the exports name it.
    Episode(String),
    /// One stored episode by its pseudonym's first 12 characters (as pages show it).
    Shown(String),
}

/// One observed score and its signal.
#[derive(Debug, Clone, Serialize)]
pub struct Observed {
    /// Session number.
    pub session: u32,
    /// Its date.
    pub date: String,
    /// The total.
    pub score: f64,
    /// The on-track signal (none at intake).
    pub signal: Option<Signal>,
    /// The expected score the signal compared with, and its P75 and P90.
    pub band: Option<Expected>,
    /// Safety signals of its item answers.
    pub safety: Vec<Safety>,
    /// Its item answers, when the source gave them.
    pub items: Vec<Answer>,
}

/// One item's answer at one session.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// Item number (1-based).
    pub item: usize,
    /// Its code (LOINC where one exists).
    pub code: String,
    /// The answer.
    pub value: f64,
    /// Whether this answer is at or above the item's critical value.
    pub critical: bool,
}

/// What the expectation rests on.
#[derive(Debug, Clone, Serialize)]
pub struct Basis {
    /// Past episodes that were candidates.
    pub pool: usize,
    /// Neighbours used.
    pub neighbours: usize,
    /// The distance: "mahalanobis" or "euclidean".
    pub metric: &'static str,
    /// Features used.
    pub features: Vec<String>,
    /// Features left out, with why.
    pub left_out: Vec<String>,
    /// Neighbours' missing values given the pool mean.
    pub imputed: usize,
    /// Whether the patient is unlike most past patients (beyond the 97.5th percentile).
    pub atypical: bool,
    /// Whether the sessions after 2–3 are judged against neighbours also matched on those
    /// sessions' scores (the dynamic variant).
    pub dynamic: bool,
}

/// Which reference an instrument's expectation came from (issue 16): the clinic's own past
/// patients, or a network trajectories release.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// `nearest_neighbours`, `network_model` (the network's expected-trajectory model, a
    /// personal curve from this patient's intake features) or `network_curves` (the network's
    /// percentiles for patients of this intake band).
    pub source: &'static str,
    /// The trajectories release, for a network reference.
    pub release_id: Option<String>,
    /// Why this one, in words.
    pub why: String,
}

impl Reference {
    /// What the reference is called on a page.
    pub fn name(&self) -> &'static str {
        match self.source {
            NETWORK_MODEL => "expected-trajectory model (a personal curve from the intake)",
            NETWORK_CURVES => "percentiles for patients of this intake band",
            _ => "past patients of this clinic",
        }
    }
}

/// The expected score at one session.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Expected {
    /// Session.
    pub session: u32,
    /// Neighbours scored there.
    pub n: usize,
    /// The expected score (smoothed median).
    pub expected: f64,
    /// Lower quartile (better side).
    pub p25: f64,
    /// Upper quartile (worse side).
    pub p75: f64,
    /// The failure boundary.
    pub p90: f64,
}

/// One instrument of the patient.
#[derive(Debug, Clone, Serialize)]
pub struct InstrumentSupport {
    /// Instrument id.
    pub instrument: String,
    /// `lower_is_better` or `higher_is_better`.
    pub direction: &'static str,
    /// The caseness cut-off.
    pub caseness_cutoff: Option<f64>,
    /// Which reference the expectation came from.
    pub reference: Reference,
    /// What a local expectation rests on; `None` for a network reference or none.
    pub basis: Option<Basis>,
    /// Why there is no expectation.
    pub no_basis: Option<String>,
    /// The expected curve from intake, session 1 … the last supported one.
    pub expected: Vec<Expected>,
    /// The curve of past patients who also scored like this patient at sessions 2–3 (the
    /// dynamic variant), which judges the sessions after those; empty before them.
    pub expected_from_now: Vec<Expected>,
    /// The patient's scores.
    pub observed: Vec<Observed>,
    /// The latest signal.
    pub latest: Option<Signal>,
    /// What to consider (when the latest signal is yellow or red, or on a safety signal).
    pub consider: Vec<&'static str>,
}

/// The whole page of one patient.
#[derive(Debug, Clone, Serialize)]
pub struct PatientSupport {
    /// As asked for.
    pub patient: String,
    /// The episode shown (its pseudonym's first 12 characters).
    pub episode: String,
    /// Its rowid in the store (not shown).
    #[serde(skip)]
    pub episode_rowid: i64,
    /// Per instrument with at least one score.
    pub instruments: Vec<InstrumentSupport>,
    /// Whether every instrument's signals passed validation on this clinic's data (`support
    /// validate`), so that red raises alerts.
    pub validated: bool,
    /// Per instrument, whether not-on-track alerts are on and why.
    pub alerts: Vec<validate::Switch>,
    /// The risk that the episode ends in dropout, from the network's dropout model (when this
    /// node keeps one and the patient has an intake score on its domain).
    pub dropout: Option<DropoutRisk>,
}

/// A patient's dropout risk and what it rests on.
#[derive(Debug, Clone, Serialize)]
pub struct DropoutRisk {
    /// The modelled chance of ending treatment by dropping out.
    pub risk: f64,
    /// The network's dropout rate, for comparison.
    pub network_rate: Option<f64>,
    /// The instrument whose intake score the model took.
    pub instrument: String,
    /// The release (dropout model).
    pub release_id: String,
    /// In words: the model, its training and its data.
    pub basis: String,
}

/// The dropout risk of `episode` under the latest network dropout model, from its intake on
/// the model's domain (`instruments`: the page's, with their scores) and its case mix;
/// `None` when `setting` is "none", no model is kept, or the patient has no intake score on
/// its domain in the model's units.
fn dropout_risk(
    store: &Store,
    episode: i64,
    instruments: &[InstrumentSupport],
    setting: &str,
) -> Result<Option<DropoutRisk>> {
    if setting.trim() == "none" {
        return Ok(None);
    }
    let Some(release) = crate::benchmark::dropout::latest(store.conn(), None)? else {
        return Ok(None);
    };
    let Some(model) = release.document.summary.first() else {
        return Ok(None);
    };
    let registry = store.registry()?;
    let found = registry
        .domains()
        .iter()
        .filter(|d| d.id == model.domain)
        .find_map(|d| {
            let inst = registry
                .instruments()
                .iter()
                .find(|i| i.id == d.instrument_id)?;
            let first = instruments
                .iter()
                .find(|s| s.instrument == inst.id)?
                .observed
                .first()?;
            let score = protocol::analysis::domain_score(d, inst, first.score);
            let (lo, hi) = (
                protocol::analysis::domain_score(d, inst, inst.min),
                protocol::analysis::domain_score(d, inst, inst.max),
            );
            (lo.min(hi) == model.lo && lo.max(hi) == model.hi).then(|| (inst.id.clone(), score))
        });
    let Some((instrument, intake)) = found else {
        return Ok(None);
    };
    let features = crate::stats::covariates(store.conn(), episode)?.features(intake);
    let Some(risk) = model.risk(&features) else {
        return Ok(None);
    };
    let d = &release.document;
    let id = release.id();
    Ok(Some(DropoutRisk {
        risk,
        network_rate: model.dropout_rate,
        basis: format!(
            "the network's dropout model (release {}…, {} clinics, {:.0} episodes with a known \
             end; {} iteration(s), {}): {instrument} at intake and the case mix. A guide to \
             who may need more engagement, not a prediction for one person (published models \
             reach an AUC of about 0.66)",
            id.get(..12).unwrap_or(id),
            d.clinics.contributing,
            model.episodes,
            model.iterations.len(),
            if model.converged {
                "converged"
            } else {
                "not converged"
            },
        ),
        instrument,
        release_id: id.to_string(),
    }))
}

/// Where a stored episode is, before anything of it is computed (so that access can be checked
/// first).
#[derive(Debug, Clone)]
pub struct Located {
    /// Its rowid.
    pub episode: i64,
    /// Its pseudonym (first 12 characters, as pages show it).
    pub shown: String,
    /// Its therapist's pseudonym, when it has one.
    pub therapist: Option<String>,
}

/// The stored episode `who` names and its therapist.
pub fn locate(store: &Store, pseudo: &Pseudonymiser, who: &Who) -> Result<Located> {
    let conn = store.conn();
    let (episode, pseudonym) = episode_of(conn, pseudo, who)?;
    let therapist: Option<String> = conn.query_row(
        "SELECT t.pseudonym FROM episode e LEFT JOIN therapist t USING (therapist_id)
         WHERE e.episode_id = ?1",
        [episode],
        |r| r.get(0),
    )?;
    Ok(Located {
        episode,
        shown: pseudonym.chars().take(12).collect(),
        therapist,
    })
}

/// The episode asked for: (rowid, pseudonym).
fn episode_of(conn: &Connection, pseudo: &Pseudonymiser, who: &Who) -> Result<(i64, String)> {
    let found: Option<(i64, String)> = match who {
        Who::Patient(raw) => conn
            .query_row(
                "SELECT e.episode_id, e.pseudonym FROM episode e JOIN patient p USING (patient_id)
                 WHERE p.pseudonym = ?1 ORDER BY e.episode_id DESC LIMIT 1",
                [pseudo.pseudonym(IdKind::Patient, raw.trim())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        Who::Episode(raw) => conn
            .query_row(
                "SELECT episode_id, pseudonym FROM episode WHERE pseudonym = ?1",
                [pseudo.pseudonym(IdKind::Episode, raw.trim())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        Who::Shown(prefix) => {
            // Pseudonyms are lowercase hex: the prefix's range ends before prefix + "g".
            let prefix = prefix.trim().to_ascii_lowercase();
            let mut stmt = conn.prepare(
                "SELECT episode_id, pseudonym FROM episode
                 WHERE pseudonym >= ?1 AND pseudonym < ?1 || 'g' LIMIT 2",
            )?;
            let rows: Vec<(i64, String)> = stmt
                .query_map([&prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // Only a full 12-character prefix naming one episode.
            (prefix.len() == 12 && rows.len() == 1).then(|| rows[0].clone())
        }
    };
    found.with_context(|| match who {
        Who::Patient(raw) => format!(
            "no patient {raw} in this store (the id as the clinic's exports name them; `erase` \
             removes erased patients for good)"
        ),
        Who::Episode(raw) | Who::Shown(raw) => format!("no episode {raw} in this store"),
    })
}

/// Whether episode `e` has ended, as SQL (parameter ?1: the gap in days): an end recorded,
/// else its last session more than the gap before the newest session in the store (CASE
/// evaluates the look-ups only when no end is recorded: the last session by the (episode, seq)
/// index, the newest date once by `session_by_date`).
pub const ENDED: &str = "CASE WHEN e.end_date IS NOT NULL OR e.end_reason IS NOT NULL THEN 1
     ELSE (SELECT date FROM session s WHERE s.episode_id = e.episode_id ORDER BY seq DESC LIMIT 1)
          < date((SELECT max(date) FROM session), printf('-%d days', ?1)) END";

/// The scores on `instrument` of `episodes`, each as [(session, score)] in session order.
fn scores_of(
    conn: &Connection,
    instrument: &str,
    episodes: &[i64],
) -> Result<Vec<Vec<(u32, f64)>>> {
    // Through the session's (episode, seq) index and the assessment's (session, instrument)
    // one: assessment has no index of its own by episode.
    let mut stmt = conn.prepare_cached(
        "SELECT s.seq, a.score FROM session s
         JOIN assessment a ON a.session_id = s.session_id AND a.instrument_id = ?2
         WHERE s.episode_id = ?1 ORDER BY s.seq",
    )?;
    episodes
        .iter()
        .map(|e| {
            stmt.query_map(rusqlite::params![e, instrument], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(Into::into)
        })
        .collect()
}

/// Every score of every episode on `instrument`, by episode rowid, in session order: one
/// pass over the assessments, for callers that assess many episodes.
fn all_scores(conn: &Connection, instrument: &str) -> Result<ScoresByEpisode> {
    let mut stmt = conn.prepare(
        "SELECT episode_id, session_seq, score FROM assessment WHERE instrument_id = ?1",
    )?;
    let mut out: HashMap<i64, Vec<(u32, f64)>> = HashMap::new();
    let mut rows = stmt.query([instrument])?;
    while let Some(r) = rows.next()? {
        out.entry(r.get(0)?)
            .or_default()
            .push((r.get(1)?, r.get(2)?));
    }
    for v in out.values_mut() {
        v.sort_by_key(|(t, _)| *t);
    }
    Ok(out)
}

fn expected(b: trajectory::Band) -> Expected {
    Expected {
        session: b.session,
        n: b.n,
        expected: b.expected,
        p25: b.p25,
        p75: b.p75,
        p90: b.p90,
    }
}

/// The band of `curve` that applies at session `t`: its own, or the plateau after the last.
pub fn band_at(curve: &[Expected], t: u32) -> Option<&Expected> {
    curve
        .iter()
        .find(|e| e.session == t)
        .or_else(|| curve.last().filter(|e| t > e.session))
}

/// Keeps every episode's features current in the store (after an import), so that the next
/// patient's page need not read them from the tables (`support/features.rs`).
pub fn keep_features(store: &Store) -> Result<()> {
    features::refresh(store.conn())
}

/// Which past episodes make the pool (beyond having ended with two scores on the instrument).
#[derive(Debug, Clone)]
pub enum PoolRule {
    /// Every ended episode but this one (the patient's own, when it has ended).
    AllBut(Option<i64>),
    /// Ended episodes whose last day is before this date (a hold-out's training part).
    EndedBefore(String),
}

/// One instrument's pool: its features and members, and the spaces built on it so far
/// (one per set of features a patient has, and per early sessions of the dynamic variant).
struct Pool {
    names: Vec<Feature>,
    /// Episode indexes of the members.
    members: Vec<usize>,
    spaces: RefCell<HashMap<Vec<bool>, Rc<Searchable>>>,
    /// (present, early sessions) → (member positions of the candidates, their space).
    dynamic: RefCell<SpaceCache>,
}

/// A space, or why a pool gives none.
type Searchable = Result<Space, trajectory::Error>;

/// Every episode's scores on one instrument, by episode rowid.
type ScoresByEpisode = HashMap<i64, Vec<(u32, f64)>>;

type SpaceCache = HashMap<(Vec<bool>, Vec<u32>), Rc<(Vec<usize>, Searchable)>>;

/// The network reference `support` may take (`[support] network_reference`): a kept
/// trajectories release, its domain per registered instrument (when the domain is scored in
/// the instrument's own units), and which method each instrument's latest validation card
/// preferred.
pub struct Network {
    /// The release.
    pub release_id: String,
    /// Per instrument (registry order), its domain's trajectories.
    domains: Vec<Option<DomainTrajectories>>,
    /// Per instrument, the method its latest validation card preferred.
    preferred: Vec<Option<(String, String)>>,
}

/// Validation-card names of the three references.
pub const LOCAL: &str = "nearest_neighbours";
/// The network's expected-trajectory model.
pub const NETWORK_MODEL: &str = "network_model";
/// The network's stratum curves.
pub const NETWORK_CURVES: &str = "network_curves";

impl Network {
    /// The release `setting` names ("latest", a release id prefix, or "none" for no network
    /// reference), read for the registered `instruments`; `None` when there is none.
    pub fn load(store: &Store, setting: &str) -> Result<Option<Self>> {
        let id = match setting.trim() {
            "none" | "" => return Ok(None),
            "latest" => None,
            id => Some(id),
        };
        let Some(release) = crate::benchmark::trajectories::latest(store.conn(), id)? else {
            if let Some(id) = id {
                bail!(
                    "[support] network_reference = {id:?} names no trajectories release this \
                     node keeps (see `mbc-node benchmark list`)"
                );
            }
            return Ok(None);
        };
        let registry = store.registry()?;
        let domains = registry
            .instruments()
            .iter()
            .map(|inst| {
                registry
                    .domains()
                    .iter()
                    .filter(|d| d.instrument_id == inst.id)
                    .find_map(|d| {
                        release.document.summary.iter().find(|x| {
                            // Scored in the instrument's own units.
                            x.domain == d.id
                                && x.lo == inst.min.min(inst.max)
                                && x.hi == inst.max.max(inst.min)
                        })
                    })
                    .cloned()
            })
            .collect();
        let mut stmt = store.conn().prepare(
            "SELECT validated_at, card FROM support_validation WHERE instrument_id = ?1
             ORDER BY validation_id DESC LIMIT 1",
        )?;
        let preferred = registry
            .instruments()
            .iter()
            .map(|inst| {
                let card: Option<(String, String)> = stmt
                    .query_row([&inst.id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Ok(card.and_then(|(at, card)| {
                    let v: serde_json::Value = serde_json::from_str(&card).ok()?;
                    Some((v["preferred"].as_str()?.to_string(), at))
                }))
            })
            .collect::<Result<_>>()?;
        Ok(Some(Self {
            release_id: release.id().to_string(),
            domains,
            preferred,
        }))
    }

    /// Instrument `k`'s domain in the release.
    pub fn domain(&self, k: usize) -> Option<&DomainTrajectories> {
        self.domains.get(k)?.as_ref()
    }

    /// The network's expected-trajectory model's bands for a patient of intake score `intake`
    /// on instrument `k` (at least two sessions, else `None`).
    pub fn model_bands(&self, k: usize, intake: f64) -> Option<Vec<Band>> {
        let bands = self.domain(k)?.model.as_ref()?.bands(intake);
        (bands.len() >= 2).then_some(bands)
    }

    /// The network's curve of the intake band of `intake` on instrument `k`.
    pub fn curve_bands(&self, k: usize, intake: f64) -> Option<Vec<Band>> {
        let d = self.domain(k)?;
        let bands = d.curve_for(intake)?.bands(d.direction);
        (bands.len() >= 2).then_some(bands)
    }
}

/// An expectation from a network reference's bands (no neighbours, no features: the basis is
/// the release).
pub(crate) fn network_expectation(bands: Vec<Band>) -> Expectation {
    Expectation {
        candidates: bands.iter().map(|b| b.n).max().unwrap_or(0),
        bands,
        fit: None,
        nearest: Vec::new(),
        neighbours: 0,
        used: Vec::new(),
        left_out: Vec::new(),
        imputed: 0,
        metric: trajectory::Metric::Euclidean,
        atypical: false,
    }
}

/// Assesses episodes against this clinic's past ones: the pools are read once, each space is
/// built once, and each episode is then one search per instrument (and variant).
pub struct Assessor<'c> {
    conn: &'c Connection,
    instruments: Vec<Instrument>,
    episodes: Episodes,
    settings: Settings,
    rule: PoolRule,
    /// Per instrument, built when first needed.
    pools: Vec<OnceCell<Pool>>,
    /// Per instrument, every episode's scores (when many episodes are assessed); else the
    /// neighbours' scores are read when needed.
    loaded: Option<Vec<ScoresByEpisode>>,
    /// The network reference, when one may be used.
    network: Option<Network>,
}

impl<'c> Assessor<'c> {
    /// Reads the pools of `rule` for every registered instrument; `preload` reads every score
    /// too (for many episodes; one patient reads only their neighbours').
    pub fn new(
        store: &'c Store,
        gap_weeks: u32,
        settings: &Settings,
        rule: &PoolRule,
        preload: bool,
    ) -> Result<Self> {
        let conn = store.conn();
        let instruments = store.registry()?.instruments().to_vec();
        let episodes = features::load(conn, &instruments, gap_weeks)?;
        let pools = (0..instruments.len()).map(|_| OnceCell::new()).collect();
        let loaded = if preload {
            Some(
                instruments
                    .iter()
                    .map(|i| all_scores(conn, &i.id))
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        Ok(Self {
            conn,
            instruments,
            episodes,
            settings: settings.clone(),
            rule: rule.clone(),
            pools,
            loaded,
            network: None,
        })
    }

    /// Lets the assessor take `network` as the reference where the clinic's own pool is too
    /// small, or where the latest validation card preferred it.
    pub fn with_network(mut self, network: Option<Network>) -> Self {
        self.network = network;
        self
    }

    /// The reference of instrument `k` for a patient of intake score `intake`: the local
    /// expectation `local`, or the network's, and why.
    fn reference(
        &self,
        k: usize,
        local: Result<Expectation, trajectory::Error>,
        intake: f64,
    ) -> (Result<Expectation, trajectory::Error>, Reference) {
        let pool = self.pool_size(k);
        let local_reference = |why: String| Reference {
            source: LOCAL,
            release_id: None,
            why,
        };
        let Some(net) = self.network.as_ref().filter(|n| n.domain(k).is_some()) else {
            let why = match &local {
                Ok(_) => format!("{pool} past patients of this clinic"),
                Err(_) => "no network trajectories release to fall back on".to_string(),
            };
            return (local, local_reference(why));
        };
        let model = || net.model_bands(k, intake);
        let curves = || net.curve_bands(k, intake);
        let network = |source: &'static str, bands: Vec<Band>, why: String| {
            (
                Ok(network_expectation(bands)),
                Reference {
                    source,
                    release_id: Some(net.release_id.clone()),
                    why,
                },
            )
        };
        let preferred = net.preferred.get(k).cloned().flatten();
        if let Some((method, at)) = &preferred {
            let why = format!("it validated best on this clinic's own hold-out (card of {at})");
            match method.as_str() {
                NETWORK_MODEL => {
                    if let Some(b) = model() {
                        return network(NETWORK_MODEL, b, why);
                    }
                }
                NETWORK_CURVES => {
                    if let Some(b) = curves() {
                        return network(NETWORK_CURVES, b, why);
                    }
                }
                _ if local.is_ok() => {
                    return (
                        local,
                        local_reference(format!("{pool} past patients of this clinic; {why}")),
                    );
                }
                _ => {}
            }
        }
        // Below 2·k_min past patients the k ≥ k_min "neighbours" are most of the pool, not a
        // personal match: the network's personal expectation is taken first.
        let least = 2 * self.settings.k_min;
        if local.is_ok() && pool >= least {
            return (
                local,
                local_reference(format!("{pool} past patients of this clinic")),
            );
        }
        let small = format!(
            "this clinic's own pool is too small for a personal match ({pool} past patients \
             with two scores, fewer than {least})"
        );
        if let Some(b) = model() {
            return network(NETWORK_MODEL, b, small);
        }
        if let Some(b) = curves() {
            return network(NETWORK_CURVES, b, small);
        }
        let fallback = if local.is_ok() {
            "; its whole pool is the reference"
        } else {
            ""
        };
        (
            local,
            local_reference(format!(
                "{small}, and the network release has no expectation for this patient{fallback}"
            )),
        )
    }

    /// Instrument `k`'s pool, read from the episodes when first asked for.
    fn pool(&self, k: usize) -> &Pool {
        self.pools[k].get_or_init(|| {
            let e = &self.episodes;
            let members: Vec<usize> = (0..e.ids.len())
                .filter(|i| e.poolable(k, *i))
                .filter(|i| match &self.rule {
                    PoolRule::AllBut(me) => Some(e.ids[*i]) != *me,
                    PoolRule::EndedBefore(cut) => {
                        e.last_day[*i].as_deref().is_some_and(|d| d < cut.as_str())
                    }
                })
                .collect();
            Pool {
                names: Episodes::names(&self.instruments, k),
                members,
                spaces: RefCell::default(),
                dynamic: RefCell::default(),
            }
        })
    }

    /// The registered instruments, in pool order.
    pub fn instruments(&self) -> &[Instrument] {
        &self.instruments
    }

    /// Pool members on instrument `k`.
    pub fn pool_size(&self, k: usize) -> usize {
        self.pool(k).members.len()
    }

    /// Scores on instrument `k` of the episodes `ids`, given to `then` (borrowed when every
    /// score is loaded, else read for them alone).
    fn with_scores<R>(
        &self,
        k: usize,
        ids: &[i64],
        then: impl FnOnce(&[&[(u32, f64)]]) -> R,
    ) -> Result<R> {
        Ok(match &self.loaded {
            Some(all) => {
                let slices: Vec<&[(u32, f64)]> = ids
                    .iter()
                    .map(|id| all[k].get(id).map_or(&[][..], Vec::as_slice))
                    .collect();
                then(&slices)
            }
            None => {
                let read = scores_of(self.conn, &self.instruments[k].id, ids)?;
                let slices: Vec<&[(u32, f64)]> = read.iter().map(Vec::as_slice).collect();
                then(&slices)
            }
        })
    }

    /// The neighbourhood's expected curve: its neighbours' scores fetched for them alone.
    fn curve(
        &self,
        k: usize,
        mut n: trajectory::Neighbourhood,
        positions: Option<&[usize]>,
    ) -> Result<Expectation> {
        let pool = self.pool(k);
        for (i, _) in &mut n.nearest {
            *i = positions.map_or(*i, |p| p[*i]);
        }
        let ids: Vec<i64> = n
            .nearest
            .iter()
            .map(|(i, _)| self.episodes.ids[pool.members[*i]])
            .collect();
        let direction = self.instruments[k].direction;
        self.with_scores(k, &ids, |scores| {
            trajectory::bands(n, scores, direction, &self.settings)
        })
    }

    /// The expectation from intake of a patient with features `query` on instrument `k`.
    fn expect_from_intake(
        &self,
        k: usize,
        query: &[Option<f64>],
    ) -> Result<Result<Expectation, trajectory::Error>> {
        let pool = self.pool(k);
        let present: Vec<bool> = query.iter().map(Option::is_some).collect();
        let space = pool
            .spaces
            .borrow_mut()
            .entry(present.clone())
            .or_insert_with(|| {
                Rc::new(Space::new(
                    &pool.names,
                    &self.episodes.table(k, &pool.members),
                    &present,
                    &self.settings,
                ))
            })
            .clone();
        match space.as_ref() {
            Ok(space) => Ok(Ok(self.curve(
                k,
                space.search(query, &self.settings),
                None,
            )?)),
            Err(e) => Ok(Err(e.clone())),
        }
    }

    /// The dynamic variant: also matched on the patient's scores at sessions 2–3 (`early`).
    fn expect_from_early(
        &self,
        k: usize,
        query: &[Option<f64>],
        early: &[(u32, f64)],
    ) -> Result<Option<Expectation>> {
        let pool = self.pool(k);
        let early: Vec<(u32, f64)> = early
            .iter()
            .copied()
            .filter(|(t, _)| (2..=3).contains(t))
            .collect();
        // The candidates and their rows depend only on which early sessions the patient has
        // (and which features): built once per such key, as `with_early` does.
        let mut query: Vec<Option<f64>> = query.to_vec();
        query.extend(early.iter().map(|(_, y)| Some(*y)));
        let present: Vec<bool> = query.iter().map(Option::is_some).collect();
        let key = (present.clone(), early.iter().map(|(t, _)| *t).collect());
        let cached = pool
            .dynamic
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let by = &self.episodes.scores[k].early;
                let d = trajectory::with_early(
                    &pool.names,
                    pool.members.len(),
                    |i, t| by[pool.members[i]][usize::from(t == 3)],
                    &query[..pool.names.len()],
                    &early,
                );
                let space = Space::new(
                    &d.features,
                    &d.table(&self.episodes.table(k, &pool.members)),
                    &present,
                    &self.settings,
                );
                Rc::new((d.ids, space))
            })
            .clone();
        let (positions, space) = cached.as_ref();
        match space {
            Ok(space) => Ok(Some(self.curve(
                k,
                space.search(&query, &self.settings),
                Some(positions),
            )?)),
            Err(_) => Ok(None),
        }
    }

    /// The ended episodes with two or more scores on instrument `k` (whatever the pool's
    /// rule), as (rowid, last day); last days are read only under [`PoolRule::EndedBefore`].
    pub fn eligible(&self, k: usize) -> Vec<(i64, &str)> {
        let e = &self.episodes;
        (0..e.ids.len())
            .filter(|i| e.poolable(k, *i))
            .filter_map(|i| Some((e.ids[i], e.last_day[i].as_deref()?)))
            .collect()
    }

    /// The pool members' scores on instrument `k`, in session order.
    pub fn pool_scores(&self, k: usize) -> Result<Vec<Vec<(u32, f64)>>> {
        let ids: Vec<i64> = self
            .pool(k)
            .members
            .iter()
            .map(|i| self.episodes.ids[*i])
            .collect();
        self.with_scores(k, &ids, |scores| {
            scores.iter().map(|s| s.to_vec()).collect()
        })
    }

    /// The share of episode `episode`'s dynamic-variant neighbours on instrument `k` (matched
    /// on the intake features and the scores `early` at sessions 2–3), weighted 1/(1 + d), who
    /// ended without reliable improvement: the neighbours' early warning, whose AUC the
    /// validation card reports. `None` without such neighbours.
    pub fn early_risk(&self, episode: i64, k: usize, early: &[(u32, f64)]) -> Result<Option<f64>> {
        let Some(i) = self.episodes.index.get(&episode).copied() else {
            return Ok(None);
        };
        let features = self.episodes.row(k, i);
        let Some(e) = self.expect_from_early(k, &features, early)? else {
            return Ok(None);
        };
        let inst = &self.instruments[k];
        let Some(rc) = inst.reliable_change() else {
            return Ok(None);
        };
        let pool = self.pool(k);
        let ids: Vec<i64> = e
            .nearest
            .iter()
            .map(|(j, _)| self.episodes.ids[pool.members[*j]])
            .collect();
        let w = |v: f64| trajectory::worse_up(inst.direction, v);
        let (at_risk, total) = self.with_scores(k, &ids, |scores| {
            let (mut at_risk, mut total) = (0.0, 0.0);
            for ((_, d), s) in e.nearest.iter().zip(scores) {
                let (Some((_, first)), Some((_, last))) = (s.first(), s.last()) else {
                    continue;
                };
                let weight = 1.0 / (1.0 + d);
                total += weight;
                if w(*first) - w(*last) < rc {
                    at_risk += weight;
                }
            }
            (at_risk, total)
        })?;
        Ok((total > 0.0).then(|| at_risk / total))
    }

    /// Episode `episode`'s support per instrument it has scores on.
    pub fn assess(&self, episode: i64) -> Result<Vec<InstrumentSupport>> {
        let mut out = Vec::new();
        for k in 0..self.instruments.len() {
            out.extend(self.assess_on(episode, k)?);
        }
        Ok(out)
    }

    /// Episode `episode`'s support on instrument `k`; `None` without scores on it.
    pub fn assess_on(&self, episode: i64, k: usize) -> Result<Option<InstrumentSupport>> {
        let conn = self.conn;
        let inst = &self.instruments[k];
        let me = self.episodes.index.get(&episode).copied();
        let mut stmt = conn.prepare_cached(
            "SELECT a.assessment_id, s.seq, s.date, a.score FROM assessment a
             JOIN session s USING (session_id)
             WHERE s.episode_id = ?1 AND a.instrument_id = ?2 ORDER BY s.seq",
        )?;
        let mut items = conn.prepare_cached(
            "SELECT item_no, value FROM item_response WHERE assessment_id = ?1 ORDER BY item_no",
        )?;
        if me.is_some_and(|i| self.episodes.scores[k].first[i].is_none()) {
            return Ok(None);
        }
        let rows: Vec<(i64, u32, String, f64)> = stmt
            .query_map(rusqlite::params![episode, inst.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut observed: Vec<Observed> = Vec::new();
        for (assessment, session, date, score) in &rows {
            let answers: Vec<(usize, f64)> = items
                .query_map([assessment], |r| {
                    Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let safety = trajectory::safety(inst, &answers);
            observed.push(Observed {
                session: *session,
                date: date.clone(),
                score: *score,
                signal: None,
                band: None,
                items: answers
                    .iter()
                    .map(|&(item, value)| Answer {
                        item,
                        code: item
                            .checked_sub(1)
                            .and_then(|i| inst.items.get(i))
                            .map(|d| d.code.clone())
                            .unwrap_or_default(),
                        value,
                        // Critical exactly when the safety rule flags it.
                        critical: safety.iter().any(|s| s.item == item),
                    })
                    .collect(),
                safety,
            });
        }
        let names = &self.pool(k).names;
        let features = me.map_or_else(|| vec![None; names.len()], |i| self.episodes.row(k, i));
        let early: Vec<(u32, f64)> = observed
            .iter()
            .filter(|o| (2..=3).contains(&o.session))
            .map(|o| (o.session, o.score))
            .collect();
        // From intake; and once sessions 2–3 are scored, from them too (the dynamic
        // variant), which judges only the sessions after them (it matched on them).
        let local = self.expect_from_intake(k, &features)?;
        let (expectation, reference) = self.reference(k, local, observed[0].score);
        let last_early = early.iter().map(|(t, _)| *t).max();
        let dynamic = match last_early {
            Some(_) if expectation.is_ok() && reference.release_id.is_none() => {
                self.expect_from_early(k, &features, &early)?
            }
            _ => None,
        };
        Ok(Some(instrument_support(
            inst,
            expectation,
            reference,
            dynamic,
            last_early,
            observed,
        )))
    }
}

/// One instrument's page from its expectations and observed scores.
fn instrument_support(
    inst: &Instrument,
    expectation: Result<Expectation, trajectory::Error>,
    reference: Reference,
    dynamic: Option<Expectation>,
    last_early: Option<u32>,
    mut observed: Vec<Observed>,
) -> InstrumentSupport {
    let no_basis = expectation.as_ref().err().map(|e| {
        format!("{e}: no expected trajectory, so no on-track signal (safety signals still show)")
    });
    let expectation: Option<Expectation> = expectation.ok();
    let intake = observed[0].score;
    for o in observed.iter_mut().skip(1) {
        let judge = match (&dynamic, last_early) {
            (Some(d), Some(t)) if o.session > t => Some(d),
            _ => expectation.as_ref(),
        };
        o.signal = Some(trajectory::signal(inst, judge, o.session, intake, o.score));
        o.band = judge.and_then(|e| e.at(o.session)).map(expected);
    }
    let latest = observed.last().and_then(|o| o.signal);
    let unsafe_now = observed.iter().any(|o| !o.safety.is_empty());
    let consider = if unsafe_now {
        CONSIDER.to_vec()
    } else if matches!(latest, Some(Signal::Red | Signal::Yellow)) {
        CONSIDER[1..].to_vec()
    } else {
        Vec::new()
    };
    InstrumentSupport {
        instrument: inst.id.clone(),
        direction: inst.direction.as_str(),
        caseness_cutoff: inst.caseness_cutoff,
        expected: expectation
            .as_ref()
            .map(|e| e.bands.iter().copied().map(expected).collect())
            .unwrap_or_default(),
        expected_from_now: dynamic
            .as_ref()
            .map(|e| e.bands.iter().copied().map(expected).collect())
            .unwrap_or_default(),
        no_basis,
        basis: expectation
            .filter(|_| reference.release_id.is_none())
            .map(|e| Basis {
                pool: e.candidates,
                neighbours: e.neighbours,
                metric: match e.metric {
                    trajectory::Metric::Mahalanobis => "mahalanobis",
                    trajectory::Metric::Euclidean => "euclidean",
                },
                features: e.used,
                left_out: e
                    .left_out
                    .iter()
                    .map(|(n, why)| format!("{n} ({why})"))
                    .collect(),
                imputed: e.imputed,
                atypical: e.atypical,
                dynamic: dynamic.is_some(),
            }),
        observed,
        latest,
        consider,
        reference,
    }
}

/// The support page of the patient `who`.
pub fn patient(
    store: &Store,
    pseudo: &Pseudonymiser,
    who: &Who,
    gap_weeks: u32,
    settings: &Settings,
    network_reference: &str,
) -> Result<PatientSupport> {
    let (episode, pseudonym) = episode_of(store.conn(), pseudo, who)?;
    let assessor = Assessor::new(
        store,
        gap_weeks,
        settings,
        &PoolRule::AllBut(Some(episode)),
        false,
    )?
    .with_network(Network::load(store, network_reference)?);
    let instruments = assessor.assess(episode)?;
    if instruments.is_empty() {
        bail!("the episode has no scores yet: nothing to compare");
    }
    Ok(PatientSupport {
        patient: match who {
            Who::Patient(p) | Who::Episode(p) | Who::Shown(p) => p.clone(),
        },
        episode: pseudonym.chars().take(12).collect(),
        episode_rowid: episode,
        dropout: dropout_risk(store, episode, &instruments, network_reference)?,
        instruments,
        validated: false,
        alerts: Vec::new(),
    })
}
