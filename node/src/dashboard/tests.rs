//! The dashboard's handlers without a browser or a socket (tower `oneshot`): the Host check,
//! the security headers, sign-in and its throttle, sessions, CSRF, and what each role sees.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use protocol::pseudonym::IdKind;
use tower::ServiceExt;

use super::{CSP, Dashboard, MAX_FAILURES};
use crate::node::Node;
use crate::users::{self, Role};

const HOST: &str = "127.0.0.1:7480";
const PASSWORD: &str = "a long enough password";

struct Fixture {
    app: Router,
    node: Arc<Node>,
    /// Raw therapist ids, the one with the most open alerts first.
    therapists: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let node = Arc::new(crate::node::synthetic_node(tmp.path(), 11, 240));
    node.raise_alerts().unwrap();
    let csv = std::fs::read_to_string(tmp.path().join("data/clinic-01/therapists.csv")).unwrap();
    let mut therapists: Vec<(i64, String)> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .map(|raw| {
            let p = node.pseudonymiser().pseudonym(IdKind::Therapist, &raw);
            let alerts: i64 = node
                .store()
                .conn()
                .query_row(
                    "SELECT count(*) FROM alert a JOIN episode e USING (episode_id)
                     JOIN therapist t ON t.therapist_id = e.therapist_id WHERE t.pseudonym = ?1",
                    [p],
                    |r| r.get(0),
                )
                .unwrap();
            (alerts, raw)
        })
        .collect();
    therapists.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert!(therapists[0].0 > 0, "the synthetic clinic raised no alerts");
    let therapists: Vec<String> = therapists.into_iter().map(|t| t.1).collect();
    let add = |name: &str, role, ts: &[String]| {
        users::add(
            &node.store(),
            node.pseudonymiser(),
            name,
            role,
            ts,
            PASSWORD,
            "t",
        )
        .unwrap();
    };
    add("cleo", Role::Clinician, &therapists[..1]);
    add("other", Role::Clinician, &therapists[1..2]);
    add("sven", Role::Supervisor, &therapists[..2]);
    add("ada", Role::Admin, &[]);
    add("cora", Role::Coordinator, &[]);
    let app = Dashboard::new(node.clone(), vec![HOST.into()], false).router();
    Fixture {
        app,
        node,
        therapists,
        _tmp: tmp,
    }
}

async fn call(app: &Router, request: Request<Body>) -> Response {
    app.clone().oneshot(request).await.unwrap()
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path).header(header::HOST, HOST);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

