//! Clinical-support alerts and the caseload (`mbc-node alerts`). Local only.
//!
//! [`raise`] runs after every import: each open episode's sessions newer than the last one
//! assessed (table `support_check`) are assessed with [`crate::support::Assessor`]; a
//! critical item raises a `safety` alert (always), a red signal a `not_on_track` alert (only
//! when the instrument's latest validation card passed, [`crate::support::validate`]). While
//! an alert of that kind is unresolved for the episode and instrument, a new one raises
//! nothing; when the session before was the same (red again, or a critical answer again), the
//! alert is marked persistent (for supervision). Re-importing what is stored assesses nothing
//! and raises nothing.
//!
//! An alert's state is its latest action (`alert_action`): open, acknowledged, resolved.
//! [`act`] records one; nothing is ever deleted (triggers; only an erasure of the patient).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use protocol::trajectory::{Settings, Signal};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::Store;
use crate::support::validate::{Switch, switches};
use crate::support::{Assessor, PoolRule};

/// What one [`raise`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Raised {
    /// Open episodes with new sessions assessed.
    pub assessed: usize,
    /// Safety alerts raised.
    pub safety: usize,
    /// Not-on-track alerts raised.
    pub not_on_track: usize,
    /// Alerts marked persistent.
    pub persistent: usize,
    /// Red signals that raised nothing because the instrument's alerts are off.
    pub red_while_off: usize,
    /// Per instrument, whether not-on-track alerts are on and why.
    pub switch: Vec<Switch>,
}

