//! Totals from item responses: range checks, prorating, and the LOINC answer codes of the
//! PHQ-9 and GAD-7 answer list.
//!
//! Prorating rule [D, DOMAIN.md §10]: a total is computed when at most one item is missing, as
//! the mean of the answered items times the number of items, rounded half away from zero to a
//! whole point (so prorated totals stay on the instrument's integer scale).

use thiserror::Error;

use crate::instrument::Instrument;

/// At most this many items may be missing for a total to be prorated.
pub const MAX_PRORATED_MISSING: usize = 1;

/// Why a total could not be computed from item responses.
#[derive(Debug, Error, PartialEq)]
pub enum Error {
    /// The instrument defines no items.
    #[error("{instrument} defines no items, so a total cannot be computed from items")]
    NoItems {
        /// The instrument.
        instrument: String,
    },
    /// The number of responses differs from the number of items.
    #[error("{instrument} has {expected} items but {got} responses were given")]
    WrongItemCount {
        /// The instrument.
        instrument: String,
        /// Items defined.
        expected: usize,
        /// Responses given.
        got: usize,
    },
    /// An answer is outside its item's range.
    #[error("{instrument} item {item} ({code}) answer {value} is outside [{min}, {max}]")]
    ItemOutOfRange {
        /// The instrument.
        instrument: String,
        /// 1-based item number.
        item: usize,
        /// The item's code.
        code: String,
        /// The answer.
        value: f64,
        /// Lowest allowed.
        min: f64,
        /// Highest allowed.
        max: f64,
    },
    /// Too many items are missing to prorate.
    #[error(
        "{instrument}: {missing} items missing; a total is prorated only when at most {allowed} is missing"
    )]
    TooManyMissing {
        /// The instrument.
        instrument: String,
        /// Items missing.
        missing: usize,
        /// The limit.
        allowed: usize,
    },
}

/// A total computed from items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Total {
    /// The (possibly prorated) total.
    pub total: f64,
    /// Items without an answer.
    pub n_missing: usize,
    /// Whether the total was prorated from fewer than all items.
    pub prorated: bool,
}

/// Computes the total from `answers` given in the instrument's item order (`None` = missing).
pub fn total_from_items(inst: &Instrument, answers: &[Option<f64>]) -> Result<Total, Error> {
    let name = || inst.id.clone();
    if inst.items.is_empty() {
        return Err(Error::NoItems { instrument: name() });
    }
    if answers.len() != inst.items.len() {
        return Err(Error::WrongItemCount {
            instrument: name(),
            expected: inst.items.len(),
            got: answers.len(),
        });
    }
    let mut sum = 0.0;
    let mut answered = 0usize;
    for (i, (item, answer)) in inst.items.iter().zip(answers).enumerate() {
        let Some(value) = *answer else { continue };
        if !(value >= item.min && value <= item.max) {
            return Err(Error::ItemOutOfRange {
                instrument: name(),
                item: i + 1,
                code: item.code.clone(),
                value,
                min: item.min,
                max: item.max,
            });
        }
        sum += value;
        answered += 1;
    }
    let n = inst.items.len();
    let n_missing = n - answered;
    if n_missing > MAX_PRORATED_MISSING || answered == 0 {
        return Err(Error::TooManyMissing {
            instrument: name(),
            missing: n_missing,
            allowed: MAX_PRORATED_MISSING,
        });
    }
    if n_missing == 0 {
        return Ok(Total {
            total: sum,
            n_missing,
            prorated: false,
        });
    }
    let total = (sum * n as f64 / answered as f64).round();
    Ok(Total {
        total,
        n_missing,
        prorated: true,
    })
}

/// The value of a LOINC answer code from the PHQ-9/GAD-7 answer list (DOMAIN.md §9).
pub fn loinc_answer_value(code: &str) -> Option<f64> {
    match code {
        "LA6568-5" => Some(0.0), // Not at all
        "LA6569-3" => Some(1.0), // Several days
        "LA6570-1" => Some(2.0), // More than half the days
        "LA6571-9" => Some(3.0), // Nearly every day
        _ => None,
    }
}

