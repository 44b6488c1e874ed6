//! `mbc-node users add | list | disable | password`: the web dashboard's local accounts
//! (node/src/users.rs). Passwords are read from the terminal without echo, or from the first
//! line of standard input with `--password-stdin`; they are stored only as Argon2id hashes.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::DataDir;
use crate::clock;
use crate::node::Node;
use crate::users::{self, Role};

#[derive(Debug, Subcommand)]
pub(super) enum UsersCommand {
    /// Make an account: a clinician for one therapist, a supervisor for a team, a clinic admin
    /// or a network coordinator
    ///
    /// A clinician sees their own caseload and report card; a supervisor their team's; an
    /// admin every report card, imports, the privacy budget and audit, but no patient pages;
    /// a coordinator the network. Therapists are named as the clinic's exports name them.
    ///
    /// Example: mbc-node users add anna --data-dir /srv/mbc --role clinician --therapist T07
    Add(AddArgs),
    /// Every account, with its role and whether it is disabled
    ///
    /// Example: mbc-node users list --data-dir /srv/mbc
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Disable an account (kept, so the audit of patient views keeps its name)
    ///
    /// Example: mbc-node users disable anna --data-dir /srv/mbc
    Disable {
        /// The account's name
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Set an account's password
    ///
    /// Example: mbc-node users password anna --data-dir /srv/mbc
    Password {
        /// The account's name
        name: String,
        #[command(flatten)]
        dir: DataDir,
        /// Read the password from the first line of standard input (for scripts)
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// The account's name (what its owner types to sign in)
    name: String,
    #[command(flatten)]
    dir: DataDir,
    /// clinician, supervisor, admin or coordinator
    #[arg(long)]
    role: String,
    /// A therapist the account acts for, as the exports name them (a clinician: one; a
    /// supervisor: each of the team; repeatable)
    #[arg(long = "therapist", value_name = "ID")]
    therapists: Vec<String>,
    /// Read the password from the first line of standard input (for scripts)
    #[arg(long)]
    password_stdin: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub(super) fn users_cmd(c: UsersCommand) -> Result<()> {
    match c {
        UsersCommand::Add(a) => add(a),
        UsersCommand::List { dir, json } => list(&dir, json),
        UsersCommand::Disable { name, dir } => {
            let node = Node::open(&dir.data_dir)?;
            users::disable(&node.store(), &name, &clock::now())?;
            println!("disabled {name}; their sessions end at their next request");
            Ok(())
        }
        UsersCommand::Password {
            name,
            dir,
            password_stdin,
        } => {
            let node = Node::open(&dir.data_dir)?;
            if users::get(&node.store(), &name)?.is_none() {
                bail!("no enabled account called {name:?} (`users list` shows them)");
            }
            let password = read_password(password_stdin)?;
            users::set_password(&node.store(), &name, &password)?;
            println!("set the password of {name}");
            Ok(())
        }
    }
}

fn add(a: AddArgs) -> Result<()> {
    let role = Role::parse(&a.role)?;
    let node = Node::open(&a.dir.data_dir)?;
    let password = read_password(a.password_stdin)?;
    let store = node.store();
    let user = users::add(
        &store,
        node.pseudonymiser(),
        &a.name,
        role,
        &a.therapists,
        &password,
        &clock::now(),
    )?;
    let unknown = users::unknown_therapists(&store, node.pseudonymiser(), &a.therapists)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "name": user.name,
                "role": user.role,
                "therapists": user.therapists.len(),
                "not_yet_imported": unknown,
            }))?
        );
        return Ok(());
    }
    println!(
        "added {} ({}{})",
        user.name,
        role.title(),
        match user.therapists.len() {
            0 => String::new(),
            1 => ", one therapist".into(),
            n => format!(", {n} therapists"),
        }
    );
    if !unknown.is_empty() {
        println!(
            "note: not in the store yet: {} (their patients appear after their first import)",
            unknown.join(", ")
        );
    }
    println!("they sign in to the dashboard that `mbc-node run` serves");
    Ok(())
}

fn list(dir: &DataDir, json: bool) -> Result<()> {
    let node = Node::open(&dir.data_dir)?;
    let accounts = users::list(&node.store())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&accounts)?);
        return Ok(());
    }
    if accounts.is_empty() {
        println!("no accounts yet: `mbc-node users add NAME --role …` makes one");
        return Ok(());
    }
    println!(
        "{:<20} {:<20} {:>10}  {:<25} state",
        "name", "role", "therapists", "created"
    );
    for a in accounts {
        println!(
            "{:<20} {:<20} {:>10}  {:<25} {}",
            a.name,
            a.role.title(),
            a.therapists,
            a.created_at,
            a.disabled_at
                .map_or("enabled".to_string(), |d| format!("disabled {d}"))
        );
    }
    Ok(())
}

/// The password: the first line of standard input, or typed twice at the terminal.
fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("couldn't read the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("not at a terminal: give --password-stdin and the password on standard input");
    }
    let first = rpassword::prompt_password("password: ").context("couldn't read the password")?;
    let again = rpassword::prompt_password("again: ").context("couldn't read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}