/// Assesses the open episodes' new sessions and raises their alerts, in one transaction.
pub fn raise(
    store: &Store,
    gap_weeks: u32,
    settings: &Settings,
    network_reference: &str,
    import_id: Option<i64>,
    now: &str,
) -> Result<Raised> {
    let switch = switches(store)?;
    let conn = store.conn();
    // Which (episode, instrument) have scored sessions newer than the last one assessed.
    let mut checked: HashMap<(i64, String), u32> = HashMap::new();
    {
        let mut stmt =
            conn.prepare("SELECT episode_id, instrument_id, session_seq FROM support_check")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            checked.insert((r.get(0)?, r.get(1)?), r.get(2)?);
        }
    }
    let mut newer: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT es.episode_id, es.instrument_id, es.last_seq FROM episode_scores es
             JOIN episode e USING (episode_id) WHERE NOT ({})",
            crate::support::ENDED
        ))?;
        let mut rows = stmt.query([i64::from(gap_weeks) * 7])?;
        while let Some(r) = rows.next()? {
            let (episode, instrument, last): (i64, String, u32) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if checked
                .get(&(episode, instrument))
                .is_none_or(|c| last > *c)
            {
                newer.push(episode);
            }
        }
    }
    newer.sort_unstable();
    newer.dedup();
    let mut raised = Raised {
        switch,
        ..Raised::default()
    };
    if newer.is_empty() {
        // Nothing to assess; the features the next patient's page reads are made now.
        crate::support::keep_features(store)?;
        return Ok(raised);
    }
    // A pinned release this node does not keep is `support`'s error to report; the import's
    // alert check then assesses against the clinic's own pool rather than fail an import that
    // has landed.
    let network = crate::support::Network::load(store, network_reference).unwrap_or(None);
    let assessor = Assessor::new(store, gap_weeks, settings, &PoolRule::AllBut(None), true)?
        .with_network(network);
    let on: HashMap<&str, bool> = raised
        .switch
        .iter()
        .map(|s| (s.instrument.as_str(), s.on))
        .collect();
    let tx = conn.unchecked_transaction()?;
    let mut insert = tx.prepare(
        "INSERT OR IGNORE INTO alert (episode_id, instrument_id, session_seq, kind, score, reason,
                                      import_id, raised_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut mark = tx.prepare("UPDATE alert SET persistent_at = ?2 WHERE alert_id = ?1")?;
    let mut unresolved = tx.prepare(
        "SELECT a.alert_id, a.persistent_at FROM alert a
         WHERE a.episode_id = ?1 AND a.instrument_id = ?2 AND a.kind = ?3
           AND NOT EXISTS (SELECT 1 FROM alert_action x
                           WHERE x.alert_id = a.alert_id AND x.action = 'resolved')
         ORDER BY a.alert_id DESC LIMIT 1",
    )?;
    let mut check = tx.prepare(
        "INSERT OR REPLACE INTO support_check
             (episode_id, instrument_id, session_seq, score, signal, checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for episode in newer {
        raised.assessed += 1;
        for inst in assessor.assess(episode)? {
            let from = checked
                .get(&(episode, inst.instrument.clone()))
                .copied()
                .unwrap_or(0);
            let (mut red_before, mut unsafe_before) = (false, false);
            for o in &inst.observed {
                let red = o.signal == Some(Signal::Red);
                let unsafe_now = !o.safety.is_empty();
                if o.session > from && unsafe_now {
                    let reason: Vec<&str> = o.safety.iter().map(|s| s.reason.as_str()).collect();
                    let reason = format!("{}: {}", inst.instrument, reason.join("; "));
                    let (new, marked) = escalate(
                        (&mut unresolved, &mut insert, &mut mark),
                        (episode, &inst.instrument, o.session, o.score),
                        "safety",
                        &reason,
                        unsafe_before,
                        (import_id, now),
                    )?;
                    raised.safety += new;
                    raised.persistent += marked;
                }
                if o.session > from && red {
                    if !on.get(inst.instrument.as_str()).copied().unwrap_or(false) {
                        raised.red_while_off += 1;
                    } else {
                        let reason = match &o.band {
                            Some(b) => format!(
                                "{} {}: beyond the failure boundary {:.1} of similar past \
                                 patients, or reliably worse than at intake",
                                inst.instrument, o.score, b.p90
                            ),
                            None => format!(
                                "{} {}: reliably worse than at intake",
                                inst.instrument, o.score
                            ),
                        };
                        let (new, marked) = escalate(
                            (&mut unresolved, &mut insert, &mut mark),
                            (episode, &inst.instrument, o.session, o.score),
                            "not_on_track",
                            &reason,
                            red_before,
                            (import_id, now),
                        )?;
                        raised.not_on_track += new;
                        raised.persistent += marked;
                    }
                }
                red_before = red;
                unsafe_before = unsafe_now;
            }
            if let Some(last) = inst.observed.last() {
                check.execute(params![
                    episode,
                    inst.instrument,
                    last.session,
                    last.score,
                    last.signal.map(signal_name),
                    now
                ])?;
            }
        }
    }
    drop((insert, mark, unresolved, check));
    tx.commit()?;
    Ok(raised)
}

/// After a validation card switched an instrument's not-on-track alerts on: an alert for
/// every open episode whose latest assessed score on it was red and that has no unresolved
/// one (at that session), so that the caseload's reds do not wait for their next scores.
/// Returns how many were raised.
pub fn raise_switched_on(store: &Store, gap_weeks: u32, now: &str) -> Result<usize> {
    let on: Vec<String> = switches(store)?
        .into_iter()
        .filter(|s| s.on)
        .map(|s| s.instrument)
        .collect();
    let conn = store.conn();
    let tx = conn.unchecked_transaction()?;
    let mut raised = 0;
    for instrument in on {
        raised += tx.execute(
            &format!(
                "INSERT OR IGNORE INTO alert (episode_id, instrument_id, session_seq, kind, score,
                                              reason, import_id, raised_at)
                 SELECT c.episode_id, c.instrument_id, c.session_seq, 'not_on_track', c.score,
                        c.instrument_id || ' ' || printf('%g', c.score)
                          || ': not on track when scored (alerts switched on by validation)',
                        NULL, ?3
                 FROM support_check c JOIN episode e USING (episode_id)
                 WHERE c.instrument_id = ?2 AND c.signal = 'red' AND NOT ({})
                   AND NOT EXISTS (
                       SELECT 1 FROM alert a WHERE a.episode_id = c.episode_id
                         AND a.instrument_id = c.instrument_id AND a.kind = 'not_on_track'
                         AND NOT EXISTS (SELECT 1 FROM alert_action x
                                         WHERE x.alert_id = a.alert_id
                                           AND x.action = 'resolved'))",
                crate::support::ENDED
            ),
            params![i64::from(gap_weeks) * 7, instrument, now],
        )?;
    }
    tx.commit()?;
    Ok(raised)
}

/// A new red (or critical answer) at a session of `at` (episode, instrument, session,
/// score): with no unresolved alert of its `kind`, raise one; with one, and the session before
/// the same (`same_before`), mark it persistent; else nothing. Returns (raised, marked).
fn escalate(
    (unresolved, insert, mark): (
        &mut rusqlite::Statement<'_>,
        &mut rusqlite::Statement<'_>,
        &mut rusqlite::Statement<'_>,
    ),
    (episode, instrument, session, score): (i64, &str, u32, f64),
    kind: &str,
    reason: &str,
    same_before: bool,
    (import_id, now): (Option<i64>, &str),
) -> Result<(usize, usize)> {
    let open: Option<(i64, Option<u32>)> = unresolved
        .query_row(params![episode, instrument, kind], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match open {
        None => (
            insert.execute(params![
                episode, instrument, session, kind, score, reason, import_id, now
            ])?,
            0,
        ),
        Some((id, None)) if same_before => (0, mark.execute(params![id, session])?),
        Some(_) => (0, 0),
    })
}

/// A signal's stored name.
pub fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Grey => "grey",
        Signal::White => "white",
        Signal::Green => "green",
        Signal::Yellow => "yellow",
        Signal::Red => "red",
    }
}

