//! Scores in the shapes real exports carry them: QuestionnaireResponses (with or without a
//! Questionnaire, linkIds that are LOINC codes, `/LOINC` paths, `PHQ.n` ordinals, items nested
//! in groups) and Observations (a total coded with the total's or the panel's code, a panel
//! whose `hasMember` item Observations carry the answers, item Observations on their own).
//! Each becomes a [`Score`]: who, when, which instrument, the total and/or the item answers.
//! Whatever is not a score of a registered instrument is counted in the [`Tally`] by reason.

use std::collections::{BTreeMap, HashMap, HashSet};

use protocol::instrument::Instrument;
use serde_json::Value;

use super::super::fields::{self, FieldError, FieldResult};
use super::bundle::{Bundle, Res, Target, codings, value_x};
use crate::registry::Registry;

const ORDINAL_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";
const ITEM_WEIGHT: &str = "http://hl7.org/fhir/StructureDefinition/itemWeight";

/// Records skipped and why, for the import summary.
#[derive(Debug, Default)]
pub(crate) struct Tally(pub(crate) BTreeMap<String, u64>);

impl Tally {
    pub(crate) fn add(&mut self, reason: impl Into<String>) {
        *self.0.entry(reason.into()).or_default() += 1;
    }
}

/// One administration of an instrument as a file records it.
pub(crate) struct Score<'b> {
    pub(crate) source: &'b Res,
    pub(crate) instrument: &'b str,
    /// `None` when only its Encounter says whose.
    pub(crate) patient: Option<String>,
    /// `YYYY-MM-DD`; `None` when only its Encounter says when.
    pub(crate) date: Option<String>,
    pub(crate) therapist: Option<String>,
    /// The Encounter it names, when it names one.
    pub(crate) encounter: Option<String>,
    pub(crate) total: Option<f64>,
    /// Answers in the instrument's item order (`None`: not answered); `None` when no item was
    /// given.
    pub(crate) items: Option<Vec<Option<f64>>>,
}

/// Whose score, when, by whom, at which encounter.
struct Context {
    patient: Option<String>,
    date: Option<String>,
    therapist: Option<String>,
    encounter: Option<String>,
}

impl Context {
    /// The score of `source` in this context.
    fn score<'b>(
        self,
        source: &'b Res,
        inst: &'b Instrument,
        total: Option<f64>,
        items: Option<Vec<Option<f64>>>,
    ) -> Score<'b> {
        Score {
            source,
            instrument: &inst.id,
            patient: self.patient,
            date: self.date,
            therapist: self.therapist,
            encounter: self.encounter,
            total,
            items,
        }
    }
}

/// The subject, date, performer and encounter of a score resource.
fn context(
    b: &Bundle,
    r: &Res,
    date_paths: &[&[&str]],
    therapist_paths: &[&[&str]],
) -> FieldResult<Context> {
    let patient = b.reference(r, "subject", &["subject", "reference"], "Patient")?;
    let date = date_paths
        .iter()
        .find_map(|p| r.str(p).map(|v| (p.join("."), v)))
        .map(|(field, value)| fields::date(&field, value))
        .transpose()?;
    // The first performer that is a practitioner (a patient reporting on themselves is not a
    // therapist).
    let mut therapist = None;
    for path in therapist_paths {
        if let Some(reference) = r.str(path)
            && let Ok(id) = b.reference_to(reference, &path.join("."), "Practitioner")
        {
            therapist = Some(id);
            break;
        }
    }
    let encounter = b.reference(r, "encounter", &["encounter", "reference"], "Encounter")?;
    if encounter.is_none() {
        if patient.is_none() {
            return Err(FieldError::new(
                "subject",
                "is missing, and no encounter says whose score this is",
            ));
        }
        if date.is_none() {
            return Err(FieldError::new(
                date_paths[0].join("."),
                "is missing, and no encounter says when: a score needs the date it was taken",
            ));
        }
    }
    Ok(Context {
        patient,
        date,
        therapist,
        encounter,
    })
}

