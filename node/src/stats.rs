//! `mbc-node stats`: the local effectiveness engine over the store.
//!
//! [`derive`](fn@derive) loads each episode's first and last valid score per instrument (table
//! `episode_scores`, maintained by import, so no scan of every assessment), runs
//! `protocol::analysis::analyse`, and replaces the derived tables (schema v2) in one
//! transaction when they are stale. [`output`] renders the result for people (table), scripts
//! (JSON) and spreadsheets (CSV).

pub mod output;
mod save;

use anyhow::{Context, Result, bail};
use protocol::analysis::{self, Analysis, Covariates, EpisodeData, Scores, Settings};
use protocol::instrument::{Domain, Instrument};
use protocol::outcome::IaptRules;
use protocol::therapist::{Minimums, Rule};
use rusqlite::Connection;

use crate::config::StatsConfig;
use crate::store::Store;

/// Command-line overrides of `[stats]`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Labelling rule.
    pub rule: Option<String>,
    /// Patients needed to show a statistic.
    pub min_show: Option<u64>,
    /// Patients needed to label it.
    pub min_classify: Option<u64>,
    /// Turn off the NHS TT "other measure" clause.
    pub no_other_measure_clause: bool,
    /// Clinical margin.
    pub clinical_margin: Option<f64>,
}

impl Overrides {
    /// `config` with these overrides applied.
    pub fn apply(&self, config: &StatsConfig) -> StatsConfig {
        let mut sc = config.clone();
        if let Some(rule) = &self.rule {
            sc.rule = rule.clone();
        }
        sc.min_n_show = self.min_show.unwrap_or(sc.min_n_show);
        sc.min_n_classify = self.min_classify.unwrap_or(sc.min_n_classify);
        sc.other_measure_clause &= !self.no_other_measure_clause;
        sc.clinical_margin = self.clinical_margin.unwrap_or(sc.clinical_margin);
        sc
    }
}

