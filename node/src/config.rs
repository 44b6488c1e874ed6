//! The node's configuration file, `config.toml` in the data directory.
//!
//! Closed (`deny_unknown_fields`): a misspelt key is an error, not a silent default. Key
//! material is referenced by path, never inlined. Paths are relative to the data directory.
//!
//! ```
//! let text = r#"
//! [clinic]
//! name = "Riverside Talking Therapies"
//! country = "GB"
//! "#;
//! let config = mbc_node::config::Config::parse(text).unwrap();
//! assert_eq!(config.clinic.name, "Riverside Talking Therapies");
//! assert_eq!(config.store.path, "local.db");
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Name of the configuration file inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub clinic: ClinicConfig,
    /// Where the local store lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where key material lives.
    #[serde(default)]
    pub keys: KeysConfig,
    /// How imports read files that do not say everything.
    #[serde(default)]
    pub import: ImportConfig,
    /// How track records are computed.
    #[serde(default)]
    pub stats: StatsConfig,
    /// When clinical-support signals may raise alerts.
    #[serde(default)]
    pub support: SupportConfig,
    /// How `match` ranks therapists, and where the clinic's sites are.
    #[serde(default)]
    pub matching: MatchingConfig,
    /// The clinic's entry in the network's referral directory.
    #[serde(default)]
    pub directory: DirectoryConfig,
    /// The clinic's privacy budget and contribution bounds.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// How the node takes part in the network.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Rounds the coordinator starts by itself.
    #[serde(default)]
    pub rounds: RoundsConfig,
    /// `[dashboard]`.
    #[serde(default)]
    pub dashboard: DashboardConfig,
}

/// `[matching]`: how `match` weighs track records against preferences, how long a shortlist
/// is and what waits it offers (DOMAIN.md §3; protocol::matching).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// Weight of the track record against the patient's preferences, 0–1. Default 0.5.
    #[serde(default = "default_weight")]
    pub track_record_weight: f64,
    /// Therapists on a shortlist, 3–5. Default 5.
    #[serde(default = "default_shortlist")]
    pub shortlist: usize,
    /// Longest wait offered to a routine patient (a request may say otherwise). Default 28.
    #[serde(default = "default_max_wait")]
    pub max_wait_days: u32,
    /// Longest wait offered to an urgent patient. Default 7.
    #[serde(default = "default_urgent_wait")]
    pub urgent_wait_days: u32,
    /// Days of allocations and first places that rotation counts. Default 28.
    #[serde(default = "default_rotation")]
    pub rotation_days: u32,
    /// The clinic's sites by the names therapists.csv uses in `location`, with their
    /// positions, for travel distances. Default none.
    #[serde(default)]
    pub sites: std::collections::BTreeMap<String, Site>,
}

/// A site's position (degrees).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

fn default_weight() -> f64 {
    0.5
}
fn default_shortlist() -> usize {
    5
}
fn default_max_wait() -> u32 {
    28
}
fn default_urgent_wait() -> u32 {
    7
}
fn default_rotation() -> u32 {
    28
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            track_record_weight: default_weight(),
            shortlist: default_shortlist(),
            max_wait_days: default_max_wait(),
            urgent_wait_days: default_urgent_wait(),
            rotation_days: default_rotation(),
            sites: Default::default(),
        }
    }
}

impl MatchingConfig {
    /// The matching settings, checked, with the track records' minimums of `[stats]`.
    pub fn settings(&self, stats: &StatsConfig) -> Result<protocol::matching::Settings> {
        let s = protocol::matching::Settings {
            weight: self.track_record_weight,
            length: self.shortlist,
            max_wait_days: self.max_wait_days,
            urgent_wait_days: self.urgent_wait_days,
            minimums: protocol::therapist::Minimums {
                show: stats.min_n_show,
                classify: stats.min_n_classify,
            },
        };
        s.validate().context("[matching]")?;
        for (name, site) in &self.sites {
            protocol::matching::Position {
                lat: site.lat,
                lon: site.lon,
            }
            .validate()
            .with_context(|| format!("[matching] sites.{name:?}"))?;
        }
        if self.rotation_days == 0 {
            anyhow::bail!("[matching] rotation_days must be at least 1");
        }
        Ok(s)
    }

    /// The position of a site, when configured.
    pub fn position(&self, site: &str) -> Option<protocol::matching::Position> {
        self.sites
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(site))
            .map(|(_, s)| protocol::matching::Position {
                lat: s.lat,
                lon: s.lon,
            })
    }
}

/// `[directory]`: the clinic's entry in the network's referral directory (`directory
/// publish`). Clinic level only: services, never therapists (DESIGN.md P3). What is not set
/// comes from the store: languages, modalities and delivery modes offered by therapists taking
/// new patients, whether any is, and the shortest of their waits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// How to refer: the service's referral route (an address, a line), not a person.
    /// Required to publish.
    #[serde(default)]
    pub contact: Option<String>,
    /// Who may be referred, in words (ages, area, payer).
    #[serde(default)]
    pub eligibility: String,
    /// Services offered; default one, named by `[clinic] service_type`, for every domain the
    /// clinic measures.
    #[serde(default)]
    pub services: Vec<DirectoryService>,
    /// Languages therapy is offered in.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Therapies offered.
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    /// Delivery modes: `in-person`, `video`.
    #[serde(default)]
    pub delivery: Option<Vec<String>>,
    /// Taking new referrals.
    #[serde(default)]
    pub accepting_new: Option<bool>,
    /// Wait for a new patient, in days (published as a band).
    #[serde(default)]
    pub wait_days: Option<u32>,
}

