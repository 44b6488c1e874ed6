//! Signing in and out: sessions (random tokens from the OS RNG, kept in memory by their
//! SHA-256, ended by sign-out, by [`SESSION_HOURS`] or by the account being disabled), the
//! CSRF token of each session, and the throttle on failed sign-ins.
//!
//! The sign-in form itself is protected by a double-submit token: the form's hidden field must
//! equal the `mbc_login` cookie set with it (SameSite=Strict, so another site cannot set or
//! send it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::html;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use super::{Dashboard, Session, page};
use crate::users::{self, User};

/// Hours a session lasts from sign-in.
pub const SESSION_HOURS: u64 = 10;
/// Failed sign-ins of one account name before it is locked for a while.
pub const MAX_FAILURES: u32 = 5;
/// First lock after [`MAX_FAILURES`]; doubled by each further failure, up to [`MAX_LOCK`].
const FIRST_LOCK: Duration = Duration::from_secs(60);
/// Longest lock.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Largest form body read (a CSRF token and a few fields).
const MAX_FORM: usize = 64 * 1024;
/// The session cookie.
const COOKIE: &str = "mbc_session";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "mbc_login";

/// Open sessions by the SHA-256 of their token.
pub(super) type Sessions = HashMap<[u8; 32], Open>;

/// One open session.
pub(super) struct Open {
    name: String,
    csrf: String,
    until: Instant,
}

/// Failed sign-ins of one name.
#[derive(Debug, Default)]
pub(super) struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    // Unwrap safety: the OS RNG does not fail on a running system; a node without one
    // could not have made its keys.
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random number generator works");
    hex::encode(b)
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The value of cookie `name` in `headers`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(d: &Dashboard, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if d.tls { "; Secure" } else { "" };
    // Unwrap safety: names and values are hex or fixed ASCII.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a cookie of ASCII")
}

/// The session a request's cookie names, if open and its account still enabled.
pub(super) fn session_of(d: &Dashboard, headers: &HeaderMap) -> Option<Session> {
    let token = cookie(headers, COOKIE)?;
    let key = digest(token);
    let (name, csrf) = {
        // Unwrap safety: panic on mutex poisoning.
        let mut sessions = d.sessions.lock().unwrap();
        let open = sessions.get(&key)?;
        if open.until <= Instant::now() {
            sessions.remove(&key);
            return None;
        }
        (open.name.clone(), open.csrf.clone())
    };
    let user = users::get(&d.node.store(), &name).ok().flatten();
    let Some(user) = user else {
        // Unwrap safety: panic on mutex poisoning.
        d.sessions.lock().unwrap().remove(&key);
        return None;
    };
    Some(Session { user, csrf })
}

