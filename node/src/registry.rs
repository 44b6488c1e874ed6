//! The instrument and domain registry: built-ins from `protocol::instrument`, plus clinic-defined
//! instruments and domains from a TOML file (`mbc-node instruments add FILE`).
//!
//! The TOML layout is documented in README.md ("Defining instruments"). Definitions are
//! validated by `protocol` before anything is stored, and stored in one transaction.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use protocol::instrument::{
    Direction, Domain, Instrument, Item, Norms, ScoreTransform, builtin_domains,
    builtin_instruments, normalise_name,
};
use rusqlite::{Connection, Transaction, params};
use serde::Deserialize;

/// All instruments and domains known to a node.
#[derive(Debug, Clone)]
pub struct Registry {
    instruments: Vec<Instrument>,
    domains: Vec<Domain>,
    /// Normalised names, aliases and total codes -> index into `instruments`.
    by_name: HashMap<String, usize>,
}

impl Registry {
    /// The built-in registry.
    pub fn builtin() -> Self {
        Self::new(builtin_instruments(), builtin_domains())
    }

    fn new(instruments: Vec<Instrument>, domains: Vec<Domain>) -> Self {
        let mut by_name = HashMap::new();
        for (i, inst) in instruments.iter().enumerate() {
            let names = std::iter::once(&inst.id)
                .chain(&inst.aliases)
                .map(|n| normalise_name(n));
            let codes = [&inst.loinc_total, &inst.snomed_total]
                .into_iter()
                .flatten()
                .cloned();
            for key in names.chain(codes) {
                by_name.entry(key).or_insert(i);
            }
        }
        Self {
            instruments,
            domains,
            by_name,
        }
    }

    /// This registry where each (code, instrument id) of `aliases` also finds the instrument
    /// (a clinic's own codes, `import --mapping`). Codes of unknown instruments are left out.
    pub fn with_aliases(mut self, aliases: &[(String, String)]) -> Self {
        for (code, id) in aliases {
            if let Some(index) = self.instruments.iter().position(|i| i.id == *id) {
                self.by_name.insert(normalise_name(code), index);
                self.by_name.insert(code.trim().to_string(), index);
            }
        }
        self
    }

    /// The instrument a file calls `name` (id, alias, LOINC or SNOMED total code).
    pub fn find(&self, name: &str) -> Option<&Instrument> {
        let index = self
            .by_name
            .get(&normalise_name(name))
            .or_else(|| self.by_name.get(name.trim()))?;
        Some(&self.instruments[*index])
    }

