//! The resources of one FHIR file and the references between them.
//!
//! A file is a Bundle, a JSON array of resources, a single resource, or NDJSON. Real exports
//! reference resources in four ways, all resolved here: `Type/id` (also at the end of an
//! absolute URL, with or without `/_history/n`), a Bundle entry's `fullUrl` (`urn:uuid:…` in
//! transaction bundles such as Synthea's), a conditional reference
//! `Type?identifier=system|value` (matched against the identifiers of the file's resources), and
//! `#id` for a resource contained in the referring one. A resource without `id` takes the last
//! segment of its `fullUrl`. Files written in FHIR STU3 or DSTU2 are recognised by elements R4
//! does not have and refused as a whole.

use std::collections::HashMap;

use serde_json::Value;

use super::super::fields::{self, FieldError, FieldResult};
use super::super::{ImportError, Location};
use super::EXT_BASE;

/// One resource with where it came from.
pub(crate) struct Res {
    pub(crate) value: Value,
    pub(crate) ty: String,
    pub(crate) id: String,
    full_url: Option<String>,
}

impl Res {
    pub(crate) fn loc(&self) -> Location {
        Location::Resource(format!("{}/{}", self.ty, self.id))
    }

    pub(crate) fn str(&self, path: &[&str]) -> Option<&str> {
        path_get(&self.value, path)?.as_str()
    }

    /// An mbc-node extension's value (valueString, valueInteger, …).
    pub(crate) fn ext(&self, name: &str) -> Option<&Value> {
        self.value
            .get("extension")?
            .as_array()?
            .iter()
            .find_map(|e| {
                let url = e.get("url")?.as_str()?;
                (url.strip_prefix(EXT_BASE) == Some(name))
                    .then(|| value_x(e))
                    .flatten()
            })
    }

    pub(crate) fn ext_str(&self, name: &str) -> Option<String> {
        match self.ext(name)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    pub(crate) fn ext_parse<T>(
        &self,
        name: &str,
        f: impl Fn(&str, &str) -> FieldResult<T>,
    ) -> FieldResult<Option<T>> {
        self.ext_str(name)
            .map(|v| f(&format!("extension {name}"), &v))
            .transpose()
    }

    /// The codes of `code.coding` (or of any CodeableConcept at `path`).
    pub(crate) fn codes(&self, path: &[&str]) -> Vec<&str> {
        codings(path_get(&self.value, path))
            .filter_map(|c| c.get("code")?.as_str())
            .collect()
    }
}

/// The codings of a CodeableConcept (or of a list of them).
pub(crate) fn codings(concept: Option<&Value>) -> impl Iterator<Item = &Value> {
    let concepts: Vec<&Value> = match concept {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(v) => vec![v],
        None => vec![],
    };
    concepts
        .into_iter()
        .filter_map(|c| c.get("coding")?.as_array())
        .flatten()
}

pub(crate) fn path_get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(*key),
        })
}

/// The `value[x]` of an extension or answer.
pub(crate) fn value_x(v: &Value) -> Option<&Value> {
    v.as_object()?
        .iter()
        .find_map(|(k, v)| k.starts_with("value").then_some(v))
}

/// The resource types the importer reads; every other type is counted and left alone.
pub(crate) const READ_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "EpisodeOfCare",
    "Encounter",
    "QuestionnaireResponse",
    "Observation",
    "Questionnaire",
];

/// The resources of a file, indexed for references.
pub(crate) struct Bundle {
    pub(crate) all: Vec<Res>,
    /// Resource types not read, with their counts.
    pub(crate) other: Vec<(String, u64)>,
    by_key: HashMap<String, usize>,
    by_url: HashMap<String, usize>,
    by_identifier: HashMap<String, usize>,
}

/// What a reference points at.
pub(crate) enum Target<'b> {
    /// A resource of this file.
    Here(&'b Res),
    /// A resource elsewhere, by its type and the identifier that names it (the logical id of
    /// `Type/id`, or the value of a conditional reference's identifier).
    Elsewhere { ty: String, id: String },
}

