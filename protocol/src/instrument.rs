//! Outcome instruments and problem domains: the registry the importer validates against and the
//! statistics read thresholds from.
//!
//! Built-in instruments are open measures only (PHQ-9, GAD-7, CORE-10). A clinic adds others,
//! including licensed ones such as the TOP, through a TOML file read by the node; this module
//! validates them. Figures and their provenance are in DOMAIN.md §6 and §9.

use thiserror::Error;

/// Why an instrument or domain definition was refused.
#[derive(Debug, Error, PartialEq)]
pub enum Error {
    /// A definition is internally inconsistent.
    #[error("instrument {id}: {reason}")]
    InvalidInstrument {
        /// The instrument's id.
        id: String,
        /// What is wrong, in words a clinic can act on.
        reason: String,
    },
    /// A domain definition is inconsistent or names an unknown instrument.
    #[error("domain {id}: {reason}")]
    InvalidDomain {
        /// The domain's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Which way is better on a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Lower scores mean less impairment (PHQ-9, GAD-7, CORE-10).
    LowerIsBetter,
    /// Higher scores mean better functioning (e.g. WHO-5, DAS).
    HigherIsBetter,
}

impl Direction {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::LowerIsBetter => "lower_is_better",
            Direction::HigherIsBetter => "higher_is_better",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lower_is_better" => Some(Direction::LowerIsBetter),
            "higher_is_better" => Some(Direction::HigherIsBetter),
            _ => None,
        }
    }
}

/// Normative means and SDs of a functional (non-clinical) and a clinical population.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Norms {
    /// Functional population mean (M₀).
    pub functional_mean: Option<f64>,
    /// Functional population SD (s₀).
    pub functional_sd: Option<f64>,
    /// Clinical population mean (M₁).
    pub clinical_mean: Option<f64>,
    /// Clinical population SD (s₁), used for the Jacobson–Truax reliable change.
    pub clinical_sd: Option<f64>,
}

/// A questionnaire item: its code (LOINC where one exists) and its answer range.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The item's code, e.g. LOINC `44250-9` for PHQ-9 item 1.
    pub code: String,
    /// Lowest answer value.
    pub min: f64,
    /// Highest answer value.
    pub max: f64,
    /// An answer at or above this needs attention now, whatever the trajectory (PHQ-9 item 9
    /// at 1: thoughts of being better off dead or of self-harm).
    pub critical: Option<f64>,
}

/// One outcome measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Instrument {
    /// Short identifier used in files and reports, e.g. `PHQ-9`.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Other spellings accepted in import files (matched ignoring case and punctuation).
    pub aliases: Vec<String>,
    /// Lowest possible total.
    pub min: f64,
    /// Highest possible total.
    pub max: f64,
    /// Which way is better.
    pub direction: Direction,
    /// A score at or beyond this (in the worse direction) is "caseness".
    pub caseness_cutoff: Option<f64>,
    /// Minimum change in points that counts as reliable; when absent it is derived from
    /// `reliability` and the clinical SD (Jacobson & Truax 1991).
    pub reliable_change: Option<f64>,
    /// Internal consistency or test-retest reliability r_xx.
    pub reliability: Option<f64>,
    /// Population norms.
    pub norms: Norms,
    /// Severity bands as (lower bound inclusive, label), ascending.
    pub bands: Vec<(f64, String)>,
    /// LOINC code of the panel (Questionnaire / Observation.method).
    pub loinc_panel: Option<String>,
    /// LOINC code of the total score Observation.
    pub loinc_total: Option<String>,
    /// SNOMED CT code of the total score (UK NHS).
    pub snomed_total: Option<String>,
    /// Items in questionnaire order; empty when only totals are known.
    pub items: Vec<Item>,
    /// Licence or terms of use.
    pub licence: String,
    /// Whether this definition ships with mbc-node.
    pub builtin: bool,
}

impl Instrument {
    /// The reliable-change threshold in points: the declared one, else the Jacobson–Truax
    /// minimum reliable change 1.96·√2·s₁·√(1 − r_xx), else none.
    pub fn reliable_change(&self) -> Option<f64> {
        self.reliable_change.or_else(|| {
            let sd = self.norms.clinical_sd?;
            let r = self.reliability?;
            Some(jacobson_truax_min_change(sd, r))
        })
    }

