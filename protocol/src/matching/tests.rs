use super::*;
use crate::instrument::{builtin_domains, builtin_instruments};
use crate::therapist::z95;

const fn rec(label: Label, n: u64, eb: f64, interval: (f64, f64)) -> TrackRecord {
    TrackRecord {
        n,
        mean: eb,
        se: 1.0,
        shrinkage: 0.5,
        eb,
        eb_interval: interval,
        label,
    }
}

const EFFECTIVE: Option<TrackRecord> = Some(rec(Label::Effective, 38, -2.1, (-3.6, -0.6)));

const INEFFECTIVE: Option<TrackRecord> = Some(rec(Label::Ineffective, 40, 1.9, (0.4, 3.5)));

const NEUTRAL: Option<TrackRecord> = Some(rec(Label::Neutral, 45, -0.2, (-1.5, 1.1)));

const THIN: Option<TrackRecord> = Some(rec(Label::InsufficientData, 14, -0.8, (-2.4, 0.8)));

fn therapist(id: &str, records: &[(&str, Option<TrackRecord>)]) -> Candidate {
    Candidate {
        profile: Profile {
            id: id.to_string(),
            wait_days: Some(7),
            ..Profile::default()
        },
        records: records
            .iter()
            .map(|(d, r)| DomainRecord {
                domain: d.to_string(),
                record: *r,
            })
            .collect(),
    }
}

/// An intake from (domain id, instrument total) with the built-in definitions.
fn intake_of(scores: &[(&str, f64)]) -> Intake {
    let domains = builtin_domains();
    let instruments = builtin_instruments();
    let rows: Vec<(&Domain, &Instrument, f64)> = scores
        .iter()
        .map(|(d, s)| {
            let domain = domains.iter().find(|x| x.id == *d).unwrap();
            let inst = instruments
                .iter()
                .find(|i| i.id == domain.instrument_id)
                .unwrap();
            (domain, inst, *s)
        })
        .collect();
    intake(&rows, None).unwrap()
}

fn request(scores: &[(&str, f64)]) -> Request {
    Request {
        intake: intake_of(scores),
        ..Request::default()
    }
}

#[test]
fn the_intake_ranks_elevated_domains_by_severity_on_one_scale() {
    // PHQ-9 18: (18 − 10)/5.5 = 1.45 clinical SDs past caseness; GAD-7 12: (12 − 8)/4.5 = 0.89;
    // CORE-10 (no clinical SD): (20 − 11)/6 = 1.5 reliable changes.
    let i = intake_of(&[("anxiety", 12.0), ("depression", 18.0), ("distress", 20.0)]);
    let order: Vec<&str> = i.domains.iter().map(|d| d.domain.as_str()).collect();
    assert_eq!(order, ["distress", "depression", "anxiety"]);
    assert!((i.domains[1].severity - 8.0 / 5.5).abs() < 1e-12);
    assert!((i.domains[2].severity - 4.0 / 4.5).abs() < 1e-12);
    assert_eq!(i.domains[1].unit, "PHQ-9 points");
    // At the cut-off is elevated; below it is not, and ranks after every elevated domain.
    let i = intake_of(&[("depression", 9.0), ("anxiety", 8.0)]);
    assert_eq!(
        i.domains
            .iter()
            .map(|d| (d.domain.as_str(), d.elevated))
            .collect::<Vec<_>>(),
        [("anxiety", true), ("depression", false)]
    );
    assert_eq!(i.top().len(), 1);
    let domains = builtin_domains();
    let instruments = builtin_instruments();
    let phq = instruments.iter().find(|i| i.id == "PHQ-9").unwrap();
    assert_eq!(
        intake(&[(&domains[0], phq, 28.0)], None).unwrap_err(),
        Error::ScoreOutOfRange {
            instrument: "PHQ-9".into(),
            score: 28.0,
            min: 0.0,
            max: 27.0
        }
    );
}

