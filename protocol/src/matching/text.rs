//! The words of a shortlist: reasons, badges, the trade-off line and notes for staff.

use std::collections::BTreeMap;

use super::{
    Aspect, Badge, Delivery, DomainScore, Eligible, Exclusion, Key, Level, MIN_LENGTH, Offer,
    Preference, Profile, Reason, Request, Settings, Slot, Thin,
};
use crate::therapist::{Label, TrackRecord};

pub(super) fn offer(request: &Request, e: &Eligible, settings: &Settings, safe: usize) -> Offer {
    let c = e.candidate;
    let top = request.intake.top();
    let mut reasons = vec![Reason {
        aspect: Aspect::Outcome,
        text: outcome(request, e),
    }];
    if let Some(text) = fit(&request.preferences, &c.profile) {
        reasons.push(Reason {
            aspect: Aspect::Fit,
            text,
        });
    }
    reasons.push(Reason {
        aspect: Aspect::Logistics,
        text: logistics(request, &c.profile, e.distance_km),
    });
    let badges = top
        .iter()
        .filter_map(|d| {
            let thin = match c.record(&d.domain) {
                None => Thin::NotEnoughData,
                Some(r) if r.n < settings.minimums.classify => Thin::LimitedData,
                Some(_) => return None,
            };
            Some(Badge {
                domain: d.domain.clone(),
                thin,
            })
        })
        .collect();
    let staff_note = (e.level == Level::L0).then(|| {
        let others = match safe {
            0 => "no other therapist meets".to_string(),
            1 => "only 1 other therapist meets".to_string(),
            n => format!("only {n} other therapists meet"),
        };
        format!(
            "staff only: patients with this problem did worse than expected with this \
             therapist; offered because {others} the requirements"
        )
    });
    Offer {
        therapist: c.profile.id.clone(),
        level: e.level,
        score: e.score,
        fit: e.fit,
        wait_days: c.profile.wait_days,
        reasons,
        badges,
        staff_note,
    }
}