/// One service of `[directory] services`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryService {
    /// Its name.
    pub name: String,
    /// The domains it treats (domain ids).
    pub domains: Vec<String>,
}

/// `[rounds]`: the coordinator's round schedule, so the network refreshes its releases
/// without a person starting each round. Ignored on a clinic's node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoundsConfig {
    /// Each entry: a kind of round, its ρ and how often. Default none.
    #[serde(default)]
    pub schedule: Vec<ScheduledRound>,
}

/// One scheduled round (or training): started when the last one of its kind that finished
/// is at least `every_days` old (or none ever did), while no other round runs and enough
/// clinics are connected for its threshold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledRound {
    /// "benchmark", "trajectories" or "dropout-model".
    pub kind: String,
    /// ρ of the release (a training's in all).
    pub rho: f64,
    /// Days between two rounds of this kind (fractions allowed).
    pub every_days: f64,
    /// Dropout-model trainings: most iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Only these domains (default all; a training: its one domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

impl RoundsConfig {
    /// Checks every entry: a kind the coordinator runs by schedule, ρ in range, a positive
    /// period, iterations only for a training.
    pub fn validate(&self) -> Result<()> {
        for (i, r) in self.schedule.iter().enumerate() {
            let at = format!("[rounds] schedule entry {} ({:?})", i + 1, r.kind);
            if !["benchmark", "trajectories", "dropout-model"].contains(&r.kind.as_str()) {
                anyhow::bail!(
                    "{at}: kind must be \"benchmark\", \"trajectories\" or \"dropout-model\""
                );
            }
            let (lo, hi) = protocol::dp::RHO_RANGE;
            if !(r.rho.is_finite() && (lo..=hi).contains(&r.rho)) {
                anyhow::bail!("{at}: rho must be from {lo:e} to {hi}, not {}", r.rho);
            }
            if !(r.every_days.is_finite() && r.every_days > 0.0 && r.every_days <= 3660.0) {
                anyhow::bail!(
                    "{at}: every_days must be a positive number of days (at most 3660), not {}",
                    r.every_days
                );
            }
            if r.iterations.is_some() && r.kind != "dropout-model" {
                anyhow::bail!("{at}: iterations is for dropout-model trainings only");
            }
        }
        Ok(())
    }
}

/// `[dashboard]`: the web dashboard `mbc-node run` serves (issue 18). Every field is optional.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address and port (port 0 picks a free one; the address in use is in `dashboard.addr`),
    /// or "off": a loopback address unless the dashboard has TLS of its own. Default
    /// "127.0.0.1:7480".
    #[serde(default = "default_dashboard_bind")]
    pub bind: String,
    /// PEM file of the dashboard's certificate chain; with `tls_key`, it serves HTTPS (any
    /// address may then be bound, and its cookies are `Secure`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// Further `Host` names the browser may use (a TLS proxy in front, e.g.
    /// "mbc.clinic.example"); any other name is refused (DNS rebinding). Default [].
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// A CSV with a `therapist_id` column (the therapists.csv the clinic imported will do):
    /// the dashboard then shows therapists by these staff ids, read when `run` starts and held
    /// in memory only ([`crate::staff`]). Default none: therapists by pseudonym.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff_list: Option<String>,
}

fn default_dashboard_bind() -> String {
    "127.0.0.1:7480".into()
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            bind: default_dashboard_bind(),
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
            staff_list: None,
        }
    }
}

impl DashboardConfig {
    /// Its certificate and key files (relative to `data_dir`), when it serves TLS itself.
    pub fn tls(&self, data_dir: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((data_dir.join(c), data_dir.join(k)))),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "[dashboard] tls_cert and tls_key go together: give both PEM files, or neither"
            ),
        }
    }

    /// The address to bind, or `None` when off; refuses anything but a loopback address unless
    /// the dashboard has TLS of its own.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>> {
        if self.bind.trim() == "off" {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self.bind.trim().parse().with_context(|| {
            format!(
                "[dashboard] bind: {:?} is not an address like 127.0.0.1:7480 (or \"off\")",
                self.bind
            )
        })?;
        let tls = self.tls(Path::new(""))?.is_some();
        if !addr.ip().is_loopback() && !tls {
            anyhow::bail!(
                "[dashboard] bind = {:?}: the dashboard shows patient data, so another address \
                 than loopback needs TLS: set [dashboard] tls_cert and tls_key (PEM files), or \
                 bind 127.0.0.1 behind a TLS proxy named in [dashboard] hostnames",
                self.bind
            );
        }
        Ok(Some(addr))
    }
}

/// `[network]`: the daemon's listen addresses and local API (DESIGN.md §8). Every field is
/// optional.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// libp2p multiaddresses to listen on. Default ["/ip4/0.0.0.0/tcp/7400"].
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Addresses other clinics dial, put in the join request. Default: the listen addresses
    /// that name a concrete IP and port.
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Port of the local API on 127.0.0.1; 0 picks a free one. The address in use is written
    /// to `api.addr` in the data directory. Default 0.
    #[serde(default)]
    pub api_port: u16,
    /// Most simultaneous connections. Default 128.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/7400".into()]
}
fn default_max_connections() -> u32 {
    128
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            advertise: Vec::new(),
            api_port: 0,
            max_connections: default_max_connections(),
        }
    }
}

impl NetworkConfig {
    /// The addresses to advertise: `advertise` if set, else the listen addresses with a
    /// concrete IP and port.
    pub fn advertised(&self) -> Vec<String> {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        self.listen
            .iter()
            .filter(|a| !a.contains("/0.0.0.0/") && !a.contains("/::/") && !a.ends_with("/tcp/0"))
            .cloned()
            .collect()
    }
}