impl Bundle {
    /// Splits and indexes a file's content.
    pub(crate) fn parse(content: &[u8], file: &str) -> Result<Self, ImportError> {
        let entries = entries(content, file)?;
        let mut all = Vec::new();
        let mut other: HashMap<String, u64> = HashMap::new();
        for (value, full_url, line) in entries {
            let at = |reason: String| ImportError {
                file: file.to_string(),
                location: line.map(Location::Line),
                field: None,
                reason,
            };
            let Some(ty) = value.get("resourceType").and_then(Value::as_str) else {
                return Err(at("a resource has no resourceType".into()));
            };
            let ty = ty.to_string();
            if !READ_TYPES.contains(&ty.as_str()) {
                *other.entry(ty).or_default() += 1;
                continue;
            }
            let id = match (value.get("id").and_then(Value::as_str), &full_url) {
                (Some(id), _) => id.to_string(),
                (None, Some(url)) => last_segment(url).to_string(),
                (None, None) => return Err(at(format!("a {ty} resource has no id or fullUrl"))),
            };
            let id = fields::identifier("id", &id).map_err(|e| at(e.reason))?;
            all.push(Res {
                value,
                ty,
                id,
                full_url,
            });
        }
        let mut other: Vec<(String, u64)> = other.into_iter().collect();
        other.sort();
        let mut bundle = Self {
            all,
            other,
            by_key: HashMap::new(),
            by_url: HashMap::new(),
            by_identifier: HashMap::new(),
        };
        bundle.index();
        Ok(bundle)
    }

    fn index(&mut self) {
        for (i, r) in self.all.iter().enumerate() {
            self.by_key.insert(format!("{}/{}", r.ty, r.id), i);
            if let Some(url) = &r.full_url {
                self.by_url.insert(url.clone(), i);
            }
            for identifier in r
                .value
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(value) = identifier.get("value").and_then(Value::as_str) else {
                    continue;
                };
                let system = identifier
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.by_identifier
                    .insert(format!("{}?{system}|{value}", r.ty), i);
                self.by_identifier
                    .entry(format!("{}?{value}", r.ty))
                    .or_insert(i);
            }
        }
    }

    /// The resources of type `ty`.
    pub(crate) fn of<'a>(&'a self, ty: &'static str) -> impl Iterator<Item = &'a Res> {
        self.all.iter().filter(move |r| r.ty == ty)
    }

    /// Resolves `reference`: a `fullUrl`, a conditional reference by identifier, or `Type/id`
    /// (also at the end of an absolute URL). A contained `#id` is resolved by its referrer.
    pub(crate) fn resolve<'b>(&'b self, reference: &str) -> Option<Target<'b>> {
        let reference = reference.trim();
        if let Some(i) = self.by_url.get(reference) {
            return Some(Target::Here(&self.all[*i]));
        }
        if let Some((ty, query)) = reference.split_once('?') {
            let ty = last_segment(ty);
            let value = query.strip_prefix("identifier=")?;
            let value = value.split('&').next().unwrap_or(value);
            if let Some(i) = self.by_identifier.get(&format!("{ty}?{value}")) {
                return Some(Target::Here(&self.all[*i]));
            }
            let id = value.rsplit('|').next().unwrap_or(value);
            return Some(Target::Elsewhere {
                ty: ty.to_string(),
                id: id.to_string(),
            });
        }
        if reference.starts_with("urn:") {
            return None;
        }
        let path = match reference.find("/_history/") {
            Some(at) => &reference[..at],
            None => reference,
        };
        let mut parts = path.rsplit('/');
        let id = parts.next().filter(|s| !s.is_empty())?;
        let ty = parts.next()?;
        match self.by_key.get(&format!("{ty}/{id}")) {
            Some(i) => Some(Target::Here(&self.all[*i])),
            None => Some(Target::Elsewhere {
                ty: ty.to_string(),
                id: id.to_string(),
            }),
        }
    }

    /// The local identifier of the `expect` resource that `r` references at `path`; `None`
    /// when the element is absent. A PractitionerRole stands for its practitioner.
    pub(crate) fn reference(
        &self,
        r: &Res,
        field: &str,
        path: &[&str],
        expect: &str,
    ) -> FieldResult<Option<String>> {
        let Some(reference) = r.str(path) else {
            return Ok(None);
        };
        self.reference_to(reference, field, expect).map(Some)
    }

    /// [`Bundle::reference`] of a reference string.
    pub(crate) fn reference_to(
        &self,
        reference: &str,
        field: &str,
        expect: &str,
    ) -> FieldResult<String> {
        let target = self.resolve(reference).ok_or_else(|| {
            FieldError::new(
                field,
                format!("{reference:?} does not name a resource of this file"),
            )
        })?;
        let (ty, id) = match target {
            Target::Here(res) if res.ty == "PractitionerRole" && expect == "Practitioner" => {
                match res.str(&["practitioner", "reference"]) {
                    Some(inner) => return self.reference_to(inner, field, expect),
                    None => (res.ty.clone(), res.id.clone()),
                }
            }
            Target::Here(res) => (res.ty.clone(), res.id.clone()),
            Target::Elsewhere { ty, id } => (ty, id),
        };
        let accepted = ty == expect || (expect == "Practitioner" && ty == "PractitionerRole");
        if !accepted {
            return Err(FieldError::new(
                field,
                format!("{reference:?} is not a reference to a {expect}"),
            ));
        }
        fields::identifier(field, &id)
    }
}

