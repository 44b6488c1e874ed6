//! Normalised records that both readers (CSV, FHIR) produce and the writer stores. Identifiers
//! here are still the raw local ones; the writer replaces them with pseudonyms.
//!
//! Attribute records are read through [`Fields`], keyed by CSV column name, so both formats
//! parse every attribute with the same code.

use super::fields::{self, FieldResult};

/// The therapist id meaning "not recorded" (FHIR scores that name no practitioner, or a CSV
/// `therapist_id` of `unknown`): its episodes count for the clinic, and it gets no track
/// record, label or place in the between-therapist variance (`therapist.unrecorded`).
pub(crate) const UNRECORDED_THERAPIST: &str = "unknown";

/// Where a reader finds a record's attributes, by CSV column name.
pub(crate) trait Fields {
    /// The value of `column`, `None` if absent or empty.
    fn get(&self, column: &str) -> Option<String>;

    /// How error messages name `column` in this format.
    fn name(&self, column: &str) -> String;

    /// Parses `column` with `f` when present.
    fn parse<T>(
        &self,
        column: &str,
        f: impl Fn(&str, &str) -> FieldResult<T>,
    ) -> FieldResult<Option<T>> {
        self.get(column)
            .map(|v| f(&self.name(column), &v))
            .transpose()
    }
}

fn count(field: &str, value: &str) -> FieldResult<i64> {
    fields::integer(field, value, 0, 10_000)
}

fn year(field: &str, value: &str) -> FieldResult<i64> {
    fields::integer(field, value, 1900, 2200)
}

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
    pub(crate) delivery: Option<String>,
    pub(crate) availability: Option<String>,
    pub(crate) new_per_week: Option<i64>,
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

    pub(crate) fn read(f: &impl Fields) -> FieldResult<Self> {
        Ok(Self {
            age: f.parse("age", |n, v| fields::integer(n, v, 0, 130))?,
            employment: f.get("employment"),
            prior_treatment: f.parse("prior_treatment", fields::boolean)?,
            psychotropic_med: f.parse("psychotropic_med", fields::boolean)?,
            long_term_condition: f.parse("long_term_condition", fields::boolean)?,
            disability: f.parse("disability", fields::boolean)?,
            duration_of_problem_months: f.parse("duration_of_problem_months", fields::number)?,
            comorbidity_count: f.parse("comorbidity_count", count)?,
            referral_source: f.get("referral_source"),
            wsas: f.parse("wsas", fields::number)?,
        })
    }
}

impl TherapistAttrs {
    pub(crate) fn read(f: &impl Fields) -> FieldResult<Self> {
        Ok(Self {
            profession: f.get("profession"),
            grade: f.get("grade"),
            start_year: f.parse("start_year", year)?,
            gender: f.get("gender"),
            languages: f.get("languages"),
            modalities: f.get("modalities"),
            accepting_new: f.parse("accepting_new", fields::boolean)?,
            wait_weeks: f.parse("wait_weeks", fields::number)?,
            payers: f.get("payers"),
            location: f.get("location"),
            delivery: f.parse("delivery", fields::delivery)?,
            availability: f.parse("availability", fields::availability)?,
            new_per_week: f.parse("new_per_week", count)?,
        })
    }
}

impl PatientAttrs {
    pub(crate) fn read(f: &impl Fields) -> FieldResult<Self> {
        Ok(Self {
            birth_year: f.parse("birth_year", year)?,
            sex: f.parse("sex", fields::sex)?.map(str::to_string),
            ethnicity_group: f.get("ethnicity_group"),
            deprivation_decile: f
                .parse("deprivation_decile", |n, v| fields::integer(n, v, 1, 10))?,
        })
    }
}

impl EpisodeAttrs {
    pub(crate) fn read(f: &impl Fields) -> FieldResult<Self> {
        Ok(Self {
            referral_date: f.parse("referral_date", fields::date)?,
            start_date: f.parse("start_date", fields::date)?,
            end_date: f.parse("end_date", fields::date)?,
            end_reason: f.parse("end_reason", |n, v| {
                fields::one_of(n, v, fields::END_REASONS)
            })?,
            sessions_planned: f.parse("sessions_planned", count)?,
            sessions_attended: f.parse("sessions_attended", count)?,
            step: f.parse("step", |n, v| fields::one_of(n, v, fields::STEPS))?,
            provisional_dx: f.get("provisional_dx"),
        })
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
                if inst.whole_point_totals() && score.fract() != 0.0 {
                    return Err(FieldError::new(
                        "score",
                        format!(
                            "{score} is not a whole number: {} totals are whole points",
                            inst.id
                        ),
                    ));
                }
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
