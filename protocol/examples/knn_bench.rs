//! Exact k-nearest-neighbour search of clinical support (`trajectory::Space::search`) over an
//! n × d pool against one streaming pass over the same mapped matrix (the sum of every entry:
//! a lower bound for any exact search, which must read every row). Both run `runs` times,
//! alternating; prints the medians and their ratio (issue 15 target: ≤ 1.3 at 10^6 × 25).
//! Building the space (standardising, whitening: once per pool and feature set) is timed
//! apart. Run by `scripts/bench-knn.sh [n] [d] [runs]`.

use std::hint::black_box;
use std::time::Instant;

use protocol::trajectory::{Feature, Settings, Space};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, d, runs) = (arg(1, 1_000_000), arg(2, 25), arg(3, 9));
    // A deterministic design (xorshift), correlated columns, 2 % missing.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let features: Vec<Feature> = (0..d)
        .map(|j| Feature {
            name: format!("f{j}"),
            weight: if j == 0 { 2.0 } else { 1.0 },
        })
        .collect();
    let pool: Vec<Vec<Option<f64>>> = (0..n)
        .map(|_| {
            let common = next();
            (0..d)
                .map(|_| {
                    let v = 0.5 * common + next();
                    (next() >= 0.02).then_some(v)
                })
                .collect()
        })
        .collect();
    let settings = Settings::default();
    let t = Instant::now();
    let space = Space::new(&features, &pool, &vec![true; d], &settings)?;
    let build = t.elapsed().as_secs_f64();
    let queries: Vec<Vec<Option<f64>>> = (0..runs)
        .map(|_| (0..d).map(|_| Some(next() + 0.25)).collect())
        .collect();
    let (mut search, mut pass) = (Vec::new(), Vec::new());
    for q in &queries {
        let t = Instant::now();
        let found = black_box(space.search(q, &settings));
        search.push(t.elapsed().as_secs_f64());
        assert_eq!(found.nearest.len(), settings.k_max.min(n));
        let t = Instant::now();
        black_box(space.stream_sum());
        pass.push(t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, p) = (median(&mut search), median(&mut pass));
    println!("pool {n} x {d}: space built once in {build:.3} s");
    println!(
        "exact kNN search (k = {}): {:.4} s (median of {runs})",
        settings.k_max, s
    );
    println!("one streaming pass          : {p:.4} s (median of {runs})");
    println!("ratio search / pass = {:.2} (target <= 1.3)", s / p);
    Ok(())
}
