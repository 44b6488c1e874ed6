//! The effectiveness engine as a clinic uses it: `stats` (table, JSON, CSV), filters, the
//! therapist's own report card, and the HTML report.

use std::path::Path;

use integration_tests::{Synth, clinic_node, mbc};

/// A node holding one synthetic clinic (12 therapists × 45 patients), in `cwd/node`.
fn node(cwd: &Path, extra: &[&str]) -> serde_json::Value {
    let synth = extra
        .iter()
        .fold(Synth::new(11).therapists(12).caseload(45), |s, f| s.flag(f));
    clinic_node(cwd, "node", "Riverside", &synth.summary(cwd)["clinics"][0]);
    serde_json::from_slice(&std::fs::read(cwd.join("data/truth.json")).unwrap()).unwrap()
}

#[test]
fn stats_json_reports_every_therapist_and_domain_and_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd, &[]);
    let s = mbc(cwd, &["stats", "--data-dir", "node", "--json"])
        .ok()
        .json();
    assert_eq!(s["clinic"], "Riverside");
    assert_eq!(s["episodes"], 540);
    let rates = &s["clinic_rates"];
    let finished = rates["finished_courses"].as_u64().unwrap();
    assert!(finished > 400, "{finished}");
    let ri = rates["reliable_improvement"]["rate"].as_f64().unwrap();
    assert!((0.5..0.85).contains(&ri), "{ri}");
    let ci = rates["reliable_improvement"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < ri && ri < ci[1].as_f64().unwrap());
    let depression = s["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "depression")
        .unwrap();
    assert_eq!(depression["instrument"], "PHQ-9");
    assert_eq!(depression["therapists"].as_array().unwrap().len(), 12);
    assert!(depression["risk_model"]["beta"].as_array().unwrap().len() == 12);
    for t in depression["therapists"].as_array().unwrap() {
        let (lo, hi) = (
            t["eb_interval"][0].as_f64().unwrap(),
            t["eb_interval"][1].as_f64().unwrap(),
        );
        assert!(lo <= t["eb_effect"].as_f64().unwrap() && t["eb_effect"].as_f64().unwrap() <= hi);
        assert!(
            ["effective", "neutral", "ineffective", "insufficient data"]
                .contains(&t["label"].as_str().unwrap())
        );
    }
    // The derived tables hold the same records, tagged with the algorithm version.
    let db = integration_tests::open_rw(&cwd.join("node/local.db"));
    let (n, v): (i64, i64) = db
        .query_row("SELECT count(*), min(algorithm_version) FROM therapist_domain_stat WHERE domain_id = 'depression'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((n, v), (12, 1));
    let outcomes: i64 = db
        .query_row("SELECT count(*) FROM episode_outcome", [], |r| r.get(0))
        .unwrap();
    assert!(outcomes > 1000, "{outcomes}");
    // Recomputing replaces, never duplicates.
    mbc(cwd, &["stats", "--data-dir", "node", "--json"]).ok();
    let again: i64 = db
        .query_row("SELECT count(*) FROM episode_outcome", [], |r| r.get(0))
        .unwrap();
    assert_eq!(again, outcomes);
}

#[test]
fn filters_csv_rules_and_a_therapists_own_card() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let truth = node(cwd, &[]);
    let staff_id = truth["clinics"][0]["therapists"][3]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // By the clinic's own staff id: one therapist, pseudonymised on the fly.
    let one = mbc(
        cwd,
        &[
            "stats",
            "--data-dir",
            "node",
            "--therapist",
            &staff_id,
            "--domain",
            "anxiety",
            "--json",
        ],
    )
    .ok()
    .json();
    let domains = one["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 1);
    let records = domains[0]["therapists"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    let pseudonym = records[0]["therapist"].as_str().unwrap().to_string();
    assert!(!pseudonym.contains(&staff_id));
    // By pseudonym prefix, as shown in tables.
    let text = mbc(
        cwd,
        &[
            "stats",
            "--data-dir",
            "node",
            "--therapist",
            &pseudonym[..8],
        ],
    )
    .ok()
    .stdout;
    assert!(
        text.contains(&format!("therapist {}", &pseudonym[..8])),
        "{text}"
    );
    // CSV: a header and one row per therapist × domain with a track record.
    let csv = mbc(cwd, &["stats", "--data-dir", "node", "--csv"])
        .ok()
        .stdout;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("therapist,domain,instrument,n,"));
    assert_eq!(lines.len(), 1 + 24);
    // The Kraus rule and a lower classification minimum are honoured and recorded.
    let kraus = mbc(
        cwd,
        &[
            "stats",
            "--data-dir",
            "node",
            "--rule",
            "kraus",
            "--min-classify",
            "20",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(kraus["settings"]["rule"], "kraus");
    assert_eq!(kraus["settings"]["min_n_classify"], 20);
    // Bad requests are clear errors.
    let bad = mbc(cwd, &["stats", "--data-dir", "node", "--domain", "sleep"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown domain \"sleep\" (known:"),
        "{}",
        bad.stderr
    );
    let nobody = mbc(
        cwd,
        &["stats", "--data-dir", "node", "--therapist", "STAFF-404"],
    );
    assert!(
        nobody.stderr.contains("no therapist \"STAFF-404\""),
        "{}",
        nobody.stderr
    );
    // The private report card holds that therapist only.
    mbc(
        cwd,
        &[
            "report",
            "--data-dir",
            "node",
            "--therapist",
            &staff_id,
            "--out",
            "card.html",
        ],
    )
    .ok();
    let card = std::fs::read_to_string(cwd.join("card.html")).unwrap();
    assert_eq!(card.matches("class=\"card\"").count(), 1);
    assert!(card.contains(&pseudonym[..8]));
    assert!(
        !card.contains("aria-label=\"therapists' effects"),
        "a private card shows no other therapists"
    );
}

#[test]
fn report_is_self_contained_html_with_plots_and_cards() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd, &[]);
    let out = mbc(
        cwd,
        &["report", "--data-dir", "node", "--out", "report.html"],
    )
    .ok();
    assert!(out.stdout.contains("wrote report.html"));
    let html = std::fs::read_to_string(cwd.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(
        html.matches("aria-label=\"therapists' effects").count(),
        2,
        "PHQ-9 and GAD-7 domains"
    );
    assert_eq!(html.matches("class=\"card\"").count(), 12);
    for external in ["src=\"http", "href=\"http", "<script", "<link"] {
        assert!(!html.contains(external), "report loads {external}");
    }
    // No raw identifier reaches the report.
    assert!(!html.contains("C01-T") && !html.contains("C01-P"));
}

#[test]
fn risk_adjustment_through_the_cli_on_confounded_data() {
    // With no therapist effects but severity-confounded assignment, the stored track records
    // label almost nobody.
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd, &["--icc", "0", "--assignment", "confounded"]);
    let s = mbc(cwd, &["stats", "--data-dir", "node", "--json"])
        .ok()
        .json();
    let labelled: usize = s["domains"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["therapists"].as_array().unwrap())
        .filter(|t| t["label"] == "effective" || t["label"] == "ineffective")
        .count();
    assert!(labelled <= 1, "{labelled} false labels");
}

/// Issue 13, fix 14: England's NHS Talking Therapies figures are shown for a clinic in GB and
/// said to be England's; a clinic elsewhere gets none unless it asks for them.
#[test]
fn national_figures_are_englands_and_shown_for_gb_clinics_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = Synth::new(11).therapists(4).caseload(20).summary(cwd);
    let clinic = &synth["clinics"][0];
    clinic_node(cwd, "elsewhere", "Elsewhere", clinic);
    mbc(
        cwd,
        &[
            "init",
            "--data-dir",
            "gb",
            "--name",
            "GB",
            "--country",
            "GB",
        ],
    )
    .ok();
    integration_tests::import_clinic_csv(cwd, "gb", clinic);
    let json = |dir: &str| {
        mbc(cwd, &["stats", "--data-dir", dir, "--json"])
            .ok()
            .json()
    };
    let text = |dir: &str| mbc(cwd, &["stats", "--data-dir", dir]).ok().stdout;
    let gb = json("gb");
    assert_eq!(gb["national"]["country"], "England", "{}", gb["national"]);
    assert_eq!(gb["national"]["rates"]["recovery"]["rate"], 0.502);
    assert!(text("gb").contains("England 50.2 %"), "{}", text("gb"));
    assert!(json("elsewhere")["national"].is_null());
    assert!(
        !text("elsewhere").contains("England"),
        "{}",
        text("elsewhere")
    );
    mbc(
        cwd,
        &["report", "--data-dir", "elsewhere", "--out", "r.html"],
    )
    .ok();
    let html = std::fs::read_to_string(cwd.join("r.html")).unwrap();
    assert!(!html.contains("2021-22") && html.contains("No national figures are shown"));
    // Asked for: shown, and still said to be England's.
    let config = cwd.join("elsewhere/config.toml");
    let text_config = std::fs::read_to_string(&config).unwrap();
    assert!(text_config.contains("national_figures = \"auto\""));
    std::fs::write(
        &config,
        text_config.replace(
            "national_figures = \"auto\"",
            "national_figures = \"england\"",
        ),
    )
    .unwrap();
    assert_eq!(json("elsewhere")["national"]["country"], "England");
}