#[test]
fn levels_follow_domain_3_at_every_boundary() {
    // Top three of four elevated domains: depression, anxiety, distress; one more below.
    let both = request(&[("depression", 18.0), ("anxiety", 12.0)]);
    let one = request(&[("depression", 18.0), ("anxiety", 5.0)]);
    let none = request(&[("depression", 4.0), ("anxiety", 5.0)]);
    let check = |req: &Request, records: &[(&str, Option<TrackRecord>)], want: Level| {
        let got = level(&req.intake, &therapist("T", records));
        assert_eq!(got, want, "{records:?}");
    };
    use Level::*;
    let (e, i, n, t) = (EFFECTIVE, INEFFECTIVE, NEUTRAL, THIN);
    // L3: effective on every top domain, ineffective on none.
    check(&both, &[("depression", e), ("anxiety", e)], L3);
    check(&one, &[("depression", e)], L3);
    // Ineffective on a domain the patient is not elevated on does not count.
    check(&one, &[("depression", e), ("anxiety", i)], L3);
    // L2: effective on the first only.
    check(&both, &[("depression", e), ("anxiety", n)], L2);
    check(&both, &[("depression", e), ("anxiety", t)], L2);
    check(&both, &[("depression", e)], L2);
    // L1: not effective on the first, ineffective on none.
    check(&both, &[("depression", n), ("anxiety", e)], L1);
    check(&both, &[("depression", t), ("anxiety", t)], L1);
    check(&both, &[], L1);
    // L0: ineffective on any elevated domain, whatever else.
    check(&both, &[("depression", e), ("anxiety", i)], L0);
    check(&both, &[("depression", i), ("anxiety", e)], L0);
    // No elevated domain: nobody is effective or ineffective on the patient's problems.
    check(&none, &[("depression", e), ("anxiety", i)], L1);
    // An elevated domain beyond the top three still makes L0; effective on the top three
    // alone is L3.
    let four = Intake {
        domains: ["a", "b", "c", "d"]
            .iter()
            .map(|d| DomainScore {
                domain: d.to_string(),
                instrument: "X".into(),
                unit: "SD".into(),
                score: 2.0,
                severity: 1.0,
                elevated: true,
            })
            .collect(),
        urgent: None,
    };
    let c = |d: Option<TrackRecord>| therapist("T", &[("a", e), ("b", e), ("c", e), ("d", d)]);
    assert_eq!(level(&four, &c(n)), L3);
    assert_eq!(level(&four, &c(i)), L0);
}

#[test]
fn reasons_say_what_the_record_shows_in_plain_words() {
    let req = request(&[("depression", 18.0), ("anxiety", 12.0)]);
    let list = shortlist(
        &req,
        &[
            therapist("A", &[("depression", EFFECTIVE), ("anxiety", THIN)]),
            therapist("B", &[("depression", NEUTRAL)]),
            therapist("C", &[]),
        ],
        &Settings::default(),
    )
    .unwrap();
    let a = &list.offers[0];
    assert_eq!(a.therapist, "A");
    assert_eq!(a.level, Level::L2);
    assert_eq!(
        a.reasons[0].text,
        "better than expected with depression: 38 past patients, about 2 PHQ-9 points \
         (interval 0.6–3.6); limited data with anxiety: 14 past patients, too few to judge"
    );
    assert_eq!(a.reasons[1].text, "first slot in 7 days");
    assert_eq!(
        a.badges,
        [Badge {
            domain: "anxiety".into(),
            thin: Thin::LimitedData
        }]
    );
    let b = &list.offers[1];
    assert_eq!(
        b.reasons[0].text,
        "as expected with depression: 45 past patients; not enough data with anxiety yet"
    );
    assert_eq!(
        b.badges,
        [Badge {
            domain: "anxiety".into(),
            thin: Thin::NotEnoughData
        }]
    );
    assert!(list.offers.iter().all(|o| o.reasons.len() <= 3));
}

fn profile(c: &mut Candidate) -> &mut Profile {
    &mut c.profile
}