    /// The instrument whose id or alias a label such as a Questionnaire's canonical name
    /// starts or ends with, ignoring case and punctuation: `phq-9-example` and
    /// `mii-qst-pro-phq-9` are PHQ-9. Names shorter than four characters are not matched; the
    /// longest name wins.
    pub fn named_in(&self, label: &str) -> Option<&Instrument> {
        let label = protocol::instrument::normalise_name(label);
        self.by_name
            .iter()
            .filter(|(name, _)| name.len() >= 4 && name.chars().any(|c| c.is_ascii_alphabetic()))
            .filter(|(name, _)| label.starts_with(name.as_str()) || label.ends_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, i)| &self.instruments[*i])
    }

    /// The instrument whose id is exactly `id`.
    pub fn get(&self, id: &str) -> Option<&Instrument> {
        self.instruments.iter().find(|i| i.id == id)
    }

    /// The instrument whose LOINC panel is `code`.
    pub fn by_panel(&self, code: &str) -> Option<&Instrument> {
        self.instruments
            .iter()
            .find(|i| i.loinc_panel.as_deref() == Some(code))
    }

    /// All instruments.
    pub fn instruments(&self) -> &[Instrument] {
        &self.instruments
    }

    /// All domains.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Reads the registry from the store.
    pub(crate) fn load(conn: &Connection) -> Result<Self> {
        let mut stmt = conn.prepare(
            "SELECT instrument_id, name, aliases, min_score, max_score, direction, caseness_cutoff,
                    reliable_change, reliability, norm_func_mean, norm_func_sd, norm_clin_mean,
                    norm_clin_sd, bands, loinc_panel, loinc_total, snomed_total, items, licence,
                    builtin
             FROM instrument ORDER BY builtin DESC, instrument_id",
        )?;
        let instruments = stmt
            .query_map([], |r| {
                Ok(StoredInstrument {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    aliases: r.get(2)?,
                    min: r.get(3)?,
                    max: r.get(4)?,
                    direction: r.get(5)?,
                    caseness_cutoff: r.get(6)?,
                    reliable_change: r.get(7)?,
                    reliability: r.get(8)?,
                    norms: Norms {
                        functional_mean: r.get(9)?,
                        functional_sd: r.get(10)?,
                        clinical_mean: r.get(11)?,
                        clinical_sd: r.get(12)?,
                    },
                    bands: r.get(13)?,
                    loinc_panel: r.get(14)?,
                    loinc_total: r.get(15)?,
                    snomed_total: r.get(16)?,
                    items: r.get(17)?,
                    licence: r.get(18)?,
                    builtin: r.get(19)?,
                })
            })?
            .map(|row| row?.into_instrument())
            .collect::<Result<Vec<_>>>()?;
        let mut stmt = conn.prepare(
            "SELECT domain_id, name, instrument_id, score_transform, elevated_threshold, builtin
             FROM domain ORDER BY builtin DESC, domain_id",
        )?;
        let domains = stmt
            .query_map([], |r| {
                let transform: String = r.get(3)?;
                Ok(Domain {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    instrument_id: r.get(2)?,
                    transform: ScoreTransform::parse(&transform).unwrap_or(ScoreTransform::Raw),
                    elevated_threshold: r.get(4)?,
                    builtin: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self::new(instruments, domains))
    }

    /// Inserts every instrument and domain (used when a store is created).
    pub(crate) fn insert_all(&self, tx: &Transaction<'_>) -> Result<()> {
        for inst in &self.instruments {
            insert_instrument(tx, inst)?;
        }
        for domain in &self.domains {
            insert_domain(tx, domain)?;
        }
        Ok(())
    }
}

/// What `instruments add` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct AddOutcome {
    /// Instruments newly defined.
    pub instruments_added: Vec<String>,
    /// Domains newly defined.
    pub domains_added: Vec<String>,
    /// Definitions already stored exactly as given (no-ops).
    pub unchanged: Vec<String>,
}

/// Adds the instruments and domains defined in TOML `text` (read from `file`). All or nothing.
pub fn add_from_toml(conn: &mut Connection, file: &str, text: &str) -> Result<AddOutcome> {
    let defs: DefinitionsFile =
        toml::from_str(text).with_context(|| format!("couldn't parse {file}"))?;
    let existing = Registry::load(conn)?;
    let new_instruments = defs
        .instrument
        .into_iter()
        .map(|def| def.into_instrument())
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("invalid definition in {file}"))?;
    let mut all_instruments = existing.instruments.clone();
    let mut outcome = AddOutcome::default();
    let tx = conn.transaction()?;
    for inst in &new_instruments {
        inst.validate()
            .with_context(|| format!("invalid definition in {file}"))?;
        match existing.get(&inst.id) {
            Some(old) if old == inst => outcome.unchanged.push(inst.id.clone()),
            Some(_) => bail!(
                "{file}: instrument {} is already defined differently; definitions cannot be \
                 changed once stored (give the new version another id, e.g. {}-v2)",
                inst.id,
                inst.id
            ),
            None => {
                if let Some(clash) = existing.find(&inst.id) {
                    bail!(
                        "{file}: instrument id {} clashes with {}'s name or alias",
                        inst.id,
                        clash.id
                    );
                }
                insert_instrument(&tx, inst)?;
                all_instruments.push(inst.clone());
                outcome.instruments_added.push(inst.id.clone());
            }
        }
    }
    for def in defs.domain {
        let domain = def.into_domain()?;
        domain
            .validate(&all_instruments)
            .with_context(|| format!("invalid definition in {file}"))?;
        match existing.domains.iter().find(|d| d.id == domain.id) {
            Some(old) if *old == domain => outcome.unchanged.push(domain.id.clone()),
            Some(_) => bail!(
                "{file}: domain {} is already defined differently",
                domain.id
            ),
            None => {
                insert_domain(&tx, &domain)?;
                outcome.domains_added.push(domain.id.clone());
            }
        }
    }
    tx.commit()?;
    Ok(outcome)
}