/// Issue 13, fix 11: `--reveal FILE` shows therapists by the clinic's own staff ids from a list
/// it provides (here the therapists.csv it imported), in the table, JSON, CSV and report;
/// nothing of it is stored.
#[test]
fn reveal_shows_staff_ids_from_the_clinics_list_and_stores_none() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd, &[]);
    let list = "data/clinic-01/therapists.csv";
    let table = mbc(cwd, &["stats", "--data-dir", "node", "--reveal", list])
        .ok()
        .stdout;
    assert!(table.contains("C01-T001"), "{table}");
    let json = mbc(
        cwd,
        &["stats", "--data-dir", "node", "--reveal", list, "--json"],
    )
    .ok()
    .json();
    let records = json["domains"][0]["therapists"].as_array().unwrap();
    assert!(!records.is_empty());
    for r in records {
        let id = r["staff_id"].as_str().unwrap();
        assert!(id.starts_with("C01-T"), "{r}");
        assert_ne!(r["therapist"], r["staff_id"]);
    }
    let csv = mbc(
        cwd,
        &["stats", "--data-dir", "node", "--reveal", list, "--csv"],
    )
    .ok()
    .stdout;
    assert!(csv.lines().nth(1).unwrap().ends_with(",C01-T001") || csv.contains(",C01-T0"));
    mbc(
        cwd,
        &[
            "report",
            "--data-dir",
            "node",
            "--out",
            "r.html",
            "--reveal",
            list,
        ],
    )
    .ok();
    assert!(
        std::fs::read_to_string(cwd.join("r.html"))
            .unwrap()
            .contains("C01-T001")
    );
    // Without the list: pseudonyms only. And the store never holds a staff id.
    let plain = mbc(cwd, &["stats", "--data-dir", "node"]).ok().stdout;
    assert!(!plain.contains("C01-T0"), "{plain}");
    let dump = integration_tests::decrypted_dump(&cwd.join("node/local.db"));
    assert!(!integration_tests::contains(&dump, b"C01-T0"));
    // A list without the column is refused with its file and line.
    std::fs::write(cwd.join("bad.csv"), "name\nDr A\n").unwrap();
    let bad = mbc(cwd, &["stats", "--data-dir", "node", "--reveal", "bad.csv"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("bad.csv, line 1: no therapist_id column"),
        "{}",
        bad.stderr
    );
}
