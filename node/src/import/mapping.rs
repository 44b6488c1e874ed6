//! `import --mapping FILE`: a clinic's own export layout, so that an export does not have to be
//! edited by hand before every import. The TOML file (README.md, "Mapping a clinic's export")
//! says which of the file's columns is which documented column, which columns to leave out,
//! what the clinic's own instrument codes mean (CSV `instrument` cells and FHIR codes), how its
//! coded values read in the documented vocabulary, and the CSV settings it always needs.
//!
//! A mapping is checked whole before any data file is read: every problem of it is reported
//! (unknown keys, columns that are not documented, instruments that are not registered, a code
//! that already means another instrument), and a mapping with a problem imports nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use clap::ValueEnum;
use serde::Deserialize;

use super::{DateFormat, ImportError, Problems, TextEncoding};
use crate::registry::Registry;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    csv: CsvSettings,
    /// Documented column = the clinic's column header.
    #[serde(default)]
    columns: BTreeMap<String, String>,
    /// The clinic's columns to leave out (notes, room numbers).
    #[serde(default)]
    ignore_columns: Vec<String>,
    /// The clinic's instrument code = a registered instrument (id, alias or LOINC code).
    #[serde(default)]
    instruments: BTreeMap<String, String>,
    /// Per documented column: the clinic's value = the documented value.
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvSettings {
    delimiter: Option<String>,
    encoding: Option<String>,
    date_format: Option<String>,
}

/// A checked mapping.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The clinic's header (trimmed, lower case) -> the documented column.
    headers: HashMap<String, &'static str>,
    /// The clinic's headers to leave out (trimmed, lower case).
    ignored: HashSet<String>,
    /// The clinic's instrument code -> instrument id.
    aliases: Vec<(String, String)>,
    /// Documented column -> the clinic's value (trimmed, lower case) -> the documented value.
    values: HashMap<&'static str, HashMap<String, String>>,
    /// `[csv] delimiter`.
    pub delimiter: Option<u8>,
    /// `[csv] encoding`.
    pub encoding: Option<TextEncoding>,
    /// `[csv] date_format`.
    pub date_format: Option<DateFormat>,
}

fn key(text: &str) -> String {
    text.trim().to_lowercase()
}

