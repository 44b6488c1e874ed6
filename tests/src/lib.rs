//! Helpers for end-to-end tests: run the real `mbc-node` binary as a user would, in temporary
//! directories, and inspect the store it leaves behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::{Connection, OpenFlags, types::ValueRef};

pub mod net;

/// The `mbc-node` binary built alongside this test binary (`cargo test --workspace` builds it
/// because the node package has integration tests of its own).
pub fn bin() -> PathBuf {
    // Unwrap safety: a test binary always has a path.
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/integration-<hash> -> target/<profile>/mbc-node
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("mbc-node"));
    match path {
        Some(p) if p.exists() => p,
        _ => panic!(
            "mbc-node binary not found next to {}; run `cargo test --workspace`",
            exe.display()
        ),
    }
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `mbc-node ARGS` in `cwd` with `MBC_NODE_DIR` unset.
pub fn mbc(cwd: &Path, args: &[&str]) -> Run {
    mbc_env(cwd, args, &[])
}

/// Runs `mbc-node ARGS` in `cwd` with extra environment variables.
pub fn mbc_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd).args(args).env_remove("MBC_NODE_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Unwrap safety: the binary exists (checked by `bin`).
    Run::from(cmd.output().unwrap())
}

/// Runs `mbc-node ARGS` in `cwd` with `input` on its standard input.
pub fn mbc_stdin(cwd: &Path, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    // Unwrap safety: the binary exists (checked by `bin`); a test's pipes do not fail.
    let mut child = Command::new(bin())
        .current_dir(cwd)
        .args(args)
        .env_remove("MBC_NODE_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that exits without reading closes the pipe: that is its answer, not ours.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    Run::from(child.wait_with_output().unwrap())
}

/// The password of every dashboard account the tests make.
pub const DASHBOARD_PASSWORD: &str = "a long enough password";

/// `users add NAME --role ROLE [--therapist T]` on the node in `node`, with
/// [`DASHBOARD_PASSWORD`].
#[track_caller]
pub fn add_dashboard_user(cwd: &Path, node: &str, name: &str, role: &str, therapist: Option<&str>) {
    let mut args = vec![
        "users",
        "add",
        name,
        "--data-dir",
        node,
        "--role",
        role,
        "--password-stdin",
    ];
    if let Some(t) = therapist {
        args.extend(["--therapist", t]);
    }
    mbc_stdin(cwd, &args, &format!("{DASHBOARD_PASSWORD}\n")).ok();
}

/// Opens a node's store read-only, with the node's store key (from the config beside it).
pub fn open(db: &Path) -> Connection {
    // Unwrap safety: tests only inspect stores they created.
    keyed(
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap(),
        db,
    )
}

/// Opens a node's store for writing (tests that tamper with it), with its key.
pub fn open_rw(db: &Path) -> Connection {
    keyed(Connection::open(db).unwrap(), db)
}

/// `conn` keyed, with the store's ledger file attached as `ledger` (as the node opens it), so
/// that tests name tables without a schema.
fn keyed(conn: Connection, db: &Path) -> Connection {
    let dir = db.parent().unwrap();
    let config = mbc_node::config::Config::load(dir).unwrap();
    let key = config.store_key_path(dir).map(|path| {
        mbc_node::store::StoreKey::new(mbc_node::keystore::read_key_file(&path).unwrap())
    });
    if let Some(key) = &key {
        key.apply(&conn).unwrap();
    }
    let ledger = mbc_node::store::ledger_path(db);
    if ledger.exists() {
        mbc_node::store::attach_ledger(&conn, &ledger.to_string_lossy(), key.as_ref()).unwrap();
    }
    conn
}

fn render(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => format!("{r:?}"),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => hex::encode(b),
    }
}

/// Every row of a query, columns joined by `|`.
pub fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    // Unwrap safety: the queries are fixed and match the schema.
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut out = Vec::new();
    let mut rows = stmt.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        out.push(
            (0..n)
                .map(|i| render(row.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"),
        );
    }
    out
}

