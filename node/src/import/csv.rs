//! The documented CSV layouts (README.md, "Import formats"): one file kind per header shape.
//!
//! | kind | recognised by | required columns |
//! |---|---|---|
//! | assessments | an `instrument` column | patient_id, therapist_id, episode_id, session, date, instrument, score |
//! | episodes | `episode_id` without `instrument` | episode_id, patient_id, therapist_id |
//! | patients | `patient_id` only | patient_id |
//! | therapists | `therapist_id` only | therapist_id |
//!
//! Unknown columns are an error (a misspelt column must not be silently dropped). Rows are
//! streamed into the writer; the caller owns the transaction.

use std::collections::{BTreeMap, HashMap};

use csv::StringRecord;

use super::fields::{self, ERASED_SKIPPED, FieldError, FieldResult};
use super::mapping::Mapping;
use super::records::{
    AssessmentRecord, Casemix, EpisodeAttrs, Fields, PatientAttrs, SessionKey, SessionRecord,
    TherapistAttrs,
};
use super::writer::Writer;
use super::{DateFormat, ImportError, Location, Options, Problems, Progress, TextEncoding};
use crate::registry::Registry;

/// The kinds of CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKind {
    /// Long format: one row per instrument administration (or session without a measure).
    Assessments,
    /// Episodes (referrals) with dates, end reason and case mix.
    Episodes,
    /// Patient demographics.
    Patients,
    /// Therapist profiles.
    Therapists,
}

impl CsvKind {
    /// Lower-case name used in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            CsvKind::Assessments => "assessments",
            CsvKind::Episodes => "episodes",
            CsvKind::Patients => "patients",
            CsvKind::Therapists => "therapists",
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            CsvKind::Assessments => &[
                "patient_id",
                "therapist_id",
                "episode_id",
                "session",
                "date",
                "instrument",
                "score",
            ],
            CsvKind::Episodes => &["episode_id", "patient_id", "therapist_id"],
            CsvKind::Patients => &["patient_id"],
            CsvKind::Therapists => &["therapist_id"],
        }
    }

    fn optional(self) -> &'static [&'static str] {
        match self {
            CsvKind::Assessments => &["attended", "kind", "items"],
            CsvKind::Episodes => &[
                "referral_date",
                "start_date",
                "end_date",
                "end_reason",
                "sessions_planned",
                "sessions_attended",
                "step",
                "provisional_dx",
                "age",
                "employment",
                "prior_treatment",
                "psychotropic_med",
                "long_term_condition",
                "disability",
                "duration_of_problem_months",
                "comorbidity_count",
                "referral_source",
                "wsas",
            ],
            CsvKind::Patients => &["birth_year", "sex", "ethnicity_group", "deprivation_decile"],
            CsvKind::Therapists => &[
                "profession",
                "grade",
                "start_year",
                "gender",
                "languages",
                "modalities",
                "accepting_new",
                "wait_weeks",
                "payers",
                "location",
                "delivery",
                "availability",
                "new_per_week",
            ],
        }
    }

    /// Every column of this kind.
    fn columns(self) -> impl Iterator<Item = &'static str> {
        self.required().iter().chain(self.optional()).copied()
    }

    /// The kind a header row describes.
    pub(crate) fn detect(headers: &[String]) -> Option<Self> {
        let has = |c: &str| headers.iter().any(|h| h == c);
        if has("instrument") {
            Some(CsvKind::Assessments)
        } else if has("episode_id") {
            Some(CsvKind::Episodes)
        } else if has("patient_id") {
            Some(CsvKind::Patients)
        } else if has("therapist_id") {
            Some(CsvKind::Therapists)
        } else {
            None
        }
    }
}

/// Every documented column of every kind, once each.
pub(crate) fn all_columns() -> Vec<&'static str> {
    let kinds = [
        CsvKind::Assessments,
        CsvKind::Episodes,
        CsvKind::Patients,
        CsvKind::Therapists,
    ];
    let mut all: Vec<&'static str> = kinds.iter().flat_map(|k| k.columns()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

struct Row<'r> {
    record: &'r StringRecord,
    columns: &'r HashMap<&'static str, usize>,
    mapping: Option<&'r Mapping>,
}