    /// Whether a total is a whole number of points: the range and every item's answers are
    /// whole (PHQ-9, GAD-7). A given total of such an instrument must be whole; only a total
    /// prorated from items may not be.
    pub fn whole_point_totals(&self) -> bool {
        let whole = |v: f64| v.fract() == 0.0;
        whole(self.min)
            && whole(self.max)
            && self.items.iter().all(|i| whole(i.min) && whole(i.max))
    }

    /// Whether `score` is within the instrument's range.
    pub fn in_range(&self, score: f64) -> bool {
        score >= self.min && score <= self.max
    }

    /// Whether `score` is at caseness (at or beyond the cut-off in the worse direction).
    pub fn is_case(&self, score: f64) -> Option<bool> {
        let cutoff = self.caseness_cutoff?;
        Some(match self.direction {
            Direction::LowerIsBetter => score >= cutoff,
            Direction::HigherIsBetter => score <= cutoff,
        })
    }

    /// Whether `name` (a file's spelling, or a LOINC/SNOMED total code) refers to this instrument.
    pub fn matches(&self, name: &str) -> bool {
        let key = normalise_name(name);
        normalise_name(&self.id) == key
            || self.aliases.iter().any(|a| normalise_name(a) == key)
            || self.loinc_total.as_deref() == Some(name.trim())
            || self.snomed_total.as_deref() == Some(name.trim())
    }

    /// Checks that the definition is internally consistent.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |reason: String| Error::InvalidInstrument {
            id: self.id.clone(),
            reason,
        };
        if self.id.trim().is_empty() || self.id.len() > 64 {
            return Err(fail("id must be 1 to 64 characters".into()));
        }
        if !(self.min.is_finite() && self.max.is_finite() && self.min < self.max) {
            return Err(fail(format!(
                "min ({}) must be below max ({})",
                self.min, self.max
            )));
        }
        if let Some(c) = self.caseness_cutoff
            && !self.in_range(c)
        {
            return Err(fail(format!(
                "caseness_cutoff {c} is outside [{}, {}]",
                self.min, self.max
            )));
        }
        if let Some(rc) = self.reliable_change
            && !(rc > 0.0 && rc <= self.max - self.min)
        {
            return Err(fail(format!(
                "reliable_change {rc} must be positive and within the range"
            )));
        }
        if let Some(r) = self.reliability
            && !(r > 0.0 && r < 1.0)
        {
            return Err(fail(format!(
                "reliability {r} must be strictly between 0 and 1"
            )));
        }
        for sd in [self.norms.functional_sd, self.norms.clinical_sd]
            .into_iter()
            .flatten()
        {
            if !(sd > 0.0 && sd.is_finite()) {
                return Err(fail(format!("norm SD {sd} must be positive")));
            }
        }
        for (name, code) in [
            ("loinc_panel", &self.loinc_panel),
            ("loinc_total", &self.loinc_total),
        ] {
            if let Some(code) = code {
                check_loinc(code).map_err(|why| fail(format!("{name} {code:?} {why}")))?;
            }
        }
        if let Some(code) = &self.snomed_total
            && (!(6..=18).contains(&code.len())
                || !code.bytes().all(|b| b.is_ascii_digit())
                || code.starts_with('0'))
        {
            return Err(fail(format!(
                "snomed_total {code:?} is not a SNOMED CT identifier (6 to 18 digits, no \
                 leading zero)"
            )));
        }
        if self.bands.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(fail("severity bands must be in ascending order".into()));
        }
        for item in &self.items {
            if item.code.trim().is_empty()
                || item.min.partial_cmp(&item.max) != Some(std::cmp::Ordering::Less)
            {
                return Err(fail(format!(
                    "item {:?} needs a code and min < max",
                    item.code
                )));
            }
        }
        if !self.items.is_empty() {
            let lo: f64 = self.items.iter().map(|i| i.min).sum();
            let hi: f64 = self.items.iter().map(|i| i.max).sum();
            if lo < self.min || hi > self.max {
                return Err(fail(format!(
                    "item ranges add up to [{lo}, {hi}], outside the total range [{}, {}]",
                    self.min, self.max
                )));
            }
        }
        Ok(())
    }
}

/// Jacobson & Truax (1991) minimum reliable raw change: 1.96 · √2 · s₁ · √(1 − r_xx).
pub fn jacobson_truax_min_change(sd: f64, reliability: f64) -> f64 {
    1.96 * std::f64::consts::SQRT_2 * sd * (1.0 - reliability).sqrt()
}