/// `[privacy]`: the clinic's privacy budget (ρ-zCDP) and how its data are bounded before noise
/// (DESIGN.md §2 P2–P4, §7). Every field is optional.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// ρ the clinic may spend per period. Default 1.0.
    #[serde(default = "default_rho_per_period")]
    pub rho_per_period: f64,
    /// Budget period: "year", "quarter" or "month" (calendar, UTC). Default "year".
    #[serde(default = "default_period")]
    pub period: String,
    /// Largest ρ one release may cost. Default 0.25.
    #[serde(default = "default_max_rho")]
    pub max_rho_per_release: f64,
    /// δ at which ρ is shown as (ε, δ). Default 1e-6.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Episodes one patient may contribute per domain to a release. Default 1.
    #[serde(default = "default_one")]
    pub max_episodes_per_patient: u32,
    /// Episodes one therapist may contribute per domain to therapist-variance sums. Default 200.
    #[serde(default = "default_caseload_cap")]
    pub caseload_cap: u32,
    /// Kinds of network round this node joins when asked (subject to ρ and budget). Default
    /// ["benchmark", "trajectories", "dropout-model", "bench"] ("bench" sums synthetic public
    /// vectors and costs nothing).
    #[serde(default = "default_round_kinds")]
    pub round_kinds: Vec<String>,
    /// Fewest roster members besides this clinic that a round must invite, and that must
    /// survive to the unmask step, for this clinic to take part. Default 3.
    #[serde(default = "default_min_participants")]
    pub min_participants: u32,
    /// Least reconstruction threshold, as a fraction of the invited participants ("a/b"; never
    /// below "more than half"). Default "2/3".
    #[serde(default = "default_min_threshold")]
    pub min_threshold: String,
    /// Most network-round contributions charged per budget period. Default 12.
    #[serde(default = "default_max_rounds")]
    pub max_rounds_per_period: u32,
    /// Least hours between two charged network-round contributions. Default 24.
    #[serde(default = "default_min_round_interval")]
    pub min_round_interval_hours: f64,
    /// Refuse (before revealing shares) a round whose contributing clinics differ from those of
    /// this clinic's previous round by at least one but fewer than this many clinics: the two
    /// releases would differ by a few clinics' figures. 0 turns the check off. Default 0.
    #[serde(default)]
    pub min_contributor_change: u32,
}

fn default_min_participants() -> u32 {
    3
}
fn default_min_threshold() -> String {
    "2/3".into()
}
fn default_max_rounds() -> u32 {
    12
}
fn default_min_round_interval() -> f64 {
    24.0
}

fn default_rho_per_period() -> f64 {
    1.0
}
fn default_period() -> String {
    "year".into()
}
fn default_max_rho() -> f64 {
    0.25
}
fn default_delta() -> f64 {
    protocol::dp::DEFAULT_DELTA
}
fn default_one() -> u32 {
    1
}
fn default_caseload_cap() -> u32 {
    200
}
fn default_round_kinds() -> Vec<String> {
    vec![
        "benchmark".into(),
        "trajectories".into(),
        "dropout-model".into(),
        "bench".into(),
    ]
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            rho_per_period: default_rho_per_period(),
            period: default_period(),
            max_rho_per_release: default_max_rho(),
            delta: default_delta(),
            max_episodes_per_patient: default_one(),
            caseload_cap: default_caseload_cap(),
            round_kinds: default_round_kinds(),
            min_participants: default_min_participants(),
            min_threshold: default_min_threshold(),
            max_rounds_per_period: default_max_rounds(),
            min_round_interval_hours: default_min_round_interval(),
            min_contributor_change: 0,
        }
    }
}

impl PrivacyConfig {
    /// The round-safety policy ([`protocol::round::Safety`]) of `min_participants` and
    /// `min_threshold`.
    pub fn safety(&self) -> Result<protocol::round::Safety> {
        let fraction = || -> Option<(u32, u32)> {
            let (a, b) = self.min_threshold.split_once('/')?;
            let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (b > 0 && 2 * u64::from(a) >= u64::from(b) && a <= b).then_some((a, b))
        };
        let threshold_fraction = fraction().with_context(|| {
            format!(
                "[privacy] min_threshold must be a fraction from \"1/2\" to \"1/1\", like \"2/3\", not {:?}",
                self.min_threshold
            )
        })?;
        Ok(protocol::round::Safety {
            min_others: self.min_participants,
            threshold_fraction,
        })
    }
}

/// `[stats]`: the effectiveness engine's rules (DOMAIN.md §2.5, §6.3). Every field is optional.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// "eb-interval" (default: the 95 % empirical-Bayes interval excludes 0) or "kraus" (the
    /// average patient's risk-adjusted change is beyond the instrument's reliable change).
    #[serde(default = "default_rule")]
    pub rule: String,
    /// Patients needed to show a therapist × domain statistic. Default 10.
    #[serde(default = "default_min_show")]
    pub min_n_show: u64,
    /// Patients needed to label it. Default 30.
    #[serde(default = "default_min_classify")]
    pub min_n_classify: u64,
    /// NHS TT "other measure" clause for reliable improvement / deterioration. Default true.
    #[serde(default = "default_true")]
    pub other_measure_clause: bool,
    /// Instruments paired for NHS TT metrics. Default ["PHQ-9", "GAD-7"].
    #[serde(default = "default_paired")]
    pub paired_instruments: Vec<String>,
    /// Ridge penalty of the risk model (not applied to the intercept). Default 1e-6.
    #[serde(default = "default_ridge")]
    pub ridge: f64,
    /// Clinical margin of the eb-interval rule, in points: a therapist is labelled only when
    /// the whole 95 % interval lies beyond ± this. Default 0 (none).
    #[serde(default)]
    pub clinical_margin: f64,
    /// National figures shown beside the clinic's NHS TT rates: "auto" (England's, for a
    /// clinic whose country is GB; none otherwise), "england" or "none". Default "auto".
    #[serde(default = "default_national")]
    pub national_figures: String,
}

