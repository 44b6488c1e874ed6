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
            "depression: reliable improvement about 64 % of about 412 finished courses (± 2.0 \
             percentage points, differentially private)"
        ]
    );
    assert_eq!(WaitBand::of_days(13), WaitBand::UnderTwoWeeks);
    assert_eq!(WaitBand::of_days(14), WaitBand::TwoToSixWeeks);
    assert_eq!(WaitBand::of_days(43), WaitBand::OverSixWeeks);
}

mod badges {
    use super::super::badges::{BadgeLayout, MIN_FINISHED};
    use crate::benchmark::{Contribution, DomainSpec};
    use crate::dp::Mechanism;
    use crate::instrument::Direction;

    fn domains() -> Vec<DomainSpec> {
        ["depression", "anxiety"]
            .iter()
            .map(|id| DomainSpec {
                id: (*id).into(),
                lo: 0.0,
                hi: 27.0,
                bands: vec![0.0, 10.0, 20.0],
                direction: Direction::LowerIsBetter,
            })
            .collect()
    }

    fn course(patient: u64, domain: usize, finished: bool, improved: bool) -> Contribution {
        Contribution {
            patient,
            therapist: Some(1),
            domain,
            pre: 18.0,
            post: 9.0,
            finished,
            caseness: Some((true, false)),
            reliable: Some((improved, false)),
            features: vec![],
            residual: None,
            sessions: vec![],
            dropout: None,
        }
    }

    /// A hand-counted clinic: 40 finished depression courses, 26 reliably improved (65 %),
    /// 10 unfinished ones that count nowhere, a patient's third course over the cap of 2, and
    /// 12 finished anxiety courses: under 20, so no anxiety badge.
    fn clinic() -> Vec<Contribution> {
        let mut c = Vec::new();
        for p in 0..40 {
            c.push(course(p, 0, true, p < 26));
        }
        for p in 100..110 {
            c.push(course(p, 0, false, true));
        }
        c.push(course(0, 0, true, true));
        c.push(course(0, 0, true, true));
        for p in 200..212 {
            c.push(course(p, 1, true, true));
        }
        c
    }

    #[test]
    fn badges_count_finished_courses_and_reliable_improvement_exactly() {
        let layout = BadgeLayout::new(domains(), 2).unwrap();
        let values = layout.encode(&clinic()).unwrap();
        // Patient 0's second depression course counts (cap 2), the third does not.
        assert_eq!(
            layout.layout().decode(&values).unwrap(),
            vec![41.0, 27.0, 12.0, 12.0]
        );
        let badges = layout.badges(&values, 0.0, "r").unwrap();
        assert_eq!(badges.len(), 1, "anxiety has {} < {MIN_FINISHED}", 12);
        assert_eq!(badges[0].domain, "depression");
        assert_eq!(badges[0].finished, 41.0);
        assert!((badges[0].reliable_improvement - 27.0 / 41.0).abs() < 1e-12);
        assert_eq!(badges[0].noise_sd, 0.0);
        assert_eq!(badges[0].release_id, "r");
    }

    /// The sensitivity is one patient's whole contribution: `max_episodes` finished, improved
    /// courses in every domain move each of the 2 × domains entries by `max_episodes`; brute
    /// force over every patient of the clinic agrees that none moves it further.
    #[test]
    fn sensitivity_bounds_one_patients_whole_contribution() {
        for k in 1..=3u32 {
            let layout = BadgeLayout::new(domains(), k).unwrap();
            let s = layout.layout().sensitivity().patient;
            let scale = layout.layout().blocks()[0].scale();
            let worst = scale * f64::from(k) * 4f64.sqrt();
            assert!(s >= worst - 1e-9, "k {k}: {s} < {worst}");
            let mut all = clinic();
            // One patient with everything: 5 improved courses in both domains.
            for _ in 0..5 {
                all.push(course(999, 0, true, true));
                all.push(course(999, 1, true, true));
            }
            let full = layout.encode(&all).unwrap();
            let patients: std::collections::BTreeSet<u64> = all.iter().map(|c| c.patient).collect();
            for p in patients {
                let without: Vec<Contribution> =
                    all.iter().filter(|c| c.patient != p).cloned().collect();
                let v = layout.encode(&without).unwrap();
                let d: f64 = full
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(d <= s + 1e-9, "patient {p} moves the vector by {d} > {s}");
                if p == 999 {
                    assert!((d / worst - 1.0).abs() < 1e-6, "{d} vs {worst}");
                }
            }
        }
    }

    /// The badge's noise SD is the spread of the rate over repeated noised releases (OpenDP's
    /// discrete Gaussian at ρ = 0.05): within 15 % over 2,000 draws.
    #[test]
    fn badge_noise_sd_matches_repeated_releases() {
        let layout = BadgeLayout::new(domains(), 2).unwrap();
        let mut many = Vec::new();
        for p in 0..400 {
            many.push(course(p, 0, true, p % 3 != 0));
        }
        let clean = layout.encode(&many).unwrap();
        let m = Mechanism::central(layout.layout().sensitivity().patient, 0.05).unwrap();
        let claimed = layout.badges(&clean, m.total_sigma, "r").unwrap()[0].noise_sd;
        let rates: Vec<f64> = (0..2000)
            .map(|_| {
                let mut v = clean.clone();
                let noise = m.noise(v.len()).unwrap();
                Mechanism::apply(&mut v, &noise).unwrap();
                layout.badges(&v, m.total_sigma, "r").unwrap()[0].reliable_improvement
            })
            .collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let sd = (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rates.len() - 1) as f64)
            .sqrt();
        assert!((mean - 267.0 / 400.0).abs() < 0.01, "{mean}");
        assert!((sd / claimed - 1.0).abs() < 0.15, "{sd} vs {claimed}");
    }
}

/// The set digest is the set's, not the order's: the same entries in any order (or twice)
/// agree; one entry more, or another version of one, does not.
#[test]
fn set_digest_is_of_the_set() {
    let a = SignedEntry::sign(&signer(2), &entry(2));
    let b = SignedEntry::sign(&signer(3), &entry(3));
    let mut newer = entry(2);
    newer.issued_at_ms += 1;
    let a2 = SignedEntry::sign(&signer(2), &newer);
    assert_eq!(set_digest([&a, &b]), set_digest([&b, &a]));
    assert_eq!(set_digest([&a, &b]), set_digest([&b, &a, &b]));
    assert_ne!(set_digest([&a, &b]), set_digest([&a]));
    assert_ne!(set_digest([&a, &b]), set_digest([&a2, &b]));
    assert_ne!(set_digest([&a]), set_digest(std::iter::empty()));
}