/// How a domain's score is derived from its instrument's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreTransform {
    /// The instrument total as it is.
    Raw,
    /// A z-score against the instrument's functional norms (TOP-style).
    Z,
}

impl ScoreTransform {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreTransform::Raw => "raw",
            ScoreTransform::Z => "z",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(ScoreTransform::Raw),
            "z" => Some(ScoreTransform::Z),
            _ => None,
        }
    }
}

/// A problem domain (depression, anxiety, …), measure-agnostic: backed by one instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct Domain {
    /// Short identifier, e.g. `depression`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The instrument whose total measures this domain.
    pub instrument_id: String,
    /// How the domain score is derived from the total.
    pub transform: ScoreTransform,
    /// A patient is "elevated" on the domain at intake at or beyond this domain score.
    pub elevated_threshold: Option<f64>,
    /// Whether this definition ships with mbc-node.
    pub builtin: bool,
}

impl Domain {
    /// Checks the domain against the instruments it may reference.
    pub fn validate(&self, instruments: &[Instrument]) -> Result<(), Error> {
        let fail = |reason: String| Error::InvalidDomain {
            id: self.id.clone(),
            reason,
        };
        if self.id.trim().is_empty() || self.id.len() > 64 {
            return Err(fail("id must be 1 to 64 characters".into()));
        }
        let Some(inst) = instruments.iter().find(|i| i.id == self.instrument_id) else {
            return Err(fail(format!("unknown instrument {:?}", self.instrument_id)));
        };
        if self.transform == ScoreTransform::Z
            && (inst.norms.functional_mean.is_none() || inst.norms.functional_sd.is_none())
        {
            return Err(fail(format!(
                "z transform needs functional_mean and functional_sd on instrument {}",
                inst.id
            )));
        }
        Ok(())
    }
}

/// Checks a LOINC code's form and check digit (LOINC's mod-10 algorithm: from the right,
/// every other digit of the number doubled, the digits summed; the check digit brings the sum
/// to a multiple of 10): `44261-6` passes, `44261-7` and `...` do not.
pub fn check_loinc(code: &str) -> Result<(), String> {
    let Some((number, check)) = code.split_once('-') else {
        return Err("is not a LOINC code (digits, a hyphen, a check digit: 44261-6)".into());
    };
    let digits: Option<Vec<u32>> = number.chars().map(|c| c.to_digit(10)).collect();
    let (Some(digits), Some(check)) = (digits, check.parse::<u32>().ok()) else {
        return Err("is not a LOINC code (digits, a hyphen, a check digit: 44261-6)".into());
    };
    if digits.is_empty() || digits.len() > 7 || check > 9 || check_digit(&digits) != check {
        return Err(format!(
            "is not a valid LOINC code: its check digit should be {}",
            check_digit(&digits)
        ));
    }
    Ok(())
}

fn check_digit(digits: &[u32]) -> u32 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                *d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// An instrument name as compared: ASCII letters and digits, lower case.
pub fn normalise_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn items(codes: &[&str], min: f64, max: f64) -> Vec<Item> {
    codes
        .iter()
        .map(|c| Item {
            code: (*c).to_string(),
            min,
            max,
            critical: None,
        })
        .collect()
}

fn bands(b: &[(f64, &str)]) -> Vec<(f64, String)> {
    b.iter().map(|(lo, l)| (*lo, (*l).to_string())).collect()
}

/// LOINC item codes of PHQ-9 items 1–9 (DOMAIN.md §9).
pub const PHQ9_ITEMS: [&str; 9] = [
    "44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3",
    "44260-8",
];
/// LOINC item codes of GAD-7 items 1–7 (DOMAIN.md §9; item 6 is 69689-8, see §13.6).
pub const GAD7_ITEMS: [&str; 7] = [
    "69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7",
];

