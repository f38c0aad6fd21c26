//! Framework: one training step of the project's models through tch
//! against the same model, batch, optimizer and thread count in PyTorch
//! (`bench/reference/step.py`), alternating the two so that both see the
//! same machine load.

use crate::report::{Bound, Figure};
use crate::stats::median;
use crate::Settings;
use admm_problems::gan::{bce_with_logits, GanSpec};
use admm_problems::objective::{build_optimizer, data_loss};
use admm_problems::{Network, ProblemKind, SolverSpec};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Thread counts measured.
const THREADS: [usize; 2] = [1, 2];
/// Untimed steps before each timed block.
const WARM_UP_STEPS: usize = 10;

/// Median seconds of `steps` MLP steps (784-256-10, batch 128, Adam) on
/// one fixed batch, as in the reference script.
fn mlp_step_seconds(steps: usize) -> Result<f64> {
    let network = Network::mlp(&[784, 256, 10], Device::Cpu, 0);
    let mut optimizer = build_optimizer(&SolverSpec::default(), ProblemKind::Mnist, &network)?;
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

/// Batch size of the DCGAN step.
const DCGAN_BATCH: i64 = 64;

/// Median seconds of `steps` DCGAN steps. A step is one discriminator
/// step and one generator step, each with Adam at lr 2e-4 and betas
/// (0.5, 0.999), batch 64, both models in training mode. The
/// discriminator loss sums the real batch labelled 1 and a detached
/// generated batch labelled 0. The generator loss labels the generated
/// batch 1.
fn dcgan_step_seconds(steps: usize) -> Result<f64> {
    let spec = GanSpec::default();
    let generator = Network::generator(&spec, Device::Cpu, 0);
    let discriminator = Network::discriminator(&spec, Device::Cpu, 1);
    let adam = nn::Adam {
        beta1: 0.5,
        beta2: 0.999,
        ..Default::default()
    };
    let mut generator_optimizer = adam.build(generator.var_store(), 2e-4)?;
    let mut discriminator_optimizer = adam.build(discriminator.var_store(), 2e-4)?;
    let real = Tensor::rand([DCGAN_BATCH, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let latent = spec.latent_dim as i64;

    let mut step = || {
        let noise = Tensor::randn([DCGAN_BATCH, latent], (Kind::Float, Device::Cpu));
        let fake = generator.forward_t(&noise, true);
        let discriminator_loss = bce_with_logits(&discriminator.forward_t(&real, true), 1.0)
            + bce_with_logits(&discriminator.forward_t(&fake.detach(), true), 0.0);
        discriminator_optimizer.backward_step(&discriminator_loss);

        let generator_loss = bce_with_logits(&discriminator.forward_t(&fake, true), 1.0);
        generator_optimizer.backward_step(&generator_loss);
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

/// Median seconds of a number of training steps of one model.
type StepTimer = fn(usize) -> Result<f64>;

/// Measures the MLP and DCGAN steps at each thread count.
pub fn run(settings: &Settings) -> Result<Vec<Figure>> {
    let blocks = settings.pick(1, 5);
    let mut figures = Vec::new();
    let models: [(&str, &str, StepTimer, usize); 2] = [
        (
            "mlp",
            "MLP 784-256-10, batch 128, Adam",
            mlp_step_seconds,
            settings.pick(100, 300),
        ),
        (
            "dcgan",
            "DCGAN f=32 L=64, batch 64, D+G step",
            dcgan_step_seconds,
            settings.pick(5, 20),
        ),
    ];
    for (model, label, rust_step, steps) in models {
        for threads in THREADS {
            tch::set_num_threads(threads as i32);
            let mut rust = Vec::new();
            let mut python = Vec::new();
            for _ in 0..blocks {
                rust.push(rust_step(steps)?);
                python.push(python_step_seconds(settings, model, threads, steps)?);
            }
            let (rust, python) = (median(&rust), median(&python));
            figures.push(Figure::new(
                "framework",
                format!("{label}, {threads} thread(s)"),
                "tch step / PyTorch step",
                rust / python,
                format!("tch {:.3} ms, PyTorch {:.3} ms", rust * 1e3, python * 1e3),
                Some(Bound::AtMost(1.05)),
            ));
        }
    }
    Ok(figures)
}