fn default_national() -> String {
    "auto".into()
}

fn default_rule() -> String {
    "eb-interval".into()
}
fn default_min_show() -> u64 {
    10
}
fn default_min_classify() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_paired() -> Vec<String> {
    vec!["PHQ-9".into(), "GAD-7".into()]
}
fn default_ridge() -> f64 {
    1e-6
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            rule: default_rule(),
            min_n_show: default_min_show(),
            min_n_classify: default_min_classify(),
            other_measure_clause: true,
            paired_instruments: default_paired(),
            ridge: default_ridge(),
            clinical_margin: 0.0,
            national_figures: default_national(),
        }
    }
}

/// `[support]`: what `support validate` must show before not-on-track signals raise alerts
/// (issue 15; the validation card's figures are described in README, "Clinical support").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportConfig {
    /// Least AUC of "red by session 3" for final non-improvement. Default 0.70.
    #[serde(default = "default_min_auc")]
    pub min_auc: f64,
    /// Least correlation of predicted and observed pre–post change. Default 0.40.
    #[serde(default = "default_min_r")]
    pub min_r: f64,
    /// The share of hold-out scores beyond the failure boundary (P90) must lie in this range.
    /// Default [0.06, 0.14].
    #[serde(default = "default_p90_share")]
    pub above_p90: [f64; 2],
    /// Which network trajectories release `support` may take its reference from when the
    /// clinic's own pool is too small or validates worse: "latest" (default), "none" (local
    /// neighbours only), or a release id (a prefix will do) to pin one.
    #[serde(default = "default_network_reference")]
    pub network_reference: String,
}

fn default_network_reference() -> String {
    "latest".into()
}

fn default_min_auc() -> f64 {
    0.70
}

fn default_min_r() -> f64 {
    0.40
}

fn default_p90_share() -> [f64; 2] {
    [0.06, 0.14]
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self {
            min_auc: default_min_auc(),
            min_r: default_min_r(),
            above_p90: default_p90_share(),
            network_reference: default_network_reference(),
        }
    }
}

/// `[import]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Scores that arrive without an episode (FHIR without EpisodeOfCare, the rule in EHR and
    /// questionnaire-app exports) are grouped per patient into episodes: a gap of more than
    /// this many weeks between two scored days starts a new episode. Default: 12.
    #[serde(default = "default_episode_gap_weeks")]
    pub episode_gap_weeks: u32,
}

fn default_episode_gap_weeks() -> u32 {
    12
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            episode_gap_weeks: default_episode_gap_weeks(),
        }
    }
}

/// `[clinic]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicConfig {
    /// Display name, shown to the network coordinator. Required.
    pub name: String,
    /// ISO 3166 country code; selects national comparisons (e.g. "GB"). Default: none.
    pub country: Option<String>,
    /// Kind of service, e.g. "NHS Talking Therapies". Default: none.
    pub service_type: Option<String>,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file. Default: "local.db".
    #[serde(default = "default_store_path")]
    pub path: String,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// 32-byte Ed25519 seed: the node's network identity (PeerId). Default: "identity.key".
    #[serde(default = "default_identity")]
    pub identity_key_file: String,
    /// 32-byte secret keying the HMAC pseudonyms of local identifiers; never leaves the node.
    /// Default: "pseudonym.key".
    #[serde(default = "default_pseudonym")]
    pub pseudonym_secret_file: String,
    /// 32-byte key that encrypts the store (SQLCipher), kept apart from the data directory
    /// (`init` puts it in `<data dir>.keys/` unless `--key-dir` says otherwise). Unset: a store
    /// created before encryption, opened as it is.
    #[serde(default)]
    pub store_key_file: Option<String>,
}

fn default_store_path() -> String {
    "local.db".into()
}
fn default_identity() -> String {
    "identity.key".into()
}
fn default_pseudonym() -> String {
    "pseudonym.key".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            identity_key_file: default_identity(),
            pseudonym_secret_file: default_pseudonym(),
            store_key_file: None,
        }
    }
}

/// The schedule as a TOML array of inline tables.
fn schedule_toml(schedule: &[ScheduledRound]) -> String {
    let entries: Vec<String> = schedule
        .iter()
        .map(|r| {
            let mut e = format!(
                "{{ kind = {}, rho = {}, every_days = {}",
                toml_string(&r.kind),
                toml::Value::Float(r.rho),
                toml::Value::Float(r.every_days)
            );
            if let Some(n) = r.iterations {
                e.push_str(&format!(", iterations = {n}"));
            }
            if !r.domains.is_empty() {
                e.push_str(&format!(", domains = {}", toml_strings(&r.domains)));
            }
            e + " }"
        })
        .collect();
    format!("[{}]", entries.join(", "))
}