/// A Questionnaire's codes: what it is and what its items are.
#[derive(Default, Clone)]
struct Form {
    /// `code` of the Questionnaire, then its url, name, title and id.
    codes: Vec<String>,
    names: Vec<String>,
    /// linkId → the item's first code.
    item_codes: HashMap<String, String>,
    /// (linkId, answer code) → the answer's weight (ordinalValue / itemWeight).
    weights: HashMap<(String, String), f64>,
}

impl Form {
    fn of(q: &Value) -> Self {
        let mut form = Form {
            codes: codings(q.get("code"))
                .filter_map(|c| c.get("code")?.as_str().map(str::to_string))
                .collect(),
            ..Form::default()
        };
        for key in ["url", "name", "title", "id"] {
            if let Some(v) = q.get(key).and_then(Value::as_str) {
                form.names.push(v.to_string());
            }
        }
        form.add_items(q.get("item"));
        form
    }

    fn add_items(&mut self, items: Option<&Value>) {
        for item in items.and_then(Value::as_array).into_iter().flatten() {
            let link = item
                .get("linkId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(code) = item
                .get("code")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .and_then(|c| c.get("code"))
                .and_then(Value::as_str)
            {
                self.item_codes.insert(link.to_string(), code.to_string());
            }
            for option in item
                .get("answerOption")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(coding) = option.get("valueCoding") else {
                    continue;
                };
                let weight = weight_of(option).or_else(|| weight_of(coding));
                if let (Some(code), Some(w)) = (coding.get("code").and_then(Value::as_str), weight)
                {
                    self.weights.insert((link.to_string(), code.to_string()), w);
                }
            }
            self.add_items(item.get("item"));
        }
    }

    /// The instrument this form is, by its code, its names, or most of its item codes.
    fn instrument<'r>(&self, registry: &'r Registry) -> Option<&'r Instrument> {
        self.codes
            .iter()
            .find_map(|c| registry.by_panel(c).or_else(|| registry.find(c)))
            .or_else(|| self.names.iter().find_map(|n| registry.find(n)))
            .or_else(|| by_item_codes(registry, self.item_codes.values().map(String::as_str)))
            .or_else(|| self.names.iter().find_map(|n| registry.named_in(last(n))))
    }
}

/// The Questionnaires of a file, each read once: by url (without `|version`) and by id.
pub(crate) struct Forms {
    forms: Vec<Form>,
    by_url: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
}

impl Forms {
    pub(crate) fn of(b: &Bundle) -> Self {
        let mut forms = Forms {
            forms: Vec::new(),
            by_url: HashMap::new(),
            by_id: HashMap::new(),
        };
        for q in b.of("Questionnaire") {
            let i = forms.forms.len();
            forms.forms.push(Form::of(&q.value));
            if let Some(url) = q.str(&["url"]) {
                forms.by_url.entry(url.to_string()).or_insert(i);
            }
            forms.by_id.entry(q.id.clone()).or_insert(i);
        }
        forms
    }

    /// The form a canonical names: by url, or `…Questionnaire/<id>` by id.
    fn find(&self, canonical: &str) -> Option<&Form> {
        let url = canonical.split('|').next().unwrap_or(canonical);
        let by_id = || {
            let (head, id) = url.rsplit_once('/')?;
            head.ends_with("Questionnaire")
                .then(|| self.by_id.get(id))
                .flatten()
        };
        self.by_url.get(url).or_else(by_id).map(|i| &self.forms[*i])
    }
}

/// The ordinalValue or itemWeight extension of an element.
fn weight_of(v: &Value) -> Option<f64> {
    v.get("extension")?.as_array()?.iter().find_map(|e| {
        let url = e.get("url")?.as_str()?;
        (url == ORDINAL_VALUE || url == ITEM_WEIGHT)
            .then(|| value_x(e)?.as_f64())
            .flatten()
    })
}

/// The instrument most of whose item codes are among `codes`.
fn by_item_codes<'r, 'c>(
    registry: &'r Registry,
    codes: impl Iterator<Item = &'c str>,
) -> Option<&'r Instrument> {
    let codes: HashSet<&str> = codes.collect();
    registry
        .instruments()
        .iter()
        .filter(|i| !i.items.is_empty())
        .map(|i| {
            (
                i,
                i.items
                    .iter()
                    .filter(|it| codes.contains(it.code.as_str()))
                    .count(),
            )
        })
        .filter(|(i, n)| 2 * n >= i.items.len() && *n > 0)
        .max_by_key(|(_, n)| *n)
        .map(|(i, _)| i)
}