/// Settings from `[stats]` in config.toml, after command-line overrides.
pub fn settings(config: &StatsConfig, instruments: &[Instrument]) -> Result<Settings> {
    let rule = match config.rule.as_str() {
        "eb-interval" => Rule::EbInterval,
        "kraus" => Rule::Kraus,
        other => bail!("[stats] rule must be \"eb-interval\" or \"kraus\", not {other:?}"),
    };
    if !(config.clinical_margin.is_finite() && config.clinical_margin >= 0.0) {
        bail!(
            "[stats] clinical_margin must be 0 or more points, not {}",
            config.clinical_margin
        );
    }
    if config.min_n_show > config.min_n_classify {
        bail!(
            "[stats] min_n_show ({}) is above min_n_classify ({})",
            config.min_n_show,
            config.min_n_classify
        );
    }
    let paired = config
        .paired_instruments
        .iter()
        .map(|id| {
            instruments
                .iter()
                .position(|i| i.id == *id)
                .with_context(|| {
                    format!("[stats] paired_instruments names unknown instrument {id:?}")
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Settings {
        iapt: IaptRules {
            other_measure_clause: config.other_measure_clause,
        },
        rule,
        minimums: Minimums {
            show: config.min_n_show,
            classify: config.min_n_classify,
        },
        margin: config.clinical_margin,
        ridge: config.ridge,
        paired,
        reference: None,
    })
}

/// The engine's results with the names needed to show them.
#[derive(Debug)]
pub struct Derived {
    /// Clinic name.
    pub clinic: String,
    /// Instruments, as indexed by the analysis.
    pub instruments: Vec<Instrument>,
    /// Domains, as indexed by the analysis.
    pub domains: Vec<Domain>,
    /// Therapist pseudonyms, by therapist index.
    pub therapists: Vec<String>,
    /// The analysis.
    pub analysis: Analysis,
    /// The settings used.
    pub settings: Settings,
    /// Episodes in the store.
    pub episodes: usize,
    /// Episode rowids, in analysis order.
    pub episode_ids: Vec<i64>,
    /// Patient rowid of each episode, in analysis order (local keys; never released).
    pub patients: Vec<i64>,
    /// The loaded episodes, in analysis order.
    pub data: Vec<EpisodeData>,
    /// Whether England's NHS Talking Therapies figures are shown beside the clinic's rates
    /// ([`national_figures`]).
    pub national: bool,
    /// The clinic's own staff ids of the therapists, by therapist index, where a display list
    /// gave them (`stats --reveal`): for showing only, never stored or released.
    pub revealed: Vec<Option<String>>,
}

/// Whether England's national NHS TT figures apply to a clinic in `country` under
/// `[stats] national_figures`.
pub fn national_figures(config: &StatsConfig, country: Option<&str>) -> Result<bool> {
    match config.national_figures.as_str() {
        "auto" => Ok(country.is_some_and(|c| c.eq_ignore_ascii_case("GB"))),
        "england" => Ok(true),
        "none" => Ok(false),
        other => bail!(
            "[stats] national_figures must be \"auto\", \"england\" or \"none\", not {other:?}"
        ),
    }
}

/// Loads, analyses and stores. `now` is the derivation time.
pub fn derive(store: &mut Store, settings: Settings, now: &str) -> Result<Derived> {
    let registry = store.registry()?;
    let instruments = registry.instruments().to_vec();
    let domains = registry.domains().to_vec();
    let clinic = store.clinic()?.map(|c| c.name).unwrap_or_default();
    let Loaded {
        episode_ids,
        therapist_ids,
        therapists,
        episodes,
        patients,
    } = load(store, &instruments)?;
    let analysis = analysis::analyse(&instruments, &domains, &episodes, &settings);
    let derivation = save::Derivation {
        episode_ids: &episode_ids,
        therapist_ids: &therapist_ids,
        instruments: &instruments,
        domains: &domains,
        analysis: &analysis,
        settings: &settings,
    };
    save::save(store.conn_mut(), &derivation, now)?;
    Ok(Derived {
        national: false,
        revealed: Vec::new(),
        clinic,
        instruments,
        domains,
        therapists,
        analysis,
        settings,
        episodes: episodes.len(),
        episode_ids,
        patients,
        data: episodes,
    })
}

/// Everything [`load`] reads, in episode order.
struct Loaded {
    episode_ids: Vec<i64>,
    therapist_ids: Vec<i64>,
    therapists: Vec<String>,
    episodes: Vec<EpisodeData>,
    patients: Vec<i64>,
}

/// Maps dense SQLite rowids to positions; rowids of a table are small integers in practice.
struct RowIndex(Vec<u32>);

impl RowIndex {
    const NONE: u32 = u32::MAX;

    fn get(&self, rowid: i64) -> Option<usize> {
        let i = *self.0.get(usize::try_from(rowid).ok()?)?;
        (i != Self::NONE).then_some(i as usize)
    }

    fn insert(&mut self, rowid: i64, position: usize) {
        let Ok(r) = usize::try_from(rowid) else {
            return;
        };
        if r >= self.0.len() {
            self.0.resize(r + 1, Self::NONE);
        }
        self.0[r] = position as u32;
    }
}

/// One row of `episode_scores`: episode, instrument index, first, last, count.
type ScoreRow = (i64, usize, f64, f64, u32);
/// Score rows and (episode, attended treatment sessions) rows.
type ScoreSummaries = (Vec<ScoreRow>, Vec<(i64, u32)>);

/// Reads `episode_scores` (first and last valid score per episode × instrument, maintained by
/// import) and `episode_attendance`.
fn load_scores(conn: &Connection, instruments: &[Instrument]) -> Result<ScoreSummaries> {
    let mut scores = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT episode_id, instrument_id, first_score, last_score, n FROM episode_scores",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id = r.get_ref(1)?.as_str()?;
        let Some(instrument) = instruments.iter().position(|i| i.id == id) else {
            continue;
        };
        scores.push((r.get(0)?, instrument, r.get(2)?, r.get(3)?, r.get(4)?));
    }
    let mut attendance = Vec::new();
    let mut stmt = conn.prepare("SELECT episode_id, attended_treatment FROM episode_attendance")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        attendance.push((r.get(0)?, r.get(1)?));
    }
    Ok((scores, attendance))
}

/// Loads every episode with its case mix, attendance and first/last scores. Sequential scans
/// only, each table read once and joined in memory; the score summaries are read on a second
/// connection in parallel when the store is a file.
fn load(store: &Store, instruments: &[Instrument]) -> Result<Loaded> {
    let reader = store.reader()?;
    std::thread::scope(|scope| {
        let scores = reader.map(|c| scope.spawn(move || load_scores(&c, instruments)));
        let Episodes {
            episode_ids,
            therapist_ids,
            therapists,
            mut episodes,
            episode_index,
            patients,
        } = load_episodes(store.conn())?;
        let (scores, attendance) = match scores {
            // Unwrap safety: a panic in the loader is a bug; propagate it.
            Some(handle) => handle.join().unwrap()?,
            None => load_scores(store.conn(), instruments)?,
        };
        for (episode, n) in attendance {
            if let Some(e) = episode_index.get(episode) {
                episodes[e].treatment_sessions = n;
            }
        }
        for (episode, instrument, pre, post, count) in scores {
            if let Some(e) = episode_index.get(episode) {
                episodes[e].scores.push(Scores {
                    instrument,
                    pre,
                    post,
                    count,
                });
            }
        }
        Ok(Loaded {
            episode_ids,
            therapist_ids,
            therapists,
            episodes,
            patients,
        })
    })
}

/// Episodes with their keys, before scores are attached.
struct Episodes {
    episode_ids: Vec<i64>,
    therapist_ids: Vec<i64>,
    therapists: Vec<String>,
    episodes: Vec<EpisodeData>,
    episode_index: RowIndex,
    patients: Vec<i64>,
}

/// Therapists, patients' sex, episodes and case mix.
fn load_episodes(conn: &Connection) -> Result<Episodes> {
    let mut therapist_index = RowIndex(Vec::new());
    let (mut therapist_ids, mut therapists) = (Vec::new(), Vec::new());
    // The therapist of episodes whose export named none gets no index: no track record, no
    // label, no place in the between-therapist variance.
    let mut unrecorded = std::collections::HashSet::new();
    let mut stmt = conn.prepare(
        "SELECT therapist_id, pseudonym, unrecorded FROM therapist ORDER BY therapist_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if r.get::<_, bool>(2)? {
            unrecorded.insert(r.get::<_, i64>(0)?);
            continue;
        }
        therapist_index.insert(r.get(0)?, therapists.len());
        therapist_ids.push(r.get(0)?);
        therapists.push(r.get(1)?);
    }
    // Patient sex as "female?" (NULL when unknown), by patient rowid.
    let mut female: Vec<Option<bool>> = Vec::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT patient_id, {FEMALE} FROM patient ORDER BY patient_id"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id = usize::try_from(r.get::<_, i64>(0)?)?;
        if id >= female.len() {
            female.resize(id + 1, None);
        }
        female[id] = r.get(1)?;
    }
    let mut episode_index = RowIndex(Vec::new());
    let mut episode_ids = Vec::new();
    let mut episodes = Vec::new();
    let mut patients = Vec::new();
    let mut stmt = conn
        .prepare("SELECT episode_id, patient_id, therapist_id FROM episode ORDER BY episode_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let patient = usize::try_from(r.get::<_, i64>(1)?)?;
        let therapist_id: i64 = r.get(2)?;
        let therapist = match unrecorded.contains(&therapist_id) {
            true => None,
            false => Some(
                therapist_index
                    .get(therapist_id)
                    .context("episode refers to a missing therapist")?,
            ),
        };
        episode_index.insert(id, episodes.len());
        episode_ids.push(id);
        patients.push(patient as i64);
        episodes.push(EpisodeData {
            therapist,
            treatment_sessions: 0,
            covariates: Covariates {
                female: female.get(patient).copied().flatten(),
                ..Covariates::default()
            },
            scores: Vec::new(),
        });
    }
    let mut stmt = conn.prepare(&format!("SELECT episode_id, {CASEMIX} FROM casemix"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let Some(e) = episode_index.get(r.get(0)?) else {
            continue;
        };
        casemix(r, &mut episodes[e].covariates)?;
    }
    Ok(Episodes {
        episode_ids,
        therapist_ids,
        therapists,
        episodes,
        episode_index,
        patients,
    })
}