impl Row<'_> {
    /// The trimmed value (in the documented vocabulary when a mapping says how), `None` if
    /// the column is absent or the cell empty.
    fn opt(&self, name: &str) -> Option<&str> {
        let v = self.record.get(*self.columns.get(name)?)?.trim();
        let v = self.mapping.map_or(v, |m| m.value(name, v).trim());
        (!v.is_empty()).then_some(v)
    }

    fn req(&self, name: &str) -> FieldResult<&str> {
        self.opt(name)
            .ok_or_else(|| FieldError::new(name, "is empty"))
    }
}

/// Checks what a spreadsheet may have done to a file before it is parsed: empty, not UTF-8,
/// cut off mid-line (an export caught while being written). Returns the field delimiter: `,`,
/// or `;` / tab when the header uses that and no comma (European Excel saves `;`).
fn inspect(content: &[u8], file: &str) -> Result<u8, ImportError> {
    let body = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::file(file, "is empty"));
    }
    if let Err(e) = std::str::from_utf8(body) {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        return Err(ImportError {
            file: file.to_string(),
            location: Some(Location::Line(line as u64)),
            field: None,
            reason:
                "is not UTF-8 text (Windows-1252 or Latin-1, as Excel saves \"CSV\"?): import it \
                     with --encoding windows-1252, or save it as \"CSV UTF-8\" (Excel: Save As, \
                     CSV UTF-8)"
                    .into(),
        });
    }
    if !body.ends_with(b"\n") {
        let line = body.iter().filter(|b| **b == b'\n').count() + 1;
        return Err(ImportError {
            file: file.to_string(),
            location: Some(Location::Line(line as u64)),
            field: None,
            reason: "the last line has no line end: the file may have been copied while it was \
                     still being written (its last value could be cut short). Import the \
                     finished export; if the file is complete, add a line break at its end"
                .into(),
        });
    }
    let header = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |c: u8| header.iter().filter(|b| **b == c).count();
    Ok(if count(b',') == 0 && count(b';') > 0 {
        b';'
    } else if count(b',') == 0 && count(b'\t') > 0 {
        b'\t'
    } else {
        b','
    })
}

/// The content as UTF-8: decoded from UTF-16 when it starts with a UTF-16 byte-order mark, or
/// from Windows-1252 when the clinic says so (`--encoding`; never guessed).
fn decode(content: &[u8], encoding: Option<TextEncoding>) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    if let Some((enc, _)) = encoding_rs::Encoding::for_bom(content)
        && enc != encoding_rs::UTF_8
    {
        let (text, _, _) = enc.decode(content);
        return Cow::Owned(text.into_owned().into_bytes());
    }
    match encoding {
        Some(TextEncoding::Windows1252) => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(content);
            Cow::Owned(text.into_owned().into_bytes())
        }
        Some(TextEncoding::Utf8) | None => Cow::Borrowed(content),
    }
}

/// The columns holding dates.
const DATE_COLUMNS: &[&str] = &["date", "referral_date", "start_date", "end_date"];