fn last_segment(s: &str) -> &str {
    let s = s.strip_prefix("urn:uuid:").unwrap_or(s);
    s.rsplit(['/', ':']).find(|p| !p.is_empty()).unwrap_or(s)
}

/// An entry of a file: the resource, its `fullUrl`, its NDJSON line.
type Entry = (Value, Option<String>, Option<u64>);

/// The file's entries.
fn entries(content: &[u8], file: &str) -> Result<Vec<Entry>, ImportError> {
    let entries = match serde_json::from_slice::<Value>(content) {
        Ok(Value::Array(items)) => items.into_iter().map(|v| (v, None, None)).collect(),
        Ok(v) if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
            let version = fhir_version(&v);
            if let Some(found) = version {
                return Err(ImportError::file(file, found));
            }
            v.get("entry")
                .and_then(Value::as_array)
                .map(|entries| {
                    entries
                        .iter()
                        .filter_map(|e| {
                            let url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
                            Some((e.get("resource")?.clone(), url, None))
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        Ok(v) => vec![(v, None, None)],
        Err(whole) => {
            // Not one JSON document: try NDJSON, reporting the first bad line.
            let text = std::str::from_utf8(content)
                .map_err(|_| ImportError::file(file, "is not UTF-8 text"))?;
            if text.trim().is_empty() {
                return Err(ImportError::file(file, "is empty"));
            }
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str(line).map_err(|e| ImportError {
                    file: file.to_string(),
                    location: Some(Location::Line(i as u64 + 1)),
                    field: None,
                    reason: if i == 0 {
                        format!("not valid JSON: {whole}")
                    } else {
                        format!("not valid JSON: {e}")
                    },
                })?;
                out.push((v, None, Some(i as u64 + 1)));
            }
            out
        }
    };
    for (v, _, line) in &entries {
        if let Some(found) = fhir_version(v) {
            return Err(ImportError {
                file: file.to_string(),
                location: line.map(Location::Line),
                field: None,
                reason: found,
            });
        }
    }
    Ok(entries)
}

/// Says so when `v` is a resource of FHIR STU3 or DSTU2 (elements R4 renamed or retyped).
fn fhir_version(v: &Value) -> Option<String> {
    let ty = v.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let id = v.get("id").and_then(Value::as_str).unwrap_or("?");
    let profiles: Vec<&str> = v
        .pointer("/meta/profile")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let sign = |version: &str, what: String| {
        Some(format!(
            "this is FHIR {version} ({ty}/{id}: {what}); mbc-node reads FHIR R4 (4.0.1): export \
             the data as R4, or convert it (e.g. with the HL7 FHIR version converter), and \
             import that"
        ))
    };
    for p in &profiles {
        for version in ["STU3", "DSTU2"] {
            if p.contains(&format!("/{version}/")) {
                return sign(version, format!("its profile {p:?} is {version}"));
            }
        }
    }
    match ty {
        "QuestionnaireResponse" if v.get("group").is_some() => {
            sign("DSTU2", "answers in `group`; R4 has `item`".into())
        }
        "QuestionnaireResponse" if v.get("questionnaire").is_some_and(Value::is_object) => sign(
            "STU3",
            "`questionnaire` is a Reference; in R4 it is a canonical URL".into(),
        ),
        "Observation" if v.get("context").is_some() => {
            sign("STU3", "`context`; R4 calls it `encounter`".into())
        }
        "Encounter" if v.get("patient").is_some() => {
            sign("DSTU2", "`patient`; R4 calls it `subject`".into())
        }
        "Encounter" if v.get("class").is_some_and(Value::is_string) => {
            sign("DSTU2", "`class` is a code; in R4 it is a Coding".into())
        }
        _ => None,
    }
}
