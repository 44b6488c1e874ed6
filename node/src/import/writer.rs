//! Writes normalised records into the store inside one transaction, replacing raw identifiers
//! with pseudonyms. Lookups are cached by raw identifier for the length of one file, so each
//! identifier is hashed once. Conflicts with what is already stored (a different score for the
//! same session and instrument, an episode moving to another patient) are errors; identical
//! rows are no-ops, which makes re-importing overlapping exports idempotent. A writer made
//! [`correcting`](Writer::correcting) (`import --corrections`) replaces a contradicted score or
//! session instead, and lists each replacement for the append-only `correction` table.
//!
//! Records of a patient erased on request (table `erasure`) fail with
//! [`FieldError::erased`], which readers count as skipped: an erased patient is never stored
//! again.

use std::collections::{HashMap, HashSet};

use protocol::pseudonym::{IdKind, Pseudonymiser};
use rusqlite::{OptionalExtension, Params, Row, Statement, Transaction, params};

use super::fields::{FieldError, FieldResult};
use super::records::{
    AssessmentRecord, Casemix, EpisodeAttrs, PatientAttrs, SessionRecord, TherapistAttrs,
    UNRECORDED_THERAPIST,
};

/// Counts of what a file changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Therapists newly created.
    pub therapists: u64,
    /// Patients newly created.
    pub patients: u64,
    /// Episodes newly created.
    pub episodes: u64,
    /// Sessions newly created.
    pub sessions: u64,
    /// Assessments newly stored.
    pub assessments: u64,
    /// Assessments already stored with the same score (no-ops).
    pub assessments_unchanged: u64,
    /// Stored values replaced (`import --corrections`): scores and session fields.
    pub corrected: u64,
}

/// One stored value a corrections file replaced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Correction {
    pub(crate) episode: i64,
    /// The episode as the file names it (for the summary; the store keeps the rowid).
    pub(crate) episode_label: String,
    pub(crate) seq: i64,
    /// `score INSTRUMENT`, `date`, `attended` or `kind`.
    pub(crate) field: String,
    pub(crate) old: String,
    pub(crate) new: String,
}

/// First and last (session, score) and count of new assessments of one episode × instrument.
struct ScoreRange {
    first: (i64, f64),
    last: (i64, f64),
    n: i64,
    /// Scores at sessions 2 and 3.
    early: [Option<f64>; 2],
}

impl ScoreRange {
    fn new(seq: i64, score: f64) -> Self {
        let mut r = Self {
            first: (seq, score),
            last: (seq, score),
            n: 0,
            early: [None; 2],
        };
        r.add(seq, score);
        r
    }

    fn add(&mut self, seq: i64, score: f64) {
        if let 2 | 3 = seq {
            self.early[usize::from(seq == 3)] = Some(score);
        }
        if seq < self.first.0 {
            self.first = (seq, score);
        }
        if seq > self.last.0 {
            self.last = (seq, score);
        }
        self.n += 1;
    }
}

struct SessionInfo {
    id: i64,
    date: String,
    attended: bool,
    kind: &'static str,
    /// Stored before this file (so a corrections file may replace it).
    stored: bool,
}