#[test]
fn filters_come_before_ranking_and_say_why() {
    // The best record in the clinic fails every filter in turn; it is never offered, however
    // good its level.
    let base = || therapist("STAR", &[("depression", EFFECTIVE)]);
    let others = || {
        (1..=3)
            .map(|k| therapist(&format!("T{k}"), &[("depression", NEUTRAL)]))
            .collect::<Vec<_>>()
    };
    let mut req = request(&[("depression", 18.0)]);
    req.logistics.windows = Slot::parse("mon-eve").unwrap();
    req.logistics.payer = Some("NHS".into());
    req.logistics.reach = Some((
        Position {
            lat: 51.5,
            lon: -0.12,
        },
        10.0,
    ));
    req.preferences = vec![Preference::parse("language=pl", true).unwrap()];
    let fine = |c: &mut Candidate| {
        let p = profile(c);
        p.languages = vec!["en".into(), "pl".into()];
        p.availability = Slot::parse("weekdays-eve").unwrap();
        p.payers = vec!["nhs".into()];
        p.position = Some(Position {
            lat: 51.52,
            lon: -0.10,
        });
        p.site = Some("Central".into());
    };
    type Spoil = Box<dyn Fn(&mut Profile)>;
    let breaks: Vec<(&str, Spoil)> = vec![
        (
            "not accepting new patients",
            Box::new(|p| p.accepting_new = Some(false)),
        ),
        (
            "full this week (2 of 2 new patients)",
            Box::new(|p| {
                p.new_per_week = Some(2);
                p.allocated_this_week = 2;
            }),
        ),
        (
            "first slot in 35 days (longer than 28)",
            Box::new(|p| p.wait_days = Some(35)),
        ),
        (
            "no clinic hours in the patient's windows",
            Box::new(|p| p.availability = Slot::parse("mon-am").unwrap()),
        ),
        (
            // 0.25° north (27.8 km) and 0.62° east at 51.6° (42.9 km): 51 km.
            "Central is 51 km away (radius 10 km)",
            Box::new(|p| {
                p.position = Some(Position {
                    lat: 51.75,
                    lon: 0.5,
                })
            }),
        ),
        (
            "distance unknown: Central has no position in [matching.sites]",
            Box::new(|p| p.position = None),
        ),
        (
            "does not take NHS",
            Box::new(|p| p.payers = vec!["private".into()]),
        ),
        (
            "does not speak Polish",
            Box::new(|p| p.languages = vec!["en".into()]),
        ),
        ("language not recorded", Box::new(|p| p.languages.clear())),
    ];
    for (why, spoil) in &breaks {
        let mut star = base();
        fine(&mut star);
        spoil(profile(&mut star));
        let mut all = vec![star];
        for mut o in others() {
            fine(&mut o);
            all.push(o);
        }
        let list = shortlist(&req, &all, &Settings::default()).unwrap();
        assert!(list.offers.iter().all(|o| o.therapist != "STAR"), "{why}");
        assert_eq!(
            list.excluded,
            [Exclusion {
                therapist: "STAR".into(),
                reasons: vec![why.to_string()]
            }]
        );
        assert_eq!(list.offers.len(), 3);
    }
    // Unspoilt, it comes first; a video therapist far away is within reach; the same one is
    // not when the patient requires in person.
    let mut star = base();
    fine(&mut star);
    star.profile.position = Some(Position {
        lat: 53.48,
        lon: -2.24,
    });
    star.profile.delivery = vec![Delivery::InPerson, Delivery::Video];
    let list = shortlist(&req, std::slice::from_ref(&star), &Settings::default()).unwrap();
    assert_eq!(list.offers[0].therapist, "STAR");
    assert!(list.offers[0].reasons[2].text.ends_with("by video"));
    let mut in_person = req.clone();
    in_person
        .preferences
        .push(Preference::parse("delivery=in-person", true).unwrap());
    let list = shortlist(&in_person, &[star], &Settings::default()).unwrap();
    assert!(list.offers.is_empty());
    assert!(list.excluded[0].reasons[0].contains("km away"));
    assert_eq!(
        list.notes,
        ["no therapist meets the requirements; 1 excluded (1 too far)"]
    );
}

