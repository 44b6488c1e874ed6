//! Real nodes on 127.0.0.1: each an `mbc-node run` process with its own data directory and
//! ports, formed into a network through the CLI exactly as a coordinator and clinics do it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, mbc};

/// How long any wait on the network may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A free loopback port for a node to listen on later ([`mbc_node::net::port::free`]).
pub fn free_port() -> u16 {
    // Unwrap safety: a test machine has free loopback ports.
    mbc_node::net::port::free().unwrap()
}

/// Polls `check` until it returns `Some` or [`WAIT`] passes; the polling interval is not a
/// synchronisation point, each poll reads the node's real state.
#[track_caller]
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_within(WAIT, what, check)
}

/// [`wait_for`] with its own limit, for waits that scale with the network's size (a few dozen
/// nodes on one address form their mesh through the per-address handshake limit).
#[track_caller]
pub fn wait_within<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node's data directory and listen address.
#[derive(Debug, Clone)]
pub struct NodeDir {
    /// Data directory.
    pub dir: PathBuf,
    /// Listen multiaddress.
    pub addr: String,
    /// PeerId.
    pub peer_id: String,
}

impl NodeDir {
    /// `--data-dir` argument value.
    pub fn arg(&self) -> &str {
        // Unwrap safety: test directories are UTF-8 temp paths.
        self.dir.to_str().unwrap()
    }

    /// Turns the node's dashboard on, on a free loopback port, for its next `run`.
    #[track_caller]
    pub fn serve_dashboard(&self) {
        self.set_config("bind = \"off\"", "bind = \"127.0.0.1:0\"");
    }

    /// Replaces the line `from` of the node's config.toml (as `init` wrote it) with `to`.
    #[track_caller]
    pub fn set_config(&self, from: &str, to: &str) {
        let path = self.dir.join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} is not in {}", path.display());
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }
}

/// `mbc-node init` with a fresh loopback port and the dashboard off (a dashboard on port 0
/// takes an ephemeral port, which a node killed and restarted in a test may need again for its
/// listen address; [`NodeDir::serve_dashboard`] turns it on).
pub fn init(root: &Path, name: &str) -> NodeDir {
    let dir = root.join(name.replace(' ', "-").to_lowercase());
    let addr = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let out = mbc(
        root,
        &[
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--listen",
            &addr,
            "--dashboard",
            "off",
            "--json",
        ],
    )
    .ok()
    .json();
    NodeDir {
        dir,
        addr,
        peer_id: out["peer_id"].as_str().unwrap().to_owned(),
    }
}

/// A coordinator and `clinics` clinics, admitted one by one through join request, admit and
/// join, as README describes. Nothing is running yet.
pub fn form(root: &Path, network_id: &str, clinics: usize) -> (NodeDir, Vec<NodeDir>) {
    let coord = init(root, "Coordinator");
    mbc(
        root,
        &[
            "network",
            "create",
            "--data-dir",
            coord.arg(),
            "--network-id",
            network_id,
        ],
    )
    .ok();
    let members = (1..=clinics)
        .map(|i| {
            let c = init(root, &format!("Clinic {i}"));
            admit(root, &coord, &c, network_id);
            c
        })
        .collect();
    (coord, members)
}

/// A network of `synth`'s clinics: the coordinator holds the first clinic's data and clinic i
/// the (i + 1)-th's, imported from `root/data` (where `synth` writes in `root`). Returns the
/// coordinator first, then the clinics; nothing is running yet.
#[track_caller]
pub fn network_with_data(root: &Path, network_id: &str, synth: &crate::Synth) -> Vec<NodeDir> {
    let summary = synth.summary(root);
    let clinics = summary["clinics"].as_array().unwrap();
    let (coord, members) = form(root, network_id, clinics.len() - 1);
    let nodes: Vec<NodeDir> = std::iter::once(coord).chain(members).collect();
    for (node, clinic) in nodes.iter().zip(clinics) {
        crate::import_clinic_csv(root, node.arg(), clinic);
    }
    nodes
}

/// Admits `clinic` through the CLI: join request, admit (publishing if the coordinator runs),
/// join with the roster written by admit.
pub fn admit(root: &Path, coord: &NodeDir, clinic: &NodeDir, network_id: &str) {
    let req = clinic.dir.with_extension("join.json");
    let roster = clinic.dir.with_extension("roster.json");
    mbc(
        root,
        &[
            "network",
            "join-request",
            "--data-dir",
            clinic.arg(),
            "--network-id",
            network_id,
            "--out",
            req.to_str().unwrap(),
        ],
    )
    .ok();
    admit_file(root, coord, &req, &["--out", roster.to_str().unwrap()]);
    mbc(
        root,
        &[
            "network",
            "join",
            "--data-dir",
            clinic.arg(),
            "--roster",
            roster.to_str().unwrap(),
            "--coordinator",
            &coord.peer_id,
        ],
    )
    .ok();
}

