//! The DCGAN trained the ordinary way in one process: alternating one
//! discriminator step on the full objective and one non-saturating
//! generator step, with Adam, as the reference the split is compared with.
//!
//! A baseline round is `generator_steps` such pairs with discriminator
//! batches of `generator_batch_size × real-half workers` real images, so
//! that a baseline round and an ADMM round see the same number of real
//! images and the same epochs.

use super::trainer::{GanTrainer, GanTraining};
use crate::network::Network;
use crate::spec::ProblemSpec;
use admm_report::RoundRow;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;

/// Folder of the baseline's sample grids in a run directory.
pub const BASELINE_SAMPLES_DIR: &str = "baseline-samples";
/// File name of the baseline's generator in a run directory.
pub const BASELINE_GENERATOR_FILE: &str = "baseline-generator.safetensors";

/// Trains the vanilla DCGAN for `rounds` rounds, writing its grids into
/// `run_dir/baseline-samples/` and its generator into `run_dir`, and
/// calling `on_row` after each round. Returns the rows.
pub fn train_vanilla(
    spec: &ProblemSpec,
    training: &GanTraining,
    rounds: u64,
    run_dir: &Path,
    mut on_row: impl FnMut(&RoundRow) -> Result<()>,
) -> Result<Vec<RoundRow>> {
    let training = GanTraining {
        generator_batch_size: training.generator_batch_size * spec.gan.real_workers.max(1),
        interleave_every: 0,
        ..training.clone()
    };
    let mut trainer = GanTrainer::new(spec, &training, 1)?;
    let mut discriminator = Vec::new();
    Network::discriminator(&spec.gan, tch::Device::Cpu, spec.seed).write_flat(&mut discriminator);
    let samples = run_dir.join(BASELINE_SAMPLES_DIR);
    let start = Instant::now();
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let round_start = Instant::now();
        let mut generator_loss = 0.0;
        let mut discriminator_loss = 0.0;
        for _ in 0..training.generator_steps {
            discriminator_loss += trainer.discriminator_steps(&mut discriminator, 1)?;
            generator_loss += trainer.generator_steps(&discriminator, 1)?;
        }
        let steps = training.generator_steps as f64;
        let round_seconds = round_start.elapsed().as_secs_f64();
        let elapsed_seconds = start.elapsed().as_secs_f64();
        let stats = trainer.diagnose(round, &discriminator, None, generator_loss / steps)?;
        for name in trainer.grids_due(round) {
            std::fs::create_dir_all(&samples)
                .with_context(|| format!("failed to create {}", samples.display()))?;
            trainer.write_grid(&samples.join(name))?;
        }
        let row = RoundRow {
            method: "baseline".into(),
            round,
            elapsed_seconds,
            round_seconds,
            loss: stats.discriminator_loss,
            objective: stats.discriminator_loss,
            worker_loss: vec![discriminator_loss / steps],
            gan: Some(stats),
            ..Default::default()
        };
        on_row(&row)?;
        rows.push(row);
    }
    std::fs::create_dir_all(&samples)
        .with_context(|| format!("failed to create {}", samples.display()))?;
    trainer.write_grid(&samples.join("final.png"))?;
    trainer
        .generator()
        .save_safetensors(&run_dir.join(BASELINE_GENERATOR_FILE))?;
    Ok(rows)
}