pub(crate) struct Writer<'a> {
    tx: &'a Transaction<'a>,
    pseudo: &'a Pseudonymiser,
    therapists: HashMap<String, i64>,
    patients: HashMap<String, i64>,
    /// raw episode id -> (episode rowid, patient rowid)
    episodes: HashMap<String, (i64, i64)>,
    sessions: HashMap<(i64, i64), SessionInfo>,
    /// (episode, therapist) -> (first, last) session seq seen in this file.
    episode_therapists: HashMap<(i64, i64), (i64, i64)>,
    /// (episode, instrument) -> first and last score of this file's new assessments.
    episode_scores: HashMap<(i64, String), ScoreRange>,
    /// episode -> attended treatment sessions newly stored from this file.
    attendance: HashMap<i64, i64>,
    /// Replace what the file contradicts (`import --corrections`).
    correcting: bool,
    /// The replacements, in the order made.
    corrections: Vec<Correction>,
    /// Episodes whose summaries must be recomputed after corrections.
    corrected_episodes: HashSet<i64>,
    /// (session, instrument) of assessments this file wrote or confirmed, when correcting: a
    /// file that contradicts itself is an error, not a correction.
    written: HashSet<(i64, String)>,
    /// Raw patient ids found erased.
    erased: HashSet<String>,
    /// Whether the store has erased anyone (else no patient is looked up in `erasure`).
    any_erased: bool,
    insert_session: Statement<'a>,
    insert_assessment: Statement<'a>,
    insert_item: Statement<'a>,
    pub(crate) counts: Counts,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        tx: &'a Transaction<'a>,
        pseudo: &'a Pseudonymiser,
    ) -> rusqlite::Result<Self> {
        Ok(Self {
            tx,
            pseudo,
            therapists: HashMap::new(),
            patients: HashMap::new(),
            episodes: HashMap::new(),
            sessions: HashMap::new(),
            episode_therapists: HashMap::new(),
            episode_scores: HashMap::new(),
            attendance: HashMap::new(),
            correcting: false,
            corrections: Vec::new(),
            corrected_episodes: HashSet::new(),
            written: HashSet::new(),
            erased: HashSet::new(),
            any_erased: tx.query_row("SELECT EXISTS (SELECT 1 FROM erasure)", [], |r| r.get(0))?,
            insert_session: tx.prepare(
                "INSERT INTO session (episode_id, seq, date, attended, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            insert_assessment: tx.prepare(
                "INSERT INTO assessment (episode_id, session_id, session_seq, instrument_id, score, n_missing_items, prorated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (session_id, instrument_id) DO NOTHING",
            )?,
            insert_item: tx.prepare(
                "INSERT OR IGNORE INTO item_response (assessment_id, item_no, item_code, value) VALUES (?1, ?2, ?3, ?4)",
            )?,
            counts: Counts::default(),
        })
    }

    /// This writer replacing stored values the file contradicts instead of refusing them.
    pub(crate) fn correcting(mut self, correcting: bool) -> Self {
        self.correcting = correcting;
        self
    }

    /// The therapist's rowid, creating a bare row on first sight.
    pub(crate) fn therapist(&mut self, raw: &str) -> FieldResult<i64> {
        if let Some(id) = self.therapists.get(raw) {
            return Ok(*id);
        }
        let pseudonym = self.pseudo.pseudonym(IdKind::Therapist, raw);
        let (id, created) = get_or_insert(self.tx, "therapist", "therapist_id", &pseudonym)?;
        self.counts.therapists += u64::from(created);
        if raw.eq_ignore_ascii_case(UNRECORDED_THERAPIST) {
            exec(
                self.tx,
                "UPDATE therapist SET unrecorded = 1 WHERE therapist_id = ?1",
                [id],
            )?;
        }
        self.therapists.insert(raw.to_string(), id);
        Ok(id)
    }

    /// Creates or updates a therapist's attributes (given values overwrite stored ones).
    pub(crate) fn upsert_therapist(&mut self, raw: &str, a: &TherapistAttrs) -> FieldResult<()> {
        let id = self.therapist(raw)?;
        exec(self.tx, "UPDATE therapist SET profession = coalesce(?2, profession),
                    grade = coalesce(?3, grade), start_year = coalesce(?4, start_year),
                    gender = coalesce(?5, gender), languages = coalesce(?6, languages),
                    modalities = coalesce(?7, modalities), accepting_new = coalesce(?8, accepting_new),
                    wait_weeks = coalesce(?9, wait_weeks), payers = coalesce(?10, payers),
                    location = coalesce(?11, location), delivery = coalesce(?12, delivery),
                    availability = coalesce(?13, availability),
                    new_per_week = coalesce(?14, new_per_week)
                 WHERE therapist_id = ?1", params![
                    id,
                    a.profession,
                    a.grade,
                    a.start_year,
                    a.gender,
                    a.languages,
                    a.modalities,
                    a.accepting_new,
                    a.wait_weeks,
                    a.payers,
                    a.location,
                    a.delivery,
                    a.availability,
                    a.new_per_week
                ])?;
        Ok(())
    }

    /// The patient's rowid, creating a bare row on first sight.
    pub(crate) fn patient(&mut self, raw: &str) -> FieldResult<i64> {
        if let Some(id) = self.patients.get(raw) {
            return Ok(*id);
        }
        if self.erased.contains(raw) {
            return Err(FieldError::erased());
        }
        let pseudonym = self.pseudo.pseudonym(IdKind::Patient, raw);
        let erased: bool = self.any_erased
            && row(
                self.tx,
                "SELECT EXISTS (SELECT 1 FROM erasure WHERE patient_pseudonym = ?1)",
                [&pseudonym],
                |r| r.get(0),
            )?
            .unwrap_or(false);
        if erased {
            self.erased.insert(raw.to_string());
            return Err(FieldError::erased());
        }
        let (id, created) = get_or_insert(self.tx, "patient", "patient_id", &pseudonym)?;
        self.counts.patients += u64::from(created);
        self.patients.insert(raw.to_string(), id);
        Ok(id)
    }

    /// Creates or updates a patient's demographics.
    pub(crate) fn upsert_patient(&mut self, raw: &str, a: &PatientAttrs) -> FieldResult<()> {
        let id = self.patient(raw)?;
        exec(
            self.tx,
            "UPDATE patient SET birth_year = coalesce(?2, birth_year), sex = coalesce(?3, sex),
                    ethnicity_group = coalesce(?4, ethnicity_group),
                    deprivation_decile = coalesce(?5, deprivation_decile)
                 WHERE patient_id = ?1",
            params![
                id,
                a.birth_year,
                a.sex,
                a.ethnicity_group,
                a.deprivation_decile
            ],
        )?;
        Ok(())
    }

    /// The episode's rowid, creating it (for `patient`, with `therapist` as primary) on first
    /// sight. An episode already recorded for another patient is an error.
    pub(crate) fn episode(
        &mut self,
        raw: &str,
        patient: &str,
        therapist: &str,
    ) -> FieldResult<i64> {
        let patient_id = self.patient(patient)?;
        if let Some((id, owner)) = self.episodes.get(raw) {
            return check_owner(raw, *owner, patient_id).map(|()| *id);
        }
        let therapist_id = self.therapist(therapist)?;
        let pseudonym = self.pseudo.pseudonym(IdKind::Episode, raw);
        let existing: Option<(i64, i64)> = row(
            self.tx,
            "SELECT episode_id, patient_id FROM episode WHERE pseudonym = ?1",
            [&pseudonym],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let id = match existing {
            Some((id, owner)) => {
                check_owner(raw, owner, patient_id)?;
                id
            }
            None => {
                exec(
                    self.tx,
                    "INSERT INTO episode (pseudonym, patient_id, therapist_id) VALUES (?1, ?2, ?3)",
                    params![pseudonym, patient_id, therapist_id],
                )?;
                self.counts.episodes += 1;
                self.tx.last_insert_rowid()
            }
        };
        self.episodes.insert(raw.to_string(), (id, patient_id));
        Ok(id)
    }

    /// The episodes derived earlier from `patient`'s dated scores (FHIR without
    /// EpisodeOfCare): per episode, its sessions as (date, seq) in seq order.
    pub(crate) fn derived_episodes(
        &mut self,
        patient: &str,
    ) -> FieldResult<Vec<Vec<(String, i64)>>> {
        let patient_id = self.patient(patient)?;
        let mut stmt = self
            .tx
            .prepare_cached(
                "SELECT e.episode_id, s.date, s.seq FROM episode e JOIN session s USING (episode_id)
                 WHERE e.patient_id = ?1 AND e.derived = 1 ORDER BY e.episode_id, s.seq",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([patient_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out: Vec<(i64, Vec<(String, i64)>)> = Vec::new();
        for row in rows {
            let (episode, date, seq) = row.map_err(db)?;
            match out.last_mut() {
                Some((e, sessions)) if *e == episode => sessions.push((date, seq)),
                _ => out.push((episode, vec![(date, seq)])),
            }
        }
        Ok(out.into_iter().map(|(_, sessions)| sessions).collect())
    }

    /// The episode `raw` of `patient`, created as one derived from dated scores.
    pub(crate) fn derived_episode(
        &mut self,
        raw: &str,
        patient: &str,
        therapist: &str,
    ) -> FieldResult<()> {
        let id = self.episode(raw, patient, therapist)?;
        exec(
            self.tx,
            "UPDATE episode SET derived = 1 WHERE episode_id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Creates or updates an episode with its attributes and case mix; `therapist` becomes
    /// the episode's primary therapist.
    pub(crate) fn upsert_episode(
        &mut self,
        raw: &str,
        patient: &str,
        therapist: &str,
        a: &EpisodeAttrs,
        casemix: &Casemix,
    ) -> FieldResult<()> {
        let id = self.episode(raw, patient, therapist)?;
        let therapist_id = self.therapist(therapist)?;
        exec(self.tx, "UPDATE episode SET therapist_id = ?2,
                    referral_date = coalesce(?3, referral_date), start_date = coalesce(?4, start_date),
                    end_date = coalesce(?5, end_date), end_reason = coalesce(?6, end_reason),
                    sessions_planned = coalesce(?7, sessions_planned),
                    sessions_attended = coalesce(?8, sessions_attended), step = coalesce(?9, step),
                    provisional_dx = coalesce(?10, provisional_dx)
                 WHERE episode_id = ?1", params![
                    id,
                    therapist_id,
                    a.referral_date,
                    a.start_date,
                    a.end_date,
                    a.end_reason,
                    a.sessions_planned,
                    a.sessions_attended,
                    a.step,
                    a.provisional_dx
                ])?;
        if casemix.is_empty() {
            return Ok(());
        }
        let c = casemix;
        exec(self.tx, "INSERT INTO casemix (episode_id, age, employment, prior_treatment, psychotropic_med,
                    long_term_condition, disability, duration_of_problem_months, comorbidity_count,
                    referral_source, wsas)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (episode_id) DO UPDATE SET age = coalesce(excluded.age, age),
                    employment = coalesce(excluded.employment, employment),
                    prior_treatment = coalesce(excluded.prior_treatment, prior_treatment),
                    psychotropic_med = coalesce(excluded.psychotropic_med, psychotropic_med),
                    long_term_condition = coalesce(excluded.long_term_condition, long_term_condition),
                    disability = coalesce(excluded.disability, disability),
                    duration_of_problem_months = coalesce(excluded.duration_of_problem_months, duration_of_problem_months),
                    comorbidity_count = coalesce(excluded.comorbidity_count, comorbidity_count),
                    referral_source = coalesce(excluded.referral_source, referral_source),
                    wsas = coalesce(excluded.wsas, wsas)", params![
                    id,
                    c.age,
                    c.employment,
                    c.prior_treatment,
                    c.psychotropic_med,
                    c.long_term_condition,
                    c.disability,
                    c.duration_of_problem_months,
                    c.comorbidity_count,
                    c.referral_source,
                    c.wsas
                ])?;
        Ok(())
    }

    /// The session's rowid (and its episode's), creating it on first sight. A session already
    /// recorded with another date, attendance or kind is an error.
    pub(crate) fn session(&mut self, s: &SessionRecord) -> FieldResult<(i64, i64)> {
        let k = &s.key;
        let episode = self.episode(&k.episode, &k.patient, &k.therapist)?;
        let therapist = self.therapist(&k.therapist)?;
        let range = self
            .episode_therapists
            .entry((episode, therapist))
            .or_insert((k.seq, k.seq));
        *range = (range.0.min(k.seq), range.1.max(k.seq));
        if !self.sessions.contains_key(&(episode, k.seq)) {
            let stored = row(
                self.tx,
                "SELECT session_id, date, attended, kind FROM session WHERE episode_id = ?1 AND seq = ?2",
                [episode, k.seq],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )?;
            let info = match stored {
                Some((id, date, attended, kind)) => SessionInfo {
                    id,
                    date,
                    attended,
                    kind: super::fields::SESSION_KINDS
                        .iter()
                        .find(|k| **k == kind)
                        .copied()
                        .unwrap_or("treatment"),
                    stored: true,
                },
                None => {
                    self.insert_session
                        .execute(params![episode, k.seq, s.date, s.attended, s.kind])
                        .map_err(db)?;
                    self.counts.sessions += 1;
                    if s.attended && s.kind == "treatment" {
                        *self.attendance.entry(episode).or_insert(0) += 1;
                    }
                    SessionInfo {
                        id: self.tx.last_insert_rowid(),
                        date: s.date.clone(),
                        attended: s.attended,
                        kind: s.kind,
                        stored: false,
                    }
                }
            };
            self.sessions.insert((episode, k.seq), info);
        }
        let Some(info) = self.sessions.get_mut(&(episode, k.seq)) else {
            return Err(FieldError::new(
                "(store)",
                "(internal) the session was not cached",
            ));
        };
        let differences: Vec<(&str, String, String)> = [
            ("date", info.date.clone(), s.date.clone()),
            (
                "attended",
                info.attended.to_string(),
                s.attended.to_string(),
            ),
            ("kind", info.kind.to_string(), s.kind.to_string()),
        ]
        .into_iter()
        .filter(|(_, stored, given)| stored != given)
        .collect();
        let Some((field, stored, given)) = differences.first() else {
            return Ok((info.id, episode));
        };
        if !(self.correcting && info.stored) {
            let hint = if info.stored {
                "; if this file is right, import it with --corrections to replace the stored \
                 value (the replacement is recorded)"
            } else {
                " earlier in this file"
            };
            return Err(FieldError::new(
                *field,
                format!(
                    "session {} of episode {} is already recorded with {field} {stored}, not \
                     {given}{hint}",
                    k.seq, k.episode
                ),
            ));
        }
        exec(
            self.tx,
            "UPDATE session SET date = ?2, attended = ?3, kind = ?4 WHERE session_id = ?1",
            params![info.id, s.date, s.attended, s.kind],
        )?;
        (info.date, info.attended, info.kind, info.stored) =
            (s.date.clone(), s.attended, s.kind, false);
        let id = info.id;
        for (field, old, new) in differences {
            self.corrections.push(Correction {
                episode,
                episode_label: k.episode.clone(),
                seq: k.seq,
                field: field.to_string(),
                old,
                new,
            });
            self.counts.corrected += 1;
        }
        self.corrected_episodes.insert(episode);
        Ok((id, episode))
    }

    /// Stores an assessment at a session. The same score again is a no-op; a different score
    /// for the same session and instrument is an error.
    pub(crate) fn assessment(
        &mut self,
        s: &SessionRecord,
        a: &AssessmentRecord,
    ) -> FieldResult<()> {
        let (session, episode) = self.session(s)?;
        if !s.attended {
            return Err(FieldError::new(
                "attended",
                format!(
                    "session {} is marked not attended but has a {} score",
                    s.key.seq, a.instrument_id
                ),
            ));
        }
        let inserted = self
            .insert_assessment
            .execute(params![
                episode,
                session,
                s.key.seq,
                a.instrument_id,
                a.score,
                a.n_missing,
                a.prorated
            ])
            .map_err(db)?;
        let key = (session, a.instrument_id.clone());
        if inserted == 0 {
            let (assessment, stored): (i64, f64) = row(
                self.tx,
                "SELECT assessment_id, score FROM assessment WHERE session_id = ?1 AND instrument_id = ?2",
                params![session, a.instrument_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .ok_or_else(|| {
                FieldError::new(
                    "(store)",
                    "database error: the conflicting assessment is missing",
                )
            })?;
            if stored == a.score {
                if self.correcting {
                    self.written.insert(key);
                }
                self.counts.assessments_unchanged += 1;
                return Ok(());
            }
            let from_this_file = self.written.contains(&key);
            if !self.correcting || from_this_file {
                let hint = if from_this_file {
                    " earlier in this file"
                } else {
                    "; if this file is right, import it with --corrections to replace the \
                     stored score (the replacement is recorded)"
                };
                return Err(FieldError::new(
                    "score",
                    format!(
                        "session {} of episode {} already has a {} score of {stored}; this one \
                         says {}{hint}",
                        s.key.seq, s.key.episode, a.instrument_id, a.score
                    ),
                ));
            }
            exec(
                self.tx,
                "UPDATE assessment SET score = ?2, n_missing_items = ?3, prorated = ?4
                 WHERE assessment_id = ?1",
                params![assessment, a.score, a.n_missing, a.prorated],
            )?;
            exec(
                self.tx,
                "DELETE FROM item_response WHERE assessment_id = ?1",
                [assessment],
            )?;
            self.corrections.push(Correction {
                episode,
                episode_label: s.key.episode.clone(),
                seq: s.key.seq,
                field: format!("score {}", a.instrument_id),
                old: stored.to_string(),
                new: a.score.to_string(),
            });
            self.counts.corrected += 1;
            self.corrected_episodes.insert(episode);
            self.written.insert(key);
            return self.items(assessment, a);
        }
        if self.correcting {
            self.written.insert(key);
        }
        self.counts.assessments += 1;
        let assessment = self.tx.last_insert_rowid();
        let seq = s.key.seq;
        self.episode_scores
            .entry((episode, a.instrument_id.clone()))
            .and_modify(|r| r.add(seq, a.score))
            .or_insert_with(|| ScoreRange::new(seq, a.score));
        self.items(assessment, a)
    }

    fn items(&mut self, assessment: i64, a: &AssessmentRecord) -> FieldResult<()> {
        for (no, code, value) in &a.items {
            self.insert_item
                .execute(params![assessment, *no as i64, code, value])
                .map_err(db)?;
        }
        Ok(())
    }

    /// Writes what is accumulated across rows (therapist ranges per episode, score and
    /// attendance summaries; recomputed whole for corrected episodes). Returns the counts and
    /// the corrections made, for the caller to record against the file's import.
    pub(crate) fn finish(self) -> FieldResult<(Counts, Vec<Correction>)> {
        let mut stmt = self
            .tx
            .prepare(
                "INSERT INTO episode_therapist (episode_id, therapist_id, first_session, last_session)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (episode_id, therapist_id) DO UPDATE SET
                    first_session = min(first_session, excluded.first_session),
                    last_session = max(last_session, excluded.last_session)",
            )
            .map_err(db)?;
        for ((episode, therapist), (first, last)) in &self.episode_therapists {
            stmt.execute([episode, therapist, first, last])
                .map_err(db)?;
        }
        // SET expressions see the old row, so each CASE compares against the stored range.
        let mut stmt = self
            .tx
            .prepare(
                "INSERT INTO episode_scores (episode_id, instrument_id, first_seq, first_score,
                    last_seq, last_score, n, score_s2, score_s3)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (episode_id, instrument_id) DO UPDATE SET
                    score_s2 = coalesce(excluded.score_s2, score_s2),
                    score_s3 = coalesce(excluded.score_s3, score_s3),
                    first_seq = min(first_seq, excluded.first_seq),
                    first_score = CASE WHEN excluded.first_seq < first_seq
                        THEN excluded.first_score ELSE first_score END,
                    last_seq = max(last_seq, excluded.last_seq),
                    last_score = CASE WHEN excluded.last_seq > last_seq
                        THEN excluded.last_score ELSE last_score END,
                    n = n + excluded.n",
            )
            .map_err(db)?;
        for ((episode, instrument), r) in &self.episode_scores {
            stmt.execute(params![
                episode, instrument, r.first.0, r.first.1, r.last.0, r.last.1, r.n, r.early[0],
                r.early[1]
            ])
            .map_err(db)?;
        }
        let mut stmt = self
            .tx
            .prepare(
                "INSERT INTO episode_attendance (episode_id, attended_treatment) VALUES (?1, ?2)
                 ON CONFLICT (episode_id) DO UPDATE SET
                    attended_treatment = attended_treatment + excluded.attended_treatment",
            )
            .map_err(db)?;
        for (episode, n) in &self.attendance {
            stmt.execute([episode, n]).map_err(db)?;
        }
        for episode in &self.corrected_episodes {
            summarise_episode(self.tx, *episode)?;
        }
        Ok((self.counts, self.corrections))
    }
}

impl Correction {
    /// One line for the summary: "episode E1, session 2: PHQ-9 score 1 → 18".
    pub(crate) fn describe(&self) -> String {
        format!(
            "episode {}, session {}: {} {} → {}",
            self.episode_label, self.seq, self.field, self.old, self.new
        )
    }
}

/// Recomputes the summaries import maintains for `episode` (`episode_scores`,
/// `episode_attendance`) from its sessions and assessments, after a correction replaced one.
pub(crate) fn summarise_episode(tx: &Transaction<'_>, episode: i64) -> FieldResult<()> {
    exec(
        tx,
        "DELETE FROM episode_scores WHERE episode_id = ?1",
        [episode],
    )?;
    exec(
        tx,
        // Through the session's (episode, seq) index: assessment has none by episode.
        "INSERT INTO episode_scores (episode_id, instrument_id, first_seq, first_score,
            last_seq, last_score, n, score_s2, score_s3)
         WITH mine AS (SELECT a.instrument_id, s.seq, a.score FROM session s
             JOIN assessment a ON a.session_id = s.session_id WHERE s.episode_id = ?1)
         SELECT ?1, instrument_id, min(seq),
            (SELECT f.score FROM mine f WHERE f.instrument_id = m.instrument_id
                ORDER BY f.seq LIMIT 1),
            max(seq),
            (SELECT l.score FROM mine l WHERE l.instrument_id = m.instrument_id
                ORDER BY l.seq DESC LIMIT 1),
            count(*), max(CASE WHEN seq = 2 THEN score END), max(CASE WHEN seq = 3 THEN score END)
         FROM mine m GROUP BY instrument_id",
        [episode],
    )?;
    exec(
        tx,
        "DELETE FROM episode_attendance WHERE episode_id = ?1",
        [episode],
    )?;
    exec(
        tx,
        "INSERT INTO episode_attendance (episode_id, attended_treatment)
         SELECT episode_id, count(*) FROM session
         WHERE episode_id = ?1 AND attended = 1 AND kind = 'treatment' GROUP BY episode_id",
        [episode],
    )?;
    Ok(())
}

