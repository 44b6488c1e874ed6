//! Does matching help? The trial of `mbc_node::synth::allocation` over many seeds
//! (scripts/match-value.sh): per seed a clinic's history with planted effects, a cohort
//! allocated by care as usual and by `match`, the same draws in both arms; prints one JSON
//! line per seed.
//!
//! Usage: match_value SEEDS ICC PICK(first|any) [THERAPISTS] [CASELOAD]

use std::io::Write;

use mbc_node::synth::Params;
use mbc_node::synth::allocation::{self, Pick, Trial};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let seeds: u64 = arg(0, "20").parse().expect("SEEDS: a whole number");
    let icc: f64 = arg(1, "0.05").parse().expect("ICC: a number");
    let pick = match arg(2, "first").as_str() {
        "any" => Pick::AnyOfList,
        _ => Pick::First,
    };
    let therapists: u32 = arg(3, "12").parse().expect("THERAPISTS: a whole number");
    let caseload: u32 = arg(4, "60").parse().expect("CASELOAD: a whole number");
    for seed in 1..=seeds {
        let trial = Trial {
            history: Params {
                clinics: 1,
                seed,
                icc,
                therapists_per_clinic: Some(therapists),
                caseload: Some(caseload),
                ..Params::default()
            },
            seed,
            pick,
            per_week: (therapists as usize * 3) / 2,
            ..Trial::default()
        };
        let out = allocation::run(&trial);
        let line = serde_json::json!({"seed": seed, "outcome": out,
            "cau_levels": allocation::level_shares(&out.cau),
            "matched_levels": allocation::level_shares(&out.matched)});
        // A closed pipe ends the run quietly.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return;
        }
    }
}