/// SHA-256 over every row of every table (and the schema), in a fixed order: equal iff the
/// store's content is byte-for-byte the same.
pub fn checksum(db: &Path) -> String {
    let conn = open(db);
    let tables = rows(
        &conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    );
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for row in rows(
        &conn,
        "SELECT type, name, sql FROM sqlite_master ORDER BY name",
    ) {
        ctx.update(row.as_bytes());
    }
    for t in tables {
        let name = t.trim_matches('"');
        let n: usize = conn
            .query_row(
                &format!("SELECT count(*) FROM pragma_table_info('{name}')"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        for row in rows(
            &conn,
            &format!("SELECT * FROM \"{name}\" ORDER BY {}", order.join(", ")),
        ) {
            ctx.update(name.as_bytes());
            ctx.update(row.as_bytes());
            ctx.update(b"\n");
        }
    }
    hex::encode(ctx.finish())
}

/// The store's outcome content with row ids replaced by pseudonyms, sorted: equal for two
/// stores holding the same data under the same pseudonymisation key, whatever the order or
/// format it was imported in.
pub fn canonical_content(db: &Path) -> Vec<String> {
    let conn = open(db);
    let queries = [
        "SELECT 'therapist', pseudonym, profession, grade, start_year, gender, languages, modalities,
                accepting_new, wait_weeks, payers, location FROM therapist",
        "SELECT 'patient', pseudonym, birth_year, sex, ethnicity_group, deprivation_decile FROM patient",
        "SELECT 'episode', e.pseudonym, p.pseudonym, t.pseudonym, referral_date, start_date, end_date,
                end_reason, sessions_planned, sessions_attended, step, provisional_dx
         FROM episode e JOIN patient p USING (patient_id) JOIN therapist t USING (therapist_id)",
        "SELECT 'casemix', e.pseudonym, c.age, c.employment, c.prior_treatment, c.psychotropic_med,
                c.long_term_condition, c.disability, c.duration_of_problem_months,
                c.comorbidity_count, c.referral_source, c.wsas
         FROM casemix c JOIN episode e USING (episode_id)",
        "SELECT 'episode_therapist', e.pseudonym, t.pseudonym, first_session, last_session
         FROM episode_therapist et JOIN episode e USING (episode_id) JOIN therapist t ON t.therapist_id = et.therapist_id",
        "SELECT 'session', e.pseudonym, seq, date, attended, kind FROM session JOIN episode e USING (episode_id)",
        "SELECT 'assessment', e.pseudonym, s.seq, instrument_id, score, n_missing_items, prorated
         FROM assessment a JOIN session s USING (session_id) JOIN episode e ON e.episode_id = a.episode_id",
        "SELECT 'item', e.pseudonym, s.seq, a.instrument_id, item_no, item_code, value
         FROM item_response i JOIN assessment a USING (assessment_id) JOIN session s USING (session_id)
         JOIN episode e ON e.episode_id = a.episode_id",
    ];
    let mut out: Vec<String> = queries.iter().flat_map(|q| rows(&conn, q)).collect();
    out.sort();
    out
}

/// Every row of every table of a node's store, decrypted, as text: what the store holds, for
/// searches that the encrypted file itself would pass trivially.
pub fn decrypted_dump(db: &Path) -> Vec<u8> {
    let conn = open(db);
    // Both files: the clinical data and the ledger.
    let tables = rows(
        &conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         UNION ALL SELECT name FROM ledger.sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    );
    let mut out = Vec::new();
    for t in tables {
        let t = t.trim_matches('"');
        for row in rows(&conn, &format!("SELECT * FROM \"{t}\"")) {
            out.extend_from_slice(row.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// Every byte of every file in `dir` (the store, its WAL and shared memory, config, keys).
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    // Unwrap safety: tests only read directories they created.
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Imports the CSV files `synth` wrote for `clinic` (an element of its `--json` summary's
/// `clinics`, data under `cwd/data`) into the node in `cwd/node_dir`; returns the `--json`
/// outcomes. Panics if the import fails.
#[track_caller]
pub fn import_clinic_csv(
    cwd: &Path,
    node_dir: &str,
    clinic: &serde_json::Value,
) -> serde_json::Value {
    let files: Vec<String> = clinic["csv_files"]
        .as_array()
        .expect("a synth clinic summary lists its csv_files")
        .iter()
        .map(|f| format!("data/{}", f.as_str().unwrap_or_default()))
        .collect();
    let mut args = vec!["import", "--data-dir", node_dir, "--json"];
    args.extend(files.iter().map(String::as_str));
    mbc(cwd, &args).ok().json()["files"].clone()
}

/// `mbc-node synth` as the tests call it: seeded, writing `data` (or [`Synth::out`]) in the
/// working directory, with the generator's defaults unless told.
#[derive(Debug, Clone)]
pub struct Synth {
    seed: u32,
    out: String,
    clinics: u32,
    options: Vec<String>,
}

impl Synth {
    /// One clinic from `seed`, into `data`.
    pub fn new(seed: u32) -> Self {
        Self {
            seed,
            out: "data".into(),
            clinics: 1,
            options: Vec::new(),
        }
    }

    /// Write into `out` instead of `data`.
    pub fn out(mut self, out: &str) -> Self {
        self.out = out.into();
        self
    }

    /// `--clinics N`.
    pub fn clinics(mut self, n: u32) -> Self {
        self.clinics = n;
        self
    }

    /// `--patients-per-clinic N`.
    pub fn patients(self, n: u32) -> Self {
        self.option("--patients-per-clinic", n)
    }

    /// `--therapists-per-clinic N`.
    pub fn therapists(self, n: u32) -> Self {
        self.option("--therapists-per-clinic", n)
    }

    /// `--caseload N`.
    pub fn caseload(self, n: u32) -> Self {
        self.option("--caseload", n)
    }

    /// `--fhir`: FHIR bundles beside the CSV files.
    pub fn fhir(mut self) -> Self {
        self.options.push("--fhir".into());
        self
    }

    /// Any other flag of `synth`.
    pub fn flag(mut self, flag: &str) -> Self {
        self.options.push(flag.into());
        self
    }

    fn option(mut self, name: &str, value: u32) -> Self {
        self.options.extend([name.to_string(), value.to_string()]);
        self
    }

    /// Runs `synth` in `cwd` (without `--json`), whatever its outcome.
    pub fn run(&self, cwd: &Path) -> Run {
        let (seed, clinics) = (self.seed.to_string(), self.clinics.to_string());
        let mut args = vec![
            "synth",
            "--out",
            &self.out,
            "--clinics",
            &clinics,
            "--seed",
            &seed,
        ];
        args.extend(self.options.iter().map(String::as_str));
        mbc(cwd, &args)
    }

    /// Runs `synth --json` in `cwd`; its summary (`clinics[i].csv_files`, counts, …).
    #[track_caller]
    pub fn summary(&self, cwd: &Path) -> serde_json::Value {
        self.clone().flag("--json").run(cwd).ok().json()
    }
}

/// `mbc-node init` of a node called `name` in `cwd/node_dir`, then the CSV import of the synth
/// clinic `clinic` (see [`import_clinic_csv`]); returns the import's `--json` outcomes.
#[track_caller]
pub fn clinic_node(
    cwd: &Path,
    node_dir: &str,
    name: &str,
    clinic: &serde_json::Value,
) -> serde_json::Value {
    mbc(cwd, &["init", "--data-dir", node_dir, "--name", name]).ok();
    import_clinic_csv(cwd, node_dir, clinic)
}

/// `mbc-node import FILE` into `cwd/DATA_DIR`, paused by the test hook after 1,500 rows, still
/// inside its transaction (so holding the clinical data's write lock): returned once it says
/// so (waiting on its stderr, not the clock). Kill it to end the test.
#[track_caller]
pub fn paused_import(cwd: &Path, data_dir: &str, file: &str) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(bin())
        .current_dir(cwd)
        .args(["import", "--data-dir", data_dir, file])
        .env("MBC_NODE_TEST_HANG_AFTER_ROWS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("import paused after 1500 rows") {
        assert_ne!(
            stderr.read_line(&mut said).unwrap(),
            0,
            "the importer exited before the hook: {said}"
        );
    }
    child
}

/// The arguments of `mbc-node release --data-dir DATA_DIR --kind local-benchmark --rho RHO
/// --out OUT`.
pub fn local_release_args<'a>(data_dir: &'a str, rho: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "release",
        "--data-dir",
        data_dir,
        "--kind",
        "local-benchmark",
        "--rho",
        rho,
        "--out",
        out,
    ]
}
