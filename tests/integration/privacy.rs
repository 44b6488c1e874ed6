//! The privacy layer as a user meets it: releases, the budget, the audit, crash safety, and the
//! P1 guard over everything the node can emit.

use std::path::Path;

use integration_tests::{Synth, clinic_node, contains, mbc, mbc_env, open, rows};

/// A node with one synthetic clinic whose raw identifiers carry recognisable markers.
fn node_with_markers(cwd: &Path) -> serde_json::Value {
    let synth = Synth::new(11).summary(cwd);
    let clinic = &synth["clinics"][0];
    for f in clinic["csv_files"].as_array().unwrap() {
        let path = cwd.join("data").join(f.as_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("C01-P", "PATIENTMARKER-")
            .replace("C01-T", "THERAPISTMARKER-")
            .replace("C01-E", "EPISODEMARKER-");
        std::fs::write(&path, text).unwrap();
    }
    clinic_node(cwd, "node", "Marker Clinic", clinic);
    clinic.clone()
}

fn set_budget(cwd: &Path, per_period: f64, per_release: f64) {
    let path = cwd.join("node/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            "rho_per_period = 1.0",
            &format!("rho_per_period = {per_period:?}"),
        )
        .replace(
            "max_rho_per_release = 0.25",
            &format!("max_rho_per_release = {per_release:?}"),
        );
    std::fs::write(path, text).unwrap();
}

/// `mbc-node release --kind local-benchmark --rho RHO --out OUT EXTRA…` with extra environment.
fn release_with(
    cwd: &Path,
    rho: &str,
    out: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> integration_tests::Run {
    let mut args = integration_tests::local_release_args("node", rho, out);
    args.extend(extra);
    mbc_env(cwd, &args, env)
}

fn release(cwd: &Path, rho: &str, out: &str) -> integration_tests::Run {
    release_with(cwd, rho, out, &[], &[])
}

/// A `release` that crashes right after its ledger charge (test hook), before writing `out`.
#[track_caller]
fn crash_after_charge(cwd: &Path, rho: &str, out: &str) {
    let crashed = release_with(
        cwd,
        rho,
        out,
        &[],
        &[("MBC_NODE_TEST_FAIL_AFTER_CHARGE", "1")],
    );
    assert_ne!(crashed.code, 0);
}

#[test]
fn a_release_over_budget_is_refused_with_what_is_left_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node_with_markers(cwd);
    set_budget(cwd, 0.3, 0.25);
    release(cwd, "0.2", "a.json").ok();
    let refused = release(cwd, "0.2", "b.json");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("only ρ = 0.100000 of the 0.3")
            && refused.stderr.contains("budget renews on"),
        "{}",
        refused.stderr
    );
    assert!(!cwd.join("b.json").exists());
    let too_big = release(cwd, "0.26", "c.json");
    assert!(
        too_big
            .stderr
            .contains("above the clinic's maximum per release"),
        "{too_big:?}"
    );
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 1);
    let budget = mbc(cwd, &["budget", "--data-dir", "node", "--json"])
        .ok()
        .json();
    let spent = budget["current"]["rho_spent"].as_f64().unwrap();
    assert!((spent - 0.2).abs() < 1e-9, "{budget}");
    assert!((budget["current"]["rho_remaining"].as_f64().unwrap() - 0.1).abs() < 1e-9);
}

/// Issue 13, fix 7: a charged release resumed by a `release` with another ρ and file says what
/// it resumes (its ρ, the file it was charged for) and that the asked-for release was not made,
/// and the audit records the file it was actually written to.
#[test]
fn a_release_resumed_into_another_file_says_so_and_is_audited_there() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node_with_markers(cwd);
    crash_after_charge(cwd, "0.1", "first.json");
    let resumed = release(cwd, "0.2", "other.json").ok();
    for said in [
        "(ρ = 0.100000)",
        "for first.json but never written: it is written now to other.json",
        "The release you asked for (ρ = 0.2) was not made",
    ] {
        assert!(
            resumed.stdout.contains(said),
            "{said:?} not in {}",
            resumed.stdout
        );
    }
    assert!(cwd.join("other.json").exists() && !cwd.join("first.json").exists());
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 1);
    assert_eq!(audit[0]["counterpart"], "file:first.json");
    assert_eq!(audit[0]["sent_to"], "file:other.json");
    let table = mbc(cwd, &["audit", "--data-dir", "node"]).ok().stdout;
    assert!(
        table.contains("file:other.json (charged for file:first.json)"),
        "{table}"
    );
    // Where it went is fixed once recorded.
    let db = integration_tests::open_rw(&cwd.join("node/local.db"));
    assert!(
        db.execute("UPDATE release SET sent_to = 'file:elsewhere.json'", [])
            .is_err()
    );
}

