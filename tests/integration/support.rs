//! Clinical support as a clinician uses it (issue 15): `support PATIENT_ID` on a synthetic
//! clinic, its signals checked against the bands it shows, safety signals from item answers,
//! and clear errors.

use std::path::Path;

use integration_tests::{Synth, clinic_node, mbc};
use serde_json::Value;

/// A node with one synthetic clinic of 800 patients, in `cwd/node`.
fn node(cwd: &Path) {
    clinic_node(
        cwd,
        "node",
        "Riverside",
        &Synth::new(5).patients(800).summary(cwd)["clinics"][0],
    );
}

/// The patients of the clinic's assessments file whose PHQ-9 item 9 was ever ≥ 1, and never.
fn item9(cwd: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(cwd.join("data/clinic-01/assessments.csv")).unwrap();
    let mut ever = std::collections::BTreeMap::<String, bool>::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[6] != "PHQ-9" || f[8].is_empty() {
            continue;
        }
        let nine: f64 = f[8]
            .split(';')
            .nth(8)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *ever.entry(f[0].to_string()).or_default() |= nine >= 1.0;
    }
    let (yes, no): (Vec<_>, Vec<_>) = ever.into_iter().partition(|(_, v)| *v);
    (
        yes.into_iter().map(|(k, _)| k).collect(),
        no.into_iter().map(|(k, _)| k).collect(),
    )
}

#[test]
fn a_patients_page_shows_the_expected_curve_and_signals_that_agree_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd);
    let (flagged, calm) = item9(cwd);
    assert!(!flagged.is_empty() && !calm.is_empty());
    let page = |id: &str| -> Value {
        mbc(cwd, &["support", "--data-dir", "node", id, "--json"])
            .ok()
            .json()
    };
    let mut signals = std::collections::BTreeMap::<String, u32>::new();
    for id in calm.iter().take(25) {
        let p = page(id);
        let phq = p["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instrument"] == "PHQ-9")
            .unwrap();
        let basis = &phq["basis"];
        assert!(basis["pool"].as_u64().unwrap() > 600, "{basis}");
        assert_eq!(basis["neighbours"], 50, "k = max(50, 5 % of the pool)");
        assert_eq!(basis["metric"], "mahalanobis");
        let observed = phq["observed"].as_array().unwrap();
        assert!(observed[0]["signal"].is_null(), "no signal at intake");
        let intake = observed[0]["score"].as_f64().unwrap();
        for o in &observed[1..] {
            let signal = o["signal"].as_str().unwrap();
            *signals.entry(signal.to_string()).or_default() += 1;
            let score = o["score"].as_f64().unwrap();
            let band = &o["band"];
            let (p75, p90) = (band["p75"].as_f64(), band["p90"].as_f64());
            // PHQ-9: reliable change 6, caseness at 10 or more.
            let expected = match (p75, p90) {
                _ if score - intake >= 6.0 => "red",
                (None, _) | (_, None) => "grey",
                _ if score < 10.0 => "white",
                (_, Some(p90)) if score > p90 => "red",
                (Some(p75), _) if score > p75 => "yellow",
                _ => "green",
            };
            assert_eq!(signal, expected, "{id}: {o}");
            assert!(o["safety"].as_array().unwrap().is_empty());
        }
        assert!(p["validated"] == false);
    }
    // A clinic's patients are not all on track, nor all off it.
    assert!(signals.len() >= 3, "{signals:?}");

    let p = page(&flagged[0]);
    let phq = &p["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instrument"] == "PHQ-9")
        .unwrap()
        .clone();
    let safety: Vec<&Value> = phq["observed"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["safety"].as_array().unwrap())
        .collect();
    assert!(!safety.is_empty());
    assert!(
        safety
            .iter()
            .all(|s| s["item"] == 9 && s["code"] == "44260-8")
    );
    assert!(
        phq["consider"][0]
            .as_str()
            .unwrap()
            .starts_with("crisis management")
    );
    let text = mbc(cwd, &["support", "--data-dir", "node", &flagged[0]]).ok();
    assert!(
        text.stdout.contains("SAFETY: item 9 (44260-8)")
            && text.stdout.contains("similar past patients")
            && text.stdout.contains("not been validated"),
        "{}",
        text.stdout
    );

    // The page as HTML: one chart per instrument, every score marked with its signal's symbol
    // (not only its colour), safety first, escaping what came from the data.
    mbc(
        cwd,
        &[
            "support",
            "--data-dir",
            "node",
            &flagged[0],
            "--html",
            "page.html",
        ],
    )
    .ok();
    let html = std::fs::read_to_string(cwd.join("page.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        p["instruments"].as_array().unwrap().len()
    );
    let marks = p["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["observed"].as_array().unwrap().clone())
        .count();
    assert_eq!(
        html.matches("<circle cx").count(),
        marks + 5 * p["instruments"].as_array().unwrap().len(),
        "points and the legends"
    );
    for f in [
        "failure boundary (P90)",
        "expected score",
        "class=\"safety\"",
        "not been validated",
    ] {
        assert!(html.contains(f), "lacks {f}");
    }
    assert!(
        !html.contains("<script"),
        "no script in a page that is opened offline"
    );

    let out = mbc(cwd, &["support", "--data-dir", "node", "NOBODY"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no patient NOBODY"), "{}", out.stderr);
    let out = mbc(cwd, &["support", "--data-dir", "node"]);
    assert_eq!(out.code, 2, "a usage error: {}", out.stderr);
}