/// The last segment of a canonical URL, without its `|version`.
fn last(canonical: &str) -> &str {
    let c = canonical.split('|').next().unwrap_or(canonical);
    c.rsplit(['/', '#']).find(|s| !s.is_empty()).unwrap_or(c)
}

/// A LOINC-looking code in a linkId or `definition`: `44250-9`, `/44250-9`,
/// `http://loinc.org/rdf#44250-9`, `…/Questionnaire/x#44250-9`.
fn code_in(text: &str) -> &str {
    last(text)
}

/// Every answered item of a response, groups flattened: (linkId, definition, first answer).
fn answered(items: Option<&Value>, out: &mut Vec<(String, Option<String>, Value)>) {
    for item in items.and_then(Value::as_array).into_iter().flatten() {
        let link = item
            .get("linkId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let definition = item
            .get("definition")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(answers) = item.get("answer").and_then(Value::as_array) {
            if let Some(first) = answers.first() {
                out.push((link.to_string(), definition, first.clone()));
            }
            for a in answers {
                answered(a.get("item"), out);
            }
        }
        answered(item.get("item"), out);
    }
}

/// Whether `s` has the form of a LOINC code: digits, a hyphen, one check digit.
fn loinc_like(s: &str) -> bool {
    s.split_once('-').is_some_and(|(n, check)| {
        (1..=7).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && check.len() == 1
            && check.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The item number an ordinal linkId gives: `PHQ.3`, `PHQ-9.3`, `phq9_3`, `q3`, `3`. A linkId
/// that is (or ends in) a LOINC code is not an ordinal: `/69722-7` is not item 7.
fn ordinal(link: &str) -> Option<usize> {
    if loinc_like(code_in(link)) {
        return None;
    }
    let digits = link.len() - link.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 3 {
        return None;
    }
    let (head, number) = link.split_at(link.len() - digits);
    let plain = head.is_empty()
        || head.ends_with(['.', '_', '-', '/'])
        || head.eq_ignore_ascii_case("q")
        || head.eq_ignore_ascii_case("item");
    plain.then(|| number.parse().ok()).flatten()
}

/// A number an answer or Observation gives: ordinal weight, LOINC answer code, integer,
/// decimal, quantity, or a numeric string (`Ok(None)`: no value of these kinds).
fn numeric(v: &Value, weights: Option<(&Form, &str)>, tally: &mut Tally) -> Option<f64> {
    if let Some(coding) = v
        .get("valueCoding")
        .or_else(|| codings(v.get("valueCodeableConcept")).next())
    {
        let code = coding.get("code").and_then(Value::as_str);
        return weight_of(coding)
            .or_else(|| {
                let (form, link) = weights?;
                form.weights
                    .get(&(link.to_string(), code?.to_string()))
                    .copied()
            })
            .or_else(|| protocol::scoring::loinc_answer_value(code?));
    }
    if let Some(n) = v
        .get("valueInteger")
        .or_else(|| v.get("valueDecimal"))
        .or_else(|| v.pointer("/valueQuantity/value"))
        .and_then(Value::as_f64)
    {
        return Some(n);
    }
    let text = v.get("valueString").and_then(Value::as_str)?;
    let n = text.trim().parse::<f64>().ok().filter(|n| n.is_finite())?;
    tally.add("answers given as text holding a number: read as numbers");
    Some(n)
}

/// A QuestionnaireResponse's score, or `None` when it is not a finished administration.
pub(crate) fn questionnaire_response<'b>(
    b: &'b Bundle,
    forms: &Forms,
    r: &'b Res,
    registry: &'b Registry,
    tally: &mut Tally,
) -> FieldResult<Option<Score<'b>>> {
    let status = r.str(&["status"]).unwrap_or("unknown");
    if !matches!(status, "completed" | "amended") {
        tally.add(format!(
            "QuestionnaireResponses with status {status:?}: not a finished administration, skipped"
        ));
        return Ok(None);
    }
    let mut answers = Vec::new();
    answered(r.value.get("item"), &mut answers);
    let canonical = r.str(&["questionnaire"]).unwrap_or("");
    let owned = form_of(forms, r, canonical);
    let form = owned.as_deref();
    let links: Vec<&str> = answers.iter().map(|(l, _, _)| l.as_str()).collect();
    let inst = form
        .and_then(|f| f.instrument(registry))
        .or_else(|| {
            registry.instruments().iter().find(|i| {
                i.loinc_panel
                    .as_deref()
                    .is_some_and(|p| !canonical.is_empty() && canonical.contains(p))
            })
        })
        .or_else(|| {
            (!canonical.is_empty())
                .then(|| registry.find(last(canonical)))
                .flatten()
        })
        .or_else(|| {
            let definitions = answers
                .iter()
                .filter_map(|(_, d, _)| d.as_deref().map(code_in));
            by_item_codes(
                registry,
                links.iter().map(|l| code_in(l)).chain(definitions),
            )
        })
        .or_else(|| {
            (!canonical.is_empty())
                .then(|| registry.named_in(last(canonical)))
                .flatten()
        })
        .ok_or_else(|| unidentified(canonical, form.is_some(), &links))?;
    let ctx = context(
        b,
        r,
        &[&["authored"]],
        &[&["author", "reference"], &["source", "reference"]],
    )?;
    let mut items = vec![None; inst.items.len()];
    let mut total = None;
    let mut any_item = false;
    for (n, (link, definition, answer)) in answers.iter().enumerate() {
        let code = form
            .and_then(|f| f.item_codes.get(link).map(String::as_str))
            .or_else(|| definition.as_deref().map(code_in))
            .unwrap_or_else(|| code_in(link));
        let index = inst
            .items
            .iter()
            .position(|it| it.code == code || it.code == code_in(link))
            .or_else(|| {
                let n = ordinal(link)?;
                (1..=inst.items.len()).contains(&n).then_some(n - 1)
            });
        let is_total = inst
            .loinc_total
            .as_deref()
            .is_some_and(|t| t == code || t == code_in(link));
        if !is_total && index.is_none() {
            continue;
        }
        let value = numeric(answer, form.map(|f| (f, link.as_str())), tally).ok_or_else(|| {
            FieldError::new(
                format!("item[{n}] (linkId {link:?})"),
                "has no numeric answer, LOINC answer code, ordinalValue or itemWeight",
            )
        })?;
        match index {
            Some(i) if !is_total => {
                items[i] = Some(value);
                any_item = true;
            }
            _ => total = Some(value),
        }
    }
    if !any_item && total.is_none() {
        return Err(FieldError::new(
            "item",
            format!(
                "no answer of a {} item or total was found (linkIds: {})",
                inst.id,
                sample(&links)
            ),
        ));
    }
    Ok(Some(ctx.score(r, inst, total, any_item.then_some(items))))
}

/// The Questionnaire a response answers, when the file has it (contained `#id`, or in the
/// file by url or id).
fn form_of<'f>(forms: &'f Forms, r: &Res, canonical: &str) -> Option<std::borrow::Cow<'f, Form>> {
    use std::borrow::Cow;
    if let Some(id) = canonical.strip_prefix('#') {
        return r
            .value
            .get("contained")?
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
            .map(|q| Cow::Owned(Form::of(q)));
    }
    forms.find(canonical).map(Cow::Borrowed)
}