/// Reads a CSV file of any kind into `writer`. Returns (kind, rows read, rows skipped by
/// reason).
pub(crate) fn import(
    content: &[u8],
    file: &str,
    registry: &Registry,
    writer: &mut Writer<'_>,
    progress: &mut Progress,
    options: &Options,
) -> Result<(CsvKind, u64, BTreeMap<String, u64>), Problems> {
    let content = decode(content, options.encoding());
    let content = content.as_ref();
    let detected = inspect(content, file)?;
    let delimiter = options.delimiter().unwrap_or(detected);
    let mapping = options.mapping.as_ref();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .delimiter(delimiter)
        .from_reader(content);
    let raw: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::file(file, format!("couldn't read the header row: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    // A mapping renames the clinic's headers to documented ones; `None` is a column left out.
    let mut headers: Vec<Option<String>> = raw
        .iter()
        .map(|h| mapping.map_or(Some(h.clone()), |m| m.column(h)))
        .collect();
    // Spreadsheets add empty columns after the last one; their cells must be empty too.
    let width = headers.len();
    while headers.last().is_some_and(|h| h.as_deref() == Some("")) {
        headers.pop();
    }
    let header_error = |field: &str, reason: String| ImportError {
        file: file.to_string(),
        location: Some(Location::Line(1)),
        field: Some(field.to_string()),
        reason,
    };
    let present: Vec<String> = headers.iter().flatten().cloned().collect();
    let kind = CsvKind::detect(&present).ok_or_else(|| {
        let seen = raw.join(",");
        let hint = if delimiter == b',' && seen.contains('|') {
            " The header looks `|`-separated: save it with commas."
        } else {
            " If these are your system's own column names, say which is which in a mapping \
             file (import --mapping, README.md \"Mapping a clinic's export\")."
        };
        header_error(
            "(header)",
            format!(
                "not a recognised CSV layout: the header is {seen:?}; expected an assessments \
                 (with an instrument column), episodes (episode_id), patients (patient_id) or \
                 therapists (therapist_id) header (see README.md, \"Import formats\").{hint}"
            ),
        )
    })?;
    let mut problems = Problems::new();
    let mut columns = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let Some(h) = h else { continue };
        let Some(known) = kind.columns().find(|c| *c == h.as_str()) else {
            problems.push(header_error(
                h,
                format!(
                    "unknown column for a {} file (known columns: {}); a column of your own \
                     system can be renamed or left out with a mapping file (import --mapping)",
                    kind.as_str(),
                    kind.columns().collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        };
        if columns.insert(known, i).is_some() {
            problems.push(header_error(h, "column appears twice".into()));
        }
    }
    for missing in kind
        .required()
        .iter()
        .filter(|c| !columns.contains_key(**c))
    {
        problems.push(header_error(
            missing,
            format!("required column is missing from a {} file", kind.as_str()),
        ));
    }
    // Rows cannot be read against a header that is wrong.
    problems.check()?;
    let mut problems = Problems::new();
    let mut record = StringRecord::new();
    let mut rows = 0u64;
    let mut erased = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(ImportError {
                    file: file.to_string(),
                    location: Some(Location::Line(line)),
                    field: None,
                    reason: format!("malformed CSV: {e}"),
                });
                // The reader cannot resynchronise after a malformed record.
                return Err(problems);
            }
        }
        rows += 1;
        let line = record.position().map_or(rows + 1, |p| p.line());
        if let Some(format) = options.date_format() {
            match with_iso_dates(&record, &columns, format) {
                Ok(converted) => record = converted,
                Err(e) => {
                    problems.push(ImportError::at(file, Location::Line(line), e));
                    continue;
                }
            }
        }
        if let Some(extra) =
            (headers.len()..width).find(|i| !record.get(*i).unwrap_or("").trim().is_empty())
        {
            problems.push(ImportError {
                file: file.to_string(),
                location: Some(Location::Line(line)),
                field: Some(format!("column {}", extra + 1)),
                reason: "has a value under a header with no name".into(),
            });
            continue;
        }
        let row = Row {
            record: &record,
            columns: &columns,
            mapping,
        };
        let result = match kind {
            CsvKind::Assessments => assessment_row(&row, registry, writer),
            CsvKind::Episodes => episode_row(&row, writer),
            CsvKind::Patients => patient_row(&row, writer),
            CsvKind::Therapists => therapist_row(&row, writer),
        };
        match result {
            Err(e) if e.is_erased() => erased += 1,
            Err(e) => problems.push(ImportError::at(file, Location::Line(line), e)),
            Ok(()) => {}
        }
        progress.row(reader.position().byte());
    }
    problems.check()?;
    if rows == 0 {
        return Err(ImportError::file(
            file,
            format!(
                "has a header ({} file) and no rows: nothing to import",
                kind.as_str()
            ),
        )
        .into());
    }
    let mut skipped = BTreeMap::new();
    if erased > 0 {
        skipped.insert(ERASED_SKIPPED.to_string(), erased);
    }
    Ok((kind, rows, skipped))
}

/// `record` with its date cells rewritten from `format` to ISO 8601.
fn with_iso_dates(
    record: &StringRecord,
    columns: &HashMap<&'static str, usize>,
    format: DateFormat,
) -> FieldResult<StringRecord> {
    let dates: Vec<usize> = DATE_COLUMNS
        .iter()
        .filter_map(|c| columns.get(c).copied())
        .collect();
    let mut out = StringRecord::new();
    for (i, cell) in record.iter().enumerate() {
        if !dates.contains(&i) || cell.trim().is_empty() {
            out.push_field(cell);
            continue;
        }
        let iso = format.to_iso(cell).ok_or_else(|| {
            let column = columns
                .iter()
                .find(|(_, v)| **v == i)
                .map_or("date", |(k, _)| *k);
            FieldError::new(
                column,
                format!("{cell:?} is not a date in the --date-format given"),
            )
        })?;
        out.push_field(&iso);
    }
    out.set_position(record.position().cloned());
    Ok(out)
}

impl Fields for Row<'_> {
    fn get(&self, column: &str) -> Option<String> {
        self.opt(column).map(str::to_string)
    }

    fn name(&self, column: &str) -> String {
        column.to_string()
    }
}

