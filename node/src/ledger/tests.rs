use super::*;
use crate::store::Store;

fn policy(limit: f64, max: f64) -> Policy {
    Policy {
        rho_per_period: limit,
        period: Period::Year,
        max_rho_per_release: max,
        delta: 1e-6,
        max_rounds_per_period: 12,
        min_round_interval: chrono::Duration::hours(24),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn draft(rho: f64) -> Draft {
    Draft {
        id: new_id().unwrap(),
        kind: "local-benchmark".into(),
        counterpart: "file:test.json".into(),
        mechanism: dp::Mechanism::central(1000.0, rho).unwrap(),
        threshold: 1,
        therapist_sensitivity: Some(5000.0),
        layout: protocol::round::LayoutRecord::Benchmark(
            protocol::benchmark::document::LayoutDescription {
                kind: "benchmark".into(),
                version: 1,
                max_episodes_per_patient: 1,
                caseload_cap: 1,
                features: Vec::new(),
                sessions: 0,
                domains: Vec::new(),
                blocks: Vec::new(),
                sensitivity: 1000.0,
                therapist_sensitivity: Some(5000.0),
            },
        ),
        payload: b"released bytes".to_vec(),
        training: None,
    }
}

#[test]
fn releases_are_refused_when_the_budget_is_spent_and_say_what_is_left() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy(1.0, 0.4);
    let now = at("2026-11-23T10:00:00Z");
    charge(store.conn_mut(), &p, draft(0.4), now).unwrap();
    charge(store.conn_mut(), &p, draft(0.4), now).unwrap();
    let err = charge(store.conn_mut(), &p, draft(0.4), now).unwrap_err();
    let refusal = err.downcast_ref::<Refusal>().unwrap();
    match refusal {
        Refusal::OverBudget {
            remaining,
            period,
            renews,
            ..
        } => {
            assert!((remaining - 0.2).abs() < 1e-9);
            assert_eq!((period.as_str(), renews.as_str()), ("2026", "2027-01-01"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("renews on 2027-01-01"), "{err}");
    // Nothing was recorded by the refused attempt; what fits still goes.
    assert_eq!(entries(store.conn()).unwrap().len(), 2);
    charge(store.conn_mut(), &p, draft(0.2), now).unwrap();
    let b = budget(store.conn(), &p, now).unwrap();
    assert!((b.current.rho_spent - 1.0).abs() < 1e-9 && b.current.rho_remaining < 1e-9);
    assert_eq!(b.current.releases, 3);
    // The next year has a fresh budget.
    charge(store.conn_mut(), &p, draft(0.4), at("2027-01-01T00:00:00Z")).unwrap();
}

#[test]
fn a_release_above_the_per_release_maximum_is_refused() {
    let mut store = Store::open_in_memory().unwrap();
    let err = charge(
        store.conn_mut(),
        &policy(1.0, 0.1),
        draft(0.2),
        at("2026-01-01T00:00:00Z"),
    )
    .unwrap_err();
    assert!(matches!(
        err.downcast_ref::<Refusal>(),
        Some(Refusal::OverRelease { .. })
    ));
    assert!(entries(store.conn()).unwrap().is_empty());
}

#[test]
fn the_ledger_records_cost_and_payload_and_cannot_be_rewritten() {
    let mut store = Store::open_in_memory().unwrap();
    let now = at("2026-05-01T12:00:00Z");
    let c = charge(store.conn_mut(), &policy(1.0, 1.0), draft(0.5), now).unwrap();
    let e = &c.entry;
    assert!((e.rho - 0.5).abs() < 1e-12);
    assert!((e.epsilon - 5.221_534_5).abs() < 1e-5, "{}", e.epsilon);
    // Therapist-level ρ = (Δ_T/σ)²/2 at the same σ: (5000/1000)² × 0.5.
    assert!((e.therapist_rho.unwrap() - 12.5).abs() < 1e-9);
    assert_eq!(
        e.payload_sha256,
        hex::encode(digest::digest(&digest::SHA256, b"released bytes"))
    );
    let pending = pending(store.conn(), "local-benchmark").unwrap().unwrap();
    assert_eq!(pending.payload, b"released bytes");
    mark_sent(store.conn(), &e.release_id, None, now).unwrap();
    assert!(pending_is_empty(&store));
    assert!(mark_sent(store.conn(), &e.release_id, None, now).is_err());
    for sql in [
        "DELETE FROM release",
        "UPDATE release SET rho = 0.001",
        "UPDATE release SET payload = x'00'",
    ] {
        let err = store.conn().execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("ledger") || err.to_string().contains("cannot be changed"),
            "{err}"
        );
    }
    let e2 = &entries(store.conn()).unwrap()[0];
    assert_eq!((e2.status.as_str(), e2.rho), ("sent", e.rho));
}

fn pending_is_empty(store: &Store) -> bool {
    pending(store.conn(), "local-benchmark").unwrap().is_none()
}

#[test]
fn concurrent_releases_cannot_overspend() {
    // Eight processes' worth of connections race to charge ρ = 0.25 against a budget of 1.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.db");
    let key = crate::store::StoreKey::new([7; 32]);
    Store::create(
        &path,
        &crate::store::Clinic {
            name: "c".into(),
            country: None,
            service_type: None,
        },
        "2026-01-01T00:00:00Z",
        Some(&key),
    )
    .unwrap();
    let p = policy(1.0, 1.0);
    let now = at("2026-06-01T00:00:00Z");
    let barrier = std::sync::Barrier::new(8);
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier, key) = (&path, &barrier, &key);
                s.spawn(move || {
                    let mut store = Store::open(path, Some(key)).unwrap();
                    barrier.wait();
                    match charge(store.conn_mut(), &p, draft(0.25), now) {
                        Ok(_) => true,
                        Err(e) => {
                            assert!(e.downcast_ref::<Refusal>().is_some(), "{e}");
                            false
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 4);
    let store = Store::open(&path, Some(&key)).unwrap();
    let b = budget(store.conn(), &p, now).unwrap();
    assert!(b.current.rho_spent <= 1.0 + 1e-9, "{}", b.current.rho_spent);
}

#[test]
fn periods_have_labels_and_renewal_dates() {
    let t = at("2026-11-23T10:00:00Z");
    assert_eq!(Period::Year.label(t), "2026");
    assert_eq!(Period::Quarter.label(t), "2026-Q4");
    assert_eq!(Period::Month.label(t), "2026-11");
    assert_eq!(
        Period::Quarter.renews(t).to_rfc3339(),
        "2027-01-01T00:00:00+00:00"
    );
    assert_eq!(
        Period::Month.renews(t).to_rfc3339(),
        "2026-12-01T00:00:00+00:00"
    );
    assert_eq!(
        Period::Quarter
            .renews(at("2026-02-10T00:00:00Z"))
            .to_rfc3339(),
        "2026-04-01T00:00:00+00:00"
    );
    assert!(Period::parse("week").is_err());
    let c = PrivacyConfig {
        rho_per_period: -1.0,
        ..PrivacyConfig::default()
    };
    assert!(Policy::from_config(&c).is_err());
}

/// Issue 12, finding 5: a refunded release (its bytes never left) keeps its row for the audit
/// but no longer counts against the budget; a sent one cannot be refunded.
#[test]
fn refunded_releases_stay_in_the_ledger_and_cost_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    let p = policy(0.5, 0.5);
    let now = at("2026-11-23T10:00:00Z");
    let first = charge(store.conn_mut(), &p, draft(0.5), now).unwrap();
    assert!(
        charge(store.conn_mut(), &p, draft(0.5), now).is_err(),
        "budget spent"
    );
    assert!(mark_aborted(store.conn(), &first.entry.release_id).unwrap());
    assert!(
        !mark_aborted(store.conn(), &first.entry.release_id).unwrap(),
        "refunded twice"
    );
    let second = charge(store.conn_mut(), &p, draft(0.5), now).unwrap();
    mark_sent(store.conn(), &second.entry.release_id, None, now).unwrap();
    assert!(!mark_aborted(store.conn(), &second.entry.release_id).unwrap());
    let b = budget(store.conn(), &p, now).unwrap();
    assert_eq!((b.current.releases, b.current.refunded), (1, 1));
    assert!((b.current.rho_spent - 0.5).abs() < 1e-9);
    let statuses: Vec<String> = entries(store.conn())
        .unwrap()
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, ["aborted", "sent"]);
}

/// One iteration of training `id` (of `iterations`, declared at `total`) charged as a round
/// contribution at `now`, bound to the training as the clinic's round code binds it.
fn iterate(
    store: &mut Store,
    p: &Policy,
    id: &str,
    iteration: u32,
    iterations: u32,
    total: f64,
    now: DateTime<Utc>,
) -> Result<Charged> {
    let training = Training {
        id: id.into(),
        iteration,
        iterations,
        total_rho: total,
    };
    let d = Draft {
        kind: "round:dropout-model".into(),
        mechanism: dp::Mechanism::central(1000.0, total / f64::from(iterations)).unwrap(),
        training: Some(training),
        ..draft(1.0)
    };
    let release = d.id.clone();
    charge_with(store.conn_mut(), p, d, now, |tx| {
        tx.execute(
            "INSERT INTO round_contribution (round_id, spec_sha256, release_id, expires_at_ms,
                training_id) VALUES (?1, 'sha', ?2, 0, ?3)",
            params![format!("{id}-{iteration}"), release, id],
        )?;
        Ok(())
    })
}

/// Issue 16: a training is weighed as a whole. Its declared total above the per-release
/// maximum is refused before anything is charged, however small each iteration; what it may
/// still cost must fit the period's budget; its iterations count once against the round caps
/// (the cap and the interval apply at its first iteration only); a refused iteration charges
/// nothing.
#[test]
fn a_training_is_weighed_once_and_refused_whole() {
    let mut store = Store::open_in_memory().unwrap();
    let mut p = policy(1.0, 0.25);
    p.max_rounds_per_period = 2;
    let now = at("2026-11-23T10:00:00Z");
    // 0.3 in all, 0.06 per iteration: each under the maximum, the whole above it.
    let err = iterate(&mut store, &p, "t0", 1, 5, 0.3, now).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<Refusal>(),
            Some(Refusal::TrainingOverRelease { total, iterations: 5, max })
                if *total == 0.3 && *max == 0.25
        ),
        "{err:#}"
    );
    assert!(entries(store.conn()).unwrap().is_empty(), "nothing charged");
    // Five iterations of 0.05 within the hour: one round for the caps and the interval.
    for i in 1..=5 {
        iterate(
            &mut store,
            &p,
            "t1",
            i,
            5,
            0.25,
            now + chrono::Duration::minutes(i.into()),
        )
        .unwrap();
    }
    assert!((charged_to_training(store.conn(), "t1").unwrap() - 0.25).abs() < 1e-15);
    let b = budget(store.conn(), &p, now).unwrap();
    assert!((b.current.rho_spent - 0.25).abs() < 1e-15);
    // A second training is a new round: too soon after the first.
    let later = now + chrono::Duration::hours(2);
    let err = iterate(&mut store, &p, "t2", 1, 5, 0.25, later).unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Refusal>(), Some(Refusal::TooSoon { .. })),
        "{err:#}"
    );
    // A day later it is allowed: two trainings, the period's cap of two rounds.
    let next_day = now + chrono::Duration::hours(25);
    iterate(&mut store, &p, "t2", 1, 5, 0.25, next_day).unwrap();
    let err = iterate(
        &mut store,
        &p,
        "t3",
        1,
        5,
        0.25,
        next_day + chrono::Duration::days(2),
    )
    .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<Refusal>(),
            Some(Refusal::TooManyRounds { count: 2, .. })
        ),
        "{err:#}"
    );
    // Its later iterations go on (already admitted), each charged.
    iterate(&mut store, &p, "t2", 2, 5, 0.25, next_day).unwrap();
    // 0.35 spent. Under a budget of 0.55 a new training declaring 0.25 does not fit (0.2
    // left), and is refused before its first iteration is charged.
    let spent = budget(store.conn(), &p, next_day)
        .unwrap()
        .current
        .rho_spent;
    assert!((spent - 0.35).abs() < 1e-12, "{spent}");
    let mut tight = p;
    tight.rho_per_period = 0.55;
    tight.max_rounds_per_period = 12;
    tight.min_round_interval = chrono::Duration::zero();
    let before = entries(store.conn()).unwrap().len();
    let err = iterate(&mut store, &tight, "t4", 1, 5, 0.25, next_day).unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Refusal>(), Some(Refusal::TrainingOverBudget { rho, .. })
            if (*rho - 0.25).abs() < 1e-12),
        "{err:#}"
    );
    assert_eq!(
        entries(store.conn()).unwrap().len(),
        before,
        "a refusal charges nothing"
    );
    // Joining a training late (at iteration 4 of 5) reserves only the two iterations left.
    assert!(
        precheck(
            store.conn(),
            &tight,
            "round:dropout-model",
            0.05,
            Some(&Training {
                id: "t5".into(),
                iteration: 4,
                iterations: 5,
                total_rho: 0.25,
            }),
            next_day,
        )
        .is_ok()
    );
}
