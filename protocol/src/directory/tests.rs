use super::*;
use crate::roster::{Member, Role};

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

fn signer(k: u8) -> Signer {
    Signer::from_seed(&[k; 32])
}

/// A roster of the coordinator (1) and clinics 2 and 3 on network "net".
fn roster() -> Roster {
    let member = |k: u8, role| Member {
        key: signer(k).key(),
        name: format!("clinic {k}"),
        addrs: vec![],
        role,
    };
    Roster {
        network_id: "net".into(),
        version: 2,
        coordinator: signer(1).key(),
        issued_at: 0,
        members: vec![
            member(1, Role::Coordinator),
            member(2, Role::Clinic),
            member(3, Role::Clinic),
        ],
    }
}

fn entry(k: u8) -> Entry {
    Entry {
        format: FORMAT.into(),
        network_id: "net".into(),
        clinic: signer(k).key(),
        name: format!("Clinic {k}"),
        services: vec![Service {
            name: "Step 3 CBT".into(),
            domains: vec!["depression".into(), "anxiety".into()],
        }],
        languages: vec!["en".into(), "pl".into()],
        modalities: vec!["CBT".into()],
        delivery: vec![Delivery::InPerson, Delivery::Video],
        eligibility: "adults 18+, registered with a GP in the borough".into(),
        accepting_new: true,
        wait: WaitBand::TwoToSixWeeks,
        contact: "referrals via the NHS e-Referral Service, service 12345".into(),
        badges: vec![Badge {
            domain: "depression".into(),
            finished: 412.3,
            reliable_improvement: 0.64,
            noise_sd: 0.01,
            release_id: "r1".into(),
        }],
        issued_at_ms: NOW - DAY,
    }
}

#[test]
fn a_members_entry_is_accepted_and_every_deviation_refused() {
    let r = roster();
    let ok = SignedEntry::sign(&signer(2), &entry(2));
    assert_eq!(check(&ok, &r, NOW).unwrap(), entry(2));
    // Tampered after signing: one byte of the document.
    let mut tampered = ok.clone();
    let at = tampered
        .document
        .0
        .windows(8)
        .position(|w| w == b"Clinic 2")
        .unwrap();
    tampered.document.0[at + 7] = b'9';
    assert_eq!(check(&tampered, &r, NOW), Err(Refusal::BadSignature));
    // Signed by another member in clinic 2's name.
    let forged = SignedEntry::sign(&signer(3), &entry(2));
    assert_eq!(check(&forged, &r, NOW), Err(Refusal::BadSignature));
    // A clinic not on the roster, signing its own.
    let foreign = SignedEntry::sign(&signer(9), &entry(9));
    assert_eq!(check(&foreign, &r, NOW), Err(Refusal::NotAMember));
    // Another network's.
    let other = SignedEntry::sign(
        &signer(2),
        &Entry {
            network_id: "elsewhere".into(),
            ..entry(2)
        },
    );
    assert_eq!(
        check(&other, &r, NOW),
        Err(Refusal::OtherNetwork("elsewhere".into()))
    );
    // 30 days old is fine; a moment more is stale; from the future is refused.
    let at = |issued_at_ms| {
        SignedEntry::sign(
            &signer(2),
            &Entry {
                issued_at_ms,
                ..entry(2)
            },
        )
    };
    assert!(check(&at(NOW - STALE_AFTER_MS), &r, NOW).is_ok());
    assert_eq!(check(&at(NOW - 31 * DAY), &r, NOW), Err(Refusal::Stale(31)));
    assert!(check(&at(NOW + MAX_SKEW_MS), &r, NOW).is_ok());
    assert_eq!(
        check(&at(NOW + MAX_SKEW_MS + 1), &r, NOW),
        Err(Refusal::FromTheFuture)
    );
}

#[test]
fn an_entry_cannot_carry_a_therapist_or_anything_unknown() {
    let r = roster();
    #[derive(Serialize)]
    struct WithTherapists {
        #[serde(flatten)]
        entry: Entry,
        therapists: Vec<(String, bool)>,
    }
    let doc = WithTherapists {
        entry: entry(2),
        therapists: vec![("Dr A".into(), true)],
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&doc, &mut bytes).unwrap();
    let signed = SignedEntry {
        signature: signer(2).sign(&SignedEntry::transcript(&bytes)),
        document: Bytes(bytes),
    };
    let Err(Refusal::Malformed(why)) = check(&signed, &r, NOW) else {
        panic!("accepted an entry naming therapists");
    };
    assert!(why.contains("unknown field `therapists`"), "{why}");
    // Bounds: a badge rate beyond 1, a huge document, too many languages, another format.
    let bad = |e: Entry| check(&SignedEntry::sign(&signer(2), &e), &r, NOW);
    let mut e = entry(2);
    e.badges[0].reliable_improvement = 1.2;
    assert!(matches!(bad(e), Err(Refusal::Malformed(_))));
    let mut e = entry(2);
    e.eligibility = "x".repeat(MAX_ENTRY);
    assert!(matches!(bad(e), Err(Refusal::TooLarge(_))));
    let mut e = entry(2);
    e.languages = vec!["xx".into(); 40];
    assert!(matches!(bad(e), Err(Refusal::Malformed(_))));
    let mut e = entry(2);
    e.format = "something/else".into();
    assert!(matches!(bad(e), Err(Refusal::Malformed(_))));
}

#[test]
fn search_filters_by_domain_language_and_delivery_and_says_why() {
    let mut a = entry(2);
    a.name = "Alder".into();
    a.wait = WaitBand::OverSixWeeks;
    let mut b = entry(3);
    b.name = "Birch".into();
    b.wait = WaitBand::UnderTwoWeeks;
    b.languages = vec!["en".into()];
    b.badges.clear();
    let mut c = entry(4);
    c.name = "Cedar".into();
    c.accepting_new = false;
    c.services[0].domains = vec!["anxiety".into()];
    let all = [a, b, c];
    let names =
        |q: &Query| -> Vec<String> { search(&all, q).into_iter().map(|h| h.name).collect() };
    let depression = Query {
        domain: Some("depression".into()),
        ..Query::default()
    };
    // Taking new referrals first, then the shorter wait.
    assert_eq!(names(&depression), ["Birch", "Alder"]);
    assert_eq!(
        names(&Query {
            language: Some("PL".into()),
            ..depression.clone()
        }),
        ["Alder"]
    );
    assert_eq!(
        names(&Query {
            domain: Some("anxiety".into()),
            ..Query::default()
        }),
        ["Birch", "Alder", "Cedar"]
    );
    assert_eq!(
        names(&Query {
            domain: Some("anxiety".into()),
            accepting_only: true,
            ..Query::default()
        }),
        ["Birch", "Alder"]
    );
    let hit = &search(&all, &depression)[1];
    assert_eq!(
        hit.reasons,
        [
            "treats depression: Step 3 CBT",
            "taking new referrals; wait over 6 weeks",
            "depression: reliable improvement about 64 % of about 412 finished courses (± 2 \
             points, differentially private)"
        ]
    );
    assert_eq!(WaitBand::of_days(13), WaitBand::UnderTwoWeeks);
    assert_eq!(WaitBand::of_days(14), WaitBand::TwoToSixWeeks);
    assert_eq!(WaitBand::of_days(43), WaitBand::OverSixWeeks);
}