/// `request` if its form carries the session's CSRF token (read into memory and given back
/// to the handler), else a refusal.
pub(super) async fn check_csrf(request: Request, session: &Session) -> Result<Request, Response> {
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form = kind.starts_with("application/x-www-form-urlencoded");
    let refused = || {
        page::problem(
            StatusCode::FORBIDDEN,
            "this form has expired: reload the page and try again",
        )
    };
    let carries =
        |token: Option<String>| token.is_some_and(|t| digest(&t) == digest(&session.csrf));
    // A file upload carries its token in the form's address (the body is the file's).
    if kind.starts_with("multipart/form-data") {
        let token = request
            .uri()
            .query()
            .and_then(|q| form_urlencoded_field(q.as_bytes(), "csrf"));
        if carries(token) {
            return Ok(request);
        }
        tracing::warn!(user = session.user.name, path = %request.uri().path(), "dashboard: refused an upload without its CSRF token");
        return Err(refused());
    }
    if !form {
        return Err(refused());
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return Err(page::problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large",
        ));
    };
    if !carries(form_urlencoded_field(&bytes, "csrf")) {
        tracing::warn!(user = session.user.name, path = %parts.uri.path(), "dashboard: refused a form without its CSRF token");
        return Err(refused());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `GET /login`: the sign-in form, with its double-submit token.
pub(super) async fn login_page(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    form(&d, &headers, None, StatusCode::OK)
}

/// The sign-in form. Its token is the browser's `mbc_login` cookie when it has one (another
/// tab's sign-in form, or a request the browser made on its own, must not void this one's),
/// else a fresh one.
fn form(d: &Dashboard, headers: &HeaderMap, problem: Option<&str>, code: StatusCode) -> Response {
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(random_token, str::to_owned);
    let body = html! {
        h1 { "Sign in" }
        @if let Some(p) = problem { p.problem role="alert" { (p) } }
        form.login method="post" action="/login" {
            input type="hidden" name="token" value=(token);
            label { "Name" input name="name" autocomplete="username" required autofocus; }
            label { "Password" input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { "Sign in" }
        }
        p.note { "Accounts are made by the clinic's administrator with " code { "mbc-node users add" } "." }
    };
    let mut r = (code, page::bare("Sign in", body)).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(d, LOGIN_COOKIE, &token, 3600),
    );
    r
}

#[derive(Deserialize)]
pub(super) struct Login {
    name: String,
    password: String,
    token: String,
}

/// `POST /login`: a session for the right password, unless the name is locked.
pub(super) async fn login(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Form(f): Form<Login>,
) -> Response {
    let double_submit =
        cookie(&headers, LOGIN_COOKIE).is_some_and(|c| digest(c) == digest(&f.token));
    if !double_submit {
        return form(
            &d,
            &headers,
            Some("This form has expired: please sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let name = f.name.trim().to_owned();
    if let Some(wait) = locked(&d, &name) {
        tracing::warn!(
            user = name,
            "dashboard: sign-in refused while the account is locked"
        );
        let minutes = wait.as_secs().div_ceil(60);
        return form(
            &d,
            &headers,
            Some(&format!(
                "Too many failed sign-ins for this name: try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let checked = {
        let (n, p) = (name.clone(), f.password);
        super::blocking(&d, move |node| users::verify(&node.store(), &n, &p)).await
    };
    let user: User = match checked {
        Ok(Some(u)) => u,
        Ok(None) => {
            failed(&d, &name);
            tracing::warn!(user = name, "dashboard: failed sign-in");
            return form(
                &d,
                &headers,
                Some("Wrong name or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(page) => return page,
    };
    // Unwrap safety: panic on mutex poisoning.
    d.throttle.lock().unwrap().remove(&name);
    let token = random_token();
    let until = Instant::now() + Duration::from_secs(SESSION_HOURS * 3600);
    // Unwrap safety: panic on mutex poisoning.
    d.sessions.lock().unwrap().insert(
        digest(&token),
        Open {
            name: user.name.clone(),
            csrf: random_token(),
            until,
        },
    );
    tracing::info!(
        user = user.name,
        role = user.role.name(),
        "dashboard: signed in"
    );
    let mut r = page::redirect("/");
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&d, COOKIE, &token, SESSION_HOURS * 3600),
    );
    h.append(header::SET_COOKIE, set_cookie(&d, LOGIN_COOKIE, "", 0));
    r
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = cookie(&headers, COOKIE) {
        // Unwrap safety: panic on mutex poisoning.
        d.sessions.lock().unwrap().remove(&digest(token));
    }
    tracing::info!(user = s.user.name, "dashboard: signed out");
    let mut r = page::redirect("/login");
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&d, COOKIE, "", 0));
    r
}

/// How long `name` is still locked for.
fn locked(d: &Dashboard, name: &str) -> Option<Duration> {
    // Unwrap safety: panic on mutex poisoning.
    let throttle = d.throttle.lock().unwrap();
    let until = throttle.get(name)?.locked_until?;
    until.checked_duration_since(Instant::now())
}

fn failed(d: &Dashboard, name: &str) {
    // Unwrap safety: panic on mutex poisoning.
    let mut throttle = d.throttle.lock().unwrap();
    let f = throttle.entry(name.to_owned()).or_default();
    f.count += 1;
    if f.count >= MAX_FAILURES {
        let doublings = (f.count - MAX_FAILURES).min(8);
        let lock = (FIRST_LOCK * 2u32.pow(doublings)).min(MAX_LOCK);
        f.locked_until = Some(Instant::now() + lock);
    }
}
