//! Monte Carlo: error of distributed DP (P5) against central and local DP at equal ρ.
//!
//! n clinics each hold a d-entry vector; the network wants the sum. Central DP: one trusted
//! party adds N(0, σ²) (discrete) to the sum. Distributed DP: each clinic adds a share of scale
//! σ/√(t − 1), so that the t − 1 contributions other than any one clinic's carry σ² (a
//! participant that subtracts its own still faces the full noise); all n shares survive, so the
//! sum carries variance nσ²/(t − 1): RMSE ratio √(n/(t − 1)) (1.118 for n = 10, t = 9). Local
//! DP: each clinic adds σ itself: ratio √n. Run by `scripts/dp-utility.sh [n] [d] [trials]`.

use protocol::dp::Mechanism;

fn rmse(noise: &[i64]) -> f64 {
    (noise.iter().map(|z| (*z as f64).powi(2)).sum::<f64>() / noise.len() as f64).sqrt()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, d, trials) = (arg(1, 10), arg(2, 2000), arg(3, 20));
    let t = (n - 1).max(2) as u32;
    let (sensitivity, rho) = (1000.0, 0.5);
    let central = Mechanism::central(sensitivity, rho)?;
    let distributed = Mechanism::distributed(sensitivity, rho, t)?;
    let (mut c, mut dist, mut local) = (0.0, 0.0, 0.0);
    for _ in 0..trials {
        c += rmse(&central.noise(d)?);
        // The aggregate's error is the sum of the n clinics' noise vectors.
        let sum = |m: &Mechanism| -> Result<Vec<i64>, protocol::dp::Error> {
            let mut total = vec![0i64; d];
            for _ in 0..n {
                for (a, z) in total.iter_mut().zip(m.noise(d)?) {
                    *a += z;
                }
            }
            Ok(total)
        };
        dist += rmse(&sum(&distributed)?);
        local += rmse(&sum(&central)?);
    }
    let (c, dist, local) = (
        c / trials as f64,
        dist / trials as f64,
        local / trials as f64,
    );
    println!(
        "n = {n} clinics, t = {t}, d = {d} entries, {trials} trials, ρ = {rho}, σ = {:.1}",
        central.sigma
    );
    println!("RMSE central     {c:10.2}");
    println!(
        "RMSE distributed {dist:10.2}  ratio {:.4}  (exact √(n/(t − 1)) = {:.4})",
        dist / c,
        (n as f64 / f64::from(t - 1)).sqrt()
    );
    println!(
        "RMSE local DP    {local:10.2}  ratio {:.4}  (exact √n = {:.4})",
        local / c,
        (n as f64).sqrt()
    );
    Ok(())
}
