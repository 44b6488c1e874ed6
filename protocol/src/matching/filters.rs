//! The filters applied before any ranking (logistics and must-haves), and how well a
//! profile fits the patient's preferences.

use super::{Candidate, Delivery, Key, Preference, Profile, Request, text};

/// Every filter the candidate fails, and its distance when the patient gave a position.
pub(super) fn check(request: &Request, c: &Candidate, max_wait: u32) -> (Vec<String>, Option<f64>) {
    let p = &c.profile;
    let l = &request.logistics;
    let mut out = Vec::new();
    if p.accepting_new == Some(false) {
        out.push("not accepting new patients".to_string());
    }
    if let Some(cap) = p.new_per_week
        && p.allocated_this_week >= cap
    {
        out.push(format!(
            "full this week ({} of {cap} new patients)",
            p.allocated_this_week
        ));
    }
    if let Some(w) = p.wait_days
        && w > max_wait
    {
        out.push(format!("first slot in {w} days (longer than {max_wait})"));
    }
    if !l.windows.is_empty()
        && !p.availability.is_empty()
        && !l.windows.iter().any(|w| p.availability.contains(w))
    {
        out.push("no clinic hours in the patient's windows".to_string());
    }
    let video_ok = !request
        .preferences
        .iter()
        .any(|q| q.required && q.key == Key::Delivery && q.value == Delivery::InPerson.as_str());
    let remote = video_ok && p.delivery.contains(&Delivery::Video);
    let distance_km = match (l.reach, p.position) {
        (Some((from, _)), Some(site)) => Some(from.distance_km(site)),
        _ => None,
    };
    // An infinite radius: distances are shown, nobody is excluded by them.
    if let Some((_, radius)) = l.reach
        && radius.is_finite()
        && !remote
    {
        match distance_km {
            Some(d) if d > radius => out.push(format!(
                "{} is {d:.0} km away (radius {radius:.0} km)",
                p.site.as_deref().unwrap_or("the site")
            )),
            Some(_) => {}
            None => out.push(format!(
                "distance unknown: {} has no position in [matching.sites]",
                p.site.as_deref().unwrap_or("no site recorded, which")
            )),
        }
    }
    if let Some(payer) = &l.payer
        && !p.payers.is_empty()
        && !p.payers.iter().any(|x| x.eq_ignore_ascii_case(payer))
    {
        out.push(format!("does not take {payer}"));
    }
    for q in request.preferences.iter().filter(|q| q.required) {
        match super::meets(q, p) {
            Some(true) => {}
            Some(false) => out.push(text::lacking(q)),
            None => out.push(format!("{} not recorded", q.key.as_str())),
        }
    }
    (out, distance_km)
}

/// The share of nice-to-haves met (1 without any).
pub(super) fn fit(preferences: &[Preference], p: &Profile) -> f64 {
    let nice: Vec<&Preference> = preferences.iter().filter(|q| !q.required).collect();
    if nice.is_empty() {
        return 1.0;
    }
    let met = nice
        .iter()
        .filter(|q| super::meets(q, p) == Some(true))
        .count();
    met as f64 / nice.len() as f64
}