/// The instruments that ship with mbc-node: open measures only.
///
/// Thresholds: PHQ-9 caseness ≥ 10 and reliable change ≥ 6, GAD-7 caseness ≥ 8 and reliable
/// change ≥ 4 (NHS Talking Therapies, DOMAIN.md §6.2). Clinical norms are the NHS TT 2022-23
/// intake means/SDs (§6.3). CORE-10: clinical cut-off 11 and reliable change 6 (Barkham et al.
/// 2013, Counselling and Psychotherapy Research 13:3–13); it has no LOINC codes, so items are
/// numbered `CORE10-1` … `CORE10-10`. Reliabilities are the published Cronbach's α (PHQ-9 .89,
/// Kroenke 2001; GAD-7 .92, Spitzer 2006; CORE-10 .90, Barkham 2013) and are used only where an
/// instrument has no declared reliable-change threshold.
pub fn builtin_instruments() -> Vec<Instrument> {
    vec![
        Instrument {
            id: "PHQ-9".into(),
            name: "Patient Health Questionnaire-9".into(),
            aliases: vec!["PHQ9".into(), "PHQ".into()],
            min: 0.0,
            max: 27.0,
            direction: Direction::LowerIsBetter,
            caseness_cutoff: Some(10.0),
            reliable_change: Some(6.0),
            reliability: Some(0.89),
            norms: Norms {
                clinical_mean: Some(15.4),
                clinical_sd: Some(5.5),
                ..Norms::default()
            },
            bands: bands(&[
                (0.0, "minimal"),
                (5.0, "mild"),
                (10.0, "moderate"),
                (15.0, "moderately severe"),
                (20.0, "severe"),
            ]),
            loinc_panel: Some("44249-1".into()),
            loinc_total: Some("44261-6".into()),
            snomed_total: Some("720433000".into()),
            items: {
                let mut items = items(&PHQ9_ITEMS, 0.0, 3.0);
                // Item 9 (44260-8): any answer but "not at all" (Kroenke 2001).
                items[8].critical = Some(1.0);
                items
            },
            licence: "free to use (Pfizer); no permission required".into(),
            builtin: true,
        },
        Instrument {
            id: "GAD-7".into(),
            name: "Generalized Anxiety Disorder-7".into(),
            aliases: vec!["GAD7".into(), "GAD".into()],
            min: 0.0,
            max: 21.0,
            direction: Direction::LowerIsBetter,
            caseness_cutoff: Some(8.0),
            reliable_change: Some(4.0),
            reliability: Some(0.92),
            norms: Norms {
                clinical_mean: Some(14.0),
                clinical_sd: Some(4.5),
                ..Norms::default()
            },
            bands: bands(&[
                (0.0, "minimal"),
                (5.0, "mild"),
                (10.0, "moderate"),
                (15.0, "severe"),
            ]),
            loinc_panel: Some("69737-5".into()),
            loinc_total: Some("70274-6".into()),
            snomed_total: Some("445455005".into()),
            items: items(&GAD7_ITEMS, 0.0, 3.0),
            licence: "free to use (Pfizer); no permission required".into(),
            builtin: true,
        },
        Instrument {
            id: "CORE-10".into(),
            name: "Clinical Outcomes in Routine Evaluation-10".into(),
            aliases: vec!["CORE10".into()],
            min: 0.0,
            max: 40.0,
            direction: Direction::LowerIsBetter,
            caseness_cutoff: Some(11.0),
            reliable_change: Some(6.0),
            reliability: Some(0.90),
            norms: Norms::default(),
            bands: bands(&[
                (0.0, "healthy"),
                (6.0, "low"),
                (11.0, "mild"),
                (15.0, "moderate"),
                (20.0, "moderate-to-severe"),
                (25.0, "severe"),
            ]),
            loinc_panel: None,
            loinc_total: None,
            snomed_total: None,
            items: (1..=10)
                .map(|i| Item {
                    code: format!("CORE10-{i}"),
                    min: 0.0,
                    max: 4.0,
                    critical: None,
                })
                .collect(),
            licence: "free to use, unaltered (CORE System Trust)".into(),
            builtin: true,
        },
    ]
}

/// The built-in instrument with id `id`, if there is one.
pub fn builtin_instrument(id: &str) -> Option<Instrument> {
    builtin_instruments().into_iter().find(|i| i.id == id)
}

