//! `mbc-node network …` and `mbc-node run`: membership on the command line, and the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use protocol::keys::Signer;
use protocol::roster::{JoinRequest, SignedRoster};
use serde_json::{Value, json};

use super::DataDir;
use crate::api::{self, EchoRequest, EchoStats, Published};
use crate::config::Config;
use crate::daemon::{self, LogFormat};
use crate::net::PeerInfo;
use crate::node::Node;
use crate::{clock, membership};

#[derive(Debug, Subcommand)]
pub(super) enum NetworkCommand {
    /// Create a network with this node as its coordinator (roster version 1)
    ///
    /// Example: mbc-node network create --data-dir /srv/coord --network-id uk-tt-2026
    Create {
        #[command(flatten)]
        dir: DataDir,
        /// The network's id: letters, digits, '.', '_' or '-'
        #[arg(long)]
        network_id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Write this clinic's signed request to join a network, for the coordinator
    ///
    /// Example: mbc-node network join-request --data-dir /srv/mbc --network-id uk-tt-2026 --out join.json
    JoinRequest {
        #[command(flatten)]
        dir: DataDir,
        /// The network to join (the coordinator tells you its id)
        #[arg(long)]
        network_id: String,
        /// Address other clinics dial (default: [network] advertise or listen in config.toml)
        #[arg(long = "addr", value_name = "MULTIADDR")]
        addrs: Vec<String>,
        /// The request file to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Admit a clinic's join request (coordinator): sign and publish the next roster
    ///
    /// Example: mbc-node network admit --data-dir /srv/coord join.json --out roster.json
    Admit {
        #[command(flatten)]
        dir: DataDir,
        /// The clinic's join request
        request: PathBuf,
        /// Also write the new roster here, to send to the clinic
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove a clinic (coordinator): every node closes and refuses its connections
    ///
    /// Example: mbc-node network remove --data-dir /srv/coord 12D3KooW...
    Remove {
        #[command(flatten)]
        dir: DataDir,
        /// The clinic's PeerId
        peer: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Join a network with the roster the coordinator sent (pins its network id and key)
    ///
    /// Example: mbc-node network join --data-dir /srv/mbc --roster roster.json --coordinator 12D3KooW...
    Join {
        #[command(flatten)]
        dir: DataDir,
        /// The signed roster listing this clinic
        #[arg(long, value_name = "FILE")]
        roster: PathBuf,
        /// The coordinator's PeerId, as told to you out of band; refused if it differs
        #[arg(long, value_name = "PEER_ID")]
        coordinator: Option<String>,
    },
    /// Show the roster in force, or write it as signed JSON
    ///
    /// Example: mbc-node network roster --data-dir /srv/coord --out roster.json
    Roster {
        #[command(flatten)]
        dir: DataDir,
        /// Write the signed roster here instead of printing it
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Roster members and their connections, from the running node
    ///
    /// Example: mbc-node network peers --data-dir /srv/mbc
    Peers {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Measure signed request-response round trips to a peer, from the running node
    ///
    /// Example: mbc-node network ping --data-dir /srv/mbc 12D3KooW... --count 100
    Ping {
        #[command(flatten)]
        dir: DataDir,
        /// The peer's PeerId
        peer: String,
        /// Round trips
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Payload bytes
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Log one JSON object per line instead of text (stderr; level from MBC_NODE_LOG)
    #[arg(long)]
    log_json: bool,
}

pub(super) fn run_cmd(a: RunArgs) -> Result<()> {
    daemon::init_logging(
        if a.log_json {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
        "info",
    );
    daemon::run(&a.dir.data_dir)
}

/// The node's signer (the key of its identity seed).
/// A coordinator's roster change (admit or remove): sign and store the next version, tell a
/// running node to publish it. Returns the roster, the publish outcome and the signer.
fn change_roster(
    dir: &Path,
    change: impl FnOnce(&mut rusqlite::Connection, &Signer, (i64, &str)) -> Result<SignedRoster>,
) -> Result<(SignedRoster, String, Arc<Signer>)> {
    let node = Node::open(dir)?;
    let roster = change(
        node.store().conn_mut(),
        node.signer(),
        (clock::now_utc().timestamp(), &clock::now()),
    )?;
    Ok((roster, publish(dir), node.signer().clone()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("couldn't read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid {what}", path.display()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("couldn't write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("couldn't write {}", path.display()))
}

fn advertised(config: &Config, addrs: Vec<String>) -> Result<Vec<String>> {
    let addrs = if addrs.is_empty() {
        config.network.advertised()
    } else {
        addrs
    };
    for a in &addrs {
        a.parse::<libp2p::Multiaddr>().with_context(|| {
            format!("{a:?} is not a multiaddress (e.g. /ip4/10.0.0.5/tcp/7400)")
        })?;
    }
    Ok(addrs)
}

/// The roster as people and scripts read it: PeerIds beside keys.
fn roster_json(r: &SignedRoster) -> Value {
    let members: Vec<Value> = r
        .roster
        .members
        .iter()
        .map(|m| {
            json!({"peer_id": membership::peer_id(&m.key).to_string(), "name": m.name,
                   "role": m.role, "addrs": m.addrs})
        })
        .collect();
    json!({
        "network_id": r.roster.network_id,
        "version": r.roster.version,
        "coordinator": membership::peer_id(&r.roster.coordinator).to_string(),
        "issued_at": r.roster.issued_at,
        "members": members,
    })
}

fn print_roster(r: &SignedRoster) {
    println!(
        "network {} · roster version {} · coordinator {}",
        r.roster.network_id,
        r.roster.version,
        membership::peer_id(&r.roster.coordinator)
    );
    for m in &r.roster.members {
        println!(
            "  {:<11} {}  {}  {}",
            format!("{:?}", m.role).to_lowercase(),
            membership::peer_id(&m.key),
            m.name,
            m.addrs.join(" ")
        );
    }
}

/// Tells a running daemon to adopt and gossip the newest stored roster.
fn publish(dir: &Path) -> String {
    match api::post::<Published>(dir, "/v1/roster/publish", None::<&()>) {
        Ok(p) if p.published => "published to the network by the running node".into(),
        Ok(p) => format!(
            "adopted by the running node; gossip not sent yet ({}); peers pull it on connect",
            p.note.as_deref().unwrap_or("no peers")
        ),
        Err(_) => "the node is not running; it publishes the roster when started".into(),
    }
}

pub(super) fn network_cmd(command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create {
            dir,
            network_id,
            json,
        } => {
            let dir = &dir.data_dir;
            let node = Node::open(dir)?;
            let config = node.config();
            let addrs = advertised(config, Vec::new())?;
            let roster = membership::create(
                node.store().conn_mut(),
                node.signer(),
                &network_id,
                &config.clinic.name,
                addrs,
                (clock::now_utc().timestamp(), &clock::now()),
            )?;
            if json {
                println!("{}", roster_json(&roster));
            } else {
                println!("created network {network_id:?}; this node is its coordinator");
                print_roster(&roster);
                println!(
                    "next: clinics send you `mbc-node network join-request --network-id {network_id} --out join.json`; \
                     you run `mbc-node network admit join.json --out roster.json`"
                );
            }
        }
        NetworkCommand::JoinRequest {
            dir,
            network_id,
            addrs,
            out,
        } => {
            let dir = &dir.data_dir;
            let node = Node::open(dir)?;
            let (config, signer) = (node.config(), node.signer());
            let addrs = advertised(config, addrs)?;
            if addrs.is_empty() {
                bail!(
                    "no address other clinics can dial: set [network] advertise in config.toml or pass --addr /ip4/…/tcp/PORT"
                );
            }
            let request = JoinRequest::new(
                &network_id,
                signer,
                &config.clinic.name,
                addrs,
                clock::now_utc().timestamp(),
            )?;
            write_json(&out, &request)?;
            println!(
                "wrote {} for {} (peer id {}); send it to the coordinator",
                out.display(),
                config.clinic.name,
                membership::peer_id(&signer.key())
            );
        }
        NetworkCommand::Admit {
            dir,
            request,
            out,
            json,
        } => {
            let dir = &dir.data_dir;
            let req: JoinRequest = read_json(&request, "join request")?;
            let (roster, published, signer) = change_roster(dir, |conn, signer, now| {
                membership::admit(conn, signer, &req, now)
                    .with_context(|| format!("couldn't admit {}", request.display()))
            })?;
            if let Some(out) = &out {
                write_json(out, &roster)?;
            }
            if json {
                println!(
                    "{}",
                    json!({"roster": roster_json(&roster), "publish": published})
                );
            } else {
                println!(
                    "admitted {} ({}): roster version {}; {published}",
                    req.name,
                    membership::peer_id(&req.key),
                    roster.roster.version
                );
                if let Some(out) = out {
                    println!(
                        "send {} to the clinic: mbc-node network join --roster {} --coordinator {}",
                        out.display(),
                        out.file_name().unwrap_or_default().to_string_lossy(),
                        membership::peer_id(&signer.key())
                    );
                }
            }
        }
        NetworkCommand::Remove { dir, peer, json } => {
            let (roster, published, _) = change_roster(&dir.data_dir, |conn, signer, now| {
                membership::remove(conn, signer, &peer, now)
            })?;
            if json {
                println!(
                    "{}",
                    json!({"roster": roster_json(&roster), "publish": published})
                );
            } else {
                println!(
                    "removed {peer}: roster version {}; {published}",
                    roster.roster.version
                );
            }
        }
        NetworkCommand::Join {
            dir,
            roster,
            coordinator,
        } => {
            let dir = &dir.data_dir;
            let node = Node::open(dir)?;
            let own = node.signer().key();
            let signed: SignedRoster = read_json(&roster, "signed roster")?;
            membership::join(
                node.store().conn_mut(),
                &own,
                &signed,
                coordinator.as_deref(),
                &clock::now(),
            )
            .with_context(|| format!("couldn't join with {}", roster.display()))?;
            println!(
                "joined network {:?} (roster version {}); coordinator {} is pinned",
                signed.roster.network_id,
                signed.roster.version,
                membership::peer_id(&signed.roster.coordinator)
            );
            if coordinator.is_none() {
                println!(
                    "check that PeerId with your coordinator out of band: only rosters it signs will be accepted"
                );
            }
            println!("next: mbc-node run --data-dir {}", dir.display());
        }
        NetworkCommand::Roster { dir, out, json } => {
            let m = membership::load(Node::open(&dir.data_dir)?.store().conn())?
                .context("this node is not in a network")?;
            match out {
                Some(out) => {
                    write_json(&out, &m.roster)?;
                    println!(
                        "wrote roster version {} to {}",
                        m.roster.roster.version,
                        out.display()
                    );
                }
                None if json => println!("{}", roster_json(&m.roster)),
                None => print_roster(&m.roster),
            }
        }
        NetworkCommand::Peers { dir, json } => {
            let peers: Vec<PeerInfo> = api::get(&dir.data_dir, "/v1/peers")?;
            if json {
                println!("{}", serde_json::json!({ "peers": peers }));
            } else {
                let up = peers.iter().filter(|p| p.connected).count();
                println!("{up} of {} roster members connected", peers.len());
                for p in peers {
                    println!(
                        "  {:<4} {:<11} {}  {}  {}",
                        if p.connected { "up" } else { "down" },
                        match p.role {
                            protocol::roster::Role::Coordinator => "coordinator",
                            protocol::roster::Role::Clinic => "clinic",
                        },
                        p.peer_id,
                        p.name,
                        p.address.as_deref().unwrap_or("")
                    );
                }
            }
        }
        NetworkCommand::Ping {
            dir,
            peer,
            count,
            size,
            json,
        } => {
            let request = EchoRequest {
                peer: peer.clone(),
                count,
                size,
            };
            let r: EchoStats = api::post(&dir.data_dir, "/v1/echo", Some(&request))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{count} signed round trips to {peer}: p50 {:.0} µs, p99 {:.0} µs",
                    r.p50_us, r.p99_us
                );
            }
        }
    }
    Ok(())
}
