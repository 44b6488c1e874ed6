//! Parsing and validating one field value, shared by the CSV and FHIR readers so that both
//! formats accept and reject exactly the same values.

use chrono::NaiveDate;

/// A field that failed to parse or validate: which field and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) reason: String,
}

/// The field of an error that says a record belongs to a patient erased on request: readers
/// skip such records (and count them) instead of reporting them.
const ERASED: &str = "(erased)";

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A record of a patient erased on request (`mbc-node erase`).
    pub(crate) fn erased() -> Self {
        Self::new(ERASED, "the patient was erased on request")
    }

    /// Whether this is a record of an erased patient, to be skipped.
    pub(crate) fn is_erased(&self) -> bool {
        self.field == ERASED
    }
}

/// How the summary names records skipped because their patient was erased.
pub(crate) const ERASED_SKIPPED: &str =
    "records of patients erased on request (mbc-node erase): skipped, not imported again";

pub(crate) type FieldResult<T> = Result<T, FieldError>;

/// An ISO 8601 date, `YYYY-MM-DD`, or the date part of an ISO date-time.
pub(crate) fn date(field: &str, value: &str) -> FieldResult<String> {
    let v = value.trim();
    let day = match v.get(10..11) {
        Some("T") | Some(" ") => &v[..10],
        _ => v,
    };
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| {
            let slashed = v.split(['/', '.']).count() == 3
                && v.chars()
                    .all(|c| c.is_ascii_digit() || c == '/' || c == '.');
            let hint = if slashed {
                ": is it day first or month first? Say which with --date-format DD/MM/YYYY or \
                 --date-format MM/DD/YYYY (dates are never guessed)"
            } else {
                ""
            };
            FieldError::new(
                field,
                format!("{value:?} is not a date (expected YYYY-MM-DD){hint}"),
            )
        })
}

/// A finite number written as a plain decimal (`12`, `12.0`, `-0.5`; not `1e1`, which no
/// clinical export writes and a corrupted one might).
pub(crate) fn number(field: &str, value: &str) -> FieldResult<f64> {
    if value.contains(['e', 'E']) {
        return Err(FieldError::new(
            field,
            format!("{value:?} is in exponent notation: write the number as a plain decimal"),
        ));
    }
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| FieldError::new(field, format!("{value:?} is not a number")))
}

/// An integer within `[min, max]`.
pub(crate) fn integer(field: &str, value: &str, min: i64, max: i64) -> FieldResult<i64> {
    // Spreadsheets save whole numbers as `3.0`.
    let v = value.trim();
    let v = v.strip_suffix(".0").unwrap_or(v);
    let v: i64 = v
        .parse()
        .map_err(|_| FieldError::new(field, format!("{value:?} is not a whole number")))?;
    if v < min || v > max {
        return Err(FieldError::new(
            field,
            format!("{v} is outside [{min}, {max}]"),
        ));
    }
    Ok(v)
}

/// A yes/no value: 1/0, true/false, yes/no, y/n (any case).
/// A `;`-separated list of delivery modes (`in-person`, `video`), stored normalised.
pub(crate) fn delivery(field: &str, value: &str) -> FieldResult<String> {
    let mut modes = Vec::new();
    for m in value.split(';').map(str::trim).filter(|m| !m.is_empty()) {
        let d: protocol::matching::Delivery = m
            .parse()
            .map_err(|e: protocol::matching::Error| FieldError::new(field, e.to_string()))?;
        modes.push(d);
    }
    modes.sort();
    modes.dedup();
    Ok(modes
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(";"))
}

/// A `;`-separated list of weekly windows (`mon-pm`, `weekdays-eve`, …), stored as slots.
pub(crate) fn availability(field: &str, value: &str) -> FieldResult<String> {
    let slots = protocol::matching::Slot::parse_list(value)
        .map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(slots
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";"))
}

pub(crate) fn boolean(field: &str, value: &str) -> FieldResult<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" => Ok(true),
        "0" | "false" | "no" | "n" => Ok(false),
        _ => Err(FieldError::new(
            field,
            format!("{value:?} is not yes/no (use 1/0, true/false or yes/no)"),
        )),
    }
}

/// One of a fixed set of values, matched ignoring case; returns the canonical spelling.
pub(crate) fn one_of(
    field: &str,
    value: &str,
    allowed: &[&'static str],
) -> FieldResult<&'static str> {
    let v = value.trim();
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v))
        .copied()
        .ok_or_else(|| {
            FieldError::new(
                field,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            )
        })
}

/// Sex, normalised: `female`, `male`, `other` or `unknown` (F/M/X accepted).
pub(crate) fn sex(field: &str, value: &str) -> FieldResult<&'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "f" | "female" => Ok("female"),
        "m" | "male" => Ok("male"),
        "x" | "o" | "other" => Ok("other"),
        "u" | "unknown" => Ok("unknown"),
        _ => Err(FieldError::new(
            field,
            format!("{value:?} is not female, male, other or unknown"),
        )),
    }
}

/// A local identifier: non-empty, at most 256 characters.
pub(crate) fn identifier(field: &str, value: &str) -> FieldResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldError::new(field, "is empty"));
    }
    if v.len() > 256 {
        return Err(FieldError::new(field, "is longer than 256 characters"));
    }
    Ok(v.to_string())
}

/// End reasons of an episode.
pub(crate) const END_REASONS: &[&str] = &["completed", "dropout", "referred_on", "unknown"];
/// Session kinds.
pub(crate) const SESSION_KINDS: &[&str] = &["assessment", "treatment", "review"];
/// Steps of care (NHS Talking Therapies low / high intensity).
pub(crate) const STEPS: &[&str] = &["LI", "HI"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date("d", "2024-02-29").unwrap(), "2024-02-29");
        assert_eq!(date("d", "2024-02-29T10:00:00Z").unwrap(), "2024-02-29");
        for bad in ["2023-02-29", "29/02/2024", "2024-2-3x", "", "yesterday"] {
            let e = date("date", bad).unwrap_err();
            assert_eq!(e.field, "date");
            assert!(
                e.reason.contains("expected YYYY-MM-DD"),
                "{bad}: {}",
                e.reason
            );
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(number("s", " 12.5 ").unwrap(), 12.5);
        assert!(number("s", "NaN").is_err());
        assert!(number("s", "12a").is_err());
        assert_eq!(integer("n", "3", 1, 5).unwrap(), 3);
        assert!(
            integer("n", "0", 1, 5)
                .unwrap_err()
                .reason
                .contains("outside [1, 5]")
        );
        assert!(boolean("b", "Yes").unwrap());
        assert!(!boolean("b", "0").unwrap());
        assert!(boolean("b", "maybe").is_err());
        assert_eq!(one_of("e", "Dropout", END_REASONS).unwrap(), "dropout");
        assert!(
            one_of("e", "left", END_REASONS)
                .unwrap_err()
                .reason
                .contains("completed, dropout")
        );
        assert_eq!(sex("s", "F").unwrap(), "female");
        assert!(identifier("id", "  ").is_err());
    }
}
