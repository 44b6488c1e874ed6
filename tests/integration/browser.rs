//! The dashboard end to end in headless Chromium, driven through chromedriver (WebDriver) on
//! 127.0.0.1, against a real running node: sign in, the caseload, a red patient's page,
//! acknowledging its alert and seeing it change, a match and its recorded choice, a report card,
//! the validation card, a bad upload's error, the Network screen; on the way the accessibility
//! basics (every chart has a text equivalent, no signal is told by colour alone, nothing wider
//! than the window at 1280 and 800 px) and a screenshot of every screen at both widths, written
//! to `target/tmp/screenshots/` for people to look at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::net::{Daemon, free_port, network_with_data, wait_for};
use integration_tests::{Synth, mbc};
use serde_json::{Value, json};

use integration_tests::{DASHBOARD_PASSWORD as PASSWORD, add_dashboard_user as add_user};

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (.ci/run installs chromium-driver)");
        wait_for("chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--hide-scrollbars", "--window-size=1280,1000"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Where screenshots go: `target/tmp/screenshots`.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Checks the page at 1280 and 800 px wide (nothing wider than the window; every chart an
/// image with a text equivalent; every signal in words beside its colour) and writes both
/// screenshots as `NAME-WIDTH.png`.
async fn look(c: &Client, name: &str) {
    for width in [1280u32, 800] {
        c.set_window_size(width, 1000).await.unwrap();
        let wide: Value = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                vec![],
            )
            .await
            .unwrap();
        let (content, window) = (wide[0].as_u64().unwrap(), wide[1].as_u64().unwrap());
        assert!(
            content <= window,
            "{name} at {width} px: the page is {content} px wide in a {window} px window"
        );
        let png = c.screenshot().await.unwrap();
        std::fs::write(shots().join(format!("{name}-{width}.png")), png).unwrap();
    }
    c.set_window_size(1280, 1000).await.unwrap();
    for svg in c.find_all(Locator::Css("svg")).await.unwrap() {
        let label = svg.attr("aria-label").await.unwrap().unwrap_or_default();
        assert_eq!(
            svg.attr("role").await.unwrap().as_deref(),
            Some("img"),
            "{name}: a chart without role=img"
        );
        assert!(
            label.len() > 10,
            "{name}: a chart without a text equivalent"
        );
    }
    for cell in c.find_all(Locator::Css("td.sig")).await.unwrap() {
        let text = cell.text().await.unwrap();
        assert!(
            text.chars().filter(|c| c.is_alphabetic()).count() >= 4,
            "{name}: a signal told by colour and symbol only: {text:?}"
        );
    }
}

async fn sign_in(c: &Client, base: &str, name: &str) {
    c.goto(&format!("{base}login")).await.unwrap();
    type_in(c, "input[name=name]", name).await;
    type_in(c, "input[name=password]", PASSWORD).await;
    click(c, "form.login button[type=submit]").await;
    find(c, "header.top .who").await;
}

async fn sign_out(c: &Client) {
    click(c, "header.top form button").await;
    find(c, "form.login").await;
}

/// The element `css` once the page shows it (at most 30 s; then the page in the panic).
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(std::time::Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => panic!(
            "no {css} on {} ({e}):\n{}",
            c.current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default(),
            c.source().await.unwrap_or_default()
        ),
    }
}

async fn click(c: &Client, css: &str) {
    find(c, css).await.click().await.unwrap();
}

async fn type_in(c: &Client, css: &str, text: &str) {
    find(c, css).await.send_keys(text).await.unwrap();
}

async fn heading(c: &Client) -> String {
    find(c, "h1").await.text().await.unwrap()
}

/// The raw id of a therapist with a red open episode that has an open alert, its episode and
/// the alert's id (from `alerts --therapist ID --json`).
fn red_patient(root: &Path, node: &str) -> (String, String, i64) {
    let csv = std::fs::read_to_string(root.join("data/clinic-01/therapists.csv")).unwrap();
    for raw in csv.lines().skip(1).map(|l| l.split(',').next().unwrap()) {
        let list = mbc(
            root,
            &["alerts", "--data-dir", node, "--therapist", raw, "--json"],
        )
        .ok()
        .json();
        for e in list["episodes"].as_array().unwrap() {
            let open = e["open_alerts"].as_array().unwrap();
            if e["signal"] == "red"
                && let Some(a) = open.iter().find(|a| a["state"] == "open")
            {
                return (
                    raw.to_owned(),
                    e["episode"].as_str().unwrap().to_owned(),
                    a["id"].as_i64().unwrap(),
                );
            }
        }
    }
    panic!("the synthetic clinic has no red episode with an open alert");
}