fn sample(links: &[&str]) -> String {
    let shown: Vec<&str> = links.iter().take(5).copied().collect();
    let more = links.len().saturating_sub(shown.len());
    match more {
        0 => shown.join(", "),
        n => format!("{}, … {n} more", shown.join(", ")),
    }
}

fn unidentified(canonical: &str, had_form: bool, links: &[&str]) -> FieldError {
    FieldError::new(
        "questionnaire",
        format!(
            "the instrument could not be identified: looked at the questionnaire \
             {canonical:?} ({}; \
             no registered instrument's LOINC panel code or name in it) and the {} answered \
             linkIds ({}; not the LOINC item codes of a registered instrument). Declare it: add \
             the questionnaire's name to the instrument's aliases in an instrument TOML \
             (mbc-node instruments add), or export the Questionnaire with the responses",
            if had_form {
                "in this file, its code and items unknown"
            } else {
                "not in this file"
            },
            links.len(),
            sample(links)
        ),
    )
}

/// What an Observation's code says it is.
enum Kind<'r> {
    Total(&'r Instrument),
    Panel(&'r Instrument),
    Item(&'r Instrument, usize),
}

fn kind<'r>(registry: &'r Registry, codes: &[&str]) -> Option<Kind<'r>> {
    for code in codes {
        for inst in registry.instruments() {
            if inst.loinc_total.as_deref() == Some(code)
                || inst.snomed_total.as_deref() == Some(code)
            {
                return Some(Kind::Total(inst));
            }
            if inst.loinc_panel.as_deref() == Some(code) {
                return Some(Kind::Panel(inst));
            }
        }
    }
    codes
        .iter()
        .find_map(|code| {
            registry.instruments().iter().find_map(|inst| {
                let i = inst.items.iter().position(|it| it.code == *code)?;
                Some(Kind::Item(inst, i))
            })
        })
        // A clinic's own code for a total (`import --mapping`, [instruments]) or an
        // instrument's id or alias used as a code.
        .or_else(|| codes.iter().find_map(|c| registry.find(c).map(Kind::Total)))
}

