//! The network's referral directory between real daemons on 127.0.0.1 (issue 17, part 4).

use integration_tests::net::{Daemon, NodeDir, form, wait_converged, wait_for};
use integration_tests::{Synth, contains, import_clinic_csv, mbc, open, rows};
use protocol::directory::{Entry, FORMAT, Service, SignedEntry, WaitBand};
use protocol::keys::Signer;
use protocol::messages::{Gossip, Response, decode};
use serde_json::Value;

const NET: &str = "net-directory";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn listed(node: &NodeDir) -> Vec<Value> {
    mbc(
        node.dir.parent().unwrap(),
        &["directory", "list", "--data-dir", node.arg(), "--json"],
    )
    .ok()
    .json()
    .as_array()
    .unwrap()
    .clone()
}

fn names(node: &NodeDir) -> Vec<String> {
    let mut n: Vec<String> = listed(node)
        .iter()
        .map(|e| e["entry"]["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

fn entry(signer: &Signer, name: &str, network: &str, issued_at_ms: u64) -> Entry {
    Entry {
        format: FORMAT.into(),
        network_id: network.into(),
        clinic: signer.key(),
        name: name.into(),
        services: vec![Service {
            name: "Step 2".into(),
            domains: vec!["depression".into()],
        }],
        languages: vec!["en".into()],
        modalities: vec![],
        delivery: vec![],
        eligibility: String::new(),
        accepting_new: true,
        wait: WaitBand::UnderTwoWeeks,
        contact: "referrals@example.org".into(),
        badges: vec![],
        issued_at_ms,
    }
}

/// A clinic publishes its entry with badges: the badges' release is charged to its ledger
/// (audit: kind, ρ, counterpart) before the entry leaves; every node keeps it (a node started
/// later pulls it) and finds the clinic by domain and language, with reasons. An in-process
/// member then gossips forged entries (tampered bytes, another network, a non-member's, a
/// stale one): every node refuses each, logged, and keeps only the genuine entry it also
/// sends. P1: of everything the publishing clinic sent, nothing holds a raw identifier, a
/// pseudonym or a record date, and the entry is among it.
#[test]
fn entries_reach_every_node_and_forged_ones_none() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, clinics) = form(root, NET, 2);
    let seed = [9u8; 32];
    let relay = integration_tests::net::admit_seed(root, &coord, NET, seed, "Relay");
    let summary = Synth::new(41).patients(300).summary(root);
    import_clinic_csv(root, clinics[0].arg(), &summary["clinics"][0]);
    clinics[0].set_config(
        "# contact = \"\"",
        "contact = \"NHS e-Referral Service, service 4711\"",
    );
    clinics[0].set_config("# languages = []", "languages = [\"en\", \"pl\"]");

    let tap = clinics[0].dir.join("wire.hex");
    let tap = tap.to_str().unwrap();
    let mut ds = vec![
        Daemon::start(&coord),
        Daemon::start_with_env(&clinics[0], &[("MBC_NODE_TEST_WIRE_TAP", tap)]),
    ];
    wait_converged(&ds.iter().collect::<Vec<_>>(), 4, 1);

    let published = mbc(
        root,
        &[
            "directory",
            "publish",
            "--data-dir",
            clinics[0].arg(),
            "--badges",
            "--rho",
            "0.05",
            "--json",
        ],
    )
    .ok()
    .json();
    let badges = published["entry"]["badges"].as_array().unwrap();
    assert!(
        badges.iter().any(|b| b["domain"] == "depression"),
        "{published}"
    );
    let release = published["badges_release"]["release_id"].as_str().unwrap();
    let audit = mbc(root, &["audit", "--data-dir", clinics[0].arg(), "--json"])
        .ok()
        .json();
    let charged = audit["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["release_id"] == release)
        .unwrap_or_else(|| panic!("{release} not in {audit}"))
        .clone();
    assert_eq!(charged["kind"], "directory-badges");
    assert_eq!(charged["rho"], 0.05);
    assert_eq!(charged["status"], "sent");
    assert_eq!(charged["counterpart"], format!("directory:{NET}"));
    assert!(badges.iter().all(|b| b["release_id"] == release));

    // The coordinator keeps it (gossip or its pull), clinic 2 started now pulls it.
    wait_for("the coordinator to keep clinic 1's entry", || {
        (names(&coord) == ["Clinic 1"]).then_some(())
    });
    ds.push(Daemon::start(&clinics[1]));
    wait_for("clinic 2 to pull clinic 1's entry", || {
        (names(&clinics[1]) == ["Clinic 1"]).then_some(())
    });
    let hits = mbc(
        root,
        &[
            "directory",
            "search",
            "--data-dir",
            clinics[1].arg(),
            "--domain",
            "depression",
            "--language",
            "pl",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(hits[0]["name"], "Clinic 1", "{hits}");
    assert_eq!(hits[0]["contact"], "NHS e-Referral Service, service 4711");
    let reasons = hits[0]["reasons"].to_string();
    assert!(
        reasons.contains("treats depression") && reasons.contains("therapy in pl"),
        "{reasons}"
    );
    assert!(reasons.contains("differentially private"), "{reasons}");
    let none = mbc(
        root,
        &[
            "directory",
            "search",
            "--data-dir",
            clinics[1].arg(),
            "--language",
            "fr",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(none, serde_json::json!([]));

    // Forged entries from an in-process member.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let roster = super::network::roster_of(root, &coord);
    let (client, cancel) = super::network::peer(&rt, seed, roster);
    wait_converged(&ds.iter().collect::<Vec<_>>(), 4, 3);
    let clinic1_seed: [u8; 32] = std::fs::read(clinics[0].dir.join("identity.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let clinic1 = Signer::from_seed(&clinic1_seed);
    let now = now_ms();
    let mut tampered = SignedEntry::sign(&clinic1, &entry(&clinic1, "Clinic 1", NET, now));
    let mut forged = entry(&clinic1, "Clinic 1", NET, now);
    forged.contact = "call me".into();
    // The forged document's bytes (whoever signs them), under clinic 1's original signature.
    tampered.document = SignedEntry::sign(&relay, &forged).document;
    let outsider = Signer::from_seed(&[77; 32]);
    let bad = [
        tampered,
        SignedEntry::sign(&relay, &entry(&relay, "Relay", "another-net", now)),
        SignedEntry::sign(&outsider, &entry(&outsider, "Outsider", NET, now)),
        SignedEntry::sign(
            &relay,
            &entry(&relay, "Relay", NET, now - 31 * 24 * 3600 * 1000),
        ),
    ];
    let genuine = SignedEntry::sign(&relay, &entry(&relay, "Relay", NET, now));
    for e in bad.iter().chain([&genuine]) {
        wait_for("the relay to publish", || {
            rt.block_on(client.publish(Gossip::Directory(e.clone())))
                .ok()
        });
    }
    for (d, node) in ds.iter().zip([&coord, &clinics[0], &clinics[1]]) {
        wait_for(&format!("{} to keep the relay's entry", node.arg()), || {
            (names(node) == ["Clinic 1", "Relay"]).then_some(())
        });
        wait_for(&format!("{} to log 4 refusals", node.arg()), || {
            (d.log().matches("refused a directory entry").count() >= 4).then_some(())
        });
        let log = d.log();
        for why in [
            "signature is not its clinic's",
            "not this one",
            "not on the roster",
            "stale",
        ] {
            assert!(log.contains(why), "{}: no {why:?} in\n{log}", node.arg());
        }
        let kept = listed(node);
        let one = kept
            .iter()
            .find(|e| e["entry"]["name"] == "Clinic 1")
            .unwrap();
        assert_eq!(
            one["entry"]["contact"],
            "NHS e-Referral Service, service 4711",
            "{}",
            node.arg()
        );
    }
    cancel.cancel();

    // P1: clinic 1's messages hold its entry and none of its identifiers or record dates.
    let sent: Vec<Vec<u8>> = std::fs::read_to_string(tap)
        .unwrap()
        .lines()
        .map(|l| hex::decode(l).unwrap())
        .collect();
    let carries_entry = |m: &Vec<u8>| match (decode::<Gossip>(m), decode::<Response>(m)) {
        (Ok(g), _) => matches!(g.body, Gossip::Directory(_)),
        (_, Ok(r)) => matches!(&r.body, Response::Directory(es) if !es.is_empty()),
        _ => false,
    };
    assert!(
        sent.iter().any(carries_entry),
        "clinic 1 never sent its entry"
    );
    let db = open(&clinics[0].dir.join("local.db"));
    let mut needles: Vec<Vec<u8>> = ["P", "T", "E"]
        .iter()
        .map(|k| format!("C01-{k}").into_bytes())
        .collect();
    for table in ["patient", "therapist", "episode"] {
        for p in rows(&db, &format!("SELECT pseudonym FROM {table}")) {
            needles.push(hex::decode(&p).unwrap_or_default());
            needles.push(p.into_bytes());
        }
    }
    needles.extend(
        rows(&db, "SELECT DISTINCT date FROM session")
            .into_iter()
            .map(String::into_bytes),
    );
    assert!(needles.len() > 500, "{} needles", needles.len());
    for m in &sent {
        for n in needles.iter().filter(|n| n.len() >= 5) {
            assert!(
                !contains(m, n),
                "clinic 1 sent {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
}

/// What cannot be published is refused, every problem at once, and nothing is kept or
/// charged: no contact route, an unknown domain, an unknown delivery mode; a node outside any
/// network has no directory to publish to.
#[test]
fn an_entry_that_cannot_be_published_is_refused_with_every_problem() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    coord.set_config(
        "services = []",
        "services = [{ name = \"Step 3\", domains = [\"grief\"] }]",
    );
    coord.set_config("# delivery = []", "delivery = [\"phone\"]");
    let out = mbc(
        root,
        &[
            "directory",
            "publish",
            "--data-dir",
            coord.arg(),
            "--badges",
            "--rho",
            "0.05",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    for says in [
        "[directory] contact is not set",
        "unknown domain \"grief\"",
        "\"phone\" is not a delivery mode",
    ] {
        assert!(out.stderr.contains(says), "{says:?} not in {}", out.stderr);
    }
    let audit = mbc(root, &["audit", "--data-dir", coord.arg(), "--json"])
        .ok()
        .json();
    assert_eq!(audit["releases"], serde_json::json!([]));
    assert!(listed(&coord).is_empty());

    let alone = integration_tests::net::init(root, "Alone");
    let out = mbc(root, &["directory", "publish", "--data-dir", alone.arg()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not in a network"), "{}", out.stderr);
}

/// A publish that crashes right after charging its badges (test hook) kept nothing: the next
/// publish keeps that charged entry instead of charging again, and says so.
#[test]
fn a_publish_charged_but_never_kept_is_finished_without_a_second_charge() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let summary = Synth::new(42).patients(200).summary(root);
    import_clinic_csv(root, coord.arg(), &summary["clinics"][0]);
    coord.set_config("# contact = \"\"", "contact = \"referrals@example.org\"");
    let args = [
        "directory",
        "publish",
        "--data-dir",
        coord.arg(),
        "--badges",
        "--rho",
        "0.05",
        "--json",
    ];
    let crashed =
        integration_tests::mbc_env(root, &args, &[("MBC_NODE_TEST_FAIL_AFTER_CHARGE", "1")]);
    assert_ne!(crashed.code, 0);
    let audit = || {
        mbc(root, &["audit", "--data-dir", coord.arg(), "--json"])
            .ok()
            .json()["releases"]
            .as_array()
            .unwrap()
            .clone()
    };
    let charged = audit();
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0]["status"], "charged");
    assert!(listed(&coord).is_empty(), "nothing kept before the crash");

    let done = mbc(root, &args).ok().json();
    assert_eq!(done["resumed"], true, "{done}");
    assert_eq!(
        done["badges_release"]["release_id"],
        charged[0]["release_id"]
    );
    let after = audit();
    assert_eq!(after.len(), 1, "no second charge");
    assert_eq!(after[0]["status"], "sent");
    assert_eq!(names(&coord), ["Coordinator"]);
    // The next publish is a new one, with its own charge.
    let again = mbc(root, &args).ok().json();
    assert_eq!(again["resumed"], false);
    assert_eq!(audit().len(), 2);
}

/// A clinic removed from the roster is no longer listed anywhere its entry was kept: the entry
/// stays in the store (`list --all` says why it is hidden) but no search finds it.
#[test]
fn a_removed_clinics_entry_is_no_longer_shown() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, clinics) = form(root, NET, 1);
    let summary = Synth::new(43).patients(100).summary(root);
    import_clinic_csv(root, clinics[0].arg(), &summary["clinics"][0]);
    clinics[0].set_config("# contact = \"\"", "contact = \"referrals@example.org\"");
    let ds = [Daemon::start(&coord), Daemon::start(&clinics[0])];
    wait_converged(&ds.iter().collect::<Vec<_>>(), 2, 1);
    mbc(
        root,
        &["directory", "publish", "--data-dir", clinics[0].arg()],
    )
    .ok();
    wait_for("the coordinator to keep clinic 1's entry", || {
        (names(&coord) == ["Clinic 1"]).then_some(())
    });
    mbc(
        root,
        &[
            "network",
            "remove",
            "--data-dir",
            coord.arg(),
            &clinics[0].peer_id,
        ],
    )
    .ok();
    assert!(listed(&coord).is_empty());
    let all = mbc(
        root,
        &[
            "directory",
            "list",
            "--data-dir",
            coord.arg(),
            "--all",
            "--json",
        ],
    )
    .ok()
    .json();
    assert!(
        all[0]["hidden"]
            .as_str()
            .unwrap()
            .contains("not on the roster"),
        "{all}"
    );
    let hits = mbc(
        root,
        &["directory", "search", "--data-dir", coord.arg(), "--json"],
    )
    .ok()
    .json();
    assert_eq!(hits, serde_json::json!([]));
}
