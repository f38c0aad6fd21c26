//! Round overhead. For the MNIST classifier and the DCGAN discriminator it
//! is the part of an ADMM round that is not the slowest worker's local
//! compute. For a tiny model
//! whose compute is negligible, the whole round is compared with an empty
//! gRPC round trip on loopback.

use crate::processes::{median_after, mnist_flags, strings, train_cached, TrainingRun};
use crate::report::{Bound, Figure};
use crate::transport::empty_call_seconds;
use crate::Settings;
use anyhow::{ensure, Result};

/// Rounds skipped at the start of a run: the first includes registration,
/// loading and allocating the buffers.
pub const WARM_UP_ROUNDS: usize = 2;

/// Arguments of the two-worker MNIST run that the overhead, scaling and
/// memory benchmarks share.
pub fn mnist_two_workers(settings: &Settings) -> Result<Vec<String>> {
    let mut args = mnist_flags(settings.mnist_dir()?);
    args.extend(strings(&[
        "--workers",
        "2",
        "--local-steps",
        "50",
        "--batch-size",
        "64",
        "--rho",
        "0.1",
        "--no-baseline",
    ]));
    args.push("--max-rounds".into());
    args.push(settings.pick("6", "40").into());
    Ok(args)
}

/// Arguments of the DCGAN discriminator run: one worker for the real-data
/// half and one for the fake-data half.
fn gan_two_workers(settings: &Settings) -> Result<Vec<String>> {
    let mut args = mnist_flags(settings.mnist_dir()?);
    args[1] = "gan".into();
    args.extend(strings(&[
        "--workers",
        "2",
        "--local-steps",
        "20",
        "--batch-size",
        "64",
        "--no-baseline",
    ]));
    args.push("--max-rounds".into());
    args.push(settings.pick("4", "15").into());
    Ok(args)
}

/// Measures the three overhead figures.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let mnist = train_cached(settings, "mnist-2-workers", &mnist_two_workers(settings)?)?;
    let mut figures = vec![compute_overhead(
        &mnist,
        "MNIST MLP, 2 workers, 50 local steps",
    )?];
    let gan = train_cached(settings, "gan-2-workers", &gan_two_workers(settings)?)?;
    figures.push(compute_overhead(
        &gan,
        "DCGAN discriminator halves, 2 workers, 20 local steps",
    )?);
    figures.push(tiny_round(settings)?);
    Ok(figures)
}

/// Median share of a round that is not the slowest worker's compute.
fn compute_overhead(run: &TrainingRun, case: &str) -> Result<Figure> {
    ensure!(
        run.metrics.len() > WARM_UP_ROUNDS,
        "the run \"{case}\" ended after {} rounds; too few to measure",
        run.metrics.len()
    );
    let slowest = |row: &admm_report::RoundRow| {
        row.worker_compute_seconds
            .iter()
            .copied()
            .fold(0.0, f64::max)
    };
    let overhead = median_after(&run.metrics, WARM_UP_ROUNDS, |row| {
        (row.round_seconds - slowest(row)) / row.round_seconds
    });
    let round = median_after(&run.metrics, WARM_UP_ROUNDS, |row| row.round_seconds);
    let compute = median_after(&run.metrics, WARM_UP_ROUNDS, slowest);
    Ok(Figure::new(
        "overhead",
        case,
        "(round - slowest compute) / round",
        overhead,
        format!(
            "round {:.1} ms, slowest compute {:.1} ms",
            round * 1e3,
            compute * 1e3
        ),
        Some(Bound::AtMost(0.05)),
    ))
}

/// Arguments of the tiny regression run: d = 2, a linear model, two
/// workers and one full-batch step per round, so that compute is
/// negligible.
pub fn tiny_two_workers(settings: &Settings) -> Vec<String> {
    let mut args = strings(&[
        "--problem",
        "regression",
        "--dim",
        "2",
        "--hidden",
        "none",
        "--workers",
        "2",
        "--local-steps",
        "1",
        "--batch-size",
        "0",
        "--checkpoint-every",
        "0",
        "--no-baseline",
        // Residual tolerances of zero keep the run going to --max-rounds.
        "--eps-abs",
        "0",
        "--eps-rel",
        "0",
    ]);
    args.push("--max-rounds".into());
    args.push(settings.pick("50", "500").into());
    args
}

fn tiny_round(settings: &Settings) -> Result<Figure> {
    let args = tiny_two_workers(settings);
    let run = train_cached(settings, "tiny-2-workers", &args)?;
    ensure!(
        run.metrics.len() > WARM_UP_ROUNDS,
        "the tiny run ended after {} rounds; too few to measure",
        run.metrics.len()
    );
    let round = median_after(&run.metrics, WARM_UP_ROUNDS, |row| row.round_seconds);
    let empty = empty_call_seconds(settings.pick(200, 1000))?;
    Ok(Figure::new(
        "overhead",
        "regression d=2 linear, 2 workers, 1 local step",
        "round / empty unary gRPC call",
        round / empty,
        format!(
            "round {:.3} ms, empty call {:.3} ms",
            round * 1e3,
            empty * 1e3
        ),
        Some(Bound::AtMost(3.0)),
    ))
}