fn therapist_row(row: &Row<'_>, w: &mut Writer<'_>) -> FieldResult<()> {
    let id = fields::identifier("therapist_id", row.req("therapist_id")?)?;
    w.upsert_therapist(&id, &TherapistAttrs::read(row)?)
}

fn patient_row(row: &Row<'_>, w: &mut Writer<'_>) -> FieldResult<()> {
    let id = fields::identifier("patient_id", row.req("patient_id")?)?;
    w.upsert_patient(&id, &PatientAttrs::read(row)?)
}

fn episode_row(row: &Row<'_>, w: &mut Writer<'_>) -> FieldResult<()> {
    let id = fields::identifier("episode_id", row.req("episode_id")?)?;
    let patient = fields::identifier("patient_id", row.req("patient_id")?)?;
    let therapist = fields::identifier("therapist_id", row.req("therapist_id")?)?;
    w.upsert_episode(
        &id,
        &patient,
        &therapist,
        &EpisodeAttrs::read(row)?,
        &Casemix::read(row)?,
    )
}

fn assessment_row(row: &Row<'_>, registry: &Registry, w: &mut Writer<'_>) -> FieldResult<()> {
    let session = SessionRecord {
        key: SessionKey {
            patient: fields::identifier("patient_id", row.req("patient_id")?)?,
            therapist: fields::identifier("therapist_id", row.req("therapist_id")?)?,
            episode: fields::identifier("episode_id", row.req("episode_id")?)?,
            seq: fields::integer("session", row.req("session")?, 1, 10_000)?,
        },
        date: fields::date("date", row.req("date")?)?,
        attended: row.parse("attended", fields::boolean)?.unwrap_or(true),
        kind: row
            .parse("kind", |f, v| fields::one_of(f, v, fields::SESSION_KINDS))?
            .unwrap_or("treatment"),
    };
    let (instrument, score, items) = (row.opt("instrument"), row.opt("score"), row.opt("items"));
    let Some(name) = instrument else {
        if score.is_some() || items.is_some() {
            return Err(FieldError::new(
                "instrument",
                "is empty but a score or items are given",
            ));
        }
        // A session without a measure.
        w.session(&session)?;
        return Ok(());
    };
    let inst = registry.find(name).ok_or_else(|| {
        let known: Vec<&str> = registry.instruments().iter().map(|i| i.id.as_str()).collect();
        FieldError::new(
            "instrument",
            format!(
                "unknown instrument {name:?} (known: {}; define others with `mbc-node instruments add`)",
                known.join(", ")
            ),
        )
    })?;
    let score = row.parse("score", fields::number)?;
    let answers = items
        .map(|text| {
            text.split(';')
                .map(|v| {
                    let v = v.trim();
                    (!v.is_empty())
                        .then(|| fields::number("items", v))
                        .transpose()
                })
                .collect::<FieldResult<Vec<_>>>()
        })
        .transpose()?;
    let record = AssessmentRecord::from_parts(inst, score, answers.as_deref())?;
    w.assessment(&session, &record)
}
