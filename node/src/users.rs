//! The web dashboard's local accounts (`mbc-node users`): a name, a role, an Argon2id hash of
//! the password (the password itself is never stored), and the therapists the account acts
//! for (a clinician's own caseload, a supervisor's team), by pseudonym. What each role may see
//! is decided in one place, [`User`]'s methods; the dashboard asks them on every request.

use anyhow::{Context, Result, bail};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use protocol::pseudonym::{IdKind, Pseudonymiser};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::Store;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// What an account is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own caseload, their patients' pages and their own report card; runs matches.
    Clinician,
    /// Sees their team's caseloads, patients and report cards; runs matches.
    Supervisor,
    /// The clinic's administrator: every report card, import, the privacy budget and audit.
    /// No patient pages.
    Admin,
    /// The network coordinator: the roster, rounds and releases. No patient data.
    Coordinator,
}

impl Role {
    /// Every role, in the order the help lists them.
    pub const ALL: [Role; 4] = [
        Role::Clinician,
        Role::Supervisor,
        Role::Admin,
        Role::Coordinator,
    ];

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Coordinator => "coordinator",
        }
    }

    /// The role called `name`.
    pub fn parse(name: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == name.trim())
            .with_context(|| {
                format!("unknown role {name:?} (one of clinician, supervisor, admin, coordinator)")
            })
    }

    /// In words, for a page's header.
    pub fn title(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Supervisor => "supervisor",
            Role::Admin => "clinic admin",
            Role::Coordinator => "network coordinator",
        }
    }
}

/// A signed-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Therapist pseudonyms it acts for.
    pub therapists: Vec<String>,
}

impl User {
    /// Whether the account works with patients (a caseload, patient pages, matching).
    pub fn sees_patients(&self) -> bool {
        matches!(self.role, Role::Clinician | Role::Supervisor)
    }

    /// Whether a patient of therapist `therapist` (pseudonym) is this account's to see.
    pub fn sees_patient_of(&self, therapist: Option<&str>) -> bool {
        self.sees_patients()
            && therapist.is_some_and(|t| self.therapists.iter().any(|mine| mine == t))
    }

    /// Whether therapist `therapist`'s report card (private) is this account's to see: that
    /// therapist, their supervisors, and the clinic's administrators.
    pub fn sees_card_of(&self, therapist: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Clinician | Role::Supervisor => self.therapists.iter().any(|t| t == therapist),
            Role::Coordinator => false,
        }
    }

    /// Whether the account runs the clinic: imports, the privacy budget and audit.
    pub fn runs_clinic(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the account coordinates the network: roster, rounds, releases.
    pub fn coordinates(&self) -> bool {
        self.role == Role::Coordinator
    }
}

/// An account as `users list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// How many therapists it acts for.
    pub therapists: usize,
    /// When it was made.
    pub created_at: String,
    /// When it was disabled, if it was.
    pub disabled_at: Option<String>,
}

/// Makes account `name` with `role` acting for the therapists the clinic's exports call
/// `therapists`; refuses a name in use, a short password, and therapists that do not fit the
/// role (a clinician acts for exactly one, a supervisor for at least one, the others for none).
pub fn add(
    store: &Store,
    pseudo: &Pseudonymiser,
    name: &str,
    role: Role,
    therapists: &[String],
    password: &str,
    now: &str,
) -> Result<User> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        bail!("an account needs a name without control characters");
    }
    match (role, therapists.len()) {
        (Role::Clinician, 1) | (Role::Supervisor, 1..) | (Role::Admin | Role::Coordinator, 0) => {}
        (Role::Clinician, _) => {
            bail!("a clinician's account acts for exactly one therapist: give one --therapist")
        }
        (Role::Supervisor, _) => bail!("a supervisor's account needs its team: --therapist ID …"),
        _ => bail!(
            "a {} account acts for no therapist: leave out --therapist",
            role.name()
        ),
    }
    let hash = hash(password)?;
    let conn = store.conn();
    let tx = conn.unchecked_transaction()?;
    let taken: bool = tx.query_row(
        "SELECT count(*) > 0 FROM dashboard_user WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    if taken {
        bail!(
            "there is already an account called {name:?} (`users password` changes its password)"
        );
    }
    tx.execute(
        "INSERT INTO dashboard_user (name, role, password, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.name(), hash, now],
    )?;
    let id = tx.last_insert_rowid();
    let mut pseudonyms: Vec<String> = therapists
        .iter()
        .map(|t| pseudo.pseudonym(IdKind::Therapist, t))
        .collect();
    pseudonyms.sort();
    pseudonyms.dedup();
    for p in &pseudonyms {
        tx.execute(
            "INSERT INTO dashboard_user_therapist (user_id, therapist) VALUES (?1, ?2)",
            params![id, p],
        )?;
    }
    tx.commit()?;
    Ok(User {
        name: name.to_owned(),
        role,
        therapists: pseudonyms,
    })
}

