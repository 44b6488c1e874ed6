//! `mbc-node stats`: the local effectiveness engine over the store.
//!
//! [`derive`] loads episodes with one sequential scan of `assessment` (first and last valid
//! score per episode and instrument), runs `protocol::analysis::analyse`, and replaces the
//! derived tables (schema v2) in one transaction. [`output`] renders the result for people
//! (table), scripts (JSON) and spreadsheets (CSV).

pub mod output;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use protocol::analysis::{self, Analysis, Covariates, EpisodeData, FEATURES, Scores, Settings};
use protocol::instrument::{Domain, Instrument};
use protocol::outcome::IaptRules;
use protocol::therapist::{Minimums, Rule};
use rusqlite::{Connection, params};

use crate::config::StatsConfig;
use crate::store::Store;

/// Settings from `[stats]` in config.toml, after command-line overrides.
pub fn settings(config: &StatsConfig, instruments: &[Instrument]) -> Result<Settings> {
    let rule = match config.rule.as_str() {
        "eb-interval" => Rule::EbInterval,
        "kraus" => Rule::Kraus,
        other => bail!("[stats] rule must be \"eb-interval\" or \"kraus\", not {other:?}"),
    };
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
        ridge: config.ridge,
        paired,
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
}

/// Loads, analyses and stores. `now` is the derivation time.
pub fn derive(store: &mut Store, settings: Settings, now: &str) -> Result<Derived> {
    let registry = store.registry()?;
    let instruments = registry.instruments().to_vec();
    let domains = registry.domains().to_vec();
    let clinic = store.clinic()?.map(|c| c.name).unwrap_or_default();
    let (episode_ids, therapist_ids, therapists, episodes) = load(store.conn(), &instruments)?;
    let analysis = analysis::analyse(&instruments, &domains, &episodes, &settings);
    save(
        store.conn_mut(),
        &episode_ids,
        &therapist_ids,
        &instruments,
        &domains,
        &analysis,
        &settings,
        now,
    )?;
    Ok(Derived {
        clinic,
        instruments,
        domains,
        therapists,
        analysis,
        settings,
        episodes: episodes.len(),
    })
}

type Loaded = (Vec<i64>, Vec<i64>, Vec<String>, Vec<EpisodeData>);

fn load(conn: &Connection, instruments: &[Instrument]) -> Result<Loaded> {
    let mut therapist_index: HashMap<i64, usize> = HashMap::new();
    let (mut therapist_ids, mut therapists) = (Vec::new(), Vec::new());
    let mut stmt =
        conn.prepare("SELECT therapist_id, pseudonym FROM therapist ORDER BY therapist_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        therapist_index.insert(r.get(0)?, therapists.len());
        therapist_ids.push(r.get(0)?);
        therapists.push(r.get(1)?);
    }
    let mut episode_index: HashMap<i64, usize> = HashMap::new();
    let mut episode_ids = Vec::new();
    let mut episodes = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT e.episode_id, e.therapist_id, p.sex, c.age, c.employment, c.prior_treatment,
                c.psychotropic_med, c.long_term_condition, c.disability, c.comorbidity_count, c.wsas
         FROM episode e JOIN patient p USING (patient_id) LEFT JOIN casemix c USING (episode_id)
         ORDER BY e.episode_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let sex: Option<String> = r.get(2)?;
        let employment: Option<String> = r.get(4)?;
        let covariates = Covariates {
            age: r.get(3)?,
            female: sex
                .as_deref()
                .filter(|s| *s != "unknown")
                .map(|s| s == "female"),
            prior_treatment: r.get(5)?,
            psychotropic_med: r.get(6)?,
            long_term_condition: r.get(7)?,
            disability: r.get(8)?,
            comorbidity_count: r.get(9)?,
            unemployed: employment.map(|e| e == "unemployed"),
            wsas: r.get(10)?,
        };
        episode_index.insert(id, episodes.len());
        episode_ids.push(id);
        episodes.push(EpisodeData {
            therapist: therapist_index[&r.get::<_, i64>(1)?],
            treatment_sessions: 0,
            covariates,
            scores: Vec::new(),
        });
    }
    let mut stmt = conn.prepare(
        "SELECT episode_id, count(*) FROM session WHERE attended = 1 AND kind = 'treatment'
         GROUP BY episode_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(i) = episode_index.get(&r.get::<_, i64>(0)?) {
            episodes[*i].treatment_sessions = r.get(1)?;
        }
    }
    // One sequential scan: first and last valid score per episode and instrument.
    let mut last_seq: Vec<Vec<(i64, i64)>> = vec![Vec::new(); episodes.len()];
    let mut stmt =
        conn.prepare("SELECT episode_id, instrument_id, session_seq, score FROM assessment")?;
    let mut rows = stmt.query([])?;
    let mut cached: (String, usize) = (String::new(), usize::MAX);
    while let Some(r) = rows.next()? {
        let episode: i64 = r.get(0)?;
        let inst_ref = r.get_ref(1)?.as_str()?;
        if inst_ref != cached.0 {
            let Some(k) = instruments.iter().position(|i| i.id == inst_ref) else {
                continue;
            };
            cached = (inst_ref.to_string(), k);
        }
        let k = cached.1;
        let (seq, score): (i64, f64) = (r.get(2)?, r.get(3)?);
        let Some(&e) = episode_index.get(&episode) else {
            continue;
        };
        let ep = &mut episodes[e];
        match ep.scores.iter().position(|s| s.instrument == k) {
            None => {
                ep.scores.push(Scores {
                    instrument: k,
                    pre: score,
                    post: score,
                    count: 1,
                });
                last_seq[e].push((seq, seq));
            }
            Some(j) => {
                let s = &mut ep.scores[j];
                let (first, last) = &mut last_seq[e][j];
                s.count += 1;
                if seq < *first {
                    (*first, s.pre) = (seq, score);
                }
                if seq > *last {
                    (*last, s.post) = (seq, score);
                }
            }
        }
    }
    Ok((episode_ids, therapist_ids, therapists, episodes))
}

