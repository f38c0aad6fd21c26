//! Convergence on the convex problem. The figure is the wall time until
//! the objective of the linear regression model is within a relative gap
//! of 1e-3 of the closed-form ridge optimum, for ADMM with two workers and
//! for the single-process baseline of the same run.
//!
//! The objective is `(1/m)·Σ‖W·x + c − y‖² + ½‖θ‖²`, the mean squared
//! error over all m samples plus the coordinator's L2 term with γ = 1. Both
//! methods take full-batch Adam steps, so the curves are deterministic.

use crate::processes::{strings, train_cached};
use crate::report::{Bound, Figure};
use crate::stats::median;
use crate::Settings;
use admm_problems::data::regression::{generate, ridge_solution};
use admm_problems::ProblemSpec;
use admm_report::RoundRow;
use anyhow::{bail, Result};
use tch::Tensor;

/// Relative objective gap both methods must reach.
const GAP: f64 = 1e-3;

/// Objective at the ridge optimum of the default regression problem (the
/// one the run trains: seed 0, d = 10, one output, 1000 samples).
fn optimal_objective() -> f64 {
    let spec = ProblemSpec::default();
    let data = generate(&spec);
    let theta = ridge_solution(&data);
    let inputs = tensor_values(&data.inputs);
    let targets = tensor_values(&data.targets);
    let dim = spec.dim;
    let (weight, bias) = theta.split_at(dim);
    let squared_error: f64 = inputs
        .chunks_exact(dim)
        .zip(&targets)
        .map(|(x, &y)| {
            let prediction: f64 = x
                .iter()
                .zip(weight)
                .map(|(&xi, &wi)| f64::from(xi) * f64::from(wi))
                .sum::<f64>()
                + f64::from(bias[0]);
            (prediction - f64::from(y)).powi(2)
        })
        .sum();
    let norm: f64 = theta.iter().map(|&v| f64::from(v).powi(2)).sum();
    squared_error / targets.len() as f64 + 0.5 * norm
}

fn tensor_values(tensor: &Tensor) -> Vec<f32> {
    let numel = tensor.numel();
    let mut values = vec![0f32; numel];
    tensor.copy_data(&mut values, numel);
    values
}

/// Elapsed seconds at the first row within the gap, and its round.
fn time_to_gap(rows: &[RoundRow], optimum: f64) -> Option<(f64, u64)> {
    rows.iter()
        .find(|row| (row.objective - optimum) / optimum.abs() <= GAP)
        .map(|row| (row.elapsed_seconds, row.round))
}

/// Runs ADMM and the baseline several times and compares the medians of
/// their times to the gap.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let optimum = optimal_objective();
    let args = strings(&[
        "--problem",
        "regression",
        "--hidden",
        "none",
        "--workers",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "0.05",
        "--local-steps",
        "10",
        "--batch-size",
        "0",
        "--rho",
        "1",
        "--checkpoint-every",
        "0",
        // Residual tolerances of zero keep the run going to --max-rounds,
        // so that the baseline, which trains as many rounds, also gets
        // there.
        "--eps-abs",
        "0",
        "--eps-rel",
        "0",
        "--max-rounds",
        "60",
    ]);
    let (mut admm_seconds, mut baseline_seconds) = (Vec::new(), Vec::new());
    let (mut admm_rounds, mut baseline_rounds) = (Vec::new(), Vec::new());
    for repetition in 0..settings.pick(1, 9) {
        let name = format!("regression-convergence-{repetition}");
        let run = train_cached(settings, &name, &args)?;
        let Some((seconds, round)) = time_to_gap(&run.metrics, optimum) else {
            bail!(
                "ADMM did not reach a relative gap of {GAP} in {} rounds (last objective {:?}, optimum {optimum})",
                run.metrics.len(),
                run.metrics.last().map(|row| row.objective)
            );
        };
        admm_seconds.push(seconds);
        admm_rounds.push(round as f64);
        let Some((seconds, round)) = time_to_gap(&run.baseline, optimum) else {
            bail!(
                "the baseline did not reach a relative gap of {GAP} in {} rounds (last objective {:?}, optimum {optimum})",
                run.baseline.len(),
                run.baseline.last().map(|row| row.objective)
            );
        };
        baseline_seconds.push(seconds);
        baseline_rounds.push(round as f64);
    }
    let (admm, baseline) = (median(&admm_seconds), median(&baseline_seconds));
    Ok(vec![Figure::new(
        "convergence",
        "linear regression to 1e-3 relative gap, 2 workers",
        "ADMM time / single process time",
        admm / baseline,
        format!(
            "ADMM {:.1} ms ({} rounds), single process {:.1} ms ({} rounds), optimum {optimum:.5}",
            admm * 1e3,
            median(&admm_rounds),
            baseline * 1e3,
            median(&baseline_rounds)
        ),
        Some(Bound::AtMost(1.0)),
    )])
}
