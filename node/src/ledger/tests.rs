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