fn insert_instrument(tx: &Transaction<'_>, i: &Instrument) -> Result<()> {
    let items: Vec<serde_json::Value> = i
        .items
        .iter()
        .map(|it| {
            serde_json::json!({"code": it.code, "min": it.min, "max": it.max, "critical": it.critical})
        })
        .collect();
    tx.execute(
        "INSERT INTO instrument (instrument_id, name, aliases, min_score, max_score, direction,
            caseness_cutoff, reliable_change, reliability, norm_func_mean, norm_func_sd,
            norm_clin_mean, norm_clin_sd, bands, loinc_panel, loinc_total, snomed_total, items,
            licence, builtin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20)",
        params![
            i.id,
            i.name,
            serde_json::to_string(&i.aliases)?,
            i.min,
            i.max,
            i.direction.as_str(),
            i.caseness_cutoff,
            i.reliable_change,
            i.reliability,
            i.norms.functional_mean,
            i.norms.functional_sd,
            i.norms.clinical_mean,
            i.norms.clinical_sd,
            serde_json::to_string(&i.bands)?,
            i.loinc_panel,
            i.loinc_total,
            i.snomed_total,
            serde_json::to_string(&items)?,
            i.licence,
            i.builtin,
        ],
    )?;
    Ok(())
}

fn insert_domain(tx: &Transaction<'_>, d: &Domain) -> Result<()> {
    tx.execute(
        "INSERT INTO domain (domain_id, name, instrument_id, score_transform, elevated_threshold,
            builtin) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            d.id,
            d.name,
            d.instrument_id,
            d.transform.as_str(),
            d.elevated_threshold,
            d.builtin
        ],
    )?;
    Ok(())
}

/// An instrument row as stored, before its JSON columns are decoded.
struct StoredInstrument {
    id: String,
    name: String,
    aliases: String,
    min: f64,
    max: f64,
    direction: String,
    caseness_cutoff: Option<f64>,
    reliable_change: Option<f64>,
    reliability: Option<f64>,
    norms: Norms,
    bands: String,
    loinc_panel: Option<String>,
    loinc_total: Option<String>,
    snomed_total: Option<String>,
    items: String,
    licence: String,
    builtin: bool,
}

#[derive(Deserialize)]
struct StoredItem {
    code: String,
    min: f64,
    max: f64,
    #[serde(default)]
    critical: Option<f64>,
}

impl StoredInstrument {
    fn into_instrument(self) -> Result<Instrument> {
        let context = || format!("stored instrument {} is corrupt", self.id);
        let items: Vec<StoredItem> = serde_json::from_str(&self.items).with_context(context)?;
        Ok(Instrument {
            aliases: serde_json::from_str(&self.aliases).with_context(context)?,
            direction: Direction::parse(&self.direction).with_context(context)?,
            bands: serde_json::from_str(&self.bands).with_context(context)?,
            items: items
                .into_iter()
                .map(|i| Item {
                    code: i.code,
                    min: i.min,
                    max: i.max,
                    critical: i.critical,
                })
                .collect(),
            id: self.id,
            name: self.name,
            min: self.min,
            max: self.max,
            caseness_cutoff: self.caseness_cutoff,
            reliable_change: self.reliable_change,
            reliability: self.reliability,
            norms: self.norms,
            loinc_panel: self.loinc_panel,
            loinc_total: self.loinc_total,
            snomed_total: self.snomed_total,
            licence: self.licence,
            builtin: self.builtin,
        })
    }
}

