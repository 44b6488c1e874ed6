//! The dashboard as `mbc-node run` serves it, over a real socket on 127.0.0.1: its address in
//! the ready line and `dashboard.addr`, the Host check, the headers, and a sign-in through to
//! the caseload. (Every route's rules are tested without a socket in node/src/dashboard.)

use std::io::{Read, Write};
use std::net::TcpStream;

use integration_tests::mbc_stdin;
use integration_tests::net::{Daemon, form};

/// One HTTP/1.1 request to `addr` with `headers` (each ending in CRLF); the status, the
/// head and the body.
fn http(addr: &str, host: &str, request: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{request} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n{}{headers}\r\n{body}",
        body.len(),
        if body.is_empty() { "" } else { "Content-Type: application/x-www-form-urlencoded\r\n" }
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

/// The `name=value` of cookie `name` set in `head`.
fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in\n{head}"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn the_running_node_serves_the_dashboard_on_loopback_behind_its_checks() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, "dash-net", 1);
    mbc_stdin(
        root,
        &[
            "users",
            "add",
            "cleo",
            "--data-dir",
            coord.arg(),
            "--role",
            "clinician",
            "--therapist",
            "T1",
            "--password-stdin",
        ],
        "a long enough password\n",
    )
    .ok();
    let d = Daemon::start(&coord);
    let url = d.ready["dashboard"].as_str().unwrap().to_owned();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{url}");
    assert_eq!(
        std::fs::read_to_string(coord.dir.join("dashboard.addr"))
            .unwrap()
            .trim(),
        addr
    );
    // A page addressed to another name (DNS rebinding) is refused; its own address answers.
    let (code, ..) = http(&addr, "attacker.example", "GET /login", "", "");
    assert_eq!(code, 421);
    let (code, head, page) = http(&addr, &addr, "GET /login", "", "");
    assert_eq!(code, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    // No session: the caseload leads to sign-in.
    let (code, head, _) = http(&addr, &addr, "GET /", "", "");
    assert_eq!(code, 303);
    assert!(head.contains("location: /login"), "{head}");
    // Sign in with the form's token (the double-submit cookie's value), then the caseload,
    // addressed by the other name of loopback.
    let login = cookie(&http(&addr, &addr, "GET /login", "", "").1, "mbc_login");
    let token = login.split_once('=').unwrap().1;
    assert!(page.contains("name=\"token\""));
    let body = format!("name=cleo&password=a+long+enough+password&token={token}");
    let (code, head, _) = http(
        &addr,
        &addr,
        "POST /login",
        &format!("Cookie: {login}\r\n"),
        &body,
    );
    assert_eq!(code, 303, "{head}");
    let session = cookie(&head, "mbc_session");
    let port = addr.rsplit(':').next().unwrap();
    let (code, _, page) = http(
        &addr,
        &format!("localhost:{port}"),
        "GET /",
        &format!("Cookie: {session}\r\n"),
        "",
    );
    assert_eq!(code, 200);
    assert!(
        page.contains("<h1>Caseload</h1>") && page.contains("cleo"),
        "{page}"
    );
}
