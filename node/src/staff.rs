//! A clinic's display list: its own staff ids for its therapists, read from a CSV it keeps
//! (any file with a `therapist_id` column, such as the therapists.csv it imported), matched to
//! the stored pseudonyms on the fly and held in memory for display only (`--reveal`, the
//! dashboard's `[dashboard] staff_list`). A staff id is never written to the store nor sent.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use protocol::pseudonym::IdKind;

use crate::node::Node;

/// Therapist pseudonym → the clinic's staff id.
#[derive(Debug, Clone, Default)]
pub struct StaffList {
    by_pseudonym: HashMap<String, String>,
}

impl StaffList {
    /// The list in `path` for `node`'s pseudonyms. Errors name the file and line.
    pub fn read(node: &Node, path: &Path) -> Result<Self> {
        let by_pseudonym = staff_ids(path)?
            .into_iter()
            .map(|id| (node.pseudonymiser().pseudonym(IdKind::Therapist, &id), id))
            .collect();
        Ok(Self { by_pseudonym })
    }

    /// The staff id of the therapist `id` names: a whole pseudonym or a prefix of one at
    /// least as long as the short form tables show (8 digits; pages show 12).
    pub fn get(&self, id: &str) -> Option<&str> {
        if let Some(s) = self.by_pseudonym.get(id) {
            return Some(s);
        }
        if id.len() < 8 {
            return None;
        }
        self.by_pseudonym
            .iter()
            .find(|(p, _)| p.starts_with(id))
            .map(|(_, s)| s.as_str())
    }

    /// Shows `derived`'s therapists by these staff ids (its `revealed`), those listed.
    pub fn reveal(&self, derived: &mut crate::stats::Derived) {
        derived.revealed = derived
            .therapists
            .iter()
            .map(|p| self.by_pseudonym.get(p).cloned())
            .collect();
    }

    /// Whether the list names nobody.
    pub fn is_empty(&self) -> bool {
        self.by_pseudonym.is_empty()
    }
}

/// The staff ids of a display list: the `therapist_id` column of a CSV file (whatever its other
/// columns), blank cells skipped.
fn staff_ids(path: &Path) -> Result<Vec<String>> {
    let file = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("couldn't read the display list {file}"))?;
    let column = reader
        .headers()
        .with_context(|| format!("{file}: no header line"))?
        .iter()
        .position(|h| h.eq_ignore_ascii_case("therapist_id"))
        .with_context(|| {
            format!("{file}, line 1: no therapist_id column (the clinic's staff ids, as imported)")
        })?;
    let mut ids = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{file}, line {}: not CSV", i + 2))?;
        if let Some(id) = record.get(column).filter(|id| !id.is_empty()) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::output::short;

    #[test]
    fn a_display_list_names_therapists_by_their_pseudonyms_and_says_what_is_wrong() {
        let tmp = tempfile::tempdir().unwrap();
        let node = crate::node::synthetic_node(tmp.path(), 5, 60);
        let list = tmp.path().join("staff.csv");
        std::fs::write(&list, "name,therapist_id\nAnn,T1\nBo,\nCy,T2\n").unwrap();
        let staff = StaffList::read(&node, &list).unwrap();
        let p1 = node.pseudonymiser().pseudonym(IdKind::Therapist, "T1");
        let pseudonym = |id: &str| node.pseudonymiser().pseudonym(IdKind::Therapist, id);
        assert_eq!(staff.get(&pseudonym("T2")), Some("T2"));
        assert_eq!(staff.get(&pseudonym("")), None, "a blank cell names nobody");
        assert_eq!(staff.get(&p1), Some("T1"));
        assert_eq!(staff.get(&p1[..12]), Some("T1"));
        assert_eq!(staff.get(short(&p1)), Some("T1"));
        assert_eq!(staff.get(&p1[..7]), None);
        assert_eq!(staff.get("T1"), None);
        std::fs::write(&list, "name,id\nAnn,T1\n").unwrap();
        let err = format!("{:#}", StaffList::read(&node, &list).unwrap_err());
        assert!(
            err.contains("staff.csv, line 1: no therapist_id column"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            StaffList::read(&node, &tmp.path().join("none.csv")).unwrap_err()
        );
        assert!(err.contains("couldn't read the display list"), "{err}");
    }
}