#[test]
fn a_clinician_an_admin_and_the_coordinator_use_the_dashboard_in_a_real_browser() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let nodes = network_with_data(root, "browser-net", &Synth::new(3).patients(300));
    let node = nodes[0].arg();
    let (therapist, episode, alert) = red_patient(root, node);
    add_user(root, node, "cleo", "clinician", Some(&therapist));
    add_user(root, node, "ada", "admin", None);
    add_user(root, node, "cora", "coordinator", None);
    let bad = root.join("assessments-bad.csv");
    std::fs::write(
        &bad,
        "patient_id,therapist_id,episode_id,session,date,kind,instrument,score,items\n\
         P1,T1,E1,1,2025-13-45,assessment,PHQ-9,18,\n\
         P1,T1,E1,2,2025-01-02,assessment,PHQ-9,99,\n",
    )
    .unwrap();
    nodes[0].serve_dashboard();
    // Therapists by the clinic's staff ids (its therapists.csv).
    let staff = root.join("data/clinic-01/therapists.csv");
    assert!(staff.exists());
    nodes[0].set_config(
        "# staff_list = \"\"",
        &format!("staff_list = {:?}", staff.to_str().unwrap()),
    );
    let daemon = Daemon::start(&nodes[0]);
    let base = daemon.ready["dashboard"].as_str().unwrap().to_owned();
    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let c = browser(&driver).await;
        let c = &c;
        // The clinician: the caseload, most worrying first.
        sign_in(c, &base, "cleo").await;
        assert_eq!(heading(c).await, "Caseload");
        look(c, "caseload").await;
        // A red patient: the chart, its alert, acknowledged in place.
        click(c, &format!("a[href='/patient/{episode}']")).await;
        find(c, "section.open-alerts").await;
        assert_eq!(heading(c).await, format!("Patient · episode {episode}"));
        let page = c.source().await.unwrap();
        assert!(
            page.contains("not on track") && page.contains("Scores by session"),
            "{page}"
        );
        look(c, "patient").await;
        click(c, &format!("form[action='/alerts/{alert}/ack'] button")).await;
        find(c, &format!("form[action='/alerts/{alert}/resolve']")).await;
        let page = c.source().await.unwrap();
        assert!(
            !page.contains(&format!("/alerts/{alert}/ack\"")),
            "still offered to acknowledge"
        );
        assert!(
            page.contains("(acknowledged)"),
            "the alert does not show as acknowledged"
        );
        assert!(c.current_url().await.unwrap().path().ends_with(&episode));
        // Its printable view.
        c.goto(&format!("{base}patient/{episode}/print"))
            .await
            .unwrap();
        find(c, "div.support").await;
        look(c, "patient-print").await;
        // A match, and the patient's choice recorded.
        c.goto(&format!("{base}match")).await.unwrap();
        look(c, "match-form").await;
        type_in(c, "input[name=phq9]", "18").await;
        type_in(c, "input[name=gad7]", "12").await;
        click(c, "input[value='mon-pm']").await;
        click(c, "form.request button[type=submit]").await;
        find(c, "p.tradeoff").await;
        assert!(heading(c).await.starts_with("Shortlist "));
        look(c, "shortlist").await;
        click(c, "li.offer button").await;
        let done = find(c, "p.done").await.text().await.unwrap();
        assert!(
            done.starts_with("Recorded: the patient chose C01-T"),
            "{done}"
        );
        // Her report card and the validation card.
        c.goto(&format!("{base}card")).await.unwrap();
        assert_eq!(
            heading(c).await,
            format!("Report card · therapist {therapist}")
        );
        look(c, "report-card").await;
        c.goto(&format!("{base}validation")).await.unwrap();
        find(c, "main").await;
        look(c, "validation").await;
        // No clinic screen for her.
        c.goto(&format!("{base}clinic")).await.unwrap();
        assert_eq!(heading(c).await, "Forbidden");
        c.goto(&base).await.unwrap();
        sign_out(c).await;
        // The admin: the clinic screen, and a bad file's every problem.
        sign_in(c, &base, "ada").await;
        c.goto(&format!("{base}clinic")).await.unwrap();
        find(c, "form.upload").await;
        look(c, "clinic").await;
        type_in(c, "input[type=file]", bad.to_str().unwrap()).await;
        click(c, "form.upload button").await;
        let problem = find(c, "div.problem").await.text().await.unwrap();
        assert!(
            problem.contains("assessments-bad.csv: not imported"),
            "{problem}"
        );
        assert!(
            problem.contains("line 2, field date") && problem.contains("line 3, field score"),
            "{problem}"
        );
        look(c, "import-error").await;
        sign_out(c).await;
        // The coordinator: the network.
        sign_in(c, &base, "cora").await;
        c.goto(&format!("{base}network")).await.unwrap();
        assert_eq!(heading(c).await, "Network");
        look(c, "network").await;
        c.clone().close().await.unwrap();
    });
    daemon.stop();
    // Every view of the patient's pages is in the audit, under her name; the acknowledgement too.
    let db = integration_tests::open(&nodes[0].dir.join("local.db"));
    let views: Vec<(String, String)> = db
        .prepare("SELECT user_name, page FROM patient_view ORDER BY view_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let pages: Vec<&str> = views.iter().map(|(_, p)| p.as_str()).collect();
    assert!(views.iter().all(|(u, _)| u == "cleo"), "{views:?}");
    assert_eq!(
        pages,
        ["patient", "patient", "print"],
        "the page, again after the acknowledgement, its print"
    );
    let by: String = db
        .query_row(
            "SELECT by_whom FROM alert_action WHERE alert_id = ?1",
            [alert],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by, "cleo");
}