#[test]
fn a_shortlist_has_three_to_five_and_an_l0_only_when_unavoidable() {
    let req = request(&[("depression", 18.0)]);
    let clinic = |safe: usize, bad: usize| -> Vec<Candidate> {
        let mut v: Vec<Candidate> = (0..safe)
            .map(|k| therapist(&format!("S{k}"), &[("depression", NEUTRAL)]))
            .collect();
        v.extend((0..bad).map(|k| therapist(&format!("X{k}"), &[("depression", INEFFECTIVE)])));
        v
    };
    for safe in 0..8 {
        for bad in 0..4 {
            let list = shortlist(&req, &clinic(safe, bad), &Settings::default()).unwrap();
            let n = list.offers.len();
            let l0 = list.offers.iter().filter(|o| o.level == Level::L0).count();
            assert_eq!(
                n,
                (safe.min(5)).max((safe + bad).min(3)),
                "{safe} safe, {bad} bad"
            );
            assert_eq!(l0, 3usize.saturating_sub(safe).min(bad), "{safe}/{bad}");
            assert_eq!(list.not_listed, safe + bad - n);
            for o in &list.offers {
                assert_eq!(o.staff_note.is_some(), o.level == Level::L0);
            }
            // L0 therapists come after every safe one.
            assert!(list.offers[..n - l0].iter().all(|o| o.level > Level::L0));
        }
    }
    let list = shortlist(&req, &clinic(1, 2), &Settings::default()).unwrap();
    assert_eq!(
        list.offers[1].staff_note.as_deref(),
        Some(
            "staff only: patients with this problem did worse than expected with this \
             therapist; offered because only 1 other therapist meets the requirements"
        )
    );
    assert!(list.offers[1].reasons[0].text.starts_with(
        "worse than expected with depression: 40 past patients, about 1.9 PHQ-9 points \
         (interval 0.4–3.5)"
    ));
    let three = Settings {
        length: 3,
        ..Settings::default()
    };
    assert_eq!(
        shortlist(&req, &clinic(7, 0), &three).unwrap().offers.len(),
        3
    );
    for bad in [
        Settings {
            length: 2,
            ..Settings::default()
        },
        Settings {
            length: 6,
            ..Settings::default()
        },
        Settings {
            weight: 1.5,
            ..Settings::default()
        },
    ] {
        assert!(shortlist(&req, &[], &bad).is_err());
    }
}

#[test]
fn track_record_and_preferences_count_together_by_the_clinics_weight() {
    let mut req = request(&[("depression", 18.0)]);
    req.preferences = vec![
        Preference::parse("gender=female", false).unwrap(),
        Preference::parse("language=pl", false).unwrap(),
    ];
    // A: level 3, no preference met; B: level 1, both met.
    let mut a = therapist("A", &[("depression", EFFECTIVE)]);
    a.profile.gender = Some("male".into());
    a.profile.languages = vec!["en".into()];
    let mut b = therapist("B", &[("depression", NEUTRAL)]);
    b.profile.gender = Some("female".into());
    b.profile.languages = vec!["pl".into()];
    let first = |w: f64| {
        let s = Settings {
            weight: w,
            ..Settings::default()
        };
        shortlist(&req, &[a.clone(), b.clone()], &s).unwrap().offers[0]
            .therapist
            .clone()
    };
    // Scores: A = w, B = w/3 + (1 − w); A first when w > 3/5.
    assert_eq!(first(0.5), "B");
    assert_eq!(first(0.59), "B");
    assert_eq!(first(0.61), "A");
    assert_eq!(first(1.0), "A");
    let list = shortlist(&req, &[a, b], &Settings::default()).unwrap();
    assert_eq!(list.offers[0].reasons[1].text, "female, speaks Polish");
    assert_eq!(
        list.offers[1].reasons[1].text,
        "no preference met: not female, does not speak Polish"
    );
    assert!((list.offers[0].score - (0.5 / 3.0 + 0.5)).abs() < 1e-12);
}

#[test]
fn ties_rotate_so_nobody_takes_every_matched_case() {
    let req = request(&[("depression", 18.0)]);
    let mut clinic: Vec<Candidate> = ["A", "B", "C", "D"]
        .iter()
        .map(|id| therapist(id, &[("depression", EFFECTIVE)]))
        .collect();
    // As the node does: each logged shortlist counts a first place for its first therapist.
    let mut firsts = Vec::new();
    for _ in 0..8 {
        let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
        let first = list.offers[0].therapist.clone();
        clinic
            .iter_mut()
            .find(|c| c.profile.id == first)
            .unwrap()
            .profile
            .first_offers += 1;
        firsts.push(first);
    }
    assert_eq!(firsts, ["A", "B", "C", "D", "A", "B", "C", "D"]);
    // Allocations weigh before first places, and a better level before both.
    clinic[0].profile.allocations = 1;
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    assert_eq!(list.offers[0].therapist, "B");
    clinic[0].profile.allocations = 9;
    clinic.push(therapist("E", &[]));
    clinic[0].records[0].record = EFFECTIVE;
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    assert_eq!(list.offers.last().unwrap().therapist, "E");
}