/// The TOML file accepted by `instruments add`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionsFile {
    #[serde(default)]
    instrument: Vec<InstrumentDef>,
    #[serde(default)]
    domain: Vec<DomainDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentDef {
    id: String,
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    min: f64,
    max: f64,
    /// "lower_is_better" (default) or "higher_is_better".
    #[serde(default = "default_direction")]
    direction: String,
    caseness_cutoff: Option<f64>,
    reliable_change: Option<f64>,
    reliability: Option<f64>,
    #[serde(default)]
    norms: NormsDef,
    /// Severity bands: `[[0, "minimal"], [5, "mild"]]`.
    #[serde(default)]
    bands: Vec<(f64, String)>,
    loinc_panel: Option<String>,
    loinc_total: Option<String>,
    snomed_total: Option<String>,
    /// Item codes in questionnaire order.
    #[serde(default)]
    items: Vec<String>,
    item_min: Option<f64>,
    item_max: Option<f64>,
    /// Items needing attention now: `[[9, 1]]` = item 9 answered 1 or more.
    #[serde(default)]
    critical_items: Vec<(usize, f64)>,
    #[serde(default = "default_licence")]
    licence: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NormsDef {
    functional_mean: Option<f64>,
    functional_sd: Option<f64>,
    clinical_mean: Option<f64>,
    clinical_sd: Option<f64>,
}

fn default_direction() -> String {
    "lower_is_better".into()
}

fn default_licence() -> String {
    "defined by the clinic".into()
}

impl InstrumentDef {
    fn into_instrument(self) -> Result<Instrument> {
        let direction = Direction::parse(&self.direction).with_context(|| {
            format!(
                "instrument {}: direction must be \"lower_is_better\" or \"higher_is_better\", not {:?}",
                self.id, self.direction
            )
        })?;
        let items = if self.items.is_empty() {
            Vec::new()
        } else {
            let (Some(min), Some(max)) = (self.item_min, self.item_max) else {
                bail!("instrument {}: items need item_min and item_max", self.id);
            };
            self.items
                .into_iter()
                .map(|code| Item {
                    code,
                    min,
                    max,
                    critical: None,
                })
                .collect()
        };
        let mut items = items;
        for (no, at) in &self.critical_items {
            let Some(item) = no.checked_sub(1).and_then(|i| items.get_mut(i)) else {
                bail!(
                    "instrument {}: critical_items names item {no}, but it has {} items",
                    self.id,
                    items.len()
                );
            };
            if !(item.min..=item.max).contains(at) {
                bail!(
                    "instrument {}: critical_items threshold {at} of item {no} is outside its \
                     answers {}–{}",
                    self.id,
                    item.min,
                    item.max
                );
            }
            item.critical = Some(*at);
        }
        Ok(Instrument {
            id: self.id.trim().to_string(),
            name: self.name,
            aliases: self.aliases,
            min: self.min,
            max: self.max,
            direction,
            caseness_cutoff: self.caseness_cutoff,
            reliable_change: self.reliable_change,
            reliability: self.reliability,
            norms: Norms {
                functional_mean: self.norms.functional_mean,
                functional_sd: self.norms.functional_sd,
                clinical_mean: self.norms.clinical_mean,
                clinical_sd: self.norms.clinical_sd,
            },
            bands: self.bands,
            loinc_panel: self.loinc_panel,
            loinc_total: self.loinc_total,
            snomed_total: self.snomed_total,
            items,
            licence: self.licence,
            builtin: false,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainDef {
    id: String,
    name: String,
    instrument: String,
    /// "raw" (default) or "z".
    #[serde(default = "default_transform")]
    transform: String,
    elevated_threshold: Option<f64>,
}

fn default_transform() -> String {
    "raw".into()
}

impl DomainDef {
    fn into_domain(self) -> Result<Domain> {
        let transform = ScoreTransform::parse(&self.transform).with_context(|| {
            format!(
                "domain {}: transform must be \"raw\" or \"z\", not {:?}",
                self.id, self.transform
            )
        })?;
        Ok(Domain {
            id: self.id.trim().to_string(),
            name: self.name,
            instrument_id: self.instrument,
            transform,
            elevated_threshold: self.elevated_threshold,
            builtin: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const WSAS: &str = r#"
[[instrument]]
id = "WSAS"
name = "Work and Social Adjustment Scale"
min = 0
max = 40
caseness_cutoff = 10
reliable_change = 8
items = ["W1", "W2", "W3", "W4", "W5"]
item_min = 0
item_max = 8

[[domain]]
id = "functioning"
name = "Work and social functioning"
instrument = "WSAS"
elevated_threshold = 10
"#;

    #[test]
    fn builtins_round_trip_through_the_store() {
        let store = Store::open_in_memory().unwrap();
        let loaded = store.registry().unwrap();
        let sorted = |mut v: Vec<Instrument>| {
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        };
        assert_eq!(loaded.instruments(), sorted(builtin_instruments()));
        let mut domains = builtin_domains();
        domains.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(loaded.domains(), domains);
        assert_eq!(loaded.find("phq9").unwrap().id, "PHQ-9");
        assert_eq!(loaded.find("70274-6").unwrap().id, "GAD-7");
        assert_eq!(loaded.by_panel("44249-1").unwrap().id, "PHQ-9");
        assert!(loaded.find("BDI").is_none());
    }

    #[test]
    fn critical_items_are_declared_checked_and_stored() {
        let mut store = Store::open_in_memory().unwrap();
        let critical = WSAS.replace("item_max = 8", "item_max = 8\ncritical_items = [[5, 7]]");
        add_from_toml(store.conn_mut(), "wsas.toml", &critical).unwrap();
        let reg = store.registry().unwrap();
        let critical: Vec<Option<f64>> = reg
            .get("WSAS")
            .unwrap()
            .items
            .iter()
            .map(|i| i.critical)
            .collect();
        assert_eq!(critical, [None, None, None, None, Some(7.0)]);
        assert_eq!(reg.get("PHQ-9").unwrap().items[8].critical, Some(1.0));
        for (bad, says) in [
            ("[[6, 1]]", "names item 6, but it has 5 items"),
            (
                "[[2, 9]]",
                "threshold 9 of item 2 is outside its answers 0–8",
            ),
        ] {
            let text = WSAS.replace("id = \"WSAS\"", "id = \"WSAS2\"").replace(
                "item_max = 8",
                &format!("item_max = 8\ncritical_items = {bad}"),
            );
            let mut store = Store::open_in_memory().unwrap();
            let err = add_from_toml(store.conn_mut(), "w.toml", &text).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
    }

    #[test]
    fn add_is_idempotent_and_refuses_changes() {
        let mut store = Store::open_in_memory().unwrap();
        let first = add_from_toml(store.conn_mut(), "wsas.toml", WSAS).unwrap();
        assert_eq!(first.instruments_added, ["WSAS"]);
        assert_eq!(first.domains_added, ["functioning"]);
        let again = add_from_toml(store.conn_mut(), "wsas.toml", WSAS).unwrap();
        assert_eq!(again.unchanged, ["WSAS", "functioning"]);
        let changed = WSAS.replace("reliable_change = 8", "reliable_change = 9");
        let err = add_from_toml(store.conn_mut(), "wsas.toml", &changed).unwrap_err();
        assert!(
            format!("{err:#}").contains("already defined differently"),
            "{err:#}"
        );
        let reg = store.registry().unwrap();
        assert_eq!(reg.get("WSAS").unwrap().items.len(), 5);
    }

    /// Issue 14: README's WSAS example is added as written (it once carried a placeholder
    /// LOINC code "..." that was stored for good), and a placeholder or mistyped code is
    /// refused with the check digit it should have.
    #[test]
    fn readme_example_is_accepted_and_bad_codes_are_refused() {
        let readme = include_str!("../../README.md");
        let start = readme.find("[[instrument]]\nid = \"WSAS\"").unwrap();
        let end = start + readme[start..].find("```").unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let added = add_from_toml(store.conn_mut(), "README.md", &readme[start..end]).unwrap();
        assert_eq!(added.instruments_added, ["WSAS"]);
        for (code, why) in [("...", "not a LOINC code"), ("44261-7", "should be 6")] {
            let toml = WSAS.replace(
                "item_max = 8",
                &format!("item_max = 8\nloinc_total = {code:?}"),
            );
            check_refused(&toml, why);
        }
    }

    #[track_caller]
    fn check_refused(toml: &str, fragment: &str) {
        let mut store = Store::open_in_memory().unwrap();
        let err = format!(
            "{:#}",
            add_from_toml(store.conn_mut(), "bad.toml", toml).unwrap_err()
        );
        assert!(err.contains(fragment), "{err}");
        // Nothing was stored.
        assert_eq!(store.registry().unwrap().instruments().len(), 3);
        assert_eq!(store.registry().unwrap().domains().len(), 3);
    }

    #[test]
    fn bad_definitions_change_nothing() {
        check_refused(&WSAS.replace("max = 40", "max = 20"), "item ranges add up");
        check_refused(
            &WSAS.replace("instrument = \"WSAS\"", "instrument = \"NOPE\""),
            "unknown instrument",
        );
        check_refused(
            &WSAS.replace("min = 0\nmax = 40", "min = 0\nmax = 40\ncolour = 1"),
            "unknown field",
        );
        check_refused(
            &WSAS.replace("id = \"WSAS\"", "id = \"PHQ-9\""),
            "already defined differently",
        );
        check_refused(&WSAS.replace("id = \"WSAS\"", "id = \"phq9\""), "clashes");
    }
}