#[test]
fn a_crash_between_charge_and_write_is_resumed_without_a_second_charge() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node_with_markers(cwd);
    crash_after_charge(cwd, "0.1", "bench.json");
    assert!(
        !cwd.join("bench.json").exists(),
        "nothing may be written before the charge commits"
    );
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 1);
    assert_eq!(audit[0]["status"], "charged");
    let sha = audit[0]["payload_sha256"].as_str().unwrap().to_owned();

    let resumed = release(cwd, "0.1", "bench.json").ok();
    assert!(
        resumed
            .stdout
            .contains("but never written: it is written now to bench.json (no new charge)"),
        "{resumed:?}"
    );
    let bytes = std::fs::read(cwd.join("bench.json")).unwrap();
    assert_eq!(
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)),
        sha
    );
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 1);
    assert_eq!(audit[0]["status"], "sent");
    let budget = mbc(cwd, &["budget", "--data-dir", "node", "--json"])
        .ok()
        .json();
    assert!((budget["current"]["rho_spent"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    // The next release is a new one, charged anew.
    release(cwd, "0.1", "bench2.json").ok();
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 2);
}

/// P1: nothing the node emits holds a raw identifier, a pseudonym, a record date or an exact
/// statistic. Emissions so far: the release document, and the output of `release`, `budget`,
/// `audit` and `directory publish | list | search` (the entry with its DP badges; text and
/// JSON, stdout and stderr). Every network message a node sends in a round
/// is searched the same way by `rounds::p1_guard` (tests/integration/rounds.rs).
#[test]
fn nothing_the_node_emits_holds_identifiers_pseudonyms_dates_or_exact_values() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node_with_markers(cwd);
    let mut emitted: Vec<(String, Vec<u8>)> = Vec::new();
    let mut record = |name: &str, run: integration_tests::Run| {
        emitted.push((format!("{name} stdout"), run.stdout.into_bytes()));
        emitted.push((format!("{name} stderr"), run.stderr.into_bytes()));
    };
    record("release", release(cwd, "0.25", "bench.json").ok());
    record(
        "release --json",
        release_with(cwd, "0.25", "bench2.json", &["--json"], &[]).ok(),
    );
    // The directory entry with badges (issue 17): a network of one, its entry published.
    mbc(
        cwd,
        &[
            "network",
            "create",
            "--data-dir",
            "node",
            "--network-id",
            "p1",
        ],
    )
    .ok();
    let config = cwd.join("node/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("# contact = \"\"", "contact = \"referrals@example.org\""),
    )
    .unwrap();
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec![
            "directory",
            "publish",
            "--data-dir",
            "node",
            "--badges",
            "--rho",
            "0.05",
        ];
        args.extend(extra);
        let run = mbc(cwd, &args).ok();
        assert!(
            run.stdout.contains("reliable_improvement") || run.stdout.contains("badge"),
            "{}",
            run.stdout
        );
        record("directory publish", run);
    }
    record(
        "directory list",
        mbc(cwd, &["directory", "list", "--data-dir", "node", "--json"]).ok(),
    );
    record(
        "directory search",
        mbc(cwd, &["directory", "search", "--data-dir", "node"]).ok(),
    );
    for cmd in ["budget", "audit"] {
        record(cmd, mbc(cwd, &[cmd, "--data-dir", "node"]).ok());
        record(cmd, mbc(cwd, &[cmd, "--data-dir", "node", "--json"]).ok());
    }
    for file in ["bench.json", "bench2.json"] {
        emitted.push((file.into(), std::fs::read(cwd.join(file)).unwrap()));
    }

    // Needles: raw ids (markers), every stored pseudonym, every record date.
    let db = open(&cwd.join("node/local.db"));
    let mut needles: Vec<String> = vec![
        "PATIENTMARKER".into(),
        "THERAPISTMARKER".into(),
        "EPISODEMARKER".into(),
    ];
    for table in ["patient", "therapist", "episode"] {
        needles.extend(rows(&db, &format!("SELECT pseudonym FROM {table}")));
    }
    // The release's own timestamps (today) are metadata, not record dates.
    let audit = mbc(cwd, &["audit", "--data-dir", "node", "--json"])
        .ok()
        .json()["releases"]
        .clone();
    let today: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["charged_at"].as_str().unwrap()[..10].to_owned())
        .collect();
    let mut dates = rows(&db, "SELECT DISTINCT date FROM session");
    dates.retain(|d| !today.contains(d));
    assert!(
        dates.len() > 100,
        "the data set has record dates to look for"
    );
    needles.extend(dates);
    assert!(needles.len() > 1000);
    for (name, bytes) in &emitted {
        for needle in &needles {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{name} contains {needle}"
            );
        }
    }

    // Exact values: the released vector is the noisy one; the exact vector (recomputed with
    // noise off is not possible from outside, so compare the two releases of the same data):
    // independent noise makes (almost) every entry differ, and neither equals the other.
    let a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.join("bench.json")).unwrap()).unwrap();
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.join("bench2.json")).unwrap()).unwrap();
    let (a, b) = (
        a["values"].as_array().unwrap(),
        b["values"].as_array().unwrap(),
    );
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    assert!(
        same * 1000 < a.len(),
        "{same} of {} entries equal across two releases",
        a.len()
    );
}
