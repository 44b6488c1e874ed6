//! Episode outcomes: pre/post change, reliable change, caseness, and the NHS Talking Therapies
//! (IAPT) episode metrics of DOMAIN.md §6.
//!
//! Conventions:
//! - pre = first valid score, post = last valid score in the episode (the caller picks them).
//! - "Improvement" is direction-aware: positive means better on every instrument.
//! - Reliable change is inclusive: an improvement of at least the instrument's threshold
//!   (PHQ-9: 6, GAD-7: 4) counts (DOMAIN.md §6.4 edge cases).
//! - Caseness is inclusive (PHQ-9 ≥ 10, GAD-7 ≥ 8).

use crate::instrument::{Direction, Instrument};

/// The outcome of one episode on one instrument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureOutcome {
    /// First valid score.
    pub pre: f64,
    /// Last valid score.
    pub post: f64,
    /// post − pre, in raw points.
    pub change: f64,
    /// Change in the better direction (pre − post for lower-is-better scales).
    pub improvement: f64,
    /// Improved by at least the reliable-change threshold (`None`: no threshold defined).
    pub reliable_improvement: Option<bool>,
    /// Worsened by at least the reliable-change threshold.
    pub reliable_deterioration: Option<bool>,
    /// At caseness at the start (`None`: no cut-off defined).
    pub caseness_pre: Option<bool>,
    /// At caseness at the end.
    pub caseness_post: Option<bool>,
}

/// Computes the outcome of one instrument from its first and last valid scores.
pub fn measure_outcome(inst: &Instrument, pre: f64, post: f64) -> MeasureOutcome {
    let change = post - pre;
    let improvement = match inst.direction {
        Direction::LowerIsBetter => -change,
        Direction::HigherIsBetter => change,
    };
    let rc = inst.reliable_change();
    MeasureOutcome {
        pre,
        post,
        change,
        improvement,
        reliable_improvement: rc.map(|rc| improvement >= rc),
        reliable_deterioration: rc.map(|rc| -improvement >= rc),
        caseness_pre: inst.is_case(pre),
        caseness_post: inst.is_case(post),
    }
}

/// Switches of the IAPT rules that DOMAIN.md §6.3 marks as uncertain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaptRules {
    /// Reliable improvement also requires no reliable deterioration on any other measure, and
    /// reliable deterioration no reliable improvement on any other (the "other measure" clause).
    pub other_measure_clause: bool,
}

impl Default for IaptRules {
    fn default() -> Self {
        Self {
            other_measure_clause: true,
        }
    }
}

/// NHS Talking Therapies episode metrics over the paired measures (PHQ-9 with GAD-7 or another
/// anxiety measure): caseness on any, recovery from caseness on all, reliable change on any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeMetrics {
    /// Any measure at caseness at the start.
    pub caseness_pre: bool,
    /// Any measure at caseness at the end.
    pub caseness_post: bool,
    /// At caseness at the start and on no measure at the end.
    pub recovered: bool,
    /// Reliable improvement (see [`IaptRules`]).
    pub reliable_improvement: bool,
    /// Reliable deterioration (see [`IaptRules`]).
    pub reliable_deterioration: bool,
    /// Recovered and reliably improved.
    pub reliable_recovery: bool,
}

/// Combines the outcomes of an episode's paired measures. Measures without a cut-off or a
/// reliable-change threshold are ignored; `None` if none has both.
pub fn iapt_metrics(measures: &[MeasureOutcome], rules: IaptRules) -> Option<EpisodeMetrics> {
    struct M {
        case_pre: bool,
        case_post: bool,
        improved: bool,
        worse: bool,
    }
    let usable: Vec<M> = measures
        .iter()
        .filter_map(|m| {
            Some(M {
                case_pre: m.caseness_pre?,
                case_post: m.caseness_post?,
                improved: m.reliable_improvement?,
                worse: m.reliable_deterioration?,
            })
        })
        .collect();
    if usable.is_empty() {
        return None;
    }
    let any_improved = usable.iter().any(|m| m.improved);
    let any_worse = usable.iter().any(|m| m.worse);
    let caseness_pre = usable.iter().any(|m| m.case_pre);
    let caseness_post = usable.iter().any(|m| m.case_post);
    let clause = rules.other_measure_clause;
    let reliable_improvement = any_improved && !(clause && any_worse);
    let reliable_deterioration = any_worse && !(clause && any_improved);
    let recovered = caseness_pre && !caseness_post;
    Some(EpisodeMetrics {
        caseness_pre,
        caseness_post,
        recovered,
        reliable_improvement,
        reliable_deterioration,
        reliable_recovery: recovered && reliable_improvement,
    })
}

/// A course of treatment is finished (NHS TT) when at least two treatment sessions were attended.
pub fn finished_course(attended_treatment_sessions: u32) -> bool {
    attended_treatment_sessions >= 2
}