/// The therapists of `raw` (as the exports name them) not yet in the store.
pub fn unknown_therapists(
    store: &Store,
    pseudo: &Pseudonymiser,
    raw: &[String],
) -> Result<Vec<String>> {
    let mut stmt = store
        .conn()
        .prepare("SELECT count(*) > 0 FROM therapist WHERE pseudonym = ?1")?;
    let mut out = Vec::new();
    for t in raw {
        let known: bool = stmt.query_row([pseudo.pseudonym(IdKind::Therapist, t)], |r| r.get(0))?;
        if !known {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Every account, enabled or not, by name.
pub fn list(store: &Store) -> Result<Vec<Account>> {
    let conn = store.conn();
    let mut stmt = conn.prepare(
        "SELECT u.name, u.role, u.created_at, u.disabled_at,
                (SELECT count(*) FROM dashboard_user_therapist t WHERE t.user_id = u.user_id)
         FROM dashboard_user u ORDER BY u.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (name, role, created_at, disabled_at, n) = row?;
        Ok(Account {
            name,
            role: Role::parse(&role)?,
            therapists: n as usize,
            created_at,
            disabled_at,
        })
    })
    .collect()
}

/// Disables account `name` (kept, so the audit keeps naming it); its sessions end when the
/// dashboard next checks it.
pub fn disable(store: &Store, name: &str, now: &str) -> Result<()> {
    let changed = store.conn().execute(
        "UPDATE dashboard_user SET disabled_at = ?2 WHERE name = ?1 AND disabled_at IS NULL",
        params![name.trim(), now],
    )?;
    if changed == 0 {
        bail!("no enabled account called {name:?} (`users list` shows them)");
    }
    Ok(())
}

/// Sets account `name`'s password.
pub fn set_password(store: &Store, name: &str, password: &str) -> Result<()> {
    let hash = hash(password)?;
    let changed = store.conn().execute(
        "UPDATE dashboard_user SET password = ?2 WHERE name = ?1 AND disabled_at IS NULL",
        params![name.trim(), hash],
    )?;
    if changed == 0 {
        bail!("no enabled account called {name:?} (`users list` shows them)");
    }
    Ok(())
}

/// The enabled account `name` (for a session's every request: a disabled account's session
/// ends there).
pub fn get(store: &Store, name: &str) -> Result<Option<User>> {
    let conn = store.conn();
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT user_id, role FROM dashboard_user WHERE name = ?1 AND disabled_at IS NULL",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, role)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT therapist FROM dashboard_user_therapist WHERE user_id = ?1 ORDER BY therapist",
    )?;
    let therapists = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(User {
        name: name.to_owned(),
        role: Role::parse(&role)?,
        therapists,
    }))
}

/// The enabled account `name` if `password` is its password. An unknown name costs the same
/// hash as a known one, so the time taken does not say which names exist.
pub fn verify(store: &Store, name: &str, password: &str) -> Result<Option<User>> {
    let stored: Option<String> = store
        .conn()
        .query_row(
            "SELECT password FROM dashboard_user WHERE name = ?1 AND disabled_at IS NULL",
            [name.trim()],
            |r| r.get(0),
        )
        .optional()?;
    let decoy;
    let phc = match &stored {
        Some(s) => s.as_str(),
        None => {
            decoy = hash("a decoy password nobody has")?;
            decoy.as_str()
        }
    };
    let parsed =
        PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("a stored password hash: {e}"))?;
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    if !ok || stored.is_none() {
        return Ok(None);
    }
    get(store, name.trim())
}

/// Records that `user` viewed the page `page` (`patient` or `print`) of episode `episode`
/// (rowid). The page is shown only once this is written.
pub fn record_view(store: &Store, user: &User, episode: i64, page: &str, now: &str) -> Result<()> {
    store.conn().execute(
        "INSERT INTO patient_view (at, user_name, role, episode_id, page)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![now, user.name, user.role.name(), episode, page],
    )?;
    Ok(())
}

/// One recorded view of a patient's page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// When.
    pub at: String,
    /// The account.
    pub user: String,
    /// Its role then.
    pub role: String,
    /// The episode (pseudonym, first 12 characters).
    pub episode: String,
    /// `patient` or `print`.
    pub page: String,
}

