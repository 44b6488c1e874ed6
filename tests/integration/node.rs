//! A clinic's first steps: init, synth, import, status, instruments.

use integration_tests::{Synth, clinic_node, import_clinic_csv, mbc, mbc_env};

#[test]
fn init_synth_import_status() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = Synth::new(9).clinics(2).patients(150).summary(cwd);
    let init = mbc(
        cwd,
        &[
            "init",
            "--data-dir",
            "node",
            "--name",
            "Riverside",
            "--json",
        ],
    )
    .ok()
    .json();
    assert!(init["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    let clinic = &synth["clinics"][0];
    let outcomes = import_clinic_csv(cwd, "node", clinic);
    assert_eq!(outcomes.as_array().unwrap().len(), 4);
    let status = mbc(cwd, &["status", "--data-dir", "node", "--json"])
        .ok()
        .json();
    // One shape whether the node runs or not: the store summary under "store".
    assert_eq!(status["running"], false);
    let status = &status["store"];
    assert_eq!(status["clinic"], "Riverside");
    assert_eq!(status["patients"], clinic["patients"]);
    assert_eq!(status["therapists"], clinic["therapists"]);
    assert_eq!(status["episodes"], clinic["patients"]);
    let stored: u64 = status["assessments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["assessments"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, clinic["assessments"].as_u64().unwrap());
    assert_eq!(status["recent_imports"].as_array().unwrap().len(), 4);
    let text = mbc(cwd, &["status", "--data-dir", "node"]).ok().stdout;
    assert!(
        text.contains("PHQ-9") && text.contains("GAD-7") && text.contains("assessments.csv"),
        "{text}"
    );
    // The ground truth names every therapist with planted labels.
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.join("data/truth.json")).unwrap()).unwrap();
    assert_eq!(
        truth["clinics"][0]["therapists"].as_array().unwrap().len() as u64,
        clinic["therapists"].as_u64().unwrap()
    );
}

