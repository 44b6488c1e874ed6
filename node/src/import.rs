//! `mbc-node import`: loads CSV and FHIR R4 files into the store, all or nothing per file.
//!
//! Each file is read whole, hashed (SHA-256) and parsed inside one transaction. Any error rolls
//! the whole file back and is reported with the file, line (or FHIR resource) and field. A file
//! whose hash is already in the `imports` table is skipped; overlapping exports are idempotent
//! row by row (see `import/writer.rs`). Identifiers are pseudonymised by the writer before storage.

mod csv;
pub(crate) mod fhir;
mod fields;
mod mapping;
mod records;
mod writer;

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::pseudonym::Pseudonymiser;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

pub use self::csv::CsvKind;
pub use self::mapping::Mapping;
pub use self::writer::Counts;
use crate::registry::Registry;
use crate::store::Store;

/// Where in a file an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of a CSV or NDJSON file.
    Line(u64),
    /// A FHIR resource, as `Type/id`.
    Resource(String),
}

/// A bad input file: names the file, where, which field and why. The file was not imported.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportError {
    /// The file as given on the command line.
    pub file: String,
    /// The line or resource, when the problem is in one.
    pub location: Option<Location>,
    /// The column or FHIR element, when the problem is in one.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl ImportError {
    fn file(file: &str, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            location: None,
            field: None,
            reason: reason.into(),
        }
    }

    fn at(file: &str, location: Location, e: fields::FieldError) -> Self {
        Self {
            file: file.to_string(),
            location: Some(location),
            field: Some(e.field),
            reason: e.reason,
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        match &self.location {
            Some(Location::Line(n)) => write!(f, ", line {n}")?,
            Some(Location::Resource(r)) => write!(f, ", resource {r}")?,
            None => {}
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ImportError {}

/// The most problems of one file that are listed; the rest are counted.
pub const MAX_PROBLEMS: usize = 50;

/// Every problem found in one file (the first [`MAX_PROBLEMS`], and how many more): a reader
/// goes on after a bad row or resource so that a clinic fixes its export once, not once per
/// problem. Still nothing of the file is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems {
    /// The problems, in the order found.
    pub list: Vec<ImportError>,
    /// Problems found beyond the listed ones.
    pub more: u64,
}

impl Problems {
    pub(crate) fn new() -> Self {
        Self {
            list: Vec::new(),
            more: 0,
        }
    }

    pub(crate) fn push(&mut self, e: ImportError) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(e);
        } else {
            self.more += 1;
        }
    }

    /// `Ok` when nothing was found.
    pub(crate) fn check(self) -> Result<(), Problems> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<ImportError> for Problems {
    fn from(e: ImportError) -> Self {
        Self {
            list: vec![e],
            more: 0,
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [first] = self.list.as_slice() else {
            let file = self.list.first().map_or("", |e| e.file.as_str());
            let total = self.list.len() as u64 + self.more;
            write!(f, "{file}: {total} problems")?;
            for e in &self.list {
                let where_ = e.to_string();
                let where_ = where_.strip_prefix(&format!("{file}, ")).unwrap_or(&where_);
                write!(f, "\n  {where_}")?;
            }
            if self.more > 0 {
                write!(f, "\n  … and {} more", self.more)?;
            }
            return Ok(());
        };
        first.fmt(f)
    }
}

impl std::error::Error for Problems {}

/// The input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One of the documented CSV layouts.
    Csv,
    /// FHIR R4 JSON: a Bundle, a single resource, or NDJSON (one resource per line).
    Fhir,
}

impl Format {
    /// Guesses the format from the first non-blank byte: JSON starts with `{` or `[`.
    pub fn detect(content: &[u8]) -> Self {
        let first = content
            .iter()
            .copied()
            .find(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
        match first {
            Some(b'{') | Some(b'[') => Format::Fhir,
            _ => Format::Csv,
        }
    }
}

/// Reads and checks a `--mapping` file's `text` against `registry` and the CSV layouts: every
/// problem of it, or the mapping.
pub fn read_mapping(file: &str, text: &str, registry: &Registry) -> Result<Mapping, Problems> {
    Mapping::parse(file, text, registry, &csv::all_columns())
}

/// A field separator as a clinic writes it (`--delimiter`, a mapping's `[csv] delimiter`): one
/// ASCII character, or `\t` / `tab` for a tab.
pub fn delimiter(s: &str) -> Result<u8, String> {
    match s {
        "\\t" | "tab" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "{s:?} is not one character (e.g. ';', ',' or '\\t')"
        )),
    }
}