#[test]
fn urgent_patients_get_the_first_safe_slot_and_no_wait() {
    let mut req = request(&[("depression", 22.0)]);
    req.intake.urgent = Some("PHQ-9 item 9 answered 2".into());
    let mut clinic = vec![
        therapist("L3-LATE", &[("depression", EFFECTIVE)]),
        therapist("L1-SOON", &[("depression", NEUTRAL)]),
        therapist("L0-NOW", &[("depression", INEFFECTIVE)]),
        therapist("L1-LATER", &[("depression", NEUTRAL)]),
        therapist("L3-WEEK", &[("depression", EFFECTIVE)]),
    ];
    for (c, w) in clinic.iter_mut().zip([21, 2, 0, 5, 5]) {
        c.profile.wait_days = Some(w);
    }
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    assert!(list.urgent);
    let order: Vec<&str> = list.offers.iter().map(|o| o.therapist.as_str()).collect();
    // Within 7 days, by slot then level; the L0 is not needed to make up three.
    assert_eq!(order, ["L1-SOON", "L3-WEEK", "L1-LATER"]);
    assert_eq!(
        list.trade_off,
        "urgent: the first available safe therapist is L1-SOON in 2 days (level 1); no \
         waiting offered"
    );
    assert!(list.notes[0].starts_with("URGENT (PHQ-9 item 9 answered 2)"));
    assert_eq!(
        list.excluded[0].reasons,
        ["first slot in 21 days (longer than 7)"]
    );
    // Nobody safe within the week: no therapist is called safe, and staff escalate.
    let mut only_l0 = clinic.clone();
    for c in &mut only_l0 {
        if c.profile.id != "L0-NOW" {
            c.profile.wait_days = Some(30);
        }
    }
    let list = shortlist(&req, &only_l0, &Settings::default()).unwrap();
    assert_eq!(list.offers.len(), 1);
    assert_eq!(
        list.trade_off,
        "urgent: no therapist without a poor record on this problem has a slot within 7 days; \
         escalate under the clinic's risk protocol"
    );
    // Routine, the same clinic trades level against wait.
    req.intake.urgent = None;
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    assert_eq!(list.offers[0].therapist, "L3-WEEK");
    assert_eq!(
        list.trade_off,
        "level 3 in 5 days (L3-WEEK), or level 1 in 2 days (L1-SOON)"
    );
    clinic[1].profile.wait_days = Some(9);
    clinic[3].profile.wait_days = Some(9);
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    assert_eq!(
        list.trade_off,
        "level 3 in 5 days (L3-WEEK): the best level offered is also the soonest"
    );
}

#[test]
fn requests_refuse_what_they_cannot_mean() {
    assert_eq!(
        Preference::parse("star-sign=leo", false),
        Err(Error::UnknownKey("star-sign".into()))
    );
    assert_eq!(
        Preference::parse("language", true),
        Err(Error::BadPreference("language".into()))
    );
    assert_eq!(
        Preference::parse("delivery=carrier-pigeon", true),
        Err(Error::BadDelivery("carrier-pigeon".into()))
    );
    assert_eq!(
        Preference::parse(" Language = PL ", false).unwrap(),
        Preference {
            key: Key::Language,
            value: "pl".into(),
            required: false
        }
    );
    for bad in ["mon-night", "funday-pm", "mon-pm-eve", "", "-pm"] {
        assert_eq!(Slot::parse(bad), Err(Error::BadWindow(bad.into())), "{bad}");
    }
    assert_eq!(Slot::parse("weekend-am").unwrap().len(), 2);
    assert_eq!(Slot::parse("tue").unwrap().len(), 3);
    assert_eq!(
        Slot::parse_list("mon-pm;mon-pm, weekdays-pm")
            .unwrap()
            .len(),
        5
    );
    assert!(
        Position {
            lat: 91.0,
            lon: 0.0
        }
        .validate()
        .is_err()
    );
    // London to Manchester ≈ 262 km (great circle).
    let d = Position {
        lat: 51.5074,
        lon: -0.1278,
    }
    .distance_km(Position {
        lat: 53.4808,
        lon: -2.2426,
    });
    assert!((d - 262.0).abs() < 2.0, "{d}");
}