/// Every score the file's Observations hold. Item Observations a panel lists in `hasMember`
/// join the panel; the others are grouped by patient, time and instrument.
pub(crate) fn observations<'b>(
    b: &'b Bundle,
    registry: &'b Registry,
    tally: &mut Tally,
) -> Vec<Result<Score<'b>, (&'b Res, FieldError)>> {
    let mut out = Vec::new();
    let finished = |r: &Res| matches!(r.str(&["status"]), Some("final" | "amended" | "corrected"));
    // Members of panels, consumed by them.
    let mut members: HashSet<*const Res> = HashSet::new();
    for r in b.of("Observation") {
        let codes = r.codes(&["code"]);
        if let Some(Kind::Panel(_)) = kind(registry, &codes) {
            for m in r
                .value
                .get("hasMember")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(Target::Here(member)) = m
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(|x| b.resolve(x))
                {
                    members.insert(member as *const Res);
                }
            }
        }
    }
    let mut loose: BTreeMap<(String, String, String), Vec<&'b Res>> = BTreeMap::new();
    for r in b.of("Observation") {
        let codes = r.codes(&["code"]);
        let Some(k) = kind(registry, &codes) else {
            let survey = r.codes(&["category"]).contains(&"survey");
            match (survey, codes.first()) {
                (true, Some(code)) => {
                    let display = codings(r.value.get("code"))
                        .find_map(|c| c.get("display")?.as_str())
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    tally.add(format!(
                        "survey Observations with code {code}{display}: not a registered \
                         instrument, skipped"
                    ));
                }
                _ => tally.add("other Observations (not questionnaire scores): ignored"),
            }
            continue;
        };
        if members.contains(&(r as *const Res)) {
            continue;
        }
        if !finished(r) {
            tally.add(format!(
                "score Observations with status {:?}: not final, skipped",
                r.str(&["status"]).unwrap_or("unknown")
            ));
            continue;
        }
        match k {
            Kind::Item(inst, _) => {
                let at = effective(r).unwrap_or_default().to_string();
                let patient = r
                    .str(&["subject", "reference"])
                    .unwrap_or_default()
                    .to_string();
                loose
                    .entry((patient, at, inst.id.clone()))
                    .or_default()
                    .push(r);
            }
            Kind::Total(inst) | Kind::Panel(inst) => {
                out.push(observation(b, registry, r, inst, tally).map_err(|e| (r, e)));
            }
        }
    }
    for ((_, _, instrument), group) in loose {
        // Unwrap safety: the key is the id of a registered instrument.
        let inst = registry.get(&instrument).unwrap();
        out.push(items_only(b, registry, &group, inst, tally).map_err(|e| (group[0], e)));
    }
    out
}