/// The LOINC answer code for a PHQ-9/GAD-7 answer value, for writing FHIR.
pub fn loinc_answer_code(value: f64) -> Option<&'static str> {
    const CODES: [&str; 4] = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"];
    let index = value as usize;
    (value.fract() == 0.0 && value >= 0.0)
        .then(|| CODES.get(index).copied())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::builtin_instrument;

    fn inst(id: &str) -> Instrument {
        builtin_instrument(id).unwrap()
    }

    #[track_caller]
    fn check(id: &str, answers: &[Option<f64>], expect: Result<(f64, usize, bool), &str>) {
        let got = total_from_items(&inst(id), answers);
        match (got, expect) {
            (Ok(t), Ok((total, missing, prorated))) => {
                assert_eq!(
                    (t.total, t.n_missing, t.prorated),
                    (total, missing, prorated)
                )
            }
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, expect) => panic!("got {got:?}, expected {expect:?}"),
        }
    }

    fn all(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().map(|v| Some(*v)).collect()
    }

    #[test]
    fn complete_totals() {
        check("PHQ-9", &all(&[3.0; 9]), Ok((27.0, 0, false)));
        check("PHQ-9", &all(&[0.0; 9]), Ok((0.0, 0, false)));
        check(
            "GAD-7",
            &all(&[1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]),
            Ok((12.0, 0, false)),
        );
        check("CORE-10", &all(&[4.0; 10]), Ok((40.0, 0, false)));
    }

    #[test]
    fn one_missing_item_is_prorated_and_rounded() {
        // 8 answers summing to 13: 13 * 9 / 8 = 14.625 -> 15.
        let mut a = all(&[2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0]);
        a[8] = None;
        check("PHQ-9", &a, Ok((15.0, 1, true)));
        // 6 answers summing to 9: 9 * 7 / 6 = 10.5 -> 11 (half away from zero).
        let mut g = all(&[2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0]);
        g[6] = None;
        check("GAD-7", &g, Ok((11.0, 1, true)));
    }

    #[test]
    fn bad_item_sets_are_refused() {
        let mut two_missing = all(&[1.0; 9]);
        two_missing[0] = None;
        two_missing[4] = None;
        check("PHQ-9", &two_missing, Err("2 items missing"));
        check("PHQ-9", &all(&[1.0; 8]), Err("has 9 items but 8"));
        let mut out = all(&[1.0; 9]);
        out[2] = Some(4.0);
        check("PHQ-9", &out, Err("item 3 (44259-0) answer 4"));
        check("PHQ-9", &[None; 9], Err("9 items missing"));
    }

    #[test]
    fn answer_codes_round_trip() {
        for v in 0..4 {
            let code = loinc_answer_code(v as f64).unwrap();
            assert_eq!(loinc_answer_value(code), Some(v as f64));
        }
        assert_eq!(loinc_answer_code(4.0), None);
        assert_eq!(loinc_answer_code(1.5), None);
        assert_eq!(loinc_answer_value("LA0000-0"), None);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::instrument::builtin_instruments;

    proptest! {
        /// Any accepted set of answers gives a total inside the instrument's range, prorated
        /// exactly when one item is missing, and never more than the items could add up to.
        #[test]
        fn totals_stay_in_range(which in 0usize..3, answers in proptest::collection::vec(proptest::option::weighted(0.9, 0u8..=4), 10)) {
            let inst = &builtin_instruments()[which];
            let answers: Vec<Option<f64>> = answers[..inst.items.len()].iter().map(|a| a.map(f64::from)).collect();
            if let Ok(t) = total_from_items(inst, &answers) {
                prop_assert!(inst.in_range(t.total));
                prop_assert_eq!(t.prorated, t.n_missing == 1);
                prop_assert!(t.n_missing <= MAX_PRORATED_MISSING);
                prop_assert_eq!(t.total.fract(), 0.0);
            }
        }
    }
}