#[test]
fn the_equity_monitor_flags_below_four_fifths_exactly() {
    // Overall best-level rate over 50 allocations: 25/50 = 0.5. A group at 0.4 (exactly
    // 0.8×) is not flagged; one at 0.375 is.
    let mut allocations = Vec::new();
    let mut add = |group: &str, n: usize, best: usize| {
        for k in 0..n {
            allocations.push((vec![("ethnicity".to_string(), group.to_string())], k < best));
        }
    };
    add("A", 10, 4);
    add("B", 8, 3);
    add("C", 32, 18);
    let e = equity(&allocations);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].n, 50);
    assert!((e[0].overall - 0.5).abs() < 1e-12);
    let flags: Vec<(&str, bool)> = e[0]
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.flagged))
        .collect();
    assert_eq!(flags, [("A", false), ("B", true), ("C", false)]);
    // Nobody at the best level: no ratio, no flag.
    let none = equity(&[(vec![("sex".into(), "female".into())], false)]);
    assert_eq!(none[0].groups[0].ratio, None);
    assert!(!none[0].groups[0].flagged);
}

#[test]
fn oversight_counts_allocations_and_outcomes_by_level() {
    let a = |t: &str, m: &str| (t.to_string(), m.to_string());
    let loads = fairness(&[
        a("A", "2026-10"),
        a("A", "2026-11"),
        a("A", "2026-11"),
        a("B", "2026-11"),
    ]);
    assert_eq!(loads[0].therapist, "A");
    assert_eq!(
        loads[0].by_month,
        [("2026-10".to_string(), 1), ("2026-11".to_string(), 2)]
    );
    assert_eq!(loads[1].by_month[0], ("2026-10".to_string(), 0));
    assert!((loads[0].ratio_to_mean - 1.5).abs() < 1e-12);
    let out = outcomes_by_level(&[(Level::L3, -4.0), (Level::L3, -2.0), (Level::L1, 1.0)]);
    assert_eq!(out[0].level, Level::L1);
    assert_eq!(out[0].interval, None);
    assert!((out[1].mean + 3.0).abs() < 1e-12);
    // SD √2, SE 1: ±1.96.
    let (lo, hi) = out[1].interval.unwrap();
    assert!((hi - lo - 2.0 * z95()).abs() < 1e-9);
}

#[test]
fn a_shortlist_shown_by_staff_ids_names_them_everywhere_and_ranks_as_before() {
    let req = request(&[("depression", 18.0)]);
    let mut clinic: Vec<Candidate> = ["a1b2c3d4", "e5f6a7b8", "c9d0e1f2"]
        .iter()
        .enumerate()
        .map(|(k, id)| {
            let mut c = therapist(id, &[("depression", NEUTRAL)]);
            profile(&mut c).wait_days = Some(3 + 7 * k as u32);
            c
        })
        .collect();
    let mut full = therapist("0badcafe", &[("depression", NEUTRAL)]);
    profile(&mut full).accepting_new = Some(false);
    clinic.push(full);
    let list = shortlist(&req, &clinic, &Settings::default()).unwrap();
    let staff = |id: &str| (id != "c9d0e1f2").then(|| format!("T-{}", &id[..2]));
    let shown = list.clone().shown_as(staff);
    let ids = |l: &Shortlist| -> Vec<String> {
        l.offers
            .iter()
            .map(|o| o.therapist.clone())
            .chain(l.excluded.iter().map(|e| e.therapist.clone()))
            .collect()
    };
    assert_eq!(ids(&list), ["a1b2c3d4", "e5f6a7b8", "c9d0e1f2", "0badcafe"]);
    assert_eq!(ids(&shown), ["T-a1", "T-e5", "c9d0e1f2", "T-0b"]);
    assert!(list.trade_off.contains("a1b2c3d4"), "{}", list.trade_off);
    assert_eq!(shown.trade_off, list.trade_off.replace("a1b2c3d4", "T-a1"));
    // Nothing else changes.
    let mut back = shown.clone();
    for (o, before) in back.offers.iter_mut().zip(&list.offers) {
        o.therapist.clone_from(&before.therapist);
    }
    for (e, before) in back.excluded.iter_mut().zip(&list.excluded) {
        e.therapist.clone_from(&before.therapist);
    }
    back.trade_off.clone_from(&list.trade_off);
    assert_eq!(back, list);
}