/// The intake covariates of episode `episode` (rowid), read as the engine reads them.
pub fn covariates(conn: &Connection, episode: i64) -> Result<Covariates> {
    let mut c = Covariates {
        female: conn.query_row(
            &format!(
                "SELECT {FEMALE} FROM patient WHERE patient_id =
                 (SELECT patient_id FROM episode WHERE episode_id = ?1)"
            ),
            [episode],
            |r| r.get(0),
        )?,
        ..Covariates::default()
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT episode_id, {CASEMIX} FROM casemix WHERE episode_id = ?1"
    ))?;
    let mut rows = stmt.query([episode])?;
    if let Some(r) = rows.next()? {
        casemix(r, &mut c)?;
    }
    Ok(c)
}

/// Patient sex as "female?" (NULL when unknown), as SQL on `patient`.
const FEMALE: &str = "CASE WHEN sex IS NULL OR sex = 'unknown' THEN NULL ELSE sex = 'female' END";

/// The case-mix columns of `casemix` as the risk model reads them, in [`casemix`]'s order.
const CASEMIX: &str = "age,
    CASE WHEN employment IS NULL THEN NULL ELSE employment = 'unemployed' END,
    prior_treatment, psychotropic_med, long_term_condition, disability, comorbidity_count, wsas";

/// Reads the [`CASEMIX`] columns, from the row's second column on, into `c`.
fn casemix(r: &rusqlite::Row<'_>, c: &mut Covariates) -> rusqlite::Result<()> {
    c.age = r.get(1)?;
    c.unemployed = r.get(2)?;
    c.prior_treatment = r.get(3)?;
    c.psychotropic_med = r.get(4)?;
    c.long_term_condition = r.get(5)?;
    c.disability = r.get(6)?;
    c.comorbidity_count = r.get(7)?;
    c.wsas = r.get(8)?;
    Ok(())
}

#[cfg(test)]
mod tests;