/// Admits an in-process member whose identity seed is `seed`: its join request made with the
/// library, admitted through the coordinator's CLI. Returns its signer.
pub fn admit_seed(
    root: &Path,
    coord: &NodeDir,
    network_id: &str,
    seed: [u8; 32],
    name: &str,
) -> protocol::keys::Signer {
    let me = protocol::keys::Signer::from_seed(&seed);
    let req = protocol::roster::JoinRequest::new(network_id, &me, name, vec![], 0).unwrap();
    let req_file = root.join(format!("{}.join.json", name.replace(' ', "-")));
    std::fs::write(&req_file, serde_json::to_string(&req).unwrap()).unwrap();
    admit_file(root, coord, &req_file, &[]);
    me
}

/// `mbc-node network admit` of the join request in `request` by the coordinator, plus `extra`.
fn admit_file(root: &Path, coord: &NodeDir, request: &Path, extra: &[&str]) {
    let mut args = vec![
        "network",
        "admit",
        "--data-dir",
        coord.arg(),
        request.to_str().unwrap(),
    ];
    args.extend(extra);
    mbc(root, &args).ok();
}

/// A running `mbc-node run` process. Dropping it kills the process.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its data directory.
    pub node: NodeDir,
    /// The "ready" line it printed.
    pub ready: Value,
}

impl Daemon {
    /// Starts `mbc-node run --log-json` and waits for its ready line. Logs go to
    /// `<data dir>/daemon.log`.
    pub fn start(node: &NodeDir) -> Daemon {
        Self::start_with_env(node, &[])
    }

    /// [`Daemon::start`] with extra environment variables (test hooks).
    pub fn start_with_env(node: &NodeDir, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(bin());
        command.args(["run", "--data-dir", node.arg(), "--log-json"]);
        Self::spawn(node, command, env)
    }

    /// [`Daemon::start`] with the process's open-file limit lowered to `limit` (set by the
    /// shell, which then becomes the daemon).
    pub fn start_with_file_limit(node: &NodeDir, limit: u32) -> Daemon {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!(r#"ulimit -n {limit} && exec "$0" run --data-dir "$1" --log-json"#),
            bin().to_str().unwrap(),
            node.arg(),
        ]);
        Self::spawn(node, command, &[])
    }

    fn spawn(node: &NodeDir, mut command: Command, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("daemon.log"))
            .unwrap();
        let mut child = command
            .env_remove("MBC_NODE_DIR")
            .env(
                "MBC_NODE_LOG",
                std::env::var("MBC_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "{} did not start: {line:?}\nlog:\n{}",
                node.arg(),
                std::fs::read_to_string(node.dir.join("daemon.log")).unwrap_or_default()
            )
        });
        Daemon {
            child,
            node: node.clone(),
            ready,
        }
    }

    /// `mbc-node status --json` of this node (through its local API).
    pub fn status(&self) -> Value {
        mbc(
            &self.node.dir,
            &["status", "--data-dir", self.node.arg(), "--json"],
        )
        .ok()
        .json()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.node.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits, at most [`WAIT`], for the process to end by itself (a test hook that aborts it).
    #[track_caller]
    pub fn wait_exit(mut self) {
        wait_for(&format!("{} to end", self.node.arg()), || {
            self.child.try_wait().unwrap().map(|_| ())
        });
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest a network of daemons started together may take to connect: a dial that failed
/// while its peer was still starting is retried after a delay that doubles up to the event
/// loop's 30 s cap, so the wait must outlast one full delay with room to spare.
pub const CONVERGE: Duration = Duration::from_secs(75);

/// Waits until every daemon holds roster `version` and is connected to `peers` peers.
#[track_caller]
pub fn wait_converged(daemons: &[&Daemon], version: u64, peers: u64) {
    for d in daemons {
        wait_within(
            CONVERGE,
            &format!("{} at roster v{version} with {peers} peers", d.node.arg()),
            || {
                let s = d.status();
                (s["network"]["roster_version"] == version && s["peers_connected"] == peers)
                    .then_some(())
            },
        );
    }
}