impl Config {
    /// A new configuration with defaults.
    pub fn new(name: String, country: Option<String>, service_type: Option<String>) -> Self {
        Self {
            clinic: ClinicConfig {
                name,
                country,
                service_type,
            },
            store: StoreConfig::default(),
            keys: KeysConfig::default(),
            directory: DirectoryConfig::default(),
            import: ImportConfig::default(),
            stats: StatsConfig::default(),
            support: SupportConfig::default(),
            matching: MatchingConfig::default(),
            privacy: PrivacyConfig::default(),
            network: NetworkConfig::default(),
            rounds: RoundsConfig::default(),
            dashboard: DashboardConfig::default(),
        }
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Loads `DIR/config.toml`.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "couldn't read {} (is {} an mbc-node data directory?)",
                path.display(),
                data_dir.display()
            )
        })?;
        Self::parse(&text).with_context(|| format!("couldn't parse {}", path.display()))
    }

    /// The configuration as a commented TOML file.
    pub fn to_toml(&self) -> String {
        let opt = |v: &Option<String>, key: &str| match v {
            Some(v) => format!("{key} = {}\n", toml_string(v)),
            None => format!("# {key} = \"\"\n"),
        };
        format!(
            "# mbc-node configuration. Paths are relative to this directory.\n\
             # Unknown keys are an error. See README.md, \"Configuration\".\n\n\
             [clinic]\n\
             # Display name, shown to the network coordinator.\n\
             name = {}\n\
             # ISO 3166 country code (selects national comparisons, e.g. \"GB\").\n{}\
             # Kind of service, e.g. \"NHS Talking Therapies\".\n{}\n\
             [store]\n\
             # SQLite database holding the pseudonymised outcome data. Never leaves this machine.\n\
             path = {}\n\n\
             [keys]\n\
             # Ed25519 seed (32 bytes, mode 0600): this node's network identity.\n\
             identity_key_file = {}\n\
             # HMAC key (32 bytes, mode 0600) for pseudonyms of local identifiers. Back it up:\n\
             # without it, re-imports cannot be matched to stored records.\n\
             pseudonym_secret_file = {}\n\
             # Key (32 bytes, mode 0600) that encrypts the store, kept apart from this directory.\n\
             # Back it up separately: without it the store, and its privacy ledger, are lost.\n\
             {}\n\n\
             [import]\n\
             # Scores without an episode (FHIR without EpisodeOfCare) form one episode per patient\n\
             # until a gap of more than this many weeks between scored days.\n\
             episode_gap_weeks = {}\n\n\
             [stats]\n\
             # Labelling rule: \"eb-interval\" (95 % empirical-Bayes interval excludes 0) or \"kraus\".\n\
             rule = {}\n\
             # Patients needed per therapist and domain to show a statistic, and to label it.\n\
             min_n_show = {}\n\
             min_n_classify = {}\n\
             # NHS Talking Therapies: reliable improvement needs no reliable deterioration on the\n\
             # other measure (and vice versa).\n\
             other_measure_clause = {}\n\
             paired_instruments = {}\n\
             # Ridge penalty of the risk model.\n\
             ridge = {}\n\
             # Clinical margin (points): label a therapist only when the 95 % interval clears\n\
             # ± this (eb-interval rule; large caseloads otherwise label tiny effects). 0 = none.\n\
             clinical_margin = {}\n\
             # National comparison beside the NHS TT rates: \"auto\" (England's NHS Talking\n\
             # Therapies figures when country = \"GB\"), \"england\" or \"none\".\n\
             national_figures = {}\n\n\
             [support]\n\
             # Not-on-track alerts stay off until `mbc-node support validate` shows, on this clinic's\n\
             # own hold-out, at least this AUC (red by session 3 for final non-improvement) and this\n\
             # correlation of predicted and observed change, and a share of scores beyond the\n\
             # failure boundary (P90) within this range. Safety alerts are always on.\n\
             min_auc = {}\n\
             min_r = {}\n\
             above_p90 = [{}, {}]\n\
             # The network reference (a trajectories release) used when this clinic's own pool\n\
             # is too small or validates worse: \"latest\", \"none\", or a release id to pin one.\n\
             network_reference = {}\n\n\
             [matching]\n\
             # `mbc-node match`: the weight of the track record against the patient's preferences\n\
             # (0-1), therapists per shortlist (3-5), the longest waits offered (routine, urgent),\n\
             # and the days of allocations that rotation among equal therapists counts.\n\
             track_record_weight = {}\n\
             shortlist = {}\n\
             max_wait_days = {}\n\
             urgent_wait_days = {}\n\
             rotation_days = {}\n\
             # Sites by the names therapists.csv uses in `location`, for travel distances, e.g.\n\
             # {{ \"North Street\" = {{ lat = 53.48, lon = -2.24 }} }}.\n\
             sites = {}\n\n\
             [directory]\n\
             # `mbc-node directory publish`: this clinic's entry in the network's referral directory,\n\
             # clinic level only (never a therapist). How to refer (a referral address or line, not a\n\
             # person; required to publish), and who may be referred.\n\
             {}\n\
             eligibility = {}\n\
             # Services, e.g. [{{ name = \"Step 3 CBT\", domains = [\"depression\", \"anxiety\"] }}];\n\
             # [] = one per measured domain. Unset below = from therapists taking new patients.\n\
             services = {}\n\
             {}\n\n\
             [privacy]\n\
             # zero-concentrated DP budget: ρ this clinic may spend per period, and at most per\n\
             # release. Every release is charged to the ledger before it leaves (mbc-node budget).\n\
             rho_per_period = {}\n\
             # \"year\", \"quarter\" or \"month\" (calendar, UTC).\n\
             period = {}\n\
             max_rho_per_release = {}\n\
             # δ at which ρ is also shown as (ε, δ).\n\
             delta = {}\n\
             # Contribution bounds: episodes per patient and domain; episodes per therapist and\n\
             # domain in therapist-variance sums.\n\
             max_episodes_per_patient = {}\n\
             caseload_cap = {}\n\
             # Network rounds this clinic joins when the coordinator asks (each still within\n\
             # max_rho_per_release and the period's budget); [] to join none.\n\
             round_kinds = {}\n\
             # Round safety (README, \"Rounds\"): at least this many other clinics invited and\n\
             # surviving; a threshold of at least this fraction of them (and more than half).\n\
             min_participants = {}\n\
             min_threshold = {}\n\
             # At most this many charged rounds per period, at least this many hours apart.\n\
             max_rounds_per_period = {}\n\
             min_round_interval_hours = {}\n\
             # Refuse a round whose contributors differ from the previous round's by 1 to N-1\n\
             # clinics (differencing two releases would isolate them); 0 = off.\n\
             min_contributor_change = {}\n\n\
             [network]\n\
             # libp2p addresses the daemon (mbc-node run) listens on.\n\
             listen = {}\n\
             # Addresses other clinics dial (default: the listen addresses with a concrete IP).\n\
             advertise = {}\n\
             # Local API port on 127.0.0.1 (0: any free port; the one in use is in api.addr).\n\
             api_port = {}\n\
             max_connections = {}\n\n\
             [rounds]\n\
             # The coordinator only: rounds it starts by itself, each when the last of its kind is\n\
             # every_days old, e.g. [{{ kind = \"benchmark\", rho = 0.25, every_days = 90.0 }},\n\
             # {{ kind = \"dropout-model\", rho = 0.25, iterations = 5, every_days = 180.0 }}].\n\
             # Every clinic still decides by its own [privacy] policy and budget.\n\
             schedule = {}\n\n\
             [dashboard]\n\
             # The web dashboard `mbc-node run` serves: a loopback address (port 0: any free port;\n\
             # the one in use is in dashboard.addr) or \"off\". Accounts: `mbc-node users add`.\n\
             bind = {}\n\
             # Host names a TLS proxy in front of it answers to (any other is refused).\n\
             hostnames = {}\n\
             # Its own TLS (PEM files; then any address may be bound, e.g. \"0.0.0.0:7480\").\n\
             {}{}\
             # Therapists by the clinic's staff ids: a CSV with a therapist_id column, read at\n\
             # start, held in memory only (e.g. the therapists.csv imported).\n\
             {}",
            toml_string(&self.clinic.name),
            opt(&self.clinic.country, "country"),
            opt(&self.clinic.service_type, "service_type"),
            toml_string(&self.store.path),
            toml_string(&self.keys.identity_key_file),
            toml_string(&self.keys.pseudonym_secret_file),
            match &self.keys.store_key_file {
                Some(f) => format!("store_key_file = {}", toml_string(f)),
                None => "# store_key_file: not set, the store is not encrypted".to_string(),
            },
            self.import.episode_gap_weeks,
            toml_string(&self.stats.rule),
            self.stats.min_n_show,
            self.stats.min_n_classify,
            self.stats.other_measure_clause,
            toml_strings(&self.stats.paired_instruments),
            toml::Value::Float(self.stats.ridge),
            toml::Value::Float(self.stats.clinical_margin),
            toml_string(&self.stats.national_figures),
            toml::Value::Float(self.support.min_auc),
            toml::Value::Float(self.support.min_r),
            toml::Value::Float(self.support.above_p90[0]),
            toml::Value::Float(self.support.above_p90[1]),
            toml_string(&self.support.network_reference),
            toml::Value::Float(self.matching.track_record_weight),
            self.matching.shortlist,
            self.matching.max_wait_days,
            self.matching.urgent_wait_days,
            self.matching.rotation_days,
            sites_toml(&self.matching.sites),
            opt(&self.directory.contact, "contact").trim_end(),
            toml_string(&self.directory.eligibility),
            services_toml(&self.directory.services),
            self.directory.derived_toml(),
            toml::Value::Float(self.privacy.rho_per_period),
            toml_string(&self.privacy.period),
            toml::Value::Float(self.privacy.max_rho_per_release),
            toml::Value::Float(self.privacy.delta),
            self.privacy.max_episodes_per_patient,
            self.privacy.caseload_cap,
            toml_strings(&self.privacy.round_kinds),
            self.privacy.min_participants,
            toml_string(&self.privacy.min_threshold),
            self.privacy.max_rounds_per_period,
            toml::Value::Float(self.privacy.min_round_interval_hours),
            self.privacy.min_contributor_change,
            toml_strings(&self.network.listen),
            toml_strings(&self.network.advertise),
            self.network.api_port,
            self.network.max_connections,
            schedule_toml(&self.rounds.schedule),
            toml_string(&self.dashboard.bind),
            toml_strings(&self.dashboard.hostnames),
            opt(&self.dashboard.tls_cert, "tls_cert"),
            opt(&self.dashboard.tls_key, "tls_key"),
            opt(&self.dashboard.staff_list, "staff_list"),
        )
    }

    /// Absolute path of the store.
    pub fn store_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.store.path)
    }

    /// Path of the store's key file, if the store is encrypted.
    pub fn store_key_path(&self, data_dir: &Path) -> Option<PathBuf> {
        self.keys.store_key_file.as_ref().map(|f| data_dir.join(f))
    }
}