/// Jacobson & Truax (1991) clinical-significance cut-offs for a lower-is-better scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cutoffs {
    /// a = M₁ − 2·s₁: two SDs beyond the clinical mean, towards health.
    pub a: f64,
    /// b = M₀ + 2·s₀: within two SDs of the functional mean.
    pub b: f64,
    /// c = (s₁·M₀ + s₀·M₁)/(s₁ + s₀): where the two distributions meet.
    pub c: f64,
}

/// Cut-offs a, b, c from clinical (M₁, s₁) and functional (M₀, s₀) norms, lower = better, with
/// 2 SDs for a and b (J&T and `clinicalsignificance`; JTRCI uses 1.96).
pub fn jacobson_truax_cutoffs(m_clin: f64, s_clin: f64, m_func: f64, s_func: f64) -> Cutoffs {
    Cutoffs {
        a: m_clin - 2.0 * s_clin,
        b: m_func + 2.0 * s_func,
        c: (s_clin * m_func + s_func * m_clin) / (s_clin + s_func),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::builtin_instrument;

    fn inst(id: &str) -> Instrument {
        builtin_instrument(id).unwrap()
    }

    /// (PHQ pre, post, GAD pre, post) -> (caseness, RI, recovery, RR, RD)
    #[track_caller]
    fn check(
        phq: (f64, f64),
        gad: (f64, f64),
        clause: bool,
        expect: (bool, bool, bool, bool, bool),
    ) {
        let m = [
            measure_outcome(&inst("PHQ-9"), phq.0, phq.1),
            measure_outcome(&inst("GAD-7"), gad.0, gad.1),
        ];
        let e = iapt_metrics(
            &m,
            IaptRules {
                other_measure_clause: clause,
            },
        )
        .unwrap();
        assert_eq!(
            (
                e.caseness_pre,
                e.reliable_improvement,
                e.recovered,
                e.reliable_recovery,
                e.reliable_deterioration
            ),
            expect,
            "PHQ {phq:?} GAD {gad:?}"
        );
    }

    #[test]
    fn domain_6_4_iapt_vectors() {
        // PHQ 15→8, GAD 12→7: RI yes, recovery yes, reliable recovery yes.
        check(
            (15.0, 8.0),
            (12.0, 7.0),
            true,
            (true, true, true, true, false),
        );
        // PHQ 10→4, GAD 6→6: caseness (PHQ = 10 inclusive), RI (−6 inclusive), recovery, RR.
        check(
            (10.0, 4.0),
            (6.0, 6.0),
            true,
            (true, true, true, true, false),
        );
        // PHQ 9→9, GAD 8→3: caseness (GAD = 8), RI (−5 ≥ 4), recovery, RR.
        check(
            (9.0, 9.0),
            (8.0, 3.0),
            true,
            (true, true, true, true, false),
        );
        // PHQ 14→20 (+6), GAD 9→5 (−4): neither RI nor RD under the "other measure" clause.
        check(
            (14.0, 20.0),
            (9.0, 5.0),
            true,
            (true, false, false, false, false),
        );
        // Without the clause, both hold.
        check(
            (14.0, 20.0),
            (9.0, 5.0),
            false,
            (true, true, false, false, true),
        );
    }

    #[test]
    fn not_at_caseness_cannot_recover() {
        check(
            (8.0, 2.0),
            (5.0, 1.0),
            true,
            (false, true, false, false, false),
        );
    }

    #[test]
    fn jacobson_truax_domain_vector() {
        // DOMAIN.md §6.4: M_clin 35.48, SD_clin 8.16, M_func 8, SD_func 8 -> c = 21.60,
        // a = 19.16, b = 24.
        let c = jacobson_truax_cutoffs(35.48, 8.16, 8.0, 8.0);
        assert_eq!((c.c * 100.0).round() / 100.0, 21.60);
        assert!((c.a - 19.16).abs() < 1e-9);
        assert!((c.b - 24.0).abs() < 1e-9);
        // CORE-OM (Evans et al. 1998): pre 1.81 (.53), functional .72 (.57) -> c = 1.285.
        let core = jacobson_truax_cutoffs(1.81, 0.53, 0.72, 0.57);
        assert_eq!((core.c * 1000.0).round() / 1000.0, 1.285);
    }

    #[test]
    fn direction_is_respected() {
        let mut who = inst("PHQ-9");
        who.direction = Direction::HigherIsBetter;
        let m = measure_outcome(&who, 10.0, 17.0);
        assert_eq!(m.improvement, 7.0);
        assert_eq!(m.reliable_improvement, Some(true));
        assert_eq!(m.reliable_deterioration, Some(false));
        assert!(finished_course(2) && !finished_course(1));
    }
}