/// Options for one `import` run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Forces a format instead of detecting it.
    pub format: Option<Format>,
    /// Validates everything, then rolls back.
    pub dry_run: bool,
    /// Shows a progress bar for large files (on a terminal).
    pub progress: bool,
    /// `[import] episode_gap_weeks`: scores without an episode form one per patient until a
    /// gap of more than this many weeks.
    pub episode_gap_weeks: u32,
    /// CSV text encoding when it is not UTF-8.
    pub encoding: Option<TextEncoding>,
    /// CSV field separator instead of detecting it from the header.
    pub delimiter: Option<u8>,
    /// CSV dates written other than ISO 8601.
    pub date_format: Option<DateFormat>,
    /// The clinic's own column names, values and instrument codes (`--mapping`).
    pub mapping: Option<Mapping>,
    /// Replace stored values the file contradicts, recording each (`--corrections`).
    pub corrections: bool,
}

impl Options {
    /// `--encoding`, else the mapping's `[csv] encoding`.
    fn encoding(&self) -> Option<TextEncoding> {
        self.encoding.or_else(|| self.mapping.as_ref()?.encoding)
    }

    /// `--delimiter`, else the mapping's.
    fn delimiter(&self) -> Option<u8> {
        self.delimiter.or_else(|| self.mapping.as_ref()?.delimiter)
    }

    /// `--date-format`, else the mapping's.
    fn date_format(&self) -> Option<DateFormat> {
        self.date_format
            .or_else(|| self.mapping.as_ref()?.date_format)
    }
}

/// Text encodings a CSV file may be in besides UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextEncoding {
    /// UTF-8 (the default; a byte-order mark is allowed).
    #[value(name = "utf-8")]
    Utf8,
    /// Windows-1252, what Excel on Windows saves as "CSV"; also covers Latin-1 (ISO 8859-1).
    #[value(
        name = "windows-1252",
        alias = "latin-1",
        alias = "cp1252",
        alias = "iso-8859-1"
    )]
    Windows1252,
}

/// Non-ISO date layouts a CSV file may use, said explicitly (never guessed: 05/03/2024 is
/// 5 March in the UK and 3 May in the US).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DateFormat {
    /// Day first: 05/03/2024, 5.3.2024, 05-03-2024.
    #[value(name = "DD/MM/YYYY")]
    DayFirst,
    /// Month first: 03/05/2024.
    #[value(name = "MM/DD/YYYY")]
    MonthFirst,
}

impl DateFormat {
    /// The ISO date of `value` in this layout (separators `/`, `.` or `-`).
    pub(crate) fn to_iso(self, value: &str) -> Option<String> {
        let parts: Vec<&str> = value.trim().split(['/', '.', '-']).collect();
        let [a, b, y] = parts.as_slice() else {
            return None;
        };
        let (d, m) = match self {
            DateFormat::DayFirst => (a, b),
            DateFormat::MonthFirst => (b, a),
        };
        let (d, m, y): (u32, u32, i32) = (d.parse().ok()?, m.parse().ok()?, y.parse().ok()?);
        if y < 1000 {
            return None;
        }
        chrono::NaiveDate::from_ymd_opt(y, m, d).map(|date| date.format("%Y-%m-%d").to_string())
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: None,
            dry_run: false,
            progress: false,
            episode_gap_weeks: crate::config::ImportConfig::default().episode_gap_weeks,
            encoding: None,
            delimiter: None,
            date_format: None,
            mapping: None,
            corrections: false,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    /// The file as given.
    pub file: String,
    /// SHA-256 of its content.
    pub sha256: String,
    /// Format read.
    pub format: Format,
    /// The kind of content (a CSV kind, or "fhir").
    pub kind: String,
    /// `imported`, `validated` (dry run) or `already_imported`.
    pub status: &'static str,
    /// Rows (CSV) or resources (FHIR) read.
    pub rows: u64,
    /// What changed.
    pub counts: Counts,
    /// When the same content was imported before, for `already_imported`.
    pub previously_imported_at: Option<String>,
    /// Records of the file that were not imported, with why, and how many.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// Stored values the file replaced (`--corrections`), one line each.
    pub corrections: Vec<String>,
}

/// Files this large (bytes, ≈10^5 rows) get a progress bar.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Tracks rows for the progress bar and the test-only pause hook.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    rows: u64,
    hang_after: Option<u64>,
}

impl Progress {
    fn new(total_bytes: u64, show: bool) -> Self {
        let bar = (show && total_bytes >= PROGRESS_MIN_BYTES).then(|| {
            let bar = ProgressBar::new(total_bytes);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
                    // Unwrap safety: the template is a constant checked by the tests.
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_message("importing");
            bar
        });
        // Test-only fault injection: pause (forever) after N rows so a test can kill -9 the
        // process mid-transaction without timing guesses. See ARCHITECTURE.md, "Testing".
        let hang_after = crate::hooks::hang_after_rows();
        Self {
            bar,
            rows: 0,
            hang_after,
        }
    }