fn services_toml(services: &[DirectoryService]) -> toml::Value {
    toml::Value::Array(
        services
            .iter()
            .map(|s| {
                let mut t = toml::value::Table::new();
                t.insert("name".into(), toml::Value::String(s.name.clone()));
                t.insert(
                    "domains".into(),
                    toml::Value::Array(
                        s.domains
                            .iter()
                            .map(|d| toml::Value::String(d.clone()))
                            .collect(),
                    ),
                );
                toml::Value::Table(t)
            })
            .collect(),
    )
}

impl DirectoryConfig {
    /// The keys that default to the store, as set or commented out.
    fn derived_toml(&self) -> String {
        let list = |v: &Option<Vec<String>>, key: &str| match v {
            Some(v) => format!("{key} = {}", toml_strings(v)),
            None => format!("# {key} = []"),
        };
        [
            list(&self.languages, "languages"),
            list(&self.modalities, "modalities"),
            list(&self.delivery, "delivery"),
            match self.accepting_new {
                Some(b) => format!("accepting_new = {b}"),
                None => "# accepting_new = true".into(),
            },
            match self.wait_days {
                Some(d) => format!("wait_days = {d}"),
                None => "# wait_days = 14".into(),
            },
        ]
        .join("\n")
    }
}

fn sites_toml(sites: &std::collections::BTreeMap<String, Site>) -> toml::Value {
    toml::Value::Table(
        sites
            .iter()
            .map(|(name, s)| {
                let mut t = toml::value::Table::new();
                t.insert("lat".into(), toml::Value::Float(s.lat));
                t.insert("lon".into(), toml::Value::Float(s.lon));
                (name.clone(), toml::Value::Table(t))
            })
            .collect(),
    )
}

