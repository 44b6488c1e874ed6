//! The derived tables (schema v2): the engine's results stored for readers of the store, one
//! derivation at a time, rewritten only when data, settings, registry or algorithm changed.

use anyhow::Result;
use protocol::analysis::{self, Analysis, FEATURES, Settings};
use protocol::instrument::{Domain, Instrument};
use rusqlite::{Connection, params};

/// One derivation: the engine's results and what they are indexed by.
pub(super) struct Derivation<'a> {
    /// Episode rowids, in analysis order.
    pub episode_ids: &'a [i64],
    /// Therapist rowids, by therapist index.
    pub therapist_ids: &'a [i64],
    /// Instruments, as indexed by the analysis.
    pub instruments: &'a [Instrument],
    /// Domains, as indexed by the analysis.
    pub domains: &'a [Domain],
    /// The results.
    pub analysis: &'a Analysis,
    /// The settings they were computed with.
    pub settings: &'a Settings,
}

/// Stores derivation `d` (computed at `now`) unless the tables hold it already.
pub(super) fn save(conn: &mut Connection, d: &Derivation<'_>, now: &str) -> Result<()> {
    let Derivation {
        instruments,
        domains,
        settings,
        ..
    } = d;
    let settings_json = serde_json::json!({
        "rule": settings.rule.as_str(),
        "min_n_show": settings.minimums.show,
        "min_n_classify": settings.minimums.classify,
        "other_measure_clause": settings.iapt.other_measure_clause,
        "ridge": settings.ridge,
        "clinical_margin": settings.margin,
        "paired_instruments": settings.paired.iter().map(|k| &instruments[*k].id).collect::<Vec<_>>(),
        // The registry shapes the analysis too.
        "instruments": instruments.iter().map(|i| &i.id).collect::<Vec<_>>(),
        "domains": domains.iter().map(|d| (&d.id, &d.instrument_id)).collect::<Vec<_>>(),
    })
    .to_string();
    let version = analysis::ALGORITHM_VERSION;
    // Derived tables that already hold this exact derivation (same data, settings, registry and
    // algorithm) are left as they are: rewriting them would change nothing. Read first, without
    // a lock.
    let current: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM derivation d WHERE derivation_id = (SELECT max(derivation_id) FROM derivation)
            AND algorithm_version = ?1 AND settings = ?2
            AND last_import_id IS (SELECT max(import_id) FROM imports))",
        params![version, settings_json],
        |r| r.get(0),
    )?;
    if current {
        return Ok(());
    }
    // The derived tables cache this derivation for readers of the store. While another process
    // writes (an import, a release, a round's charge) they are left for the next run instead of
    // making this command wait or fail: the results in hand are already complete.
    conn.busy_timeout(SAVE_WAIT)?;
    let written = write_derived(conn, d, &settings_json, now);
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)?;
    match written {
        Err(e) if crate::store::is_busy(&e) => {
            tracing::warn!("the store is busy: derived tables not refreshed this time");
            Ok(())
        }
        other => other,
    }
}

/// How long saving derived tables waits for another writer.
const SAVE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn write_derived(
    conn: &mut Connection,
    d: &Derivation<'_>,
    settings_json: &str,
    now: &str,
) -> Result<()> {
    let Derivation {
        episode_ids,
        therapist_ids,
        instruments,
        domains,
        analysis: a,
        settings,
    } = d;
    let (version, rule) = (analysis::ALGORITHM_VERSION, settings.rule.as_str());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
                    rule,
                    version
                ])?;
            }
        }
    }
    tx.execute(
        "INSERT INTO derivation (algorithm_version, computed_at, settings, last_import_id)
         VALUES (?1, ?2, ?3, (SELECT max(import_id) FROM imports))",
        params![version, now, settings_json],
    )?;
    tx.commit()?;
    Ok(())
}