/// The domains that ship with mbc-node, one per built-in instrument; elevated = caseness.
pub fn builtin_domains() -> Vec<Domain> {
    [
        ("depression", "Depression", "PHQ-9", 10.0),
        ("anxiety", "Anxiety", "GAD-7", 8.0),
        (
            "distress",
            "General psychological distress",
            "CORE-10",
            11.0,
        ),
    ]
    .into_iter()
    .map(|(id, name, inst, threshold)| Domain {
        id: id.into(),
        name: name.into(),
        instrument_id: inst.into(),
        transform: ScoreTransform::Raw,
        elevated_threshold: Some(threshold),
        builtin: true,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phq9() -> Instrument {
        builtin_instrument("PHQ-9").unwrap()
    }

    #[test]
    fn builtins_are_valid() {
        let instruments = builtin_instruments();
        for i in &instruments {
            i.validate().unwrap();
        }
        for d in builtin_domains() {
            d.validate(&instruments).unwrap();
        }
    }

    #[test]
    fn jacobson_truax_known_answer() {
        // DOMAIN.md §6.4: SD 8.16, r = .81 gives a minimum reliable change of 9.86.
        assert_eq!(
            (jacobson_truax_min_change(8.16, 0.81) * 100.0).round() / 100.0,
            9.86
        );
        // CORE-OM (Evans, Margison & Barkham 1998): SD .53, α = .89 gives RC 0.487.
        assert_eq!(
            (jacobson_truax_min_change(0.53, 0.89) * 1000.0).round() / 1000.0,
            0.487
        );
    }

    #[test]
    fn declared_reliable_change_wins_over_derived() {
        assert_eq!(phq9().reliable_change(), Some(6.0));
        let mut derived = phq9();
        derived.reliable_change = None;
        let rc = derived.reliable_change().unwrap();
        assert!((rc - jacobson_truax_min_change(5.5, 0.89)).abs() < 1e-12);
        derived.reliability = None;
        assert_eq!(derived.reliable_change(), None);
    }

    #[test]
    fn caseness_is_inclusive_and_follows_direction() {
        let p = phq9();
        assert_eq!(p.is_case(10.0), Some(true));
        assert_eq!(p.is_case(9.0), Some(false));
        let mut higher_better = p.clone();
        higher_better.direction = Direction::HigherIsBetter;
        assert_eq!(higher_better.is_case(10.0), Some(true));
        assert_eq!(higher_better.is_case(11.0), Some(false));
    }

    #[test]
    fn names_match_ignoring_punctuation_and_codes() {
        let p = phq9();
        for name in ["PHQ-9", "phq9", "Phq 9", "PHQ", "44261-6", "720433000"] {
            assert!(p.matches(name), "{name}");
        }
        assert!(!p.matches("GAD-7"));
        assert!(!p.matches("44249-1")); // the panel, not the total
    }

    #[track_caller]
    fn check_invalid(edit: impl FnOnce(&mut Instrument), reason_contains: &str) {
        let mut i = phq9();
        edit(&mut i);
        let err = i.validate().unwrap_err().to_string();
        assert!(err.contains(reason_contains), "{err}");
    }

    #[test]
    fn invalid_definitions_are_refused() {
        check_invalid(|i| i.max = i.min, "must be below max");
        check_invalid(|i| i.caseness_cutoff = Some(30.0), "caseness_cutoff 30");
        check_invalid(|i| i.reliable_change = Some(0.0), "reliable_change");
        check_invalid(|i| i.reliability = Some(1.0), "reliability");
        check_invalid(|i| i.items[0].max = 9.0, "item ranges add up");
        check_invalid(|i| i.bands.swap(0, 1), "ascending");
        check_invalid(|i| i.id = String::new(), "id must be");
    }

    #[test]
    fn z_domain_needs_functional_norms() {
        let instruments = builtin_instruments();
        let mut d = builtin_domains().remove(0);
        d.transform = ScoreTransform::Z;
        assert!(
            d.validate(&instruments)
                .unwrap_err()
                .to_string()
                .contains("functional_mean")
        );
        d.instrument_id = "TOP".into();
        assert!(
            d.validate(&instruments)
                .unwrap_err()
                .to_string()
                .contains("unknown instrument")
        );
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    /// Issue 14: codes in instrument definitions are checked; every built-in code passes.
    #[test]
    fn loinc_check_digits() {
        for ok in [
            "44261-6", "70274-6", "44249-1", "69737-5", "44250-9", "69722-7",
        ] {
            assert_eq!(check_loinc(ok), Ok(()), "{ok}");
        }
        assert!(check_loinc("44261-7").unwrap_err().contains("should be 6"));
        assert!(check_loinc("...").unwrap_err().contains("not a LOINC code"));
        for i in builtin_instruments() {
            assert_eq!(i.validate().map_err(|e| e.to_string()), Ok(()), "{}", i.id);
            for item in &i.items {
                if item.code.starts_with(|c: char| c.is_ascii_digit()) {
                    assert_eq!(check_loinc(&item.code), Ok(()), "{} {}", i.id, item.code);
                }
            }
        }
    }
}
