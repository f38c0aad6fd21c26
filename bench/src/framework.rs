//! Framework: one training step of the project's models through tch
//! against the same model, batch, optimizer and thread count in PyTorch
//! (`bench/reference/step.py`), alternating the two so that both see the
//! same machine load.

use crate::report::{Bound, Figure};
use crate::stats::median;
use crate::Settings;
use admm_problems::objective::{build_optimizer, data_loss};
use admm_problems::{Network, ProblemKind, SolverSpec};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Thread counts measured.
const THREADS: [usize; 2] = [1, 2];
/// Untimed steps before each timed block.
const WARM_UP_STEPS: usize = 10;

/// Median seconds of `steps` MLP steps (784-256-10, batch 128, Adam) on
/// one fixed batch, as in the reference script.
fn mlp_step_seconds(steps: usize) -> Result<f64> {
    let network = Network::mlp(&[784, 256, 10], Device::Cpu, 0);
    let mut optimizer = build_optimizer(&SolverSpec::default(), &network)?;
    let inputs = Tensor::randn([128, 784], (Kind::Float, Device::Cpu));
    let targets = Tensor::randint(10, [128], (Kind::Int64, Device::Cpu));
    let mut step = || {
        let loss = data_loss(ProblemKind::Mnist, &network, &inputs, &targets);
        optimizer.backward_step(&loss);
    };
    for _ in 0..WARM_UP_STEPS {
        step();
    }
    let mut seconds = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        step();
        seconds.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&seconds))
}

/// Runs the reference script and returns its median step time.
pub fn python_step_seconds(
    settings: &Settings,
    model: &str,
    threads: usize,
    steps: usize,
) -> Result<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/step.py");
    let output = Command::new(&settings.python)
        .arg(&script)
        .args(["--model", model])
        .args(["--threads", &threads.to_string()])
        .args(["--steps", &steps.to_string()])
        .args(["--warmup", &WARM_UP_STEPS.to_string()])
        .output()
        .with_context(|| {
            format!(
                "failed to start {}; pass --python or set ADMM_VENV",
                settings.python.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} printed no JSON object", script.display()))?;
    reply["median_seconds"]
        .as_f64()
        .with_context(|| format!("{} printed no median_seconds", script.display()))
}

/// Measures the MLP step at each thread count.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let blocks = settings.pick(1, 3);
    let steps = settings.pick(100, 300);
    let mut figures = Vec::new();
    for threads in THREADS {
        tch::set_num_threads(threads as i32);
        let mut rust = Vec::new();
        let mut python = Vec::new();
        for _ in 0..blocks {
            rust.push(mlp_step_seconds(steps)?);
            python.push(python_step_seconds(settings, "mlp", threads, steps)?);
        }
        let (rust, python) = (median(&rust), median(&python));
        figures.push(Figure::new(
            "framework",
            format!("MLP 784-256-10, batch 128, Adam, {threads} thread(s)"),
            "tch step / PyTorch step",
            rust / python,
            format!("tch {:.3} ms, PyTorch {:.3} ms", rust * 1e3, python * 1e3),
            Some(Bound::AtMost(1.05)),
        ));
    }
    Ok(figures)
}