fn effective(r: &Res) -> Option<&str> {
    r.str(&["effectiveDateTime"])
        .or_else(|| r.str(&["effectivePeriod", "start"]))
        .or_else(|| r.str(&["effectiveInstant"]))
        .or_else(|| r.str(&["issued"]))
}

const DATES: &[&[&str]] = &[
    &["effectiveDateTime"],
    &["effectivePeriod", "start"],
    &["effectiveInstant"],
    &["issued"],
];
const PERFORMERS: &[&[&str]] = &[
    &["performer", "0", "reference"],
    &["performer", "1", "reference"],
    &["performer", "2", "reference"],
];

/// A total or panel Observation, with the members and components that are its items.
fn observation<'b>(
    b: &'b Bundle,
    registry: &'b Registry,
    r: &'b Res,
    inst: &'b Instrument,
    tally: &mut Tally,
) -> FieldResult<Score<'b>> {
    let ctx = context(b, r, DATES, PERFORMERS)?;
    let mut total = numeric(&r.value, None, tally);
    let mut items = vec![None; inst.items.len()];
    let mut any_item = false;
    let members = r
        .value
        .get("hasMember")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let parts = members
        .filter_map(|m| match b.resolve(m.get("reference")?.as_str()?) {
            Some(Target::Here(member)) => Some(&member.value),
            _ => None,
        })
        .chain(
            r.value
                .get("component")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    for part in parts {
        let codes: Vec<&str> = codings(part.get("code"))
            .filter_map(|c| c.get("code")?.as_str())
            .collect();
        let Some(value) = numeric(part, None, tally) else {
            continue;
        };
        match kind(registry, &codes) {
            Some(Kind::Item(of, i)) if of.id == inst.id => {
                items[i] = Some(value);
                any_item = true;
            }
            Some(Kind::Total(of)) if of.id == inst.id => {
                if let Some(t) = total
                    && t != value
                {
                    return Err(FieldError::new(
                        "hasMember",
                        format!("its total member says {value}, the panel {t}"),
                    ));
                }
                total = Some(value);
            }
            _ => {}
        }
    }
    if total.is_none() && !any_item {
        let absent: Vec<&str> = r
            .value
            .get("hasMember")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("reference")?.as_str())
            .filter(|m| !matches!(b.resolve(m), Some(Target::Here(_))))
            .collect();
        let why = if absent.is_empty() {
            format!(
                "a {} score Observation with no value and no item members",
                inst.id
            )
        } else {
            format!(
                "a {} panel with no value of its own, whose hasMember items ({}) are not in this \
                 file: export the panel with its members (one Bundle or NDJSON file)",
                inst.id,
                sample(&absent)
            )
        };
        return Err(FieldError::new("value[x]", why));
    }
    Ok(ctx.score(r, inst, total, any_item.then_some(items)))
}

/// Item Observations without a panel, taken at one time for one patient: one administration.
fn items_only<'b>(
    b: &'b Bundle,
    registry: &'b Registry,
    group: &[&'b Res],
    inst: &'b Instrument,
    tally: &mut Tally,
) -> FieldResult<Score<'b>> {
    let ctx = context(b, group[0], DATES, PERFORMERS)?;
    let mut items = vec![None; inst.items.len()];
    for r in group {
        if let Some(Kind::Item(_, i)) = kind(registry, &r.codes(&["code"])) {
            items[i] = numeric(&r.value, None, tally);
        }
    }
    Ok(ctx.score(group[0], inst, None, Some(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_link_ids() {
        for (link, n) in [
            ("PHQ.3", Some(3)),
            ("PHQ-9.10", Some(10)),
            ("phq9_3", Some(3)),
            ("q4", Some(4)),
            ("7", Some(7)),
            ("item2", Some(2)),
            ("PHQ9", None),
            ("abc", None),
            ("/44250-9", None),
            ("/69722-7", None),
            ("44261-6", None),
        ] {
            assert_eq!(ordinal(link), n, "{link}");
        }
        assert_eq!(code_in("/44250-9"), "44250-9");
        assert_eq!(code_in("http://loinc.org/rdf#44250-9"), "44250-9");
        assert_eq!(last("http://x/Questionnaire/phq-9|1.0"), "phq-9");
    }
}