impl Mapping {
    /// Reads and checks the mapping `text` of `file` against the instruments of `registry`
    /// and the `documented` CSV columns.
    pub(super) fn parse(
        file: &str,
        text: &str,
        registry: &Registry,
        documented: &[&'static str],
    ) -> Result<Self, Problems> {
        let raw: MappingFile = toml::from_str(text).map_err(|e| {
            ImportError::file(
                file,
                format!("is not a valid mapping file: {}", e.to_string().trim_end()),
            )
        })?;
        let mut problems = Problems::new();
        let mut problem = |field: String, reason: String| {
            problems.push(ImportError {
                file: file.to_string(),
                location: None,
                field: Some(field),
                reason,
            })
        };
        let known_list = || documented.join(", ");
        let documented = |name: &str| documented.iter().copied().find(|c| *c == key(name));
        let mut mapping = Mapping::default();
        for (ours, theirs) in &raw.columns {
            let Some(ours) = documented(ours) else {
                problem(
                    format!("[columns] {ours}"),
                    format!(
                        "is not a documented column (the keys are ours, the values your \
                         headers: patient_id = \"Client ID\"); documented columns: {}",
                        known_list()
                    ),
                );
                continue;
            };
            if key(theirs).is_empty() {
                problem(format!("[columns] {ours}"), "names an empty header".into());
                continue;
            }
            if let Some(other) = mapping.headers.insert(key(theirs), ours) {
                problem(
                    format!("[columns] {ours}"),
                    format!("header {theirs:?} is already mapped to {other}"),
                );
            }
        }
        for theirs in &raw.ignore_columns {
            if mapping.headers.contains_key(&key(theirs)) {
                problem(
                    "ignore_columns".into(),
                    format!("{theirs:?} is both mapped in [columns] and ignored"),
                );
            }
            mapping.ignored.insert(key(theirs));
        }
        for (code, target) in &raw.instruments {
            let Some(instrument) = registry.find(target) else {
                let known: Vec<&str> = registry
                    .instruments()
                    .iter()
                    .map(|i| i.id.as_str())
                    .collect();
                problem(
                    format!("[instruments] {code}"),
                    format!(
                        "{target:?} is not a registered instrument (registered: {}; define \
                         others with `mbc-node instruments add`)",
                        known.join(", ")
                    ),
                );
                continue;
            };
            if let Some(other) = registry.find(code)
                && other.id != instrument.id
            {
                problem(
                    format!("[instruments] {code}"),
                    format!(
                        "{code:?} already means {} (its id, an alias or a code), not {}",
                        other.id, instrument.id
                    ),
                );
                continue;
            }
            mapping
                .aliases
                .push((code.trim().to_string(), instrument.id.clone()));
        }
        for (ours, table) in &raw.values {
            let Some(column) = documented(ours) else {
                problem(
                    format!("[values.{ours}]"),
                    format!(
                        "is not a documented column; documented columns: {}",
                        known_list()
                    ),
                );
                continue;
            };
            let table = table.iter().map(|(theirs, v)| (key(theirs), v.clone()));
            mapping.values.insert(column, table.collect());
        }
        if let Some(d) = &raw.csv.delimiter {
            match super::delimiter(d) {
                Ok(d) => mapping.delimiter = Some(d),
                Err(why) => problem("[csv] delimiter".into(), why),
            }
        }
        if let Some(e) = &raw.csv.encoding {
            match TextEncoding::from_str(e, true) {
                Ok(e) => mapping.encoding = Some(e),
                Err(_) => problem(
                    "[csv] encoding".into(),
                    format!("{e:?} is not a known encoding (utf-8 or windows-1252)"),
                ),
            }
        }
        if let Some(f) = &raw.csv.date_format {
            match DateFormat::from_str(f, true) {
                Ok(f) => mapping.date_format = Some(f),
                Err(_) => problem(
                    "[csv] date_format".into(),
                    format!("{f:?} is not a date layout (DD/MM/YYYY or MM/DD/YYYY)"),
                ),
            }
        }
        problems.check()?;
        Ok(mapping)
    }

    /// The documented column a file's header means, `None` when the header is to be left
    /// out; headers the mapping does not name pass through.
    pub(crate) fn column(&self, header: &str) -> Option<String> {
        let header = key(header);
        if self.ignored.contains(&header) {
            return None;
        }
        Some(
            self.headers
                .get(&header)
                .map_or(header, |ours| ours.to_string()),
        )
    }

    /// The documented value of a cell of `column` (unmapped values pass through).
    pub(crate) fn value<'v>(&'v self, column: &str, cell: &'v str) -> &'v str {
        self.values
            .get(column)
            .and_then(|table| table.get(&key(cell)))
            .map_or(cell, String::as_str)
    }

    /// `registry` with the clinic's instrument codes as aliases.
    pub(crate) fn registry(&self, registry: Registry) -> Registry {
        registry.with_aliases(&self.aliases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &str, text: &str, registry: &Registry) -> Result<Mapping, Problems> {
        crate::import::read_mapping(file, text, registry)
    }

    #[test]
    fn every_problem_of_a_mapping_is_named() {
        let text = r#"
            ignore_columns = ["Notes", "Client ID"]
            [csv]
            delimiter = ";;"
            date_format = "YYYY/DD/MM"
            [columns]
            patient_id = "Client ID"
            patient = "Client"
            [instruments]
            PHQ = "phq-10"
            "70274-6" = "PHQ-9"
            [values.sexx]
            M = "male"
        "#;
        let problems = parse("m.toml", text, &Registry::builtin()).unwrap_err();
        let fields: Vec<&str> = problems
            .list
            .iter()
            .map(|e| e.field.as_deref().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "[columns] patient",
                "ignore_columns",
                "[instruments] 70274-6",
                "[instruments] PHQ",
                "[values.sexx]",
                "[csv] delimiter",
                "[csv] date_format"
            ]
        );
        assert!(problems.list[2].reason.contains("already means GAD-7"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_parser_location() {
        let e = parse("m.toml", "[column]\na = \"b\"\n", &Registry::builtin()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("m.toml: is not a valid mapping file"),
            "{text}"
        );
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn headers_values_and_instrument_codes_are_translated() {
        let text = r#"
            ignore_columns = ["Room"]
            [csv]
            delimiter = ";"
            encoding = "windows-1252"
            date_format = "DD/MM/YYYY"
            [columns]
            patient_id = "Client ID"
            [instruments]
            "DEP-Q" = "PHQ-9"
            [values.attended]
            J = "yes"
        "#;
        let m = parse("m.toml", text, &Registry::builtin()).unwrap();
        assert_eq!(m.column(" client id ").as_deref(), Some("patient_id"));
        assert_eq!(m.column("room"), None);
        assert_eq!(m.column("Score").as_deref(), Some("score"));
        assert_eq!(m.value("attended", "j"), "yes");
        assert_eq!(m.value("attended", "no"), "no");
        assert_eq!(m.value("sex", "J"), "J");
        assert_eq!(m.delimiter, Some(b';'));
        assert_eq!(m.encoding, Some(TextEncoding::Windows1252));
        assert_eq!(m.date_format, Some(DateFormat::DayFirst));
        let registry = m.registry(Registry::builtin());
        assert_eq!(registry.find("dep-q").map(|i| i.id.as_str()), Some("PHQ-9"));
        assert!(Registry::builtin().find("dep-q").is_none());
    }
}