fn check_owner(raw: &str, owner: i64, patient: i64) -> FieldResult<()> {
    if owner == patient {
        return Ok(());
    }
    Err(FieldError::new(
        "patient_id",
        format!("episode {raw} is already recorded for a different patient"),
    ))
}

/// Looks a pseudonym up in `table`, inserting a bare row if absent. Returns (rowid, created).
fn get_or_insert(
    tx: &Transaction<'_>,
    table: &str,
    key: &str,
    pseudonym: &str,
) -> FieldResult<(i64, bool)> {
    let select = format!("SELECT {key} FROM {table} WHERE pseudonym = ?1");
    if let Some(id) = row(tx, &select, [pseudonym], |r| r.get(0))? {
        return Ok((id, false));
    }
    exec(
        tx,
        &format!("INSERT INTO {table} (pseudonym) VALUES (?1)"),
        [pseudonym],
    )?;
    Ok((tx.last_insert_rowid(), true))
}

/// Runs `sql` through the connection's statement cache: the writer's statements run once per
/// row or entity, and preparing them afresh each time would dominate large imports.
fn exec(tx: &Transaction<'_>, sql: &str, params: impl Params) -> FieldResult<usize> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map_err(db)
}

/// The first row of `sql` mapped by `f`, `None` if there is none; cached like [`exec`].
fn row<T>(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> FieldResult<Option<T>> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, f).optional())
        .map_err(db)
}

/// A database error while writing a row: reported against the row, since it rolls back the file.
fn db(e: rusqlite::Error) -> FieldError {
    FieldError::new("(store)", format!("database error: {e}"))
}
