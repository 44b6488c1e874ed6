//! The dashboard as `mbc-node run` serves it, over a real socket on 127.0.0.1: its address in
//! the ready line and `dashboard.addr`, the Host check, the headers, and a sign-in through to
//! the caseload. (Every route's rules are tested without a socket in node/src/dashboard.)

use std::io::{Read, Write};
use std::net::TcpStream;

use integration_tests::net::{Daemon, form, network_with_data, wait_converged, wait_for};
use integration_tests::{Synth, mbc, mbc_stdin};

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
    coord.serve_dashboard();
    // A staff list that cannot be read stops `run`, naming the setting and the file.
    coord.set_config("# staff_list = \"\"", "staff_list = \"missing.csv\"");
    let r = mbc(root, &["run", "--data-dir", coord.arg()]);
    assert!(
        r.code != 0
            && r.stderr.contains("[dashboard] staff_list")
            && r.stderr.contains("missing.csv"),
        "{}",
        r.stderr
    );
    std::fs::write(coord.dir.join("staff.csv"), "therapist_id\nT1\n").unwrap();
    coord.set_config("\"missing.csv\"", "\"staff.csv\"");
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

/// Signs `name` in (password "a long enough password") on the dashboard at `addr`: the session
/// cookie and the CSRF token of its pages.
fn signed_in(addr: &str, name: &str, page: &str) -> (String, String) {
    let login = cookie(&http(addr, addr, "GET /login", "", "").1, "mbc_login");
    let token = login.split_once('=').unwrap().1.to_owned();
    let (code, head, _) = http(
        addr,
        addr,
        "POST /login",
        &format!("Cookie: {login}\r\n"),
        &format!("name={name}&password=a+long+enough+password&token={token}"),
    );
    assert_eq!(code, 303, "{name} could not sign in: {head}");
    let session = cookie(&head, "mbc_session");
    let (_, _, body) = http(
        addr,
        addr,
        &format!("GET {page}"),
        &format!("Cookie: {session}\r\n"),
        "",
    );
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with its token");
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    (session, rest[..rest.find('"').unwrap()].to_owned())
}