fn toml_strings(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().map(|s| toml::Value::String(s.clone())).collect())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_parses_back() {
        let c = Config::new("St \"Mary's\" Clinic".into(), Some("GB".into()), None);
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.clinic.name, c.clinic.name);
        assert_eq!(back.clinic.country.as_deref(), Some("GB"));
        assert_eq!(back.clinic.service_type, None);
        assert_eq!(back.keys.pseudonym_secret_file, "pseudonym.key");
        assert_eq!(back.keys.store_key_file, None);
        let mut keyed = c.clone();
        keyed.keys.store_key_file = Some("/keys/mbc.keys/store.key".into());
        let back = Config::parse(&keyed.to_toml()).unwrap();
        assert_eq!(
            back.keys.store_key_file.as_deref(),
            Some("/keys/mbc.keys/store.key")
        );
    }

    #[test]
    fn stats_settings_are_written_as_they_are() {
        let mut c = Config::new("x".into(), None, None);
        c.stats = StatsConfig {
            rule: "kraus".into(),
            min_n_show: 5,
            min_n_classify: 15,
            other_measure_clause: false,
            paired_instruments: vec!["PHQ-9".into(), "CORE-10".into()],
            ridge: 0.5,
            clinical_margin: 1.5,
            national_figures: "none".into(),
        };
        let back = Config::parse(&c.to_toml()).unwrap().stats;
        assert_eq!(back.rule, "kraus");
        assert_eq!((back.min_n_show, back.min_n_classify), (5, 15));
        assert!(!back.other_measure_clause);
        assert_eq!(back.paired_instruments, ["PHQ-9", "CORE-10"]);
        assert_eq!(back.ridge, 0.5);
        assert_eq!(back.clinical_margin, 1.5);
        assert_eq!(back.national_figures, "none");
        let defaults = Config::parse(&Config::new("x".into(), None, None).to_toml())
            .unwrap()
            .stats;
        assert_eq!(defaults.ridge, 1e-6);
        assert_eq!(defaults.rule, "eb-interval");
    }

    #[test]
    fn privacy_settings_are_written_as_they_are() {
        let mut c = Config::new("x".into(), None, None);
        c.privacy.rho_per_period = 2.5;
        c.privacy.period = "quarter".into();
        c.privacy.caseload_cap = 50;
        let back = Config::parse(&c.to_toml()).unwrap().privacy;
        assert_eq!(back.rho_per_period, 2.5);
        assert_eq!(back.period, "quarter");
        assert_eq!(back.caseload_cap, 50);
        assert_eq!(back.delta, 1e-6);
        assert_eq!(back.max_rho_per_release, 0.25);
        assert_eq!(back.min_participants, 3);
        assert_eq!(back.min_round_interval_hours, 24.0);
        let safety = back.safety().unwrap();
        assert_eq!(safety.threshold_fraction, (2, 3));
        // Large numbers are compared without overflow.
        let mut big = back.clone();
        big.min_threshold = "4000000000/4000000001".into();
        assert_eq!(big.safety().unwrap().threshold_fraction.0, 4_000_000_000);
        for bad in ["1/3", "3/2", "2/0", "two thirds", ""] {
            let mut p = back.clone();
            p.min_threshold = bad.into();
            assert!(p.safety().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn network_settings_are_written_as_they_are() {
        let mut c = Config::new("x".into(), None, None);
        assert_eq!(c.network.advertised(), Vec::<String>::new());
        c.network.listen = vec!["/ip4/127.0.0.1/tcp/7411".into()];
        c.network.api_port = 7412;
        let back = Config::parse(&c.to_toml()).unwrap().network;
        assert_eq!(back.listen, ["/ip4/127.0.0.1/tcp/7411"]);
        assert_eq!(back.advertised(), ["/ip4/127.0.0.1/tcp/7411"]);
        assert_eq!((back.api_port, back.max_connections), (7412, 128));
    }

    /// `[directory]` round-trips through the written file, set or left to the store.
    #[test]
    fn directory_entry_settings_are_written_as_they_are() {
        let mut c = Config::new("x".into(), None, None);
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.directory, DirectoryConfig::default());
        c.directory = DirectoryConfig {
            contact: Some("referrals@north.example".into()),
            eligibility: "adults in the borough".into(),
            services: vec![DirectoryService {
                name: "Step 3 CBT".into(),
                domains: vec!["depression".into(), "anxiety".into()],
            }],
            languages: Some(vec!["en".into(), "pl".into()]),
            modalities: None,
            delivery: Some(vec!["video".into()]),
            accepting_new: Some(false),
            wait_days: Some(30),
        };
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.directory, c.directory);
    }

    /// `[matching]` round-trips through the written file (sites too); values out of range
    /// are refused naming the key.
    #[test]
    fn matching_settings_and_sites_are_written_as_they_are_and_checked() {
        let mut c = Config::new("x".into(), None, None);
        c.matching.track_record_weight = 0.7;
        c.matching.shortlist = 4;
        c.matching.sites.insert(
            "North Street".into(),
            Site {
                lat: 53.48,
                lon: -2.24,
            },
        );
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.matching, c.matching);
        let s = back.matching.settings(&back.stats).unwrap();
        assert_eq!((s.weight, s.length, s.minimums.classify), (0.7, 4, 30));
        assert_eq!(
            back.matching.position("north street"),
            Some(protocol::matching::Position {
                lat: 53.48,
                lon: -2.24
            })
        );
        for (bad, says) in [
            ("track_record_weight = 1.5", "track_record_weight 1.5"),
            ("shortlist = 1", "shortlist 1"),
            ("urgent_wait_days = 40", "urgent_wait_days 40"),
            (
                "sites = { Far = { lat = 95.0, lon = 0.0 } }",
                "sites.\"Far\"",
            ),
        ] {
            let text = format!("[clinic]\nname = \"x\"\n[matching]\n{bad}\n");
            let c = Config::parse(&text).unwrap();
            let err = format!("{:#}", c.matching.settings(&c.stats).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(Config::parse("[clinic]\nname = \"x\"\n[matching]\nweight = 1\n").is_err());
    }

    /// The round schedule round-trips through the written file, and nonsense entries are
    /// refused with the entry named.
    #[test]
    fn round_schedule_is_written_as_it_is_and_checked() {
        let mut c = Config::new("x".into(), None, None);
        assert!(c.rounds.schedule.is_empty());
        Config::parse(&c.to_toml())
            .unwrap()
            .rounds
            .validate()
            .unwrap();
        c.rounds.schedule = vec![
            ScheduledRound {
                kind: "benchmark".into(),
                rho: 0.25,
                every_days: 90.0,
                iterations: None,
                domains: vec!["depression".into(), "anxiety".into()],
            },
            ScheduledRound {
                kind: "dropout-model".into(),
                rho: 0.2,
                every_days: 0.5,
                iterations: Some(4),
                domains: Vec::new(),
            },
        ];
        let back = Config::parse(&c.to_toml()).unwrap().rounds;
        assert_eq!(back, c.rounds);
        back.validate().unwrap();
        let bad = |f: fn(&mut ScheduledRound)| {
            let mut r = c.rounds.clone();
            f(&mut r.schedule[1]);
            r.validate().unwrap_err().to_string()
        };
        assert!(bad(|r| r.kind = "bench".into()).contains("schedule entry 2"));
        assert!(bad(|r| r.rho = 0.0).contains("rho"));
        assert!(bad(|r| r.every_days = -1.0).contains("every_days"));
        assert!(bad(|r| r.every_days = f64::NAN).contains("every_days"));
        let mut r = c.rounds.clone();
        r.schedule[0].iterations = Some(3);
        assert!(r.validate().unwrap_err().to_string().contains("iterations"));
        assert!(Config::parse("[clinic]\nname = \"x\"\n[rounds]\nevery = 3\n").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("[clinic]\nname = \"x\"\nnmae = \"y\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `nmae`"), "{err}");
    }

    #[test]
    fn the_dashboard_binds_loopback_only_and_round_trips() {
        let mut c = Config::new("X".into(), None, None);
        assert_eq!(
            c.dashboard.address().unwrap(),
            Some("127.0.0.1:7480".parse().unwrap())
        );
        c.dashboard.bind = "127.0.0.1:0".into();
        c.dashboard.hostnames = vec!["mbc.clinic.example".into()];
        assert!(
            Config::parse(&c.to_toml())
                .unwrap()
                .dashboard
                .staff_list
                .is_none()
        );
        c.dashboard.staff_list = Some("therapists.csv".into());
        let back = Config::parse(&c.to_toml()).unwrap().dashboard;
        assert_eq!(
            (back.bind.as_str(), back.hostnames, back.staff_list),
            (
                "127.0.0.1:0",
                c.dashboard.hostnames.clone(),
                Some("therapists.csv".into())
            )
        );
        for (bind, why) in [
            ("0.0.0.0:7480", "needs TLS"),
            ("192.168.1.5:80", "needs TLS"),
            ("localhost", "not an address"),
        ] {
            c.dashboard.bind = bind.into();
            let err = format!("{:#}", c.dashboard.address().unwrap_err());
            assert!(err.contains(why), "{bind}: {err}");
        }
        c.dashboard.bind = "off".into();
        assert_eq!(c.dashboard.address().unwrap(), None);
        // With its own TLS any address will do; half a TLS setting is refused.
        c.dashboard.bind = "0.0.0.0:7480".into();
        c.dashboard.tls_cert = Some("dashboard.crt".into());
        assert!(format!("{:#}", c.dashboard.address().unwrap_err()).contains("go together"));
        c.dashboard.tls_key = Some("dashboard.key".into());
        assert_eq!(
            c.dashboard.address().unwrap(),
            Some("0.0.0.0:7480".parse().unwrap())
        );
        let back = Config::parse(&c.to_toml()).unwrap().dashboard;
        assert_eq!(back.tls_key.as_deref(), Some("dashboard.key"));
        assert_eq!(
            back.tls(Path::new("/srv/mbc")).unwrap(),
            Some((
                "/srv/mbc/dashboard.crt".into(),
                "/srv/mbc/dashboard.key".into()
            ))
        );
    }
}
