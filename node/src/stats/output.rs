//! Rendering of [`Derived`]: a table for people, JSON for scripts, CSV for spreadsheets.
//! Therapists appear by the first 8 hex digits of their pseudonym.

use std::fmt::Write;

use protocol::analysis::{FEATURES, Rates};
use protocol::therapist::wilson;
use serde_json::{Value, json};

use super::Derived;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this domain id.
    pub domain: Option<String>,
    /// Only therapists whose pseudonym is one of these.
    pub therapists: Option<Vec<String>>,
}

/// England's national NHS Talking Therapies figures to compare a clinic with (DOMAIN.md
/// §6.3); shown only where they apply ([`Derived::national`]).
pub const NATIONAL: [(&str, f64, &str); 4] = [
    ("reliable_improvement", 0.664, "66.4 %, 2017-18 [P]"),
    ("recovery", 0.502, "50.2 %, 2021-22 [P]"),
    ("reliable_recovery", 0.484, "48.4 %, April 2025 [P]"),
    (
        "reliable_deterioration",
        0.075,
        "5–10 % of adult outcomes [S]",
    ),
];

/// The four NHS TT rates as (name, count, denominator), in the order of [`NATIONAL`].
pub fn rate_rows(r: &Rates) -> [(&'static str, u64, u64); 4] {
    [
        ("Reliable improvement", r.reliable_improvement, r.finished),
        ("Recovery", r.recovered, r.at_caseness),
        ("Reliable recovery", r.reliable_recovery, r.at_caseness),
        (
            "Reliable deterioration",
            r.reliable_deterioration,
            r.finished,
        ),
    ]
}

/// The short display form of a pseudonym.
pub fn short(pseudonym: &str) -> &str {
    &pseudonym[..pseudonym.len().min(8)]
}

fn rate(k: u64, n: u64) -> Value {
    let ci = wilson(k, n);
    json!({"count": k, "of": n, "rate": (n > 0).then(|| k as f64 / n as f64), "ci95": ci.map(|c| [c.0, c.1])})
}

/// Rates as JSON: counts, proportions and Wilson intervals.
pub fn rates_json(r: &Rates) -> Value {
    json!({
        "finished_courses": r.finished,
        "at_caseness": r.at_caseness,
        "reliable_improvement": rate(r.reliable_improvement, r.finished),
        "reliable_deterioration": rate(r.reliable_deterioration, r.finished),
        "recovery": rate(r.recovered, r.at_caseness),
        "reliable_recovery": rate(r.reliable_recovery, r.at_caseness),
    })
}

impl Derived {
    /// How therapist `t` is shown: the staff id a display list revealed, else the short
    /// pseudonym.
    pub fn who(&self, t: usize) -> String {
        match self.revealed.get(t).and_then(Option::as_deref) {
            Some(id) => id.to_string(),
            None => short(&self.therapists[t]).to_string(),
        }
    }

    /// The staff id revealed for therapist `t`, if any.
    fn staff_id(&self, t: usize) -> Option<&str> {
        self.revealed.get(t).and_then(Option::as_deref)
    }

    fn keep_therapist(&self, f: &Filter, t: usize) -> bool {
        f.therapists
            .as_ref()
            .is_none_or(|ids| ids.contains(&self.therapists[t]))
    }

    /// The domain results `f` selects.
    fn domains_shown<'a>(
        &'a self,
        f: &'a Filter,
    ) -> impl Iterator<Item = &'a protocol::analysis::DomainResult> {
        let keep = |d: usize| f.domain.as_ref().is_none_or(|id| self.domains[d].id == *id);
        self.analysis.domains.iter().filter(move |d| keep(d.domain))
    }

    /// The JSON document of `stats --json`.
    /// Where a domain's risk model and variance components come from: "network" or "clinic".
    fn sources(d: &protocol::analysis::DomainResult) -> (&'static str, &'static str) {
        let from = |network: bool| if network { "network" } else { "clinic" };
        (from(d.network_model), from(d.network_variance))
    }

    /// Which reference the track records use, in words.
    pub fn reference_description(&self) -> String {
        match &self.settings.reference {
            Some(r) => format!(
                "network benchmark release {} (its risk model, τ² and σ² where they are precise \
                 enough; the clinic's own otherwise)",
                r.release_id
            ),
            None => "this clinic's own data".into(),
        }
    }

    pub fn to_json(&self, f: &Filter) -> Value {
        let domains: Vec<Value> = self.domains_shown(f)
            .map(|d| {
                let dom = &self.domains[d.domain];
                let records: Vec<Value> = d
                    .records
                    .iter()
                    .filter(|(t, _)| self.keep_therapist(f, *t))
                    .map(|(t, r)| {
                        json!({
                            "therapist": self.therapists[*t], "staff_id": self.staff_id(*t), "n": r.n, "mean_residual": r.mean, "se": r.se,
                            "shrinkage": r.shrinkage, "eb_effect": r.eb,
                            "eb_interval": [r.eb_interval.0, r.eb_interval.1], "label": r.label.as_str(),
                        })
                    })
                    .collect();
                let (risk_from, variance_from) = Self::sources(d);
                json!({
                    "id": dom.id, "name": dom.name, "instrument": dom.instrument_id,
                    "episodes_with_pre_and_post": d.episodes, "eligible": d.eligible,
                    "reference": {"risk_model": risk_from, "variance": variance_from,
                                  "network_model_prediction_noise": d.reference_prediction_sd},
                    "risk_model": d.model.as_ref().map(|m| json!({
                        "features": FEATURES, "beta": m.beta, "n": m.n, "residual_sd": m.residual_sd})),
                    "variance": d.variance.as_ref().map(|v| json!({
                        "therapists": v.therapists, "patients": v.patients, "tau2": v.tau2,
                        "tau2_ci95": [v.tau2_interval.0, if v.tau2_interval.1.is_finite() { json!(v.tau2_interval.1) } else { Value::Null }],
                        "sigma2": v.sigma2, "icc": v.icc})),
                    "therapists": records,
                })
            })
            .collect();
        let therapists: Vec<Value> = self
            .analysis
            .therapist_rates
            .iter()
            .filter(|(t, _)| self.keep_therapist(f, *t))
            .map(|(t, r)| json!({"therapist": self.therapists[*t], "staff_id": self.staff_id(*t), "rates": rates_json(r)}))
            .collect();
        let s = &self.settings;
        json!({
            "clinic": self.clinic,
            "algorithm_version": protocol::analysis::ALGORITHM_VERSION,
            "settings": {
                "rule": s.rule.as_str(), "min_n_show": s.minimums.show, "min_n_classify": s.minimums.classify,
                "other_measure_clause": s.iapt.other_measure_clause, "ridge": s.ridge,
                "clinical_margin": s.margin,
                "paired_instruments": s.paired.iter().map(|k| &self.instruments[*k].id).collect::<Vec<_>>(),
            },
            "reference": self.reference_description(),
            "residual_sign": "negative = better than expected",
            "episodes": self.episodes,
            "clinic_rates": rates_json(&self.analysis.clinic_rates),
            "national": self.national.then(|| json!({
                "country": "England",
                "service": "NHS Talking Therapies",
                "rates": NATIONAL.iter().map(|(k, v, src)| (k.to_string(), json!({"rate": v, "source": src}))).collect::<serde_json::Map<_, _>>(),
            })),
            "domains": domains,
            "therapist_rates": therapists,
        })
    }

    /// One CSV row per therapist × domain.
    pub fn to_csv(&self, f: &Filter) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "therapist",
            "domain",
            "instrument",
            "n",
            "mean_residual",
            "se",
            "shrinkage",
            "eb_effect",
            "eb_lo",
            "eb_hi",
            "label",
            "rule",
            "staff_id",
        ])?;
        for d in self.domains_shown(f) {
            let dom = &self.domains[d.domain];
            for (t, r) in d.records.iter().filter(|(t, _)| self.keep_therapist(f, *t)) {
                w.write_record([
                    self.therapists[*t].clone(),
                    dom.id.clone(),
                    dom.instrument_id.clone(),
                    r.n.to_string(),
                    format!("{:.4}", r.mean),
                    format!("{:.4}", r.se),
                    format!("{:.4}", r.shrinkage),
                    format!("{:.4}", r.eb),
                    format!("{:.4}", r.eb_interval.0),
                    format!("{:.4}", r.eb_interval.1),
                    r.label.as_str().to_string(),
                    self.settings.rule.as_str().to_string(),
                    self.staff_id(*t).unwrap_or_default().to_string(),
                ])?;
            }
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }

    /// The readable table of `stats`.
    pub fn to_text(&self, f: &Filter) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let paired: Vec<&str> = s
            .paired
            .iter()
            .map(|k| self.instruments[*k].id.as_str())
            .collect();
        let r = &self.analysis.clinic_rates;
        let _ = writeln!(
            out,
            "{}: {} episodes; {} finished courses with {} (NHS Talking Therapies rules, other-measure clause {})",
            self.clinic,
            self.episodes,
            r.finished,
            paired.join("/"),
            if s.iapt.other_measure_clause {
                "on"
            } else {
                "off"
            }
        );
        if f.therapists.is_none() {
            write_rates(&mut out, r, self.national);
        }
        for (t, r) in self
            .analysis
            .therapist_rates
            .iter()
            .filter(|(t, _)| f.therapists.is_some() && self.keep_therapist(f, *t))
        {
            let _ = writeln!(
                out,
                "therapist {}: {} finished courses",
                self.who(*t),
                r.finished
            );
            write_rates(&mut out, r, false);
        }
        let _ = writeln!(
            out,
            "\nTrack records: residual = observed − expected end score (negative = better than expected);\n\
             reference: {};\n\
             label by {} at n ≥ {}, shown at n ≥ {}.",
            self.reference_description(),
            match s.rule {
                protocol::therapist::Rule::EbInterval if s.margin > 0.0 => format!(
                    "the 95 % empirical-Bayes interval beyond a clinical margin of ± {} points",
                    s.margin
                ),
                protocol::therapist::Rule::EbInterval =>
                    "the 95 % empirical-Bayes interval".to_string(),
                protocol::therapist::Rule::Kraus => "the Kraus rule (the average patient's \
                     risk-adjusted change beyond ± reliable change)"
                    .to_string(),
            },
            s.minimums.classify,
            s.minimums.show
        );
        for d in self.domains_shown(f) {
            let dom = &self.domains[d.domain];
            let _ = writeln!(
                out,
                "\n{} ({}): {} episodes with pre and post, {} elevated at intake",
                dom.id, dom.instrument_id, d.episodes, d.eligible
            );
            if self.settings.reference.is_some() {
                let (risk_from, variance_from) = Self::sources(d);
                let noise = d
                    .reference_prediction_sd
                    .map(|n| {
                        format!(
                            " (the network model's noise moves predictions here by {n:.2} points)"
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  reference: risk model from the {risk_from}{noise}, τ² and σ² from the {variance_from}"
                );
            }
            match (&d.model, &d.variance) {
                (Some(m), Some(v)) => {
                    let hi = if v.tau2_interval.1.is_finite() {
                        format!("{:.2}", v.tau2_interval.1)
                    } else {
                        "∞".into()
                    };
                    let _ = writeln!(
                        out,
                        "  risk model residual SD {:.2}; between-therapist τ² {:.2} (95 % {:.2}–{hi}), within σ² {:.2}, ICC {:.3}",
                        m.residual_sd, v.tau2, v.tau2_interval.0, v.sigma2, v.icc
                    );
                }
                (Some(m), None) => {
                    let _ = writeln!(
                        out,
                        "  risk model residual SD {:.2}; too few therapists for variance components",
                        m.residual_sd
                    );
                }
                _ => {
                    let _ = writeln!(out, "  not enough episodes for a risk model");
                    continue;
                }
            }
            let rows: Vec<_> = d
                .records
                .iter()
                .filter(|(t, _)| self.keep_therapist(f, *t))
                .collect();
            if rows.is_empty() {
                let _ = writeln!(
                    out,
                    "  no therapist has {} eligible patients yet",
                    s.minimums.show
                );
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<10} {:>4} {:>10} {:>6} {:>26}  label",
                "therapist", "n", "mean resid", "SE", "EB effect (95 % interval)"
            );
            for (t, r) in rows {
                let _ = writeln!(
                    out,
                    "  {:<10} {:>4} {:>10.2} {:>6.2} {:>7.2} ({:>7.2}, {:>7.2})  {}",
                    self.who(*t),
                    r.n,
                    r.mean,
                    r.se,
                    r.eb,
                    r.eb_interval.0,
                    r.eb_interval.1,
                    r.label.as_str()
                );
            }
        }
        out
    }
}

fn write_rates(out: &mut String, r: &Rates, national: bool) {
    for (i, (name, k, n)) in rate_rows(r).into_iter().enumerate() {
        let name = name.to_lowercase();
        let Some((lo, hi)) = wilson(k, n) else {
            let _ = writeln!(out, "  {name:<24} (no finished courses)");
            continue;
        };
        let nat = if national {
            format!("   England {}", NATIONAL[i].2)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {name:<24} {:>5.1} %  (95 % {:.1}–{:.1})  {k}/{n}{nat}",
            100.0 * k as f64 / n as f64,
            100.0 * lo,
            100.0 * hi
        );
    }
}
