//! `mbc-node synth`: synthetic clinic data with planted therapist effects (DOMAIN.md §11).
//!
//! [`model`] draws a deterministic [`model::Dataset`] from a seed (no I/O); [`write`] turns it
//! into the import-ready CSV files (and FHIR NDJSON with `--fhir`) of each clinic plus
//! `truth.json` with every planted effect and label. The same dataset gives the same stored
//! content whichever format is imported.

pub mod allocation;
pub mod engine;
pub mod model;
mod write;

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

pub use self::model::{Assignment, Params};

/// What one clinic's folder holds.
#[derive(Debug, Serialize)]
pub struct ClinicSummary {
    /// Folder name and clinic id, e.g. `clinic-01`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// CSV files, relative to the output directory, in import order.
    pub csv_files: Vec<String>,
    /// FHIR files, relative to the output directory (with `--fhir`).
    pub fhir_files: Vec<String>,
    /// Therapists.
    pub therapists: usize,
    /// Patients (one episode each).
    pub patients: usize,
    /// Assessments (instrument administrations).
    pub assessments: usize,
}

/// What `synth` wrote.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The output directory.
    pub out: String,
    /// Seed used.
    pub seed: u64,
    /// Per clinic.
    pub clinics: Vec<ClinicSummary>,
    /// Path of the ground-truth file.
    pub truth: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote synthetic data for {} clinics (seed {}) to {}",
            self.clinics.len(),
            self.seed,
            self.out
        )?;
        for c in &self.clinics {
            writeln!(
                f,
                "  {}: {} therapists, {} patients, {} assessments",
                c.id, c.therapists, c.patients, c.assessments
            )?;
        }
        write!(
            f,
            "  ground truth (planted effects and labels): {}",
            self.truth
        )
    }
}

/// Generates a dataset and writes it under `out` (which must not exist or be empty).
pub fn generate_to_dir(params: &Params, out: &Path) -> Result<Summary> {
    params.validate()?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty; choose a new --out directory",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("couldn't create {}", out.display()))?;
    let data = model::generate(params);
    let mut clinics = Vec::new();
    for clinic in &data.clinics {
        let dir = out.join(&clinic.id);
        std::fs::create_dir_all(&dir)?;
        let csv_files = write::csv(clinic, &dir)?;
        let fhir_files = if params.fhir {
            vec![write::fhir(clinic, &dir)?]
        } else {
            Vec::new()
        };
        let rel = |f: &str| format!("{}/{f}", clinic.id);
        clinics.push(ClinicSummary {
            id: clinic.id.clone(),
            name: clinic.name.clone(),
            csv_files: csv_files.iter().map(|f| rel(f)).collect(),
            fhir_files: fhir_files.iter().map(|f| rel(f)).collect(),
            therapists: clinic.therapists.len(),
            patients: clinic.patients.len(),
            assessments: clinic.patients.iter().map(|p| p.measures()).sum(),
        });
    }
    let truth = out.join("truth.json");
    std::fs::write(
        &truth,
        serde_json::to_string_pretty(&write::truth(params, &data))?,
    )?;
    Ok(Summary {
        out: out.display().to_string(),
        seed: params.seed,
        clinics,
        truth: truth.display().to_string(),
    })
}
