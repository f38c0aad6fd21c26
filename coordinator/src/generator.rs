//! The GAN problem's additions to a coordinator round: after the z-update,
//! the interleaved discriminator steps (when scheduled), the generator's
//! steps against z, the diagnostics with the collapse flag, and the sample
//! grids. The generator travels to the workers with every round and is
//! saved in every checkpoint and in the run's outputs.

use admm_consensus::ConsensusState;
use admm_problems::gan::trainer::{GanTrainer, GanTraining, GENERATOR_FILE, SAMPLES_DIR};
use admm_problems::ProblemSpec;
use admm_report::GanRoundStats;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tracing::{info, warn};

/// Name of the generator's tensor in a checkpoint.
pub const CHECKPOINT_TENSOR: &str = "generator";

/// The coordinator's generator and what it needs to know about the halves.
pub struct GeneratorRole {
    trainer: GanTrainer,
    real_workers: usize,
    flat: Vec<f32>,
}

impl GeneratorRole {
    /// Builds the generator for `problem` run with `num_workers` workers.
    pub fn new(problem: &ProblemSpec, training: &GanTraining) -> Result<Self> {
        let real_workers = problem.gan.real_workers;
        let trainer = GanTrainer::new(problem, training, real_workers)?;
        let flat = trainer.generator_flat();
        Ok(Self {
            trainer,
            real_workers,
            flat,
        })
    }

    /// Number of training images.
    pub fn train_len(&self) -> usize {
        self.trainer.train_len()
    }

    /// Returns the generator's parameters as broadcast and checkpointed.
    pub fn flat(&self) -> &[f32] {
        &self.flat
    }

    /// Restores the generator from a loaded checkpoint's companion tensors.
    pub fn restore(&mut self, companions: &[(String, Vec<f32>)]) -> Result<()> {
        let Some((_, values)) = companions.iter().find(|(n, _)| n == CHECKPOINT_TENSOR) else {
            bail!(
                "the checkpoint has no {CHECKPOINT_TENSOR} tensor; it was not written by a GAN run"
            );
        };
        self.trainer.load_generator(values)?;
        self.flat = values.clone();
        Ok(())
    }

    /// Runs the GAN steps after the z-update of `round`, changing z when the
    /// interleaving schedule fires, and returns the round's diagnostics.
    pub fn after_round(
        &mut self,
        round: u64,
        state: &mut ConsensusState,
        threshold: f64,
    ) -> Result<GanRoundStats> {
        let mut interleaved_steps = 0;
        if self.trainer.interleaves_after(round) {
            let steps = self.trainer.interleave_steps();
            let loss = self.trainer.discriminator_steps(&mut state.z, steps)?;
            interleaved_steps = steps as u64;
            info!(round, steps, loss, "interleaved discriminator steps on z");
        }
        let generator_loss = self.trainer.train_generator(&state.z)?;
        self.flat = self.trainer.generator_flat();
        let (real, fake) = state.locals.split_at(self.real_workers);
        let halves = (mean(real), mean(fake));
        let mut stats = self.trainer.diagnose(
            round,
            &state.z,
            Some((&halves.0, &halves.1)),
            generator_loss,
        )?;
        stats.interleaved_steps = interleaved_steps;
        if stats.collapsed {
            warn!(
                round,
                real_half_on_real = stats.real_half_on_real,
                real_half_on_fake = stats.real_half_on_fake,
                fake_half_on_real = stats.fake_half_on_real,
                fake_half_on_fake = stats.fake_half_on_fake,
                threshold,
                "the split discriminator has collapsed: the real half calls nearly every image real and the fake half nearly every image fake; try --cross-weight, --interleave-every or a larger --rho"
            );
        }
        Ok(stats)
    }

    /// Writes the sample grids due after `round`.
    pub fn write_due_grids(&self, run_dir: &Path, round: u64) -> Result<()> {
        for path in self.trainer.write_due_grids(run_dir, round)? {
            info!(round, path = %path.display(), "sample grid written");
        }
        Ok(())
    }

    /// Writes the generator and a final grid into the run directory.
    pub fn write_outputs(&self, run_dir: &Path) -> Result<()> {
        self.trainer
            .generator()
            .save_safetensors(&run_dir.join(GENERATOR_FILE))?;
        let samples = run_dir.join(SAMPLES_DIR);
        std::fs::create_dir_all(&samples)
            .with_context(|| format!("failed to create {}", samples.display()))?;
        self.trainer.write_grid(&samples.join("final.png"))
    }
}

/// Element-wise mean of equally long vectors.
fn mean(vectors: &[Vec<f32>]) -> Vec<f32> {
    let n = vectors.first().map_or(0, Vec::len);
    let mut sum = vec![0f64; n];
    for v in vectors {
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += f64::from(x);
        }
    }
    let count = vectors.len().max(1) as f64;
    sum.into_iter().map(|s| (s / count) as f32).collect()
}