#[allow(clippy::too_many_arguments)]
fn save(
    conn: &mut Connection,
    episode_ids: &[i64],
    therapist_ids: &[i64],
    instruments: &[Instrument],
    domains: &[Domain],
    a: &Analysis,
    settings: &Settings,
    now: &str,
) -> Result<()> {
    let version = analysis::ALGORITHM_VERSION;
    let tx = conn.transaction()?;
    for table in [
        "episode_outcome",
        "episode_metrics",
        "domain_model",
        "therapist_domain_stat",
    ] {
        tx.execute(&format!("DELETE FROM {table}"), [])?;
    }
    {
        let mut outcome = tx.prepare(
            "INSERT INTO episode_outcome (episode_id, instrument_id, pre, post, change, reliable_improvement,
                reliable_deterioration, caseness_pre, caseness_post, expected_post, residual, algorithm_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut metrics = tx.prepare(
            "INSERT INTO episode_metrics (episode_id, finished_course, caseness_pre, caseness_post, recovered,
                reliable_improvement, reliable_deterioration, reliable_recovery, algorithm_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (id, e) in episode_ids.iter().zip(&a.episodes) {
            for r in &e.measures {
                let (m, fit) = (&r.outcome, r.fit);
                outcome.execute(params![
                    id,
                    instruments[r.instrument].id,
                    m.pre,
                    m.post,
                    m.change,
                    m.reliable_improvement,
                    m.reliable_deterioration,
                    m.caseness_pre,
                    m.caseness_post,
                    fit.map(|f| f.0),
                    fit.map(|f| f.1),
                    version
                ])?;
            }
            if let Some(m) = &e.iapt {
                metrics.execute(params![
                    id,
                    e.finished,
                    m.caseness_pre,
                    m.caseness_post,
                    m.recovered,
                    m.reliable_improvement,
                    m.reliable_deterioration,
                    m.reliable_recovery,
                    version
                ])?;
            }
        }
        let mut model = tx.prepare(
            "INSERT INTO domain_model (domain_id, episodes, eligible, features, beta, residual_sd, therapists,
                tau2, tau2_lo, tau2_hi, sigma2, icc, algorithm_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut stat = tx.prepare(
            "INSERT INTO therapist_domain_stat (therapist_id, domain_id, n, mean_residual, se, shrinkage,
                eb_estimate, eb_lo, eb_hi, label, rule, algorithm_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for d in &a.domains {
            let v = d.variance.as_ref();
            model.execute(params![
                domains[d.domain].id,
                d.episodes,
                d.eligible,
                d.model
                    .as_ref()
                    .map(|_| serde_json::to_string(&FEATURES))
                    .transpose()?,
                d.model
                    .as_ref()
                    .map(|m| serde_json::to_string(&m.beta))
                    .transpose()?,
                d.model.as_ref().map(|m| m.residual_sd),
                v.map(|v| v.therapists),
                v.map(|v| v.tau2),
                v.map(|v| v.tau2_interval.0),
                v.map(|v| v.tau2_interval.1).filter(|x| x.is_finite()),
                v.map(|v| v.sigma2),
                v.map(|v| v.icc),
                version
            ])?;
            for (t, r) in &d.records {
                stat.execute(params![
                    therapist_ids[*t],
                    domains[d.domain].id,
                    r.n,
                    r.mean,
                    r.se,
                    r.shrinkage,
                    r.eb,
                    r.eb_interval.0,
                    r.eb_interval.1,
                    r.label.as_str(),
                    settings.rule.as_str(),
                    version
                ])?;
            }
        }
    }
    let settings_json = serde_json::json!({
        "rule": settings.rule.as_str(),
        "min_n_show": settings.minimums.show,
        "min_n_classify": settings.minimums.classify,
        "other_measure_clause": settings.iapt.other_measure_clause,
        "ridge": settings.ridge,
        "paired_instruments": settings.paired.iter().map(|k| &instruments[*k].id).collect::<Vec<_>>(),
    });
    tx.execute(
        "INSERT INTO derivation (algorithm_version, computed_at, settings, last_import_id)
         VALUES (?1, ?2, ?3, (SELECT max(import_id) FROM imports))",
        params![version, now, settings_json.to_string()],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
