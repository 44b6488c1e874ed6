//! Normalised records that both readers (CSV, FHIR) produce and the writer stores. Identifiers
//! here are still the raw local ones; the writer replaces them with pseudonyms.

/// Matching attributes of a therapist. `None` leaves a stored value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TherapistAttrs {
    pub(crate) profession: Option<String>,
    pub(crate) grade: Option<String>,
    pub(crate) start_year: Option<i64>,
    pub(crate) gender: Option<String>,
    pub(crate) languages: Option<String>,
    pub(crate) modalities: Option<String>,
    pub(crate) accepting_new: Option<bool>,
    pub(crate) wait_weeks: Option<f64>,
    pub(crate) payers: Option<String>,
    pub(crate) location: Option<String>,
}

/// Demographics of a patient. `None` leaves a stored value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PatientAttrs {
    pub(crate) birth_year: Option<i64>,
    pub(crate) sex: Option<String>,
    pub(crate) ethnicity_group: Option<String>,
    pub(crate) deprivation_decile: Option<i64>,
}

/// Intake covariates of an episode.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Casemix {
    pub(crate) age: Option<i64>,
    pub(crate) employment: Option<String>,
    pub(crate) prior_treatment: Option<bool>,
    pub(crate) psychotropic_med: Option<bool>,
    pub(crate) long_term_condition: Option<bool>,
    pub(crate) disability: Option<bool>,
    pub(crate) duration_of_problem_months: Option<f64>,
    pub(crate) comorbidity_count: Option<i64>,
    pub(crate) referral_source: Option<String>,
    pub(crate) wsas: Option<f64>,
}

impl Casemix {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Casemix::default()
    }
}

/// An episode (referral) with its attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EpisodeAttrs {
    pub(crate) referral_date: Option<String>,
    pub(crate) start_date: Option<String>,
    pub(crate) end_date: Option<String>,
    pub(crate) end_reason: Option<&'static str>,
    pub(crate) sessions_planned: Option<i64>,
    pub(crate) sessions_attended: Option<i64>,
    pub(crate) step: Option<&'static str>,
    pub(crate) provisional_dx: Option<String>,
}

/// Who a session belongs to, by raw identifiers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionKey {
    pub(crate) patient: String,
    pub(crate) therapist: String,
    pub(crate) episode: String,
    pub(crate) seq: i64,
}

/// A session as recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRecord {
    pub(crate) key: SessionKey,
    pub(crate) date: String,
    pub(crate) attended: bool,
    pub(crate) kind: &'static str,
}

/// One administration of an instrument, already scored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AssessmentRecord {
    pub(crate) instrument_id: String,
    pub(crate) score: f64,
    pub(crate) n_missing: usize,
    pub(crate) prorated: bool,
    /// (1-based item number, item code, value) for answered items.
    pub(crate) items: Vec<(usize, String, f64)>,
}

impl AssessmentRecord {
    /// Scores one administration from its total and/or item answers (instrument item order,
    /// `None` = missing). A given total must lie in range and, when every item is answered,
    /// equal their sum; without a total, it is computed from the items (prorated when one is
    /// missing, `protocol::scoring`).
    pub(crate) fn from_parts(
        inst: &protocol::instrument::Instrument,
        score: Option<f64>,
        items: Option<&[Option<f64>]>,
    ) -> Result<Self, super::fields::FieldError> {
        use super::fields::FieldError;
        let from_items = items
            .map(|answers| protocol::scoring::total_from_items(inst, answers))
            .transpose()
            .map_err(|e| FieldError::new("items", e.to_string()))?;
        let record = |score: f64, n_missing: usize, prorated: bool| {
            let answered = items.unwrap_or_default().iter().enumerate();
            let items = answered
                .filter_map(|(i, v)| v.map(|v| (i + 1, inst.items[i].code.clone(), v)))
                .collect();
            AssessmentRecord {
                instrument_id: inst.id.clone(),
                score,
                n_missing,
                prorated,
                items,
            }
        };
        match (score, from_items) {
            (Some(score), from_items) => {
                if !inst.in_range(score) {
                    return Err(FieldError::new(
                        "score",
                        format!(
                            "{score} is outside the {} range [{}, {}]",
                            inst.id, inst.min, inst.max
                        ),
                    ));
                }
                if let Some(t) = from_items
                    && !t.prorated
                    && (t.total - score).abs() > 1e-9
                {
                    return Err(FieldError::new(
                        "score",
                        format!(
                            "{score} does not equal the sum of the item answers ({})",
                            t.total
                        ),
                    ));
                }
                Ok(record(score, from_items.map_or(0, |t| t.n_missing), false))
            }
            (None, Some(t)) => Ok(record(t.total, t.n_missing, t.prorated)),
            (None, None) => Err(FieldError::new(
                "score",
                "is empty (give a total score or the item answers)",
            )),
        }
    }
}
