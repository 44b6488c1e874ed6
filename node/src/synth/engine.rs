//! A generated clinic as the effectiveness engine sees it, without a store: the acceptance
//! tests of `stats` and the matching trial ([`super::allocation`]) run the pure engine on it.

use protocol::analysis::{Covariates, EpisodeData, Scores};

use super::model;

/// The generated clinic as the engine sees it (PHQ-9 = instrument 0, GAD-7 = 1).
pub fn episodes(clinic: &model::Clinic) -> Vec<EpisodeData> {
    clinic
        .patients
        .iter()
        .map(|p| {
            let field = |k: &str| {
                p.episode
                    .iter()
                    .find(|(c, _)| *c == k)
                    .map(|(_, v)| v.as_str())
            };
            let yes = |k: &str| field(k).map(|v| v == "yes");
            let sex = p
                .demographics
                .iter()
                .find(|(c, _)| *c == "sex")
                .map(|(_, v)| v.as_str());
            let covariates = Covariates {
                age: field("age").and_then(|v| v.parse().ok()),
                female: sex.map(|s| s == "female"),
                prior_treatment: yes("prior_treatment"),
                psychotropic_med: yes("psychotropic_med"),
                long_term_condition: yes("long_term_condition"),
                disability: yes("disability"),
                comorbidity_count: field("comorbidity_count").and_then(|v| v.parse().ok()),
                unemployed: field("employment").map(|v| v == "unemployed"),
                wsas: field("wsas").and_then(|v| v.parse().ok()),
            };
            let mut scores: Vec<Scores> = Vec::new();
            for s in &p.sessions {
                for m in &s.measures {
                    let total = m.total();
                    match scores.iter_mut().find(|x| x.instrument == m.domain) {
                        Some(x) => {
                            x.post = total;
                            x.count += 1;
                        }
                        None => scores.push(Scores {
                            instrument: m.domain,
                            pre: total,
                            post: total,
                            count: 1,
                        }),
                    }
                }
            }
            EpisodeData {
                therapist: Some(p.therapist),
                treatment_sessions: p.sessions.iter().filter(|s| s.seq >= 2).count() as u32,
                covariates,
                scores,
            }
        })
        .collect()
}
