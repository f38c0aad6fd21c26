//! Memory benchmarks. The coordinator's and a worker's peak resident
//! memory in the two-worker MNIST run are compared with the model's
//! parameter bytes. The coordinator's peak for a three-parameter model
//! shows the fixed cost of the process. The bytes one in-process parameter
//! exchange allocates are compared with its payload.

use crate::processes::train_cached;
use crate::report::{Bound, Figure};
use crate::rounds::{mnist_two_workers, tiny_two_workers};
use crate::stats::mebibytes;
use crate::transport::allocation_per_exchange;
use crate::Settings;
use anyhow::{Context, Result};

/// Parameters of the 784-256-10 MLP.
const MNIST_PARAMETERS: usize = 784 * 256 + 256 + 256 * 10 + 10;
/// Workers of the measured run.
const WORKERS: usize = 2;
/// Fixed allowance of the coordinator's memory target.
const ALLOWANCE_BYTES: usize = 64 << 20;

/// Measures the memory figures.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let run = train_cached(settings, "mnist-2-workers", &mnist_two_workers(settings)?)?;
    let parameter_bytes = MNIST_PARAMETERS * 4;
    // The kernel keeps 15 bytes of the command name.

    let peak_of = |prefix: &str| {
        run.peaks
            .iter()
            .filter(|peak| peak.command.starts_with(prefix))
            .map(|peak| peak.peak_bytes as usize)
            .max()
            .with_context(|| format!("no {prefix} process was seen during the run"))
    };
    let coordinator = peak_of("admm-coordinat")?;
    let worker = peak_of("admm-worker")?;
    let budget = (2 * WORKERS + 4) * parameter_bytes + ALLOWANCE_BYTES;
    let mut figures = vec![
        Figure::new(
            "memory",
            "coordinator peak, MNIST MLP, 2 workers",
            "VmHWM / ((2N+4) x parameter bytes + 64 MiB)",
            coordinator as f64 / budget as f64,
            format!(
                "VmHWM {:.1} MiB, target {:.1} MiB, parameters {:.2} MiB",
                mebibytes(coordinator),
                mebibytes(budget),
                mebibytes(parameter_bytes)
            ),
            Some(Bound::AtMost(1.0)),
        ),
        Figure::new(
            "memory",
            "worker peak, MNIST MLP, 2 workers",
            "VmHWM / parameter bytes",
            worker as f64 / parameter_bytes as f64,
            format!(
                "VmHWM {:.1} MiB (largest of the workers), parameters {:.2} MiB",
                mebibytes(worker),
                mebibytes(parameter_bytes)
            ),
            None,
        ),
    ];
    figures.push(fixed_coordinator_peak(settings)?);
    figures.push(allocation_per_exchange(64, settings.pick(2, 5))?);
    Ok(figures)
}

/// Coordinator peak of the tiny regression run, whose three parameters
/// leave only the fixed cost of the process.
fn fixed_coordinator_peak(settings: &Settings) -> Result<Figure> {
    let tiny = train_cached(settings, "tiny-2-workers", &tiny_two_workers(settings))?;
    let tiny_coordinator = tiny
        .peaks
        .iter()
        .filter(|peak| peak.command.starts_with("admm-coordinat"))
        .map(|peak| peak.peak_bytes as usize)
        .max()
        .context("no coordinator process was seen during the tiny run")?;
    // Three parameters: the (2N+4)x term is a few bytes.
    let tiny_budget = (2 * WORKERS + 4) * 3 * 4 + ALLOWANCE_BYTES;
    Ok(Figure::new(
        "memory",
        "coordinator peak, regression d=2 linear, 2 workers",
        "VmHWM / ((2N+4) x parameter bytes + 64 MiB)",
        tiny_coordinator as f64 / tiny_budget as f64,
        format!(
            "VmHWM {:.1} MiB, target {:.1} MiB",
            mebibytes(tiny_coordinator),
            mebibytes(tiny_budget)
        ),
        Some(Bound::AtMost(1.0)),
    ))
}
