//! The node handle: one clinic's data directory opened once (its config, its store, its signing
//! key and its pseudonymiser) and held by every service, command and daemon task that works on
//! it, instead of a path each reopens.
//!
//! [`Node::init`] creates a node (config, keys, an encrypted store); [`Node::open`] opens one,
//! refusing a data directory that others can read; [`Node::import_files`] and [`Node::derive`]
//! are the two jobs nearly every command starts with. The store sits behind a mutex so that the
//! daemon's tasks can share one handle: hold the guard of [`Node::store`] for one job, never
//! across an `await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, bail};
use protocol::keys::Signer;
use protocol::pseudonym::Pseudonymiser;

use crate::config::{CONFIG_FILE, Config, NetworkConfig};
use crate::import::{self, FileOutcome};
use crate::store::{Clinic, Store, StoreKey};
use crate::{benchmark, clock, keystore, stats};

/// Name of the store key file in the key directory.
pub const STORE_KEY_FILE: &str = "store.key";

/// Files of a node in its data directory besides the store's (what `init` refuses to
/// overwrite, with the store's two databases, and removes when it fails half-way, with every
/// file of the store: see [`store_files`]).
const NODE_FILES: [&str; 3] = [CONFIG_FILE, "identity.key", "pseudonym.key"];

/// The files of the store at `store`: its two databases and the files SQLite keeps beside
/// them (write-ahead log, shared memory, rollback journal, and the super-journal of a
/// transaction over both, `<db>-mj<random>`), those that exist.
fn store_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for db in [store.to_path_buf(), crate::store::ledger_path(store)] {
        let name = db
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.push(db.clone());
        for suffix in ["-wal", "-shm", "-journal"] {
            out.push(crate::store::sidecar(&db, suffix));
        }
        let super_journals = db
            .parent()
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}-mj")))
            });
        out.extend(super_journals);
    }
    out.retain(|p| p.exists());
    out
}

/// Which benchmark the local track records are measured against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reference {
    /// The latest network release kept, else the clinic's own data.
    #[default]
    Latest,
    /// This network release (an error when the node does not keep it).
    Release(String),
    /// The clinic's own data, even when a network release is kept.
    Local,
}

/// An opened node.
pub struct Node {
    dir: PathBuf,
    config: Config,
    store: Mutex<Store>,
    identity: [u8; keystore::KEY_LEN],
    signer: Arc<Signer>,
    pseudonymiser: Pseudonymiser,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates a node in `dir` with the given `[network]` settings, its store encrypted under a
    /// fresh key in `key_dir` (created 0700 if missing; [`default_key_dir`] unless the clinic
    /// chose one). Returns its PeerId. A directory that already holds a node is refused; a
    /// failure half-way removes what was created.
    pub fn init(
        dir: &Path,
        clinic: &Clinic,
        network: NetworkConfig,
        dashboard: crate::config::DashboardConfig,
        key_dir: &Path,
    ) -> Result<String> {
        let store = dir.join(crate::config::StoreConfig::default().path);
        let mut mine: Vec<PathBuf> = NODE_FILES.iter().map(|f| dir.join(f)).collect();
        mine.extend([crate::store::ledger_path(&store), store]);
        if let Some(found) = mine.iter().find(|p| p.exists()) {
            bail!(
                "{} already holds an mbc-node (found {}); refusing to overwrite it",
                dir.display(),
                found.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("couldn't create data directory {}", dir.display()))?;
        // The directory holds pseudonymised health data and keys: owner only.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("couldn't restrict permissions of {}", dir.display()))?;
        let mut config = Config::new(
            clinic.name.clone(),
            clinic.country.clone(),
            clinic.service_type.clone(),
        );
        config.network = network;
        config.dashboard = dashboard;
        let store_key = store_key_path(dir, key_dir)?;
        config.keys.store_key_file = Some(store_key.to_string_lossy().into_owned());
        let created = || -> Result<String> {
            let key = create_store_key(&store_key)?;
            let identity = dir.join(&config.keys.identity_key_file);
            keystore::create_key_file(&identity)?;
            keystore::create_key_file(&dir.join(&config.keys.pseudonym_secret_file))?;
            Store::create(&config.store_path(dir), clinic, &clock::now(), Some(&key))?;
            // The config is written last: its presence marks a complete node.
            std::fs::write(dir.join(CONFIG_FILE), config.to_toml())
                .with_context(|| format!("couldn't write {}", dir.join(CONFIG_FILE).display()))?;
            Ok(keystore::peer_id(keystore::read_key_file(&identity)?)?.to_string())
        };
        created().inspect_err(|_| {
            for f in NODE_FILES {
                let _ = std::fs::remove_file(dir.join(f));
            }
            for f in store_files(&config.store_path(dir)) {
                let _ = std::fs::remove_file(f);
            }
            let _ = std::fs::remove_file(&store_key);
        })
    }

    /// Opens the node in `dir`: its config, its store (with its key when it is encrypted), its
    /// identity and its pseudonymisation secret. A data directory that other users can enter
    /// or read is refused (it holds the store and the keys).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Store::open)
    }