/// The outcome reason: a clause per top domain (ineffective elevated domains first).
fn outcome(request: &Request, e: &Eligible) -> String {
    let c = e.candidate;
    let mut domains: Vec<&DomainScore> = request.intake.top();
    if domains.is_empty() {
        return "no problem domain elevated at intake: matched on preferences and availability"
            .to_string();
    }
    // An ineffective elevated domain beyond the top three still explains an L0.
    if let Some(bad) = request
        .intake
        .elevated()
        .find(|d| c.label(&d.domain) == Label::Ineffective)
    {
        domains.retain(|d| d.domain != bad.domain);
        domains.insert(0, bad);
    }
    domains
        .iter()
        .map(|d| clause(d, c.record(&d.domain)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn clause(d: &DomainScore, record: Option<&TrackRecord>) -> String {
    let name = &d.domain;
    let Some(r) = record else {
        return format!("not enough data with {name} yet");
    };
    let past = match r.n {
        1 => "1 past patient".to_string(),
        n => format!("{n} past patients"),
    };
    match r.label {
        Label::Effective => format!(
            "better than expected with {name}: {past}, {} (interval {}–{})",
            about(-r.eb, &d.unit),
            one(-r.eb_interval.1),
            one(-r.eb_interval.0)
        ),
        Label::Ineffective => format!(
            "worse than expected with {name}: {past}, {} (interval {}–{})",
            about(r.eb, &d.unit),
            one(r.eb_interval.0),
            one(r.eb_interval.1)
        ),
        Label::Neutral => format!("as expected with {name}: {past}"),
        Label::InsufficientData => format!("limited data with {name}: {past}, too few to judge"),
    }
}

/// "about 2 PHQ-9 points": whole numbers from 2 up, one decimal below.
fn about(x: f64, unit: &str) -> String {
    let x = x.abs();
    let n = if x >= 2.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    let unit = if n == "1" || n == "1.0" {
        unit.strip_suffix('s').unwrap_or(unit)
    } else {
        unit
    };
    format!("about {n} {unit}")
}

fn one(x: f64) -> String {
    // Avoid "-0.0".
    let x = if x.abs() < 0.05 { 0.0 } else { x };
    format!("{x:.1}")
}

/// What a preference asks for, as words ("female", "speaks Polish", "offers EMDR", "video").
fn wanted(q: &Preference) -> String {
    match q.key {
        Key::Gender => q.value.clone(),
        Key::Language => format!("speaks {}", language(&q.value)),
        Key::Modality => format!("offers {}", q.value.to_uppercase()),
        Key::Delivery if q.value == Delivery::Video.as_str() => "video sessions".to_string(),
        Key::Delivery => "sessions in person".to_string(),
    }
}

/// What a profile lacks, as words ("not female", "does not speak Polish").
pub(super) fn lacking(q: &Preference) -> String {
    match q.key {
        Key::Gender => format!("not {}", q.value),
        Key::Language => format!("does not speak {}", language(&q.value)),
        Key::Modality => format!("does not offer {}", q.value.to_uppercase()),
        Key::Delivery if q.value == Delivery::Video.as_str() => "no video sessions".to_string(),
        Key::Delivery => "no sessions in person".to_string(),
    }
}

/// The fit reason: preferences met, and nice-to-haves not met.
fn fit(preferences: &[Preference], p: &Profile) -> Option<String> {
    if preferences.is_empty() {
        return None;
    }
    let (met, unmet): (Vec<&Preference>, Vec<&Preference>) = preferences
        .iter()
        .partition(|q| super::meets(q, p) == Some(true));
    let met: Vec<String> = met.iter().map(|q| wanted(q)).collect();
    let unmet: Vec<String> = unmet.iter().map(|q| lacking(q)).collect();
    Some(match (met.is_empty(), unmet.is_empty()) {
        (false, true) => met.join(", "),
        (false, false) => format!("{}; {}", met.join(", "), unmet.join(", ")),
        (true, _) => format!("no preference met: {}", unmet.join(", ")),
    })
}

fn logistics(request: &Request, p: &Profile, distance_km: Option<f64>) -> String {
    let mut parts = vec![match p.wait_days {
        None => "wait not recorded".to_string(),
        Some(0) => "first slot now".to_string(),
        Some(1) => "first slot in 1 day".to_string(),
        Some(w) => format!("first slot in {w} days"),
    }];
    let windows = &request.logistics.windows;
    if !windows.is_empty() {
        if p.availability.is_empty() {
            parts.push("hours not recorded".to_string());
        } else {
            let common: Vec<Slot> = windows
                .iter()
                .filter(|w| p.availability.contains(w))
                .copied()
                .collect();
            parts.push(slots(&common));
        }
    }
    let remote = p.delivery.contains(&Delivery::Video)
        && !request.preferences.iter().any(|q| {
            q.required && q.key == Key::Delivery && q.value == Delivery::InPerson.as_str()
        });
    match (&p.site, distance_km) {
        (Some(site), Some(d)) if !remote || d <= request.logistics.reach.map_or(0.0, |r| r.1) => {
            parts.push(format!("{site} ({d:.0} km)"));
        }
        _ if remote && request.logistics.reach.is_some() => parts.push("by video".to_string()),
        (Some(site), _) => parts.push(site.clone()),
        (None, _) => {}
    }
    parts.join(", ")
}

/// "Mon pm, Wed eve" (up to three, then how many more).
fn slots(common: &[Slot]) -> String {
    const DAY: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let word = |s: &Slot| {
        let part = match s.part {
            super::Part::Am => "am",
            super::Part::Pm => "pm",
            super::Part::Eve => "eve",
        };
        format!("{} {part}", DAY[usize::from(s.day)])
    };
    let mut out: Vec<String> = common.iter().take(3).map(word).collect();
    if common.len() > 3 {
        out.push(format!("{} more", common.len() - 3));
    }
    out.join(", ")
}

/// Names of common language codes; others are shown as given.
fn language(code: &str) -> String {
    const NAMES: [(&str, &str); 24] = [
        ("ar", "Arabic"),
        ("bn", "Bengali"),
        ("cy", "Welsh"),
        ("de", "German"),
        ("en", "English"),
        ("es", "Spanish"),
        ("fa", "Farsi"),
        ("fr", "French"),
        ("gu", "Gujarati"),
        ("hi", "Hindi"),
        ("it", "Italian"),
        ("ku", "Kurdish"),
        ("lt", "Lithuanian"),
        ("nl", "Dutch"),
        ("pa", "Punjabi"),
        ("pl", "Polish"),
        ("ps", "Pashto"),
        ("pt", "Portuguese"),
        ("ro", "Romanian"),
        ("so", "Somali"),
        ("ta", "Tamil"),
        ("tr", "Turkish"),
        ("uk", "Ukrainian"),
        ("ur", "Urdu"),
    ];
    NAMES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map_or_else(|| code.to_string(), |(_, n)| n.to_string())
}

fn wait(w: Option<u32>) -> String {
    match w {
        None => "an unrecorded wait".to_string(),
        Some(1) => "1 day".to_string(),
        Some(w) => format!("{w} days"),
    }
}

/// The one-line trade-off between the best level and the soonest slot.
pub(super) fn trade_off(offers: &[Offer], urgent: bool, max_wait: u32) -> String {
    let w = |o: &Offer| o.wait_days.unwrap_or(u32::MAX);
    let Some(soonest) = offers
        .iter()
        .min_by(|a, b| w(a).cmp(&w(b)).then(b.level.cmp(&a.level)))
    else {
        return "no therapist meets the requirements".to_string();
    };
    if urgent {
        // Offers are in slot order; the first safe one is the answer.
        return match offers.iter().find(|o| o.level > Level::L0) {
            Some(o) => format!(
                "urgent: the first available safe therapist is {} in {} ({}); no waiting offered",
                o.therapist,
                wait(o.wait_days),
                o.level
            ),
            None => format!(
                "urgent: no therapist without a poor record on this problem has a slot within {max_wait} days; escalate under the clinic's risk protocol"
            ),
        };
    }
    // Unwrap safety: `offers` is not empty (soonest exists).
    let best = offers
        .iter()
        .max_by(|a, b| a.level.cmp(&b.level).then(w(b).cmp(&w(a))))
        .unwrap_or(soonest);
    if best.level > soonest.level && w(best) > w(soonest) {
        format!(
            "{} in {} ({}), or {} in {} ({})",
            best.level,
            wait(best.wait_days),
            best.therapist,
            soonest.level,
            wait(soonest.wait_days),
            soonest.therapist
        )
    } else {
        format!(
            "{} in {} ({}): the best level offered is also the soonest",
            best.level,
            wait(best.wait_days),
            best.therapist
        )
    }
}

/// Notes for staff: urgency, no elevated domain, a thin list, L0 fill-ins.
pub(super) fn notes(
    request: &Request,
    offers: &[Offer],
    excluded: &[Exclusion],
    max_wait: u32,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(why) = &request.intake.urgent {
        notes.push(format!(
            "URGENT ({why}): follow the clinic's risk protocol now; only therapists with a \
             first slot within {max_wait} days are offered"
        ));
    }
    if request.intake.top().is_empty() {
        notes.push(
            "no domain is elevated at intake: the levels say only that nobody is known to do \
             poorly with this patient's problems"
                .to_string(),
        );
    }
    if offers.len() < MIN_LENGTH {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in excluded {
            for r in &e.reasons {
                *counts.entry(generic(r)).or_default() += 1;
            }
        }
        let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let why: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let few = match offers.len() {
            0 => "no therapist meets".to_string(),
            1 => "only 1 therapist meets".to_string(),
            n => format!("only {n} therapists meet"),
        };
        notes.push(format!(
            "{few} the requirements; {} excluded{}",
            excluded.len(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join(", "))
            }
        ));
    }
    let l0 = offers.iter().filter(|o| o.level == Level::L0).count();
    if l0 > 0 {
        notes.push(format!(
            "{l0} therapist{} with a poor record on the patient's problem added to make up \
             {MIN_LENGTH} (staff only)",
            if l0 == 1 { "" } else { "s" }
        ));
    }
    notes
}

/// An exclusion reason without its therapist-specific numbers, for counting.
fn generic(reason: &str) -> String {
    if reason.starts_with("full this week") {
        "full this week".to_string()
    } else if reason.starts_with("first slot in") {
        "wait too long".to_string()
    } else if reason.contains(" km away") {
        "too far".to_string()
    } else {
        reason.to_string()
    }
}