/// What staff do about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Seen; being dealt with.
    Acknowledge,
    /// Dealt with.
    Resolve,
}

/// One alert as stored, with its state.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Its id (for `alerts ack|resolve ID`).
    pub id: i64,
    /// The episode's pseudonym (first 12 characters).
    pub episode: String,
    /// Instrument.
    pub instrument: String,
    /// Session that raised it.
    pub session: u32,
    /// `safety` or `not_on_track`.
    pub kind: String,
    /// The score.
    pub score: f64,
    /// Why, in words.
    pub reason: String,
    /// When.
    pub raised_at: String,
    /// The session of the second consecutive red, when persistent.
    pub persistent_at: Option<u32>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// Every action, oldest first: (action, by, at, note).
    pub actions: Vec<(String, String, String, Option<String>)>,
}

fn alerts_where(store: &Store, clause: &str, arg: i64) -> Result<Vec<Alert>> {
    let conn = store.conn();
    let mut stmt = conn.prepare(&format!(
        "SELECT a.alert_id, substr(e.pseudonym, 1, 12), a.instrument_id, a.session_seq, a.kind,
                a.score, a.reason, a.raised_at, a.persistent_at
         FROM alert a JOIN episode e USING (episode_id) WHERE {clause} ORDER BY a.alert_id"
    ))?;
    let mut actions = conn.prepare_cached(
        "SELECT action, by_whom, at, note FROM alert_action WHERE alert_id = ?1
         ORDER BY action_id",
    )?;
    let rows: Vec<Alert> = stmt
        .query_map([arg], |r| {
            Ok(Alert {
                id: r.get(0)?,
                episode: r.get(1)?,
                instrument: r.get(2)?,
                session: r.get(3)?,
                kind: r.get(4)?,
                score: r.get(5)?,
                reason: r.get(6)?,
                raised_at: r.get(7)?,
                persistent_at: r.get(8)?,
                state: "open".to_string(),
                actions: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|mut a| {
            a.actions = actions
                .query_map([a.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            if let Some((last, ..)) = a.actions.last() {
                a.state = last.clone();
            }
            Ok(a)
        })
        .collect()
}

/// The alerts of episode `episode` (rowid) not yet resolved.
pub fn unresolved(store: &Store, episode: i64) -> Result<Vec<Alert>> {
    Ok(alerts_where(store, "a.episode_id = ?1", episode)?
        .into_iter()
        .filter(|a| a.state != "resolved")
        .collect())
}

impl Alert {
    /// The alert in one line, for a page.
    pub fn line(&self) -> String {
        format!(
            "#{} {} at session {}{}: {} ({}{})",
            self.id,
            self.kind.replace('_', " "),
            self.session,
            match self.persistent_at {
                Some(t) => format!(", PERSISTENT (again at session {t})"),
                None => String::new(),
            },
            self.reason,
            self.state,
            self.actions
                .last()
                .map_or(String::new(), |(_, by, at, _)| format!(" by {by}, {at}"))
        )
    }
}

/// Records `action` on alert `id` by `by`, with an optional note; refuses an unknown id, an
/// empty name, and acting on a resolved alert (or acknowledging one twice).
pub fn act(
    store: &Store,
    id: i64,
    action: Action,
    by: &str,
    note: Option<&str>,
    now: &str,
) -> Result<Alert> {
    let by = by.trim();
    if by.is_empty() {
        bail!("--by must name who acts on the alert");
    }
    let Some(alert) = alerts_where(store, "a.alert_id = ?1", id)?.pop() else {
        bail!("no alert {id} in this store (mbc-node alerts lists the open ones)");
    };
    match (alert.state.as_str(), action) {
        ("resolved", _) => bail!("alert {id} was already resolved; nothing recorded"),
        ("acknowledged", Action::Acknowledge) => {
            bail!("alert {id} was already acknowledged; nothing recorded")
        }
        _ => {}
    }
    let name = match action {
        Action::Acknowledge => "acknowledged",
        Action::Resolve => "resolved",
    };
    store
        .conn()
        .execute(
            "INSERT INTO alert_action (alert_id, action, by_whom, at, note)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                name,
                by,
                now,
                note.map(str::trim).filter(|n| !n.is_empty())
            ],
        )
        .context("couldn't record the action")?;
    alerts_where(store, "a.alert_id = ?1", id)?
        .pop()
        .context("the alert vanished")
}

/// One open episode of the caseload.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Episode pseudonym (first 12 characters).
    pub episode: String,
    /// Therapist pseudonym (first 12 characters).
    pub therapist: String,
    /// The most worrying latest signal over the episode's instruments, and on which.
    pub signal: Option<String>,
    /// Its instrument.
    pub instrument: Option<String>,
    /// Its last score and session.
    pub last_score: Option<f64>,
    /// Session of the last score.
    pub last_scored_session: Option<u32>,
    /// Sessions since then without a score.
    pub sessions_since_measure: u32,
    /// Alerts not resolved.
    pub open_alerts: Vec<Alert>,
}

/// What the caseload shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this therapist's (pseudonym).
    pub therapist: Option<String>,
    /// Only episodes whose latest signal is this.
    pub signal: Option<Signal>,
}

fn severity(signal: &str) -> u8 {
    match signal {
        "red" => 5,
        "yellow" => 4,
        "grey" => 3,
        "green" => 2,
        "white" => 1,
        _ => 0,
    }
}

/// The open episodes with their latest signals and unresolved alerts, the most worrying
/// first (open safety alerts, then red, yellow, …).
pub fn caseload(store: &Store, gap_weeks: u32, filter: &Filter) -> Result<Vec<Case>> {
    let conn = store.conn();
    let mut stmt = conn.prepare(&format!(
        "SELECT e.episode_id, substr(e.pseudonym, 1, 12), t.pseudonym,
                (SELECT max(seq) FROM session s WHERE s.episode_id = e.episode_id)
         FROM episode e JOIN therapist t USING (therapist_id)
         WHERE NOT ({}) AND (?2 IS NULL OR t.pseudonym = ?2)",
        crate::support::ENDED
    ))?;
    let rows: Vec<(i64, String, String, Option<u32>)> = stmt
        .query_map(params![i64::from(gap_weeks) * 7, filter.therapist], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut checks = conn.prepare_cached(
        "SELECT instrument_id, session_seq, score, signal FROM support_check WHERE episode_id = ?1",
    )?;
    let mut last_scored =
        conn.prepare_cached("SELECT max(last_seq) FROM episode_scores WHERE episode_id = ?1")?;
    let mut out = Vec::new();
    for (id, episode, therapist, last_session) in rows {
        let checks: Vec<(String, u32, f64, Option<String>)> = checks
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let worst = checks
            .iter()
            .max_by_key(|(_, seq, _, s)| (s.as_deref().map_or(0, severity), *seq));
        if let Some(want) = filter.signal
            && worst.and_then(|w| w.3.as_deref()) != Some(signal_name(want))
        {
            continue;
        }
        let scored: Option<u32> = last_scored.query_row([id], |r| r.get(0))?;
        let open_alerts = unresolved(store, id)?;
        out.push(Case {
            episode,
            therapist: therapist.chars().take(12).collect(),
            signal: worst.and_then(|w| w.3.clone()),
            instrument: worst.map(|w| w.0.clone()),
            last_score: worst.map(|w| w.2),
            last_scored_session: scored,
            sessions_since_measure: last_session
                .unwrap_or(0)
                .saturating_sub(scored.unwrap_or(0)),
            open_alerts,
        });
    }
    out.sort_by_key(|c| {
        std::cmp::Reverse((
            c.open_alerts.iter().any(|a| a.kind == "safety"),
            c.signal.as_deref().map_or(0, severity),
            c.open_alerts.len(),
        ))
    });
    Ok(out)
}
