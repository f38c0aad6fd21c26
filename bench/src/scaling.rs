//! Scaling on one host: MNIST samples per second of 1, 2 and 4 worker
//! processes sharing the cores, against the single-process baseline that
//! uses every core.
//!
//! Samples per second of an ADMM round are N × local steps × batch size
//! over the round's wall time. Those of a baseline round are local steps ×
//! batch size over its training time, which leaves evaluation out.

use crate::processes::{median_after, mnist_flags, strings, train_cached};
use crate::report::{Bound, Figure};
use crate::rounds::{mnist_two_workers, WARM_UP_ROUNDS};
use crate::Settings;
use anyhow::{ensure, Result};

const LOCAL_STEPS: f64 = 50.0;
const BATCH_SIZE: f64 = 64.0;

/// Measures the three worker counts against the baseline.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let rounds = settings.pick("6", "40");
    let mut one_worker = mnist_flags(settings.mnist_dir()?);
    one_worker.extend(strings(&[
        "--workers",
        "1",
        "--local-steps",
        "50",
        "--batch-size",
        "64",
        "--rho",
        "0.1",
        "--max-rounds",
        rounds,
    ]));
    let single = train_cached(settings, "mnist-1-worker", &one_worker)?;
    ensure!(
        single.baseline.len() > WARM_UP_ROUNDS,
        "the baseline ran {} rounds; too few to measure",
        single.baseline.len()
    );
    let baseline_rate = LOCAL_STEPS * BATCH_SIZE
        / median_after(&single.baseline, WARM_UP_ROUNDS, |row| row.round_seconds);

    let mut figures = Vec::new();
    for workers in [1usize, 2, 4] {
        let run = match workers {
            1 => single.clone(),
            2 => train_cached(settings, "mnist-2-workers", &mnist_two_workers(settings)?)?,
            _ => {
                let mut args = mnist_two_workers(settings)?;
                let position = args
                    .iter()
                    .position(|arg| arg == "--workers")
                    .map_or(args.len(), |index| index + 1);
                args[position] = workers.to_string();
                train_cached(settings, &format!("mnist-{workers}-workers"), &args)?
            }
        };
        ensure!(
            run.metrics.len() > WARM_UP_ROUNDS,
            "the {workers}-worker run ended after {} rounds; too few to measure",
            run.metrics.len()
        );
        let round = median_after(&run.metrics, WARM_UP_ROUNDS, |row| row.round_seconds);
        let rate = workers as f64 * LOCAL_STEPS * BATCH_SIZE / round;
        let target = (workers == 2).then_some(Bound::AtLeast(0.85));
        figures.push(Figure::new(
            "scaling",
            format!("MNIST, {workers} worker(s) on all cores"),
            "ADMM samples/s / single process samples/s",
            rate / baseline_rate,
            format!("ADMM {rate:.0} samples/s, single process {baseline_rate:.0} samples/s"),
            target,
        ));
    }
    Ok(figures)
}