/// The coordinator starts a round from the Network screen of a running network of four, sees
/// the clinics online and the round in its table, then publishes every release as a static site;
/// anyone checks a release from it offline, and a changed figure, changed signed bytes or
/// another coordinator's key are each refused.
#[test]
fn a_round_started_from_the_network_screen_is_published_as_a_site_that_verifies_offline() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let nodes = network_with_data(root, "site-net", &Synth::new(11).clinics(4).patients(160));
    integration_tests::add_dashboard_user(root, nodes[0].arg(), "cora", "coordinator", None);
    nodes[0].serve_dashboard();
    let ds: Vec<Daemon> = nodes.iter().map(Daemon::start).collect();
    wait_converged(&ds.iter().collect::<Vec<_>>(), 4, 3);
    let addr = ds[0].ready["dashboard"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (session, csrf) = signed_in(&addr, "cora", "/network");
    let cookie = format!("Cookie: {session}\r\n");
    let (_, _, page) = http(&addr, &addr, "GET /network", &cookie, "");
    assert!(
        page.contains("3 of 3 other members connected now"),
        "{page}"
    );
    let (code, head, answer) = http(
        &addr,
        &addr,
        "POST /network/rounds",
        &cookie,
        &format!("csrf={csrf}&kind=benchmark&rho=0.25&iterations=&threshold=4&deadline=30"),
    );
    assert_eq!(code, 303, "{head}{answer}");
    let release = wait_for("the round's release on the coordinator", || {
        let list = mbc(
            root,
            &["benchmark", "list", "--data-dir", nodes[0].arg(), "--json"],
        )
        .ok()
        .json();
        list["releases"]
            .as_array()
            .and_then(|r| r.first())
            .map(|r| r["release_id"].as_str().unwrap().to_owned())
    });
    let (_, _, page) = http(&addr, &addr, "GET /network", &cookie, "");
    assert!(
        page.contains(&format!("release <code>{}</code>", &release[..12])),
        "{page}"
    );
    // The site.
    let site = root.join("site");
    mbc(
        root,
        &[
            "benchmark",
            "export",
            "--data-dir",
            nodes[0].arg(),
            "--site",
            site.to_str().unwrap(),
        ],
    )
    .ok();
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(
        index.contains(&format!("releases/{release}.json")),
        "{index}"
    );
    for external in ["src=\"http", "href=\"http", "<script"] {
        assert!(!index.contains(external), "the site loads {external}");
    }
    let json = site.join(format!("releases/{release}.json"));
    assert!(site.join(format!("releases/{release}.html")).exists());
    // Checked offline, pinned by a clinic's own network or the key the index names.
    let ok = mbc(
        root,
        &[
            "benchmark",
            "verify",
            json.to_str().unwrap(),
            "--data-dir",
            nodes[2].arg(),
        ],
    )
    .ok();
    assert!(
        ok.stdout.contains("valid") && ok.stdout.contains("(the coordinator given)"),
        "{}",
        ok.stdout
    );
    let key = index
        .split("key <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    mbc(
        root,
        &[
            "benchmark",
            "verify",
            json.to_str().unwrap(),
            "--coordinator",
            &key,
        ],
    )
    .ok();
    // A changed figure, changed signed bytes, another coordinator: refused, each saying why.
    let text = std::fs::read_to_string(&json).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["summary"][0]["recovery_rate"] = serde_json::json!(0.99);
    let changed = root.join("changed.json");
    std::fs::write(&changed, serde_json::to_vec(&doc).unwrap()).unwrap();
    let r = mbc(
        root,
        &[
            "benchmark",
            "verify",
            changed.to_str().unwrap(),
            "--coordinator",
            &key,
        ],
    );
    assert!(
        r.code != 0 && r.stderr.contains("differ from what was signed: summary"),
        "{}",
        r.stderr
    );
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = doc["signature"]["document_base64"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = format!(
        "{}{}",
        if b64.starts_with('A') { "B" } else { "A" },
        &b64[1..]
    );
    doc["signature"]["document_base64"] = serde_json::json!(flipped);
    std::fs::write(&changed, serde_json::to_vec(&doc).unwrap()).unwrap();
    let r = mbc(root, &["benchmark", "verify", changed.to_str().unwrap()]);
    assert!(r.code != 0, "changed signed bytes verified");
    let r = mbc(
        root,
        &[
            "benchmark",
            "verify",
            json.to_str().unwrap(),
            "--coordinator",
            &"ab".repeat(32),
        ],
    );
    assert!(
        r.code != 0 && r.stderr.contains("not by the coordinator"),
        "{}",
        r.stderr
    );
    // The coordinator restarts: the round stays on the screen and in `round status`; a round
    // it stopped in (a bench round, killed at the shares step) is ended as interrupted when it
    // starts again.
    let status = |id: &str| {
        mbc(
            root,
            &[
                "round",
                "status",
                "--data-dir",
                nodes[0].arg(),
                id,
                "--json",
            ],
        )
        .ok()
        .json()
    };
    let done = status("latest");
    let round_id = done["round_id"].as_str().unwrap().to_owned();
    assert_eq!(done["threshold"], 4, "the form's threshold");
    let mut ds = ds.into_iter();
    ds.next().unwrap().stop();
    let clinics: Vec<Daemon> = ds.collect();
    let crashing = Daemon::start_with_env(&nodes[0], &[("MBC_NODE_TEST_EXIT_AT", "shares")]);
    wait_converged(&[&crashing], 4, 3);
    let started = mbc(
        root,
        &[
            "round",
            "start",
            "--data-dir",
            nodes[0].arg(),
            "--kind",
            "bench",
            "--dim",
            "8",
            "--json",
        ],
    )
    .ok()
    .json();
    let cut = started["round_id"].as_str().unwrap().to_owned();
    crashing.wait_exit();
    let coord = Daemon::start(&nodes[0]);
    let addr = coord.ready["dashboard"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (session, _) = signed_in(&addr, "cora", "/network");
    let (_, _, page) = http(
        &addr,
        &addr,
        "GET /network",
        &format!("Cookie: {session}\r\n"),
        "",
    );
    assert!(page.contains("The latest 2 rounds"), "{page}");
    assert!(
        page.contains(&format!("release <code>{}</code>", &release[..12])),
        "{page}"
    );
    assert!(
        page.contains(&format!("<code>{}</code>", &cut[..12]))
            && page.contains(mbc_node::aggregate::record::INTERRUPTED),
        "{page}"
    );
    let again = status(&round_id);
    assert_eq!(
        (&again["step"], &again["release_id"], &again["participants"]),
        (&done["step"], &done["release_id"], &done["participants"])
    );
    let cut = status(&cut);
    assert_eq!(cut["step"], "aborted");
    assert_eq!(cut["error"], mbc_node::aggregate::record::INTERRUPTED);
    coord.stop();
    for d in clinics {
        d.stop();
    }
}

/// With `[dashboard] tls_cert` and `tls_key` the dashboard serves HTTPS itself, on an address
/// other than loopback too; its cookies are then `Secure`, and plain HTTP gets no page.
#[test]
fn with_its_own_tls_the_dashboard_serves_https_and_secure_cookies() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, "tls-net", 0);
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(coord.dir.join("dashboard.crt"), cert.cert.pem()).unwrap();
    std::fs::write(
        coord.dir.join("dashboard.key"),
        cert.key_pair.serialize_pem(),
    )
    .unwrap();
    let config = std::fs::read_to_string(coord.dir.join("config.toml")).unwrap();
    assert!(config.contains("# tls_cert = \"\""), "{config}");
    coord.set_config("# tls_cert = \"\"", "tls_cert = \"dashboard.crt\"");
    coord.set_config("# tls_key = \"\"", "tls_key = \"dashboard.key\"");
    coord.serve_dashboard();
    let d = Daemon::start(&coord);
    let url = d.ready["dashboard"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let head = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("the dashboard's certificate");
        let port = addr.rsplit(':').next().unwrap();
        tls.write_all(
            format!("GET /login HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        String::from_utf8_lossy(&raw).into_owned()
    });
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let login = head
        .lines()
        .find(|l| l.starts_with("set-cookie: mbc_login="))
        .unwrap_or_else(|| panic!("no sign-in cookie:\n{head}"));
    assert!(login.contains("; Secure"), "{login}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Plain HTTP to the same port gets no page.
    let mut s = TcpStream::connect(&addr).unwrap();
    let _ = write!(
        s,
        "GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        !String::from_utf8_lossy(&raw).contains("Sign in"),
        "a page over plain HTTP"
    );
    d.stop();
    // Without TLS, another address than loopback is refused at start, saying what to do.
    coord.set_config("tls_cert = \"dashboard.crt\"", "# tls_cert = \"\"");
    coord.set_config("tls_key = \"dashboard.key\"", "# tls_key = \"\"");
    coord.set_config("bind = \"127.0.0.1:0\"", "bind = \"0.0.0.0:0\"");
    let r = mbc(root, &["run", "--data-dir", coord.arg()]);
    assert!(
        r.code != 0 && r.stderr.contains("needs TLS"),
        "{}",
        r.stderr
    );
}