async fn text(r: Response) -> String {
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The `name=value` of the cookie `name` a response sets.
fn set_cookie(r: &Response, name: &str) -> String {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The value of the hidden input `name` of a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no hidden {name} in:\n{page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// `name`'s home page, session cookie and CSRF token.
async fn page(app: &Router, who: &str) -> (String, String, String) {
    let (cookie, csrf) = session(app, who).await;
    (
        text(call(app, get("/", Some(&cookie))).await).await,
        cookie,
        csrf,
    )
}

/// Signs `name` in with `password`: the sign-in's response.
async fn sign_in(app: &Router, name: &str, password: &str) -> Response {
    let form = call(app, get("/login", None)).await;
    let cookie = set_cookie(&form, "mbc_login");
    let token = hidden(&text(form).await, "token");
    call(
        app,
        post(
            "/login",
            Some(&cookie),
            &[("name", name), ("password", password), ("token", &token)],
        ),
    )
    .await
}

/// A session cookie of `name`, and the CSRF token of its pages.
async fn session(app: &Router, name: &str) -> (String, String) {
    let r = sign_in(app, name, PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{name} could not sign in"
    );
    let cookie = set_cookie(&r, "mbc_session");
    let home = text(call(app, get("/", Some(&cookie))).await).await;
    (cookie.clone(), hidden(&home, "csrf"))
}

#[tokio::test]
async fn requests_to_another_host_are_refused_and_every_answer_carries_the_policy() {
    let f = fixture();
    let evil = Request::get("/login")
        .header(header::HOST, "rebound.example:7480")
        .body(Body::empty())
        .unwrap();
    let r = call(&f.app, evil).await;
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    for r in [
        r,
        call(&f.app, get("/login", None)).await,
        call(&f.app, get("/", None)).await,
    ] {
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        // HSTS only where the dashboard serves TLS itself.
        assert!(!r.headers().contains_key(header::STRICT_TRANSPORT_SECURITY));
    }
    // Nothing inline: no script or style element, no style attribute.
    let page = text(call(&f.app, get("/login", None)).await).await;
    for inline in ["<script", "<style", "style=\""] {
        assert!(!page.contains(inline), "{inline} in the sign-in page");
    }
}

#[tokio::test]
async fn without_a_session_every_page_leads_to_sign_in() {
    let f = fixture();
    for path in ["/", "/?signal=red"] {
        let r = call(&f.app, get(path, None)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[header::LOCATION], "/login");
        let r = call(&f.app, get(path, Some("mbc_session=00ff"))).await;
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{path} with a made-up session"
        );
    }
    let r = call(&f.app, post("/alerts/1/ack", None, &[])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_session_is_httponly_strict_and_ends_at_sign_out_or_when_disabled() {
    let f = fixture();
    let r = sign_in(&f.app, "cleo", PASSWORD).await;
    let raw = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("mbc_session="))
        .unwrap();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
        "{raw}"
    );
    assert!(!raw.contains("Secure"), "not under TLS: {raw}");
    let (cookie, csrf) = session(&f.app, "cleo").await;
    assert_eq!(
        call(&f.app, get("/", Some(&cookie))).await.status(),
        StatusCode::OK
    );
    let out = call(&f.app, post("/logout", Some(&cookie), &[("csrf", &csrf)])).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        call(&f.app, get("/", Some(&cookie))).await.status(),
        StatusCode::SEE_OTHER
    );
    // Disabling the account ends its open sessions at their next request.
    let (cookie, _) = session(&f.app, "sven").await;
    users::disable(&f.node.store(), "sven", "t").unwrap();
    assert_eq!(
        call(&f.app, get("/", Some(&cookie))).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn sign_in_needs_the_right_password_and_its_form_token_and_is_throttled() {
    let f = fixture();
    assert_eq!(
        sign_in(&f.app, "cleo", "not the password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in(&f.app, "nobody", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A sign-in posted without the form's cookie (from another site) is refused.
    let r = call(
        &f.app,
        post(
            "/login",
            None,
            &[("name", "cleo"), ("password", PASSWORD), ("token", "x")],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for _ in 1..MAX_FAILURES {
        assert_eq!(
            sign_in(&f.app, "cleo", "wrong again!").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked now, even with the right password; another name is not.
    let locked = sign_in(&f.app, "cleo", PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(text(locked).await.contains("try again in 1 minute"));
    assert_eq!(
        sign_in(&f.app, "sven", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_form_without_its_csrf_token_changes_nothing() {
    let f = fixture();
    let (cookie, csrf) = session(&f.app, "cleo").await;
    let id: i64 = f
        .node
        .store()
        .conn()
        .query_row(
            "SELECT a.alert_id FROM alert a JOIN episode e USING (episode_id)
         JOIN therapist t ON t.therapist_id = e.therapist_id WHERE t.pseudonym = ?1
         AND NOT EXISTS (SELECT 1 FROM alert_action x WHERE x.alert_id = a.alert_id) LIMIT 1",
            [f.node
                .pseudonymiser()
                .pseudonym(IdKind::Therapist, &f.therapists[0])],
            |r| r.get(0),
        )
        .unwrap();
    let actions = || -> i64 {
        f.node
            .store()
            .conn()
            .query_row("SELECT count(*) FROM alert_action", [], |r| r.get(0))
            .unwrap()
    };
    let path = format!("/alerts/{id}/ack");
    for form in [
        vec![],
        vec![("csrf", "0".repeat(64))],
        vec![("csrf", csrf.to_uppercase())],
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&f.app, post(&path, Some(&cookie), &form)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // Not a form at all (a JSON body a script could send): refused too.
    let json = Request::post(&path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, &cookie)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{{\"csrf\":\"{csrf}\"}}")))
        .unwrap();
    assert_eq!(call(&f.app, json).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(actions(), 0);
    let r = call(&f.app, post(&path, Some(&cookie), &[("csrf", &csrf)])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(actions(), 1);
    let by: String = f
        .node
        .store()
        .conn()
        .query_row("SELECT by_whom FROM alert_action", [], |r| r.get(0))
        .unwrap();
    assert_eq!(by, "cleo");
    // The caseload now shows it acknowledged, and offers only to resolve it.
    let home = text(call(&f.app, get("/", Some(&cookie))).await).await;
    assert!(home.contains(&format!("/alerts/{id}/resolve")));
    assert!(!home.contains(&format!("/alerts/{id}/ack\"")));
}

#[tokio::test]
async fn each_role_sees_its_own_caseload_and_acts_only_on_its_own_patients() {
    let f = fixture();
    let episodes_of = |raw: &str| -> Vec<String> {
        let store = f.node.store();
        let mut stmt = store.conn().prepare(
            "SELECT substr(e.pseudonym, 1, 12) FROM episode e JOIN therapist t ON t.therapist_id = e.therapist_id WHERE t.pseudonym = ?1").unwrap();
        stmt.query_map(
            [f.node.pseudonymiser().pseudonym(IdKind::Therapist, raw)],
            |r| r.get(0),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let (mine, theirs) = (episodes_of(&f.therapists[0]), episodes_of(&f.therapists[1]));
    let (cleo, cookie, csrf) = page(&f.app, "cleo").await;
    assert!(
        mine.iter().any(|e| cleo.contains(e.as_str())),
        "cleo's caseload lacks her episodes"
    );
    assert!(
        !theirs.iter().any(|e| cleo.contains(e.as_str())),
        "cleo sees another's patients"
    );
    let (sven, ..) = page(&f.app, "sven").await;
    assert!(
        mine.iter().any(|e| sven.contains(e.as_str()))
            && theirs.iter().any(|e| sven.contains(e.as_str()))
    );
    for who in ["ada", "cora"] {
        let (p, ..) = page(&f.app, who).await;
        assert!(p.contains("has no caseload"), "{who}");
        assert!(
            !mine.iter().chain(&theirs).any(|e| p.contains(e.as_str())),
            "{who} sees patients"
        );
    }
    // An alert of another therapist's patient is not cleo's to act on.
    let other: i64 = f
        .node
        .store()
        .conn()
        .query_row(
            "SELECT a.alert_id FROM alert a JOIN episode e USING (episode_id)
         JOIN therapist t ON t.therapist_id = e.therapist_id WHERE t.pseudonym != ?1 LIMIT 1",
            [f.node
                .pseudonymiser()
                .pseudonym(IdKind::Therapist, &f.therapists[0])],
            |r| r.get(0),
        )
        .unwrap();
    let r = call(
        &f.app,
        post(
            &format!("/alerts/{other}/resolve"),
            Some(&cookie),
            &[("csrf", &csrf)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let n: i64 = f
        .node
        .store()
        .conn()
        .query_row("SELECT count(*) FROM alert_action", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    // A filter keeps only what it names; a made-up one is refused.
    let red = text(call(&f.app, get("/?signal=red", Some(&cookie))).await).await;
    assert!(!red.contains("sig sig-green"));
    assert_eq!(
        call(&f.app, get("/?signal=purple", Some(&cookie)))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

/// A raw patient id of therapist `raw` (from the synthetic clinic's episodes.csv), and the page
/// address of that patient's latest episode.
fn patient_of(f: &Fixture, raw: &str) -> (String, String) {
    let csv = std::fs::read_to_string(f._tmp.path().join("data/clinic-01/episodes.csv")).unwrap();
    let patient = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|c| c[2] == raw)
        .map(|c| c[1].to_owned())
        .unwrap();
    let at = f
        .node
        .locate(&crate::support::Who::Patient(patient.clone()))
        .unwrap();
    (patient, format!("/patient/{}", at.shown))
}

fn views(f: &Fixture) -> Vec<(String, String)> {
    let store = f.node.store();
    let mut stmt = store
        .conn()
        .prepare("SELECT user_name, page FROM patient_view ORDER BY view_id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_patients_page_is_its_therapists_alone_and_every_view_is_recorded() {
    let f = fixture();
    let (raw, mine) = patient_of(&f, &f.therapists[0]);
    let (_, theirs) = patient_of(&f, &f.therapists[1]);
    let (cookie, csrf) = session(&f.app, "cleo").await;
    let r = call(&f.app, get(&mine, Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = text(r).await;
    assert!(
        page.contains("<svg") && page.contains("Scores by session"),
        "{page}"
    );
    for inline in ["<script", "<style", "style=\""] {
        assert!(!page.contains(inline), "{inline} in a patient page");
    }
    assert!(page.contains(&format!("{mine}/print")));
    let print = text(call(&f.app, get(&format!("{mine}/print"), Some(&cookie))).await).await;
    assert!(print.contains("Printed from mbc-node by cleo"), "{print}");
    assert!(
        !print.contains("name=\"csrf\""),
        "a printable view has no buttons"
    );
    assert_eq!(
        views(&f),
        vec![
            ("cleo".into(), "patient".into()),
            ("cleo".into(), "print".into())
        ]
    );
    // Another therapist's patient, a made-up episode, a malformed one: the same refusal,
    // and nothing recorded.
    for path in [
        theirs.as_str(),
        "/patient/0123456789ab",
        "/patient/..%2fetc",
        "/patient/x/print",
    ] {
        let r = call(&f.app, get(path, Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(views(&f).len(), 2);
    // Found by the clinic's own id, with a POST (the id stays out of the address).
    let r = call(
        &f.app,
        post(
            "/patient/find",
            Some(&cookie),
            &[("csrf", &csrf), ("id", &raw)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], mine.as_str());
    let (other_raw, _) = patient_of(&f, &f.therapists[1]);
    let r = call(
        &f.app,
        post(
            "/patient/find",
            Some(&cookie),
            &[("csrf", &csrf), ("id", &other_raw)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A supervisor sees both; an admin and a coordinator neither.
    let (sven, _) = session(&f.app, "sven").await;
    for path in [&mine, &theirs] {
        assert_eq!(
            call(&f.app, get(path, Some(&sven))).await.status(),
            StatusCode::OK
        );
    }
    for who in ["ada", "cora"] {
        let (c, _) = session(&f.app, who).await;
        assert_eq!(
            call(&f.app, get(&mine, Some(&c))).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(views(&f).len(), 4);
    assert_eq!(
        users::views(&f.node.store(), Some("sven"), 10)
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_alert_acted_on_from_a_patients_page_leads_back_there_and_never_elsewhere() {
    let f = fixture();
    let (cookie, csrf) = session(&f.app, "cleo").await;
    let (id, episode): (i64, String) = f
        .node
        .store()
        .conn()
        .query_row(
            "SELECT a.alert_id, substr(e.pseudonym, 1, 12) FROM alert a JOIN episode e USING (episode_id)
             JOIN therapist t ON t.therapist_id = e.therapist_id WHERE t.pseudonym = ?1 LIMIT 1",
            [f.node
                .pseudonymiser()
                .pseudonym(IdKind::Therapist, &f.therapists[0])],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let here = format!("/patient/{episode}");
    let page = text(call(&f.app, get(&here, Some(&cookie))).await).await;
    assert!(
        page.contains(&format!("/alerts/{id}/ack")),
        "the page offers its alert"
    );
    let r = call(
        &f.app,
        post(
            &format!("/alerts/{id}/ack"),
            Some(&cookie),
            &[("csrf", &csrf), ("back", &here)],
        ),
    )
    .await;
    assert_eq!(r.headers()[header::LOCATION], here.as_str());
    let page = text(call(&f.app, get(&here, Some(&cookie))).await).await;
    assert!(
        !page.contains(&format!("/alerts/{id}/ack\"")),
        "acknowledged"
    );
    let r = call(
        &f.app,
        post(
            &format!("/alerts/{id}/resolve"),
            Some(&cookie),
            &[("csrf", &csrf), ("back", "https://evil.example/")],
        ),
    )
    .await;
    assert_eq!(r.headers()[header::LOCATION], "/");
    for evil in [
        "//evil.example",
        "/patient/../login",
        "/patient/0123456789AB",
        "/login",
    ] {
        assert_eq!(super::caseload::back_to(Some(evil)), "/", "{evil}");
    }
    assert_eq!(super::caseload::back_to(Some(&here)), here);
}

fn count(f: &Fixture, table: &str) -> i64 {
    f.node
        .store()
        .conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn the_match_screen_lists_logs_and_records_and_a_bad_request_logs_nothing() {
    let f = fixture();
    let (cookie, csrf) = session(&f.app, "cleo").await;
    let form = text(call(&f.app, get("/match", Some(&cookie))).await).await;
    assert!(form.contains("name=\"window\" value=\"mon-eve\""), "{form}");
    // Every problem at once, the form kept, nothing logged.
    let r = call(
        &f.app,
        post(
            "/match",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("phq9", "eighteen"),
                ("gad7", "12"),
                ("prefer", "colour=blue"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(r).await;
    assert!(
        page.contains("PHQ-9: &quot;eighteen&quot; is not a number"),
        "{page}"
    );
    let r = call(
        &f.app,
        post(
            "/match",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("gad7", "12"),
                ("prefer", "colour=blue"),
                ("window", "mon-eve"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(r).await;
    assert!(page.contains("colour"), "{page}");
    assert!(
        page.contains("value=\"mon-eve\" checked"),
        "the form keeps what was given"
    );
    // Another therapist's stored patient is not cleo's to match.
    let (theirs, _) = patient_of(&f, &f.therapists[1]);
    let r = call(
        &f.app,
        post(
            "/match",
            Some(&cookie),
            &[("csrf", &csrf), ("patient", &theirs)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(r).await.contains("among your patients"));
    assert_eq!(count(&f, "match_request"), 0);
    // A good request: the shortlist, logged once, by cleo.
    let r = call(
        &f.app,
        post(
            "/match",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("phq9", "18"),
                ("gad7", "12"),
                ("prefer", "gender=female"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = text(r).await;
    assert!(
        page.contains("Wait or fit:") && page.contains("The patient chose this therapist"),
        "{page}"
    );
    assert_eq!(count(&f, "match_request"), 1);
    let (id, by): (i64, Option<String>) = f
        .node
        .store()
        .conn()
        .query_row("SELECT request_id, by_whom FROM match_request", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(by.as_deref(), Some("cleo"));
    let chose = hidden(&page, "chose");
    let r = call(
        &f.app,
        post(
            &format!("/match/{id}/record"),
            Some(&cookie),
            &[("csrf", &csrf), ("chose", &chose)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(text(r).await.contains("Recorded: the patient chose"));
    assert_eq!(count(&f, "match_outcome"), 1);
    // Admins and coordinators do not match patients.
    let (ada, ada_csrf) = session(&f.app, "ada").await;
    assert_eq!(
        call(&f.app, get("/match", Some(&ada))).await.status(),
        StatusCode::FORBIDDEN
    );
    let r = call(
        &f.app,
        post("/match", Some(&ada), &[("csrf", &ada_csrf), ("phq9", "18")]),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(count(&f, "match_request"), 1);
}

#[tokio::test]
async fn a_report_card_is_its_therapists_their_supervisors_and_the_admins_alone() {
    let f = fixture();
    let short =
        |raw: &str| f.node.pseudonymiser().pseudonym(IdKind::Therapist, raw)[..12].to_owned();
    let (mine, theirs) = (short(&f.therapists[0]), short(&f.therapists[1]));
    let (cleo, _) = session(&f.app, "cleo").await;
    let r = call(&f.app, get("/card", Some(&cleo))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[header::LOCATION],
        format!("/card/{mine}").as_str()
    );
    let card = text(call(&f.app, get(&format!("/card/{mine}"), Some(&cleo))).await).await;
    assert!(
        card.contains("The clinic, for comparison") && card.contains("EB effect"),
        "{card}"
    );
    for inline in ["<script", "<style", "style=\""] {
        assert!(!card.contains(inline), "{inline} in a report card");
    }
    for path in [
        format!("/card/{theirs}"),
        "/card/0123456789ab".into(),
        "/card/x".into(),
    ] {
        assert_eq!(
            call(&f.app, get(&path, Some(&cleo))).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let (sven, _) = session(&f.app, "sven").await;
    let list = text(call(&f.app, get("/card", Some(&sven))).await).await;
    assert!(list.contains(&mine) && list.contains(&theirs));
    let (ada, _) = session(&f.app, "ada").await;
    assert_eq!(
        call(&f.app, get(&format!("/card/{theirs}"), Some(&ada)))
            .await
            .status(),
        StatusCode::OK
    );
    let (cora, _) = session(&f.app, "cora").await;
    assert_eq!(
        call(&f.app, get("/card", Some(&cora))).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&f.app, get(&format!("/card/{mine}"), Some(&cora)))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// A multipart upload of `files` (name, content) to `path`.
fn upload(path: &str, cookie: &str, files: &[(&str, &str)]) -> Request<Body> {
    let mut body = String::new();
    for (name, content) in files {
        body.push_str(&format!(
            "--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str("--XBOUNDARYX--\r\n");
    Request::post(path)
        .header(header::HOST, HOST)
        .header(header::COOKIE, cookie)
        .header(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=XBOUNDARYX",
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn the_clinic_screen_imports_an_upload_whole_or_not_at_all_for_admins_alone() {
    let f = fixture();
    let (ada, csrf) = session(&f.app, "ada").await;
    let page = text(call(&f.app, get("/clinic", Some(&ada))).await).await;
    for part in [
        "Reliable improvement",
        "Privacy budget",
        "Every release that left this node",
        "Patient page views",
        "enctype=\"multipart/form-data\"",
    ] {
        assert!(page.contains(part), "{part} missing from the clinic screen");
    }
    let stored = || count(&f, "assessment");
    let before = stored();
    let bad = "patient_id,therapist_id,episode_id,session,date,kind,instrument,score,items\n\
               P1,T1,E1,1,2025-13-45,assessment,PHQ-9,18,\n\
               P1,T1,E1,2,2025-01-02,assessment,PHQ-9,99,\n";
    let path = format!("/clinic/import?csrf={csrf}");
    // Without the token (a form from elsewhere): refused before anything is read.
    let r = call(&f.app, upload("/clinic/import", &ada, &[("bad.csv", bad)])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A bad file: every problem, with its line and field, and nothing stored.
    let r = call(&f.app, upload(&path, &ada, &[("../../etc/bad.csv", bad)])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(r).await;
    assert!(
        page.contains("bad.csv: not imported") && !page.contains("etc/"),
        "{page}"
    );
    assert!(
        page.contains("line 2, field date") && page.contains("line 3, field score"),
        "{page}"
    );
    assert_eq!(stored(), before);
    // A good one (a session more for a stored episode) is imported, and raises its alerts.
    let csv =
        std::fs::read_to_string(f._tmp.path().join("data/clinic-01/assessments.csv")).unwrap();
    let last = csv.lines().last().unwrap();
    let c: Vec<&str> = last.split(',').collect();
    let session_no: u32 = c[3].parse().unwrap();
    let next = format!(
        "patient_id,therapist_id,episode_id,session,date,kind,instrument,score,items\n{},{},{},{},2099-01-01,treatment,{},{},\n",
        c[0],
        c[1],
        c[2],
        session_no + 1,
        c[6],
        c[7]
    );
    let r = call(&f.app, upload(&path, &ada, &[("more.csv", &next)])).await;
    let page = text(r).await;
    assert!(page.contains("more.csv</b>: imported"), "{page}");
    assert_eq!(stored(), before + 1);
    // Nobody else imports or sees the screen.
    for who in ["cleo", "sven", "cora"] {
        let (c, t) = session(&f.app, who).await;
        assert_eq!(
            call(&f.app, get("/clinic", Some(&c))).await.status(),
            StatusCode::FORBIDDEN,
            "{who}"
        );
        let r = call(
            &f.app,
            upload(
                &format!("/clinic/import?csrf={t}"),
                &c,
                &[("more.csv", &next)],
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{who}");
    }
    assert_eq!(stored(), before + 1);
}

#[tokio::test]
async fn the_network_screen_and_its_round_form_are_the_coordinators_alone() {
    let f = fixture();
    let (cora, csrf) = session(&f.app, "cora").await;
    let page = text(call(&f.app, get("/network", Some(&cora))).await).await;
    for part in [
        "Clinics on the roster",
        "Rounds",
        "Signed releases",
        "Round schedule",
        "action=\"/network/rounds\"",
    ] {
        assert!(
            page.contains(part),
            "{part} missing from the network screen"
        );
    }
    // Without a running daemon the form says so and starts nothing; a bad ρ is named.
    let r = call(
        &f.app,
        post(
            "/network/rounds",
            Some(&cora),
            &[("csrf", &csrf), ("kind", "benchmark"), ("rho", "0.1")],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = call(
        &f.app,
        post(
            "/network/rounds",
            Some(&cora),
            &[("csrf", &csrf), ("kind", "benchmark"), ("rho", "lots")],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(r)
            .await
            .contains("ρ of the release: &quot;lots&quot; is not a number")
    );
    // Every problem of the form at once.
    let r = call(
        &f.app,
        post(
            "/network/rounds",
            Some(&cora),
            &[
                ("csrf", &csrf),
                ("kind", "benchmark"),
                ("rho", "0.1"),
                ("threshold", "2.5"),
                ("deadline", "-3"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(r).await;
    assert!(
        page.contains("Threshold t: 2.5 is not a whole number")
            && page.contains("Step deadline, s: -3 is not a positive number of seconds"),
        "{page}"
    );
    for who in ["cleo", "sven", "ada"] {
        let (c, t) = session(&f.app, who).await;
        assert_eq!(
            call(&f.app, get("/network", Some(&c))).await.status(),
            StatusCode::FORBIDDEN,
            "{who}"
        );
        let r = call(
            &f.app,
            post(
                "/network/rounds",
                Some(&c),
                &[("csrf", &t), ("kind", "benchmark"), ("rho", "0.1")],
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{who}");
    }
}

#[tokio::test]
async fn every_route_answers_each_role_by_its_rule() {
    let f = fixture();
    let (_, mine) = patient_of(&f, &f.therapists[0]);
    let card = format!(
        "/card/{}",
        &f.node
            .pseudonymiser()
            .pseudonym(IdKind::Therapist, &f.therapists[0])[..12]
    );
    let print = format!("{mine}/print");
    use StatusCode as S;
    const OK: S = S::OK;
    const NO: S = S::FORBIDDEN;
    const GONE: S = S::NOT_FOUND;
    const TO: S = S::SEE_OTHER;
    // GET route: clinician, supervisor, admin, coordinator, no session.
    let rules: Vec<(&str, [S; 5])> = vec![
        ("/", [OK, OK, OK, OK, TO]),
        ("/match", [OK, OK, NO, NO, TO]),
        (mine.as_str(), [OK, OK, NO, NO, TO]),
        (print.as_str(), [OK, OK, NO, NO, TO]),
        ("/card", [TO, OK, OK, NO, TO]),
        (card.as_str(), [OK, OK, OK, GONE, TO]),
        ("/validation", [OK, OK, OK, NO, TO]),
        ("/clinic", [NO, NO, OK, NO, TO]),
        ("/network", [NO, NO, NO, OK, TO]),
        ("/login", [OK, OK, OK, OK, OK]),
        ("/app.css", [OK, OK, OK, OK, OK]),
    ];
    let mut cookies = Vec::new();
    for who in ["cleo", "sven", "ada", "cora"] {
        cookies.push(Some(session(&f.app, who).await.0));
    }
    cookies.push(None);
    for (path, expected) in &rules {
        for (k, cookie) in cookies.iter().enumerate() {
            let got = call(&f.app, get(path, cookie.as_deref())).await.status();
            assert_eq!(
                got,
                expected[k],
                "GET {path} as {}",
                ["cleo", "sven", "ada", "cora", "nobody"][k]
            );
        }
    }
    // Validating again is the admin's: it stores a card per instrument.
    let before = count(&f, "support_validation");
    for who in ["cleo", "cora"] {
        let (c, t) = session(&f.app, who).await;
        let r = call(&f.app, post("/validation", Some(&c), &[("csrf", &t)])).await;
        assert_eq!(r.status(), S::FORBIDDEN, "{who}");
    }
    assert_eq!(count(&f, "support_validation"), before);
    let (ada, t) = session(&f.app, "ada").await;
    let r = call(&f.app, post("/validation", Some(&ada), &[("csrf", &t)])).await;
    assert_eq!(r.status(), S::SEE_OTHER);
    assert!(count(&f, "support_validation") > before);
    let page = text(call(&f.app, get("/validation", Some(&ada))).await).await;
    assert!(
        page.contains("PHQ-9") && page.contains("nearest neighbours"),
        "{page}"
    );
}

#[tokio::test]
async fn what_a_browser_fetches_by_itself_does_not_void_the_sign_in_form() {
    let f = fixture();
    let first = call(&f.app, get("/login", None)).await;
    let cookie = set_cookie(&first, "mbc_login");
    let token = hidden(&text(first).await, "token");
    // The favicon a browser asks for on its own is a 404, not a redirect to a new form.
    let icon = call(&f.app, get("/favicon.ico", None)).await;
    assert_eq!(icon.status(), StatusCode::NOT_FOUND);
    // The form again (another tab, a reload) keeps the browser's token, so either form signs in.
    let again = call(&f.app, get("/login", Some(&cookie))).await;
    assert_eq!(set_cookie(&again, "mbc_login"), cookie);
    assert_eq!(hidden(&text(again).await, "token"), token);
    let r = call(
        &f.app,
        post(
            "/login",
            Some(&cookie),
            &[("name", "cleo"), ("password", PASSWORD), ("token", &token)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // A cookie that is not a token of ours is replaced.
    let odd = call(&f.app, get("/login", Some("mbc_login=not-hex"))).await;
    assert_ne!(set_cookie(&odd, "mbc_login"), "mbc_login=not-hex");
}

/// Whether any text in any table of the store contains `needle`.
fn stored_anywhere(node: &Node, needle: &str) -> bool {
    let store = node.store();
    let conn = store.conn();
    let mut tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap();
    let tables: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables.iter().any(|t| {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                if let Ok(rusqlite::types::ValueRef::Text(v)) = row.get_ref(i)
                    && String::from_utf8_lossy(v).contains(needle)
                {
                    return true;
                }
            }
        }
        false
    })
}

#[tokio::test]
async fn with_a_staff_list_therapists_are_shown_by_staff_id_and_stored_by_pseudonym() {
    let f = fixture();
    let list = f._tmp.path().join("data/clinic-01/therapists.csv");
    let staff = crate::staff::StaffList::read(&f.node, &list).unwrap();
    let app = Dashboard::new(f.node.clone(), vec![HOST.into()], false)
        .with_staff(staff)
        .router();
    let (mine, theirs) = (&f.therapists[0], &f.therapists[1]);
    let short =
        |raw: &str| f.node.pseudonymiser().pseudonym(IdKind::Therapist, raw)[..12].to_owned();
    // A supervisor's caseload and card list name the team by staff id.
    let (home, sven, _) = page(&app, "sven").await;
    assert!(home.contains(&format!(">{mine}</span>")), "{home}");
    let cards = text(call(&app, get("/card", Some(&sven))).await).await;
    for raw in [mine, theirs] {
        assert!(cards.contains(&format!(">{raw}</span>")), "{cards}");
    }
    let card = text(call(&app, get(&format!("/card/{}", short(mine)), Some(&sven))).await).await;
    assert!(card.contains(&format!("therapist {mine}")), "{card}");
    // Without the list the same card shows no staff id.
    let (plain, _) = session(&f.app, "sven").await;
    let card = text(call(&f.app, get(&format!("/card/{}", short(mine)), Some(&plain))).await).await;
    assert!(!card.contains(mine.as_str()), "{card}");
    // A shortlist shows staff ids, a choice is recorded by one, and the store keeps neither.
    let (cleo, csrf) = session(&app, "cleo").await;
    let r = call(
        &app,
        post(
            "/match",
            Some(&cleo),
            &[("csrf", &csrf), ("phq9", "18"), ("gad7", "12")],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let listed = text(r).await;
    let chose = hidden(&listed, "chose");
    assert!(f.therapists.contains(&chose), "{chose} is not a staff id");
    let id: i64 = f
        .node
        .store()
        .conn()
        .query_row("SELECT max(request_id) FROM match_request", [], |r| {
            r.get(0)
        })
        .unwrap();
    let r = call(
        &app,
        post(
            &format!("/match/{id}/record"),
            Some(&cleo),
            &[("csrf", &csrf), ("chose", &chose)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        text(r)
            .await
            .contains(&format!("the patient chose <code>{chose}</code>")),
        "the record names the staff id"
    );
    assert_eq!(count(&f, "match_outcome"), 1);
    for raw in &f.therapists {
        assert!(!stored_anywhere(&f.node, raw), "{raw} is in the store");
    }
}

#[test]
fn a_forms_numbers_are_read_whole_and_in_range_or_named_as_problems() {
    use super::page::{number, whole};
    let mut problems = Vec::new();
    assert_eq!(number(" 18 ", "PHQ-9", &mut problems), Some(18.0));
    assert_eq!(number("", "PHQ-9", &mut problems), None);
    assert_eq!(number("inf", "PHQ-9", &mut problems), None);
    assert_eq!(whole::<u32>(Some(21.0), "Wait", &mut problems), Some(21));
    assert_eq!(whole::<u32>(None, "Wait", &mut problems), None);
    assert_eq!(problems.len(), 1);
    for bad in [2.5, -1.0, 5e9] {
        assert_eq!(whole::<u32>(Some(bad), "Wait", &mut problems), None);
    }
    assert_eq!(
        whole::<i64>(Some(5e9), "Age", &mut problems),
        Some(5_000_000_000)
    );
    assert_eq!(
        problems,
        [
            "PHQ-9: \"inf\" is not a number",
            "Wait: 2.5 is not a whole number",
            "Wait: -1 is not a whole number",
            "Wait: 5000000000 is not a whole number",
        ]
    );
}