/// The latest `limit` views of patient pages, newest first; of one account when `user` is given.
pub fn views(store: &Store, user: Option<&str>, limit: usize) -> Result<Vec<View>> {
    let mut stmt = store.conn().prepare(
        "SELECT v.at, v.user_name, v.role, substr(e.pseudonym, 1, 12), v.page
         FROM patient_view v JOIN episode e USING (episode_id)
         WHERE ?1 IS NULL OR v.user_name = ?1 ORDER BY v.view_id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![user, limit as i64], |r| {
            Ok(View {
                at: r.get(0)?,
                user: r.get(1)?,
                role: r.get(2)?,
                episode: r.get(3)?,
                page: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The Argon2id hash (PHC string, default parameters) of `password` under a fresh salt from
/// the OS RNG.
fn hash(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD {
        bail!("a password needs at least {MIN_PASSWORD} characters");
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the operating system's random number generator failed"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("a salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("couldn't hash the password: {e}"))?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open_in_memory().unwrap()
    }

    fn pseudo() -> Pseudonymiser {
        Pseudonymiser::new(&[7; 32])
    }

    #[test]
    fn a_password_is_kept_only_as_its_hash_and_checked() {
        let s = store();
        let p = pseudo();
        let u = add(
            &s,
            &p,
            "anna",
            Role::Clinician,
            &["T1".into()],
            "correct horse",
            "t",
        )
        .unwrap();
        assert_eq!(u.therapists, vec![p.pseudonym(IdKind::Therapist, "T1")]);
        let stored: String = s
            .conn()
            .query_row("SELECT password FROM dashboard_user", [], |r| r.get(0))
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert_eq!(verify(&s, "anna", "correct horse").unwrap(), Some(u));
        assert_eq!(verify(&s, "anna", "wrong horse!").unwrap(), None);
        assert_eq!(verify(&s, "bob", "correct horse").unwrap(), None);
        disable(&s, "anna", "t2").unwrap();
        assert_eq!(verify(&s, "anna", "correct horse").unwrap(), None);
        assert_eq!(get(&s, "anna").unwrap(), None);
    }

    #[test]
    fn accounts_that_do_not_fit_their_role_are_refused() {
        let s = store();
        let p = pseudo();
        let t = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let refused = |role, ids: &[&str], pw: &str| {
            add(&s, &p, "x", role, &t(ids), pw, "t")
                .unwrap_err()
                .to_string()
        };
        assert!(refused(Role::Clinician, &[], "long enough").contains("exactly one"));
        assert!(refused(Role::Clinician, &["a", "b"], "long enough").contains("exactly one"));
        assert!(refused(Role::Supervisor, &[], "long enough").contains("team"));
        assert!(refused(Role::Admin, &["a"], "long enough").contains("no therapist"));
        assert!(refused(Role::Admin, &[], "short").contains("at least 10"));
        add(&s, &p, "x", Role::Admin, &[], "long enough", "t").unwrap();
        assert!(refused(Role::Admin, &[], "long enough").contains("already"));
        assert_eq!(list(&s).unwrap().len(), 1);
    }

    #[test]
    fn each_role_sees_what_it_is_for() {
        let user = |role, therapists: &[&str]| User {
            name: "u".into(),
            role,
            therapists: therapists.iter().map(|s| s.to_string()).collect(),
        };
        let clinician = user(Role::Clinician, &["t1"]);
        let supervisor = user(Role::Supervisor, &["t1", "t2"]);
        let admin = user(Role::Admin, &[]);
        let coordinator = user(Role::Coordinator, &[]);
        assert!(clinician.sees_patient_of(Some("t1")));
        assert!(!clinician.sees_patient_of(Some("t2")));
        assert!(!clinician.sees_patient_of(None));
        assert!(supervisor.sees_patient_of(Some("t2")));
        assert!(!admin.sees_patient_of(Some("t1")));
        assert!(!coordinator.sees_patient_of(Some("t1")));
        assert!(clinician.sees_card_of("t1") && !clinician.sees_card_of("t2"));
        assert!(supervisor.sees_card_of("t2") && !supervisor.sees_card_of("t3"));
        assert!(admin.sees_card_of("t3") && !coordinator.sees_card_of("t1"));
        assert!(admin.runs_clinic() && !clinician.runs_clinic());
        assert!(coordinator.coordinates() && !admin.coordinates());
    }
}