    pub(crate) fn row(&mut self, bytes_read: u64) {
        self.rows += 1;
        if self.rows.is_multiple_of(8192)
            && let Some(bar) = &self.bar
        {
            bar.set_position(bytes_read);
        }
        if self.hang_after == Some(self.rows) {
            eprintln!("test hook: import paused after {} rows", self.rows);
            loop {
                std::thread::park();
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Imports one file in its own transaction.
pub fn import_file(
    store: &mut Store,
    pseudo: &Pseudonymiser,
    path: &Path,
    options: &Options,
    now: &str,
) -> Result<FileOutcome> {
    let file = path.display().to_string();
    let content = std::fs::read(path).with_context(|| format!("couldn't read {file}"))?;
    import_bytes(store, pseudo, &file, content, options, now)
}

/// [`import_file`] of a file's `content` already read (an upload), `file` naming it in every
/// message and in the import log.
pub fn import_bytes(
    store: &mut Store,
    pseudo: &Pseudonymiser,
    file: &str,
    content: Vec<u8>,
    options: &Options,
    now: &str,
) -> Result<FileOutcome> {
    let file = file.to_owned();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &content));
    let format = options.format.unwrap_or_else(|| Format::detect(&content));
    let previous: Option<(String, String, u64)> = store
        .conn()
        .query_row(
            "SELECT imported_at, kind, rows FROM imports WHERE sha256 = ?1",
            [&sha256],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((at, kind, rows)) = previous {
        return Ok(FileOutcome {
            file,
            sha256,
            format,
            kind,
            status: "already_imported",
            rows,
            counts: Counts::default(),
            previously_imported_at: Some(at),
            skipped: Default::default(),
            corrections: Vec::new(),
        });
    }
    // A larger page cache while the file is written: its sessions, assessments and answers
    // go into indexes in no particular order, and every page evicted and read again is
    // encrypted and decrypted again (SQLCipher). As it was afterwards.
    let cache: i64 = store
        .conn()
        .query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    store
        .conn()
        .pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
    let outcome = write_file(store, pseudo, options, now, (file, sha256, format, content));
    // Not `?`: a file already committed must not be reported as failed (a larger cache left
    // behind is harmless).
    let _ = store.conn().pragma_update(None, "cache_size", cache);
    outcome
}

/// The page cache of an import's connection, in KiB (SQLite's default is 2,000).
const IMPORT_CACHE_KIB: i64 = 64 * 1024;

/// [`import_file`] once the file is read and known to be new.
fn write_file(
    store: &mut Store,
    pseudo: &Pseudonymiser,
    options: &Options,
    now: &str,
    (file, sha256, format, content): (String, String, Format, Vec<u8>),
) -> Result<FileOutcome> {
    let registry = store.registry()?;
    let registry = match &options.mapping {
        Some(mapping) => mapping.registry(registry),
        None => registry,
    };
    let tx = store.conn_mut().transaction()?;
    let mut progress = Progress::new(content.len() as u64, options.progress);
    let (kind, rows, counts, skipped, corrections) = {
        let mut writer = writer::Writer::new(&tx, pseudo)?.correcting(options.corrections);
        let (kind, rows, skipped) = read(
            format,
            &content,
            &file,
            &registry,
            &mut writer,
            &mut progress,
            options,
        )?;
        let (counts, corrections) = writer.finish().map_err(|e| ImportError {
            file: file.clone(),
            location: None,
            field: Some(e.field),
            reason: e.reason,
        })?;
        (kind, rows, counts, skipped, corrections)
    };
    progress.finish();
    let file_name = Path::new(&file)
        .file_name()
        .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
    tx.execute(
        "INSERT INTO imports (file_name, sha256, format, kind, rows, inserted, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            file_name,
            sha256,
            format!("{format:?}").to_lowercase(),
            kind,
            rows,
            counts.assessments,
            now
        ],
    )?;
    let import_id = tx.last_insert_rowid();
    for c in &corrections {
        tx.execute(
            "INSERT INTO correction (import_id, episode_id, session_seq, field, old_value, new_value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![import_id, c.episode, c.seq, c.field, c.old, c.new],
        )?;
    }
    let status = if options.dry_run {
        tx.rollback()?;
        "validated"
    } else {
        tx.commit()?;
        "imported"
    };
    Ok(FileOutcome {
        file,
        sha256,
        format,
        kind,
        status,
        rows,
        counts,
        previously_imported_at: None,
        skipped,
        corrections: corrections
            .iter()
            .map(writer::Correction::describe)
            .collect(),
    })
}

fn read(
    format: Format,
    content: &[u8],
    file: &str,
    registry: &Registry,
    writer: &mut writer::Writer<'_>,
    progress: &mut Progress,
    options: &Options,
) -> Result<(String, u64, std::collections::BTreeMap<String, u64>), Problems> {
    match format {
        Format::Csv => {
            let (kind, rows, skipped) =
                csv::import(content, file, registry, writer, progress, options)?;
            Ok((kind.as_str().to_string(), rows, skipped))
        }
        Format::Fhir => {
            let gap = options.episode_gap_weeks;
            let read = fhir::import(content, file, registry, writer, progress, gap)?;
            Ok(("fhir".to_string(), read.resources, read.skipped))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs one reader over `content` in a throwaway in-memory store.
    fn try_read(
        format: Format,
        content: &[u8],
    ) -> Result<(String, u64, std::collections::BTreeMap<String, u64>), Problems> {
        let mut store = Store::open_in_memory().unwrap();
        let registry = store.registry().unwrap();
        let pseudo = Pseudonymiser::new(&[0; 32]);
        let tx = store.conn_mut().transaction().unwrap();
        let mut writer = writer::Writer::new(&tx, &pseudo).unwrap();
        let mut progress = Progress::new(0, false);
        read(
            format,
            content,
            "fuzz",
            &registry,
            &mut writer,
            &mut progress,
            &Options::default(),
        )
    }

    const HEADERS: [&str; 4] = [
        "patient_id,therapist_id,episode_id,session,date,instrument,score,items\n",
        "episode_id,patient_id,therapist_id,start_date,end_reason,age,wsas\n",
        "patient_id,birth_year,sex,deprivation_decile\n",
        "therapist_id,start_year,accepting_new,wait_weeks\n",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), fhir: bool) {
            let format = if fhir { Format::Fhir } else { Format::Csv };
            let _ = try_read(format, &bytes);
        }

        #[test]
        fn csv_rows_of_plausible_characters_never_panic(
            header in 0..HEADERS.len(),
            body in "[A-Za-z0-9,;.:\\- \"\n]{0,300}",
        ) {
            let _ = try_read(Format::Csv, format!("{}{body}", HEADERS[header]).as_bytes());
        }

        #[test]
        fn fhir_resources_with_arbitrary_fields_never_panic(
            ty in "(Patient|Practitioner|EpisodeOfCare|Encounter|QuestionnaireResponse|Observation)",
            body in "[a-zA-Z0-9\":,{}\\[\\]/.\\- ]{0,200}",
        ) {
            let text = format!("{{\"resourceType\":\"{ty}\",\"id\":\"x\",{body}}}");
            let _ = try_read(Format::Fhir, text.as_bytes());
        }
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            Format::detect(b"  {\"resourceType\": \"Bundle\"}"),
            Format::Fhir
        );
        assert_eq!(Format::detect(b"\xEF\xBB\xBF{}"), Format::Fhir);
        assert_eq!(Format::detect(b"patient_id,score\n"), Format::Csv);
        assert_eq!(Format::detect(b""), Format::Csv);
    }

    #[test]
    fn errors_name_file_location_and_field() {
        let e = ImportError {
            file: "a.csv".into(),
            location: Some(Location::Line(7)),
            field: Some("date".into()),
            reason: "\"x\" is not a date".into(),
        };
        assert_eq!(
            e.to_string(),
            "a.csv, line 7, field date: \"x\" is not a date"
        );
        let e = ImportError {
            location: Some(Location::Resource("Encounter/1".into())),
            field: None,
            ..e
        };
        assert_eq!(
            e.to_string(),
            "a.csv, resource Encounter/1: \"x\" is not a date"
        );
    }

    #[test]
    fn the_page_cache_is_as_it_was_after_an_import_that_worked_or_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let pseudo = Pseudonymiser::new(&[0; 32]);
        let cache = |s: &Store| -> i64 {
            s.conn()
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap()
        };
        let before = cache(&store);
        let good = dir.path().join("good.csv");
        std::fs::write(
            &good,
            format!("{}P1,T1,E1,1,2025-01-06,PHQ-9,14,\n", HEADERS[0]),
        )
        .unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            format!("{}P1,T1,E1,2,someday,PHQ-9,14,\n", HEADERS[0]),
        )
        .unwrap();
        let outcome = import_file(&mut store, &pseudo, &good, &Options::default(), "now").unwrap();
        assert_eq!(outcome.status, "imported");
        assert_eq!(cache(&store), before);
        assert!(import_file(&mut store, &pseudo, &bad, &Options::default(), "now").is_err());
        assert_eq!(cache(&store), before);
    }
}