    /// [`Node::open`] for commands that only read: on a full disk the store is still read
    /// ([`Store::open_read_only`]).
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Store::open_read_only)
    }

    fn open_with(dir: &Path, open: fn(&Path, Option<&StoreKey>) -> Result<Store>) -> Result<Self> {
        check_private(dir)?;
        let config = Config::load(dir)?;
        let key = config
            .store_key_path(dir)
            .map(|path| {
                keystore::read_key_file(&path)
                    .map(StoreKey::new)
                    .with_context(|| {
                        format!(
                            "the store of {} is encrypted with the key in {} ([keys] \
                         store_key_file): restore that file from its backup",
                            dir.display(),
                            path.display()
                        )
                    })
            })
            .transpose()?;
        let store = open(&config.store_path(dir), key.as_ref())?;
        let identity = keystore::read_key_file(&dir.join(&config.keys.identity_key_file))?;
        let pseudonymiser = keystore::pseudonymiser(&dir.join(&config.keys.pseudonym_secret_file))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            signer: Arc::new(keystore::signer(identity)),
            config,
            store: Mutex::new(store),
            identity,
            pseudonymiser,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration, as read at [`Node::open`] (changes take effect at the next open).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store, for one job. A job that panicked left no transaction open (SQLite rolls it
    /// back), so a poisoned lock is taken over.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's signing key (its identity).
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The node's libp2p identity (the same seed as [`Node::signer`]).
    pub fn identity_keypair(&self) -> Result<libp2p::identity::Keypair> {
        keystore::identity_keypair(self.identity)
    }

    /// The pseudonymiser under this node's secret.
    pub fn pseudonymiser(&self) -> &Pseudonymiser {
        &self.pseudonymiser
    }

    /// Imports `files`, each in its own transaction, stopping at the first bad file (whose
    /// error says what of the others was imported).
    pub fn import_files(
        &self,
        files: &[PathBuf],
        options: import::Options,
    ) -> Result<Vec<FileOutcome>> {
        let mut store = self.store();
        let mut outcomes = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let outcome = import::import_file(
                &mut store,
                &self.pseudonymiser,
                file,
                &options,
                &clock::now(),
            )
            .map_err(|e| e.context(not_imported(i, files.len() - i - 1)))?;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Imports one uploaded file named `name` (the dashboard), whole or not at all, as
    /// `import` does; then raises the alerts of what it added.
    pub fn import_upload(
        &self,
        name: &str,
        content: Vec<u8>,
    ) -> Result<(FileOutcome, Option<crate::alerts::Raised>)> {
        let options = import::Options {
            episode_gap_weeks: self.config.import.episode_gap_weeks,
            ..Default::default()
        };
        let outcome = {
            let mut store = self.store();
            import::import_bytes(
                &mut store,
                &self.pseudonymiser,
                name,
                content,
                &options,
                &clock::now(),
            )?
        };
        let alerts = (outcome.status == "imported")
            .then(|| self.raise_alerts())
            .transpose()?;
        Ok((outcome, alerts))
    }

    /// Assesses the open episodes' new sessions and raises their alerts (after an import).
    pub fn raise_alerts(&self) -> Result<crate::alerts::Raised> {
        let store = self.store();
        let import_id: Option<i64> =
            store
                .conn()
                .query_row("SELECT max(import_id) FROM imports", [], |r| r.get(0))?;
        crate::alerts::raise(
            &store,
            self.config.import.episode_gap_weeks,
            &Default::default(),
            &self.config.support.network_reference,
            import_id,
            &clock::now(),
        )
    }

    /// The clinical-support page of the patient `who`, with `[import]`'s episode gap and
    /// `[support]`'s network reference.
    pub fn support(&self, who: &crate::support::Who) -> Result<crate::support::PatientSupport> {
        crate::support::patient(
            &self.store(),
            self.pseudonymiser(),
            who,
            self.config.import.episode_gap_weeks,
            &Default::default(),
            &self.config.support.network_reference,
        )
    }

    /// Where the episode `who` names is stored, and its therapist.
    pub fn locate(&self, who: &crate::support::Who) -> Result<crate::support::Located> {
        crate::support::locate(&self.store(), self.pseudonymiser(), who)
    }

    /// The clinical-support page of `who` as staff see it: with whether its signals passed
    /// validation, whether not-on-track alerts are on for its instruments, and the episode's
    /// unresolved alerts.
    pub fn support_page(
        &self,
        who: &crate::support::Who,
    ) -> Result<(crate::support::PatientSupport, Vec<crate::alerts::Alert>)> {
        let mut page = self.support(who)?;
        let store = self.store();
        let switches = crate::support::validate::switches(&store)?;
        page.validated = page.instruments.iter().all(|i| {
            switches
                .iter()
                .any(|s| s.instrument == i.instrument && s.on)
        });
        page.alerts = switches
            .into_iter()
            .filter(|s| {
                page.instruments
                    .iter()
                    .any(|i| i.instrument == s.instrument)
            })
            .collect();
        let open = crate::alerts::unresolved(&store, page.episode_rowid)?;
        Ok((page, open))
    }

    /// The engine settings of `[stats]` with `overrides`.
    pub fn engine_settings(
        &self,
        overrides: &stats::Overrides,
    ) -> Result<protocol::analysis::Settings> {
        let store = self.store();
        stats::settings(
            &overrides.apply(&self.config.stats),
            store.registry()?.instruments(),
        )
    }

    /// Runs the engine with `[stats]` plus `overrides`, against the benchmark `reference`
    /// selects.
    pub fn derive(
        &self,
        overrides: &stats::Overrides,
        reference: &Reference,
    ) -> Result<stats::Derived> {
        let mut settings = self.engine_settings(overrides)?;
        let mut store = self.store();
        let wanted = match reference {
            Reference::Local => None,
            Reference::Latest => Some(None),
            Reference::Release(id) => Some(Some(id.as_str())),
        };
        if let Some(id) = wanted {
            let release = benchmark::get(store.conn(), id)?;
            if release.is_none()
                && let Some(id) = id
            {
                bail!("no benchmark release {id:?} on this node (see `mbc-node benchmark list`)");
            }
            settings.reference = release.as_ref().map(benchmark::reference);
        }
        let stats_config = overrides.apply(&self.config.stats);
        let country = self.config.clinic.country.as_deref();
        let national = stats::national_figures(&stats_config, country)?;
        let mut derived = stats::derive(&mut store, settings, &clock::now())?;
        derived.national = national;
        Ok(derived)
    }
}

/// What an import that failed at file `i` did to the others (`rest` after it).
fn not_imported(done: usize, rest: usize) -> String {
    match (done, rest) {
        (0, 0) => "nothing was imported".to_string(),
        (done, 0) => {
            format!("nothing of this file was imported; the {done} file(s) before it were")
        }
        (0, rest) => {
            format!("nothing was imported; the {rest} file(s) after it were not attempted")
        }
        (done, rest) => format!(
            "nothing of this file was imported; the {done} file(s) before it were, the {rest} \
             after it were not attempted"
        ),
    }
}

/// Where `init` keeps the store key of the node in `dir` unless told: `DIR.keys` beside it, so
/// that a copy of the data directory does not carry the key that opens its store.
pub fn default_key_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "mbc-node".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.keys"))
}

/// The store key file of the node in `dir` in `key_dir`, as an absolute path: refused inside
/// the data directory (the key must be kept apart from the data it opens) or if it exists.
pub fn store_key_path(dir: &Path, key_dir: &Path) -> Result<PathBuf> {
    let key_dir = std::path::absolute(key_dir)
        .with_context(|| format!("couldn't resolve the key directory {}", key_dir.display()))?;
    if key_dir.starts_with(std::path::absolute(dir)?) {
        bail!(
            "the key directory {} is inside the data directory: the store key must be kept \
             apart from the data it opens",
            key_dir.display()
        );
    }
    let store_key = key_dir.join(STORE_KEY_FILE);
    if store_key.exists() {
        bail!(
            "{} already holds a store key (another node's?); give each node its own --key-dir",
            store_key.display()
        );
    }
    Ok(store_key)
}

/// Creates the directory of `path` (0700) and a fresh store key in `path` (0600).
pub fn create_store_key(path: &Path) -> Result<StoreKey> {
    let key_dir = path.parent().context("a store key path has a directory")?;
    std::fs::create_dir_all(key_dir)
        .with_context(|| format!("couldn't create key directory {}", key_dir.display()))?;
    std::fs::set_permissions(key_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("couldn't restrict permissions of {}", key_dir.display()))?;
    keystore::create_key_file(path)?;
    Ok(StoreKey::new(keystore::read_key_file(path)?))
}

/// Refuses a data directory whose mode lets other users read or enter it.
pub fn check_private(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(()); // Missing: Config::load says so, with the hint to run init.
    }
    keystore::check_owner_only(
        dir,
        "the data directory (pseudonymised health records and the node's keys)",
        0o700,
    )
}

/// For tests: a node in `root/node` (named "Test", default config) holding one synthetic
/// clinic of about `patients` patients from `seed`, imported from `root/data`.
#[cfg(test)]
pub(crate) fn synthetic_node(root: &Path, seed: u64, patients: u32) -> Node {
    let data = root.join("data");
    let summary = crate::synth::generate_to_dir(
        &crate::synth::Params {
            clinics: 1,
            seed,
            patients_per_clinic: Some(patients),
            ..Default::default()
        },
        &data,
    )
    .unwrap();
    let dir = root.join("node");
    let clinic = crate::store::Clinic {
        name: "Test".into(),
        country: None,
        service_type: None,
    };
    Node::init(
        &dir,
        &clinic,
        Default::default(),
        Default::default(),
        &default_key_dir(&dir),
    )
    .unwrap();
    let node = Node::open(&dir).unwrap();
    let files: Vec<_> = summary.clinics[0]
        .csv_files
        .iter()
        .map(|f| data.join(f))
        .collect();
    node.import_files(&files, Default::default()).unwrap();
    node
}