#[test]
fn init_refuses_to_overwrite_and_reads_the_data_dir_from_env() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    mbc(cwd, &["init", "--data-dir", "node", "--name", "A"]).ok();
    let before = std::fs::read(cwd.join("node/pseudonym.key")).unwrap();
    let again = mbc(cwd, &["init", "--data-dir", "node", "--name", "B"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read(cwd.join("node/pseudonym.key")).unwrap(),
        before
    );
    let dir = cwd.join("node");
    let status = mbc_env(
        cwd,
        &["status", "--json"],
        &[("MBC_NODE_DIR", dir.to_str().unwrap())],
    )
    .ok()
    .json();
    assert_eq!(status["store"]["clinic"], "A");
    use std::os::unix::fs::PermissionsExt;
    for (file, mode) in [
        ("identity.key", 0o600),
        ("pseudonym.key", 0o600),
        ("", 0o700),
    ] {
        let meta = std::fs::metadata(dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("name = \"A\""), "{config}");
}

#[test]
fn clinic_defined_instruments_are_listed_and_importable() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    mbc(cwd, &["init", "--data-dir", "node", "--name", "A"]).ok();
    std::fs::write(
        cwd.join("wsas.toml"),
        "[[instrument]]\nid = \"WSAS\"\nname = \"Work and Social Adjustment Scale\"\nmin = 0\nmax = 40\n\
         caseness_cutoff = 10\nreliable_change = 8\n\n[[domain]]\nid = \"functioning\"\nname = \"Functioning\"\n\
         instrument = \"WSAS\"\nelevated_threshold = 10\n",
    )
    .unwrap();
    let added = mbc(
        cwd,
        &[
            "instruments",
            "add",
            "--data-dir",
            "node",
            "wsas.toml",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(added["instruments_added"][0], "WSAS");
    let list = mbc(
        cwd,
        &["instruments", "list", "--data-dir", "node", "--json"],
    )
    .ok()
    .json();
    let ids: Vec<&str> = list["instruments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"WSAS") && ids.contains(&"PHQ-9"), "{ids:?}");
    assert!(
        mbc(cwd, &["instruments", "list", "--data-dir", "node"])
            .ok()
            .stdout
            .contains("(clinic-defined)")
    );
    std::fs::write(
        cwd.join("a.csv"),
        "patient_id,therapist_id,episode_id,session,date,instrument,score\nP1,T1,E1,1,2024-01-08,wsas,22\n",
    )
    .unwrap();
    let out = mbc(cwd, &["import", "--data-dir", "node", "a.csv", "--json"])
        .ok()
        .json()["files"]
        .clone();
    assert_eq!(out[0]["counts"]["assessments"], 1);
}

#[test]
fn synth_is_deterministic_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = |out: &str, seed| Synth::new(seed).out(out).clinics(2).patients(60).fhir();
    synth("a", 5).run(cwd).ok();
    synth("b", 5).run(cwd).ok();
    synth("c", 6).run(cwd).ok();
    let files = [
        "truth.json",
        "clinic-01/assessments.csv",
        "clinic-02/episodes.csv",
        "clinic-02/fhir.ndjson",
    ];
    for f in files {
        let a = std::fs::read(cwd.join("a").join(f)).unwrap();
        assert_eq!(
            a,
            std::fs::read(cwd.join("b").join(f)).unwrap(),
            "{f} differs for the same seed"
        );
        assert_ne!(
            a,
            std::fs::read(cwd.join("c").join(f)).unwrap(),
            "{f} is the same for another seed"
        );
    }
    let again = synth("a", 5).run(cwd);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("is not empty"), "{}", again.stderr);
}

/// One synthetic clinic of 40 patients in `cwd/data` (its `synth --json` summary).
fn small_clinic(cwd: &std::path::Path, seed: u32) -> serde_json::Value {
    Synth::new(seed).patients(40).summary(cwd)
}

/// Issue 12, finding 10: the store is created owner-only (0600, and so are its WAL files), and
/// a store or data directory that other users can read is refused by every command, with the
/// command that fixes it; nothing is changed until it is fixed.
#[test]
fn a_store_or_data_directory_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = small_clinic(cwd, 4);
    clinic_node(cwd, "node", "Riverside", &synth["clinics"][0]);
    let node = cwd.join("node");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node), 0o700);
    for f in [
        "local.db",
        "local.db-wal",
        "local.db-shm",
        "identity.key",
        "pseudonym.key",
    ] {
        let p = node.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    chmod(&node.join("local.db"), 0o644);
    let refused = mbc(cwd, &["status", "--data-dir", "node"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("readable by other users") && refused.stderr.contains("chmod 600"),
        "{}",
        refused.stderr
    );
    chmod(&node.join("local.db"), 0o600);
    chmod(&node, 0o755);
    let refused = mbc(cwd, &["stats", "--data-dir", "node"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("chmod 700"), "{}", refused.stderr);
    chmod(&node, 0o700);
    mbc(cwd, &["status", "--data-dir", "node"]).ok();
}

/// Issue 12, finding 10: the store is encrypted under a key kept beside, not inside, the data
/// directory. Its file holds none of its rows in the clear (pseudonyms, the clinic's name,
/// dates), a copy of the data directory alone cannot be opened, and the key is refused if
/// others can read it.
#[test]
fn the_store_is_encrypted_under_a_key_kept_apart() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = small_clinic(cwd, 6);
    let init = mbc(cwd, &["init", "--data-dir", "node", "--name", "Riverside"]).ok();
    assert!(
        init.stdout.contains("node.keys/store.key"),
        "{}",
        init.stdout
    );
    import_clinic_csv(cwd, "node", &synth["clinics"][0]);
    let status = mbc(cwd, &["status", "--data-dir", "node", "--json"])
        .ok()
        .json();
    assert_eq!(status["store"]["encrypted"], true);
    let key = cwd.join("node.keys/store.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The file holds none of what the store holds: its rows, decrypted, are the control.
    let db = cwd.join("node/local.db");
    let plain = integration_tests::decrypted_dump(&db);
    let pseudonym = integration_tests::rows(
        &integration_tests::open(&db),
        "SELECT pseudonym FROM patient LIMIT 1",
    );
    let needles: Vec<Vec<u8>> = vec![
        b"Riverside".to_vec(),
        pseudonym[0].trim_matches('"').as_bytes().to_vec(),
        b"CREATE TABLE".to_vec(),
        b"SQLite format 3".to_vec(),
    ];
    for needle in &needles[..2] {
        assert!(
            integration_tests::contains(&plain, needle),
            "the control lacks {needle:?}"
        );
    }
    let store_files: Vec<_> = integration_tests::all_bytes(&cwd.join("node"))
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("local.db")
        })
        .collect();
    assert!(store_files.len() >= 2, "the store and its WAL");
    for (path, bytes) in store_files {
        for needle in &needles {
            assert!(
                !integration_tests::contains(&bytes, needle),
                "{} holds {:?} in the clear",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    // A copy of the data directory without the key directory: nothing opens.
    let copy = cwd.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    for f in ["config.toml", "local.db", "identity.key", "pseudonym.key"] {
        std::fs::copy(cwd.join("node").join(f), copy.join(f)).unwrap();
    }
    std::fs::rename(cwd.join("node.keys"), cwd.join("elsewhere")).unwrap();
    let refused = mbc(cwd, &["status", "--data-dir", "copy"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("restore that file from its backup"),
        "{}",
        refused.stderr
    );
    let opened = rusqlite::Connection::open(copy.join("local.db")).unwrap();
    assert!(
        opened
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r
                .get::<_, i64>(0))
            .is_err(),
        "an encrypted store opened without its key"
    );
    // A wrong key is refused as such.
    std::fs::create_dir(cwd.join("node.keys")).unwrap();
    std::fs::write(cwd.join("node.keys/store.key"), [9u8; 32]).unwrap();
    std::fs::set_permissions(
        cwd.join("node.keys/store.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let wrong = mbc(cwd, &["status", "--data-dir", "node"]);
    assert!(
        wrong.stderr.contains("its key does not open it"),
        "{}",
        wrong.stderr
    );
    // The key readable by others is refused.
    std::fs::set_permissions(
        cwd.join("elsewhere/store.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_dir_all(cwd.join("node.keys")).unwrap();
    std::fs::rename(cwd.join("elsewhere"), cwd.join("node.keys")).unwrap();
    let exposed = mbc(cwd, &["status", "--data-dir", "node"]);
    assert!(
        exposed.stderr.contains("readable by other users"),
        "{}",
        exposed.stderr
    );
    std::fs::set_permissions(
        cwd.join("node.keys/store.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    mbc(cwd, &["status", "--data-dir", "node"]).ok();
}

/// A store from before encryption (no key in config.toml) still opens, says so in `status`,
/// and `store encrypt` converts it in place: same content, encrypted, key apart, no plaintext
/// copy left. `store query` reads the encrypted store read-only.
#[test]
fn a_store_from_before_encryption_is_encrypted_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = small_clinic(cwd, 8);
    // A node as mbc-node made them before: keys and a plaintext store in the data directory.
    let node = cwd.join("old");
    std::fs::create_dir(&node).unwrap();
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let config = mbc_node::config::Config::new("Old clinic".into(), None, None);
    for k in [
        &config.keys.identity_key_file,
        &config.keys.pseudonym_secret_file,
    ] {
        mbc_node::keystore::create_key_file(&node.join(k)).unwrap();
    }
    let clinic = mbc_node::store::Clinic {
        name: "Old clinic".into(),
        country: None,
        service_type: None,
    };
    mbc_node::store::Store::create(
        &node.join("local.db"),
        &clinic,
        "2026-01-01T00:00:00Z",
        None,
    )
    .unwrap();
    std::fs::write(node.join("config.toml"), config.to_toml()).unwrap();
    import_clinic_csv(cwd, "old", &synth["clinics"][0]);
    let text = mbc(cwd, &["status", "--data-dir", "old"]).ok().stdout;
    assert!(text.contains("NOT encrypted"), "{text}");
    let before = integration_tests::canonical_content(&node.join("local.db"));
    assert!(integration_tests::contains(
        &std::fs::read(node.join("local.db")).unwrap(),
        b"SQLite format 3"
    ));

    // Refused while a daemon holds the node's lock (here this test holds it) ...
    let lock = std::fs::File::create(node.join("daemon.lock")).unwrap();
    lock.try_lock().unwrap();
    let running = mbc(cwd, &["store", "encrypt", "--data-dir", "old"]);
    assert_eq!(running.code, 1);
    assert!(
        running.stderr.contains("the node is running"),
        "{}",
        running.stderr
    );
    drop(lock);
    // ... but not for an `api.addr` that a killed daemon left behind.
    std::fs::write(node.join("api.addr"), "127.0.0.1:1\n").unwrap();
    let out = mbc(cwd, &["store", "encrypt", "--data-dir", "old"])
        .ok()
        .stdout;
    assert!(out.contains("old.keys/store.key"), "{out}");
    let status = mbc(cwd, &["status", "--data-dir", "old", "--json"])
        .ok()
        .json();
    assert_eq!(status["store"]["encrypted"], true);
    assert_eq!(
        integration_tests::canonical_content(&node.join("local.db")),
        before
    );
    for (path, bytes) in integration_tests::all_bytes(&node) {
        assert!(
            !integration_tests::contains(&bytes, b"SQLite format 3"),
            "{} is a plaintext database",
            path.display()
        );
    }
    let again = mbc(cwd, &["store", "encrypt", "--data-dir", "old"]);
    assert!(
        again.stderr.contains("already encrypted"),
        "{}",
        again.stderr
    );
    // Read-only queries for the people who look after the store.
    let csv = mbc(
        cwd,
        &[
            "store",
            "query",
            "--data-dir",
            "old",
            "SELECT count(*) AS n FROM patient",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(csv, format!("n\n{}\n", synth["clinics"][0]["patients"]));
    let write = mbc(
        cwd,
        &["store", "query", "--data-dir", "old", "DELETE FROM patient"],
    );
    assert_eq!(write.code, 1, "a query changed the store");
    assert_eq!(
        integration_tests::canonical_content(&node.join("local.db")),
        before
    );
}

/// Issue 13, fix 6: when nothing can be written (here a file-size limit of 0, which fails every
/// write as a full disk does, and SQLite cannot create the write-ahead log's shared memory),
/// the commands that only read still answer, and a write says what is wrong and changes
/// nothing.
#[test]
fn read_only_commands_work_when_nothing_can_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let synth = small_clinic(cwd, 3);
    clinic_node(cwd, "node", "Riverside", &synth["clinics"][0]);
    let before = integration_tests::checksum(&cwd.join("node/local.db"));
    // SIGXFSZ ignored, so a write beyond the limit fails (EFBIG) instead of killing the process.
    let full = |args: &str| {
        let out = std::process::Command::new("sh")
            .current_dir(cwd)
            .args([
                "-c",
                &format!(r#"trap '' XFSZ; ulimit -f 0; exec "$0" {args}"#),
                integration_tests::bin().to_str().unwrap(),
            ])
            .env_remove("MBC_NODE_DIR")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        "status --data-dir node",
        "audit --data-dir node",
        "budget --data-dir node",
        "benchmark list --data-dir node",
    ] {
        let (code, stdout, stderr) = full(args);
        assert_eq!(code, Some(0), "{args}: {stderr}");
        assert!(!stdout.is_empty(), "{args} printed nothing");
    }
    let (_, status, _) = full("status --data-dir node");
    assert!(status.contains("Riverside"), "{status}");
    let therapists = synth["clinics"][0]["csv_files"][0].as_str().unwrap();
    let (code, _, stderr) = full(&format!("import --data-dir node data/{therapists}"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is the disk full?"), "{stderr}");
    assert_eq!(
        integration_tests::checksum(&cwd.join("node/local.db")),
        before,
        "a failed write changed the store"
    );
}

/// An `init` that fails half-way (here the store cannot grow past 512 bytes, as on a full
/// disk) removes every file it made, the ledger's included, so that `init` then succeeds.
#[test]
fn an_init_that_fails_half_way_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let out = std::process::Command::new("sh")
        .current_dir(cwd)
        .args([
            "-c",
            r#"trap '' XFSZ; ulimit -f 1; exec "$0" init --data-dir node --name R"#,
            integration_tests::bin().to_str().unwrap(),
        ])
        .env_remove("MBC_NODE_DIR")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let left: Vec<String> = std::fs::read_dir(cwd.join("node"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    mbc(cwd, &["init", "--data-dir", "node", "--name", "R"]).ok();
    // A directory holding only a privacy ledger (a half-restored backup) is refused and the
    // ledger kept.
    std::fs::create_dir(cwd.join("restored")).unwrap();
    std::fs::copy(
        cwd.join("node/local.ledger.db"),
        cwd.join("restored/local.ledger.db"),
    )
    .unwrap();
    let out = mbc(cwd, &["init", "--data-dir", "restored", "--name", "R"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("found local.ledger.db"),
        "{}",
        out.stderr
    );
    assert!(cwd.join("restored/local.ledger.db").exists());
}
