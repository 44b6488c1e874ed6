//! The dashboard's accounts as an administrator makes them: `users add | list | disable |
//! password`, passwords only as Argon2id hashes, bad accounts refused with nothing kept.

use integration_tests::{Synth, clinic_node, mbc, mbc_stdin, open, rows};

#[test]
fn accounts_are_made_listed_disabled_and_keep_only_a_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let summary = Synth::new(7).clinics(1).patients(60).summary(cwd);
    clinic_node(cwd, "node", "Riverside", &summary["clinics"][0]);
    // A therapist as the clinic's export names them: the first row of its therapists file.
    let file = summary["clinics"][0]["csv_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .find(|f| f.ends_with("therapists.csv"))
        .unwrap();
    let text = std::fs::read_to_string(cwd.join("data").join(file)).unwrap();
    let therapist = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let add = |args: &[&str], password: &str| {
        let mut all = vec![
            "users",
            "add",
            "--data-dir",
            "node",
            "--password-stdin",
            "--json",
        ];
        all.extend_from_slice(args);
        mbc_stdin(cwd, &all, &format!("{password}\n"))
    };
    let anna = add(
        &["anna", "--role", "clinician", "--therapist", &therapist],
        "a long password",
    )
    .ok()
    .json();
    assert_eq!(anna["role"], "clinician");
    assert_eq!(anna["not_yet_imported"], serde_json::json!([]));
    let sam = add(
        &[
            "sam",
            "--role",
            "supervisor",
            "--therapist",
            &therapist,
            "--therapist",
            "T-new",
        ],
        "another long one",
    )
    .ok()
    .json();
    assert_eq!(sam["therapists"], 2);
    assert_eq!(sam["not_yet_imported"], serde_json::json!(["T-new"]));
    add(&["ada", "--role", "admin"], "the admin's password").ok();

    // Refused, each with its reason, and nothing kept.
    for (args, password, why) in [
        (
            &["anna", "--role", "admin"][..],
            "a long password",
            "already an account",
        ),
        (
            &["bea", "--role", "clinician"][..],
            "a long password",
            "exactly one therapist",
        ),
        (
            &["bea", "--role", "supervisor"][..],
            "a long password",
            "needs its team",
        ),
        (
            &["bea", "--role", "admin", "--therapist", "T1"][..],
            "a long password",
            "no therapist",
        ),
        (
            &["bea", "--role", "nurse"][..],
            "a long password",
            "unknown role",
        ),
        (
            &["bea", "--role", "admin"][..],
            "short",
            "at least 10 characters",
        ),
    ] {
        let run = add(args, password);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
    }
    // Without a terminal and without --password-stdin: said, not hung.
    let run = mbc(
        cwd,
        &[
            "users",
            "add",
            "bea",
            "--data-dir",
            "node",
            "--role",
            "admin",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--password-stdin"), "{}", run.stderr);

    let list = mbc(cwd, &["users", "list", "--data-dir", "node", "--json"])
        .ok()
        .json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "anna", "sam"]);

    let db = cwd.join("node/local.db");
    let stored = rows(
        &open(&db),
        "SELECT password FROM dashboard_user ORDER BY name",
    );
    assert!(
        stored.iter().all(|h| h.starts_with("\"$argon2id$")),
        "{stored:?}"
    );
    assert!(!stored.iter().any(|h| h.contains("long password")));
    // The raw therapist id is never stored: the account holds its pseudonym.
    let linked = rows(&open(&db), "SELECT therapist FROM dashboard_user_therapist");
    assert!(!linked.iter().any(|t| t.contains(&therapist)), "{linked:?}");

    mbc(cwd, &["users", "disable", "anna", "--data-dir", "node"]).ok();
    let list = mbc(cwd, &["users", "list", "--data-dir", "node"]).ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("anna") && l.contains("disabled")),
        "{}",
        list.stdout
    );
    let run = mbc_stdin(
        cwd,
        &[
            "users",
            "password",
            "anna",
            "--data-dir",
            "node",
            "--password-stdin",
        ],
        "new long password\n",
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no enabled account"), "{}", run.stderr);
    let before = rows(
        &open(&db),
        "SELECT password FROM dashboard_user WHERE name = 'sam'",
    );
    mbc_stdin(
        cwd,
        &[
            "users",
            "password",
            "sam",
            "--data-dir",
            "node",
            "--password-stdin",
        ],
        "a new long password\n",
    )
    .ok();
    let after = rows(
        &open(&db),
        "SELECT password FROM dashboard_user WHERE name = 'sam'",
    );
    assert_ne!(before, after);
}
