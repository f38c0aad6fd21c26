//! The coordinator's side of the GAN split: the generator and its steps
//! against the consensus discriminator z, the interleaved full-objective
//! discriminator steps, the per-round diagnostics with the collapse flag,
//! and the sample grids.
//!
//! The same type serves the single-process baseline ([`super::vanilla`]),
//! so both write diagnostics and grids the same way.

use super::{bce_with_logits, images_to_pixels, load_images, GanSpec};
use crate::data::mnist::Split;
use crate::network::Network;
use crate::objective::BatchSampler;
use crate::rng::SplitMix64;
use crate::spec::{OptimizerKind, ProblemKind, ProblemSpec, SolverSpec};
use admm_report::GanRoundStats;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Random streams of the fixed noise batches and the batch order.
const PROBE_NOISE_STREAM: u64 = 21;
const GRID_NOISE_STREAM: u64 = 22;
const INTERLEAVE_STREAM: u64 = 23;
/// Images in a sample grid: 8 rows of 8.
const GRID_SIDE: i64 = 8;
/// Pixels between the images of a grid.
const GRID_GAP: i64 = 2;
/// Folder of the sample grids in a run directory.
pub const SAMPLES_DIR: &str = "samples";
/// File name of the generator in a run directory.
pub const GENERATOR_FILE: &str = "generator.safetensors";

/// Options of the coordinator (and of the baseline) for the generator's
/// training, the diagnostics of the split, and the interleaving remedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GanTraining {
    /// GAN: generator steps per round, against the consensus discriminator
    /// (admm-train passes the workers' --local-steps).
    #[arg(long, default_value_t = 20)]
    pub generator_steps: usize,
    /// GAN: mini-batch size of the generator's steps (admm-train passes the
    /// workers' --batch-size).
    #[arg(long, default_value_t = 64)]
    pub generator_batch_size: usize,
    /// GAN: Adam learning rate of the generator and of interleaved steps.
    #[arg(long, default_value_t = 2e-4)]
    pub generator_lr: f64,
    /// GAN: after every R-th round, take ordinary discriminator steps on the
    /// full objective at z (the interleaving remedy); 0 turns it off.
    #[arg(long, default_value_t = 0)]
    pub interleave_every: u64,
    /// GAN: number of interleaved discriminator steps each time.
    #[arg(long, default_value_t = 20)]
    pub interleave_steps: usize,
    /// GAN: the collapse flag fires when the real half's mean probability
    /// of "real" is at least T on both real and generated images and the
    /// fake half's is at most 1 − T on both.
    #[arg(long, default_value_t = 0.9)]
    pub collapse_threshold: f64,
    /// GAN: images in each probe batch of the diagnostics.
    #[arg(long, default_value_t = 256)]
    pub probe_size: usize,
    /// GAN: write a sample grid every N rounds; 0 turns it off.
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    /// GAN: epochs after which to write a sample grid, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![50.0, 150.0, 250.0])]
    pub sample_epochs: Vec<f64>,
    /// GAN: device of the generator at the coordinator, cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub generator_device: String,
}

impl Default for GanTraining {
    fn default() -> Self {
        Self {
            generator_steps: 20,
            generator_batch_size: 64,
            generator_lr: 2e-4,
            interleave_every: 0,
            interleave_steps: 20,
            collapse_threshold: 0.9,
            probe_size: 256,
            sample_every: 0,
            sample_epochs: vec![50.0, 150.0, 250.0],
            generator_device: "cpu".into(),
        }
    }
}

impl GanTraining {
    /// Checks the options, naming the first invalid value.
    pub fn validate(&self) -> Result<()> {
        if self.generator_steps == 0 || self.generator_batch_size == 0 {
            bail!(
                "--generator-steps and --generator-batch-size must be at least 1, got {} and {}",
                self.generator_steps,
                self.generator_batch_size
            );
        }
        if !(self.generator_lr.is_finite() && self.generator_lr > 0.0) {
            bail!("--generator-lr must be positive, got {}", self.generator_lr);
        }
        if !(0.5..1.0).contains(&self.collapse_threshold) {
            bail!(
                "--collapse-threshold must be in [0.5, 1), got {}",
                self.collapse_threshold
            );
        }
        if self.probe_size == 0 {
            bail!("--probe-size must be at least 1, got 0");
        }
        if let Some(bad) = self
            .sample_epochs
            .iter()
            .find(|e| !(e.is_finite() && **e > 0.0))
        {
            bail!("--sample-epochs must be positive numbers, got {bad}");
        }
        crate::parse_device(&self.generator_device)?;
        Ok(())
    }
}

/// Mean probabilities of "real" that one discriminator gives to the real
/// and to the generated probe images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// On real images.
    pub on_real: f64,
    /// On generated images.
    pub on_fake: f64,
}

/// Returns whether the halves have degenerated: the real half calls nearly
/// everything real and the fake half nearly everything fake.
pub fn is_collapsed(real_half: Verdict, fake_half: Verdict, threshold: f64) -> bool {
    real_half.on_real >= threshold
        && real_half.on_fake >= threshold
        && fake_half.on_real <= 1.0 - threshold
        && fake_half.on_fake <= 1.0 - threshold
}

/// Standard normal noise of `count × latent` from our own generator, so a
/// fixed batch is the same on every device and every run.
fn fixed_noise(count: usize, latent: usize, seed: u64, stream: u64, device: Device) -> Tensor {
    let mut rng = SplitMix64::new(seed, stream);
    let values: Vec<f32> = (0..count * latent).map(|_| rng.normal() as f32).collect();
    Tensor::from_slice(&values)
        .view([count as i64, latent as i64])
        .to_device(device)
}

/// The generator, a discriminator to load z (or x_i) into, the data and the
/// fixed batches of the diagnostics.
pub struct GanTrainer {
    spec: GanSpec,
    training: GanTraining,
    generator: Network,
    generator_optimizer: nn::Optimizer,
    critic: Network,
    critic_optimizer: nn::Optimizer,
    images: Tensor,
    sampler: BatchSampler,
    probe_real: Tensor,
    probe_noise: Tensor,
    grid_noise: Tensor,
    epochs_per_round: f64,
}

impl GanTrainer {
    /// Loads the training images and builds the generator of `problem`.
    /// `real_batches` is the number of real-image batches the discriminator
    /// takes per generator step (the real-half workers, or 1).
    pub fn new(problem: &ProblemSpec, training: &GanTraining, real_batches: usize) -> Result<Self> {
        training.validate()?;
        let device = crate::parse_device(&training.generator_device)?;
        let dir = problem.data_dir.as_deref().ok_or_else(|| {
            anyhow::anyhow!("gan needs the MNIST folder: pass --data-dir DIR or set ADMM_MNIST_DIR")
        })?;
        let images = load_images(dir, Split::Train, problem.train_limit)?.to_device(device);
        let test = load_images(dir, Split::Test, training.probe_size)?.to_device(device);
        let spec = problem.gan.clone();
        tch::manual_seed(problem.seed as i64);
        let generator = Network::generator(&spec, device, problem.seed);
        let mut critic = Network::discriminator(&spec, device, problem.seed);
        critic.set_trainable(false);
        let adam = SolverSpec {
            optimizer: OptimizerKind::Adam,
            lr: training.generator_lr,
            ..Default::default()
        };
        let generator_optimizer =
            crate::objective::build_optimizer(&adam, ProblemKind::Gan, &generator)?;
        let critic_optimizer = nn::Adam {
            beta1: 0.5,
            ..Default::default()
        }
        .build(critic.var_store(), training.generator_lr)?;
        let train_len = images.size()[0] as usize;
        let sampler = BatchSampler::new(
            train_len,
            training.generator_batch_size,
            SplitMix64::new(problem.seed, INTERLEAVE_STREAM),
        );
        let epochs_per_round =
            (training.generator_steps * training.generator_batch_size * real_batches.max(1)) as f64
                / train_len as f64;
        let probe_count = test.size()[0] as usize;
        Ok(Self {
            probe_noise: fixed_noise(
                probe_count,
                spec.latent_dim,
                problem.seed,
                PROBE_NOISE_STREAM,
                device,
            ),
            grid_noise: fixed_noise(
                (GRID_SIDE * GRID_SIDE) as usize,
                spec.latent_dim,
                problem.seed,
                GRID_NOISE_STREAM,
                device,
            ),
            probe_real: test,
            spec,
            training: training.clone(),
            generator,
            generator_optimizer,
            critic,
            critic_optimizer,
            images,
            sampler,
            epochs_per_round,
        })
    }

    /// The generator.
    pub fn generator(&self) -> &Network {
        &self.generator
    }

    /// Returns the generator's parameters as one vector.
    pub fn generator_flat(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.generator.write_flat(&mut out);
        out
    }

    /// Restores the generator from a checkpoint.
    pub fn load_generator(&mut self, theta: &[f32]) -> Result<()> {
        self.generator.load_flat(theta)
    }

    /// Number of training images.
    pub fn train_len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// Epochs completed after `round` rounds.
    pub fn epoch(&self, round: u64) -> f64 {
        round as f64 * self.epochs_per_round
    }

    /// A batch of generator noise from the training stream.
    fn noise(&self) -> Tensor {
        Tensor::randn(
            [
                self.training.generator_batch_size as i64,
                self.spec.latent_dim as i64,
            ],
            (Kind::Float, self.generator.device()),
        )
    }

    /// Takes the round's generator steps against discriminator `z` and
    /// returns the mean generator loss.
    pub fn train_generator(&mut self, z: &[f32]) -> Result<f64> {
        self.generator_steps(z, self.training.generator_steps)
    }

    /// Takes `steps` generator steps against discriminator `z` and returns
    /// the mean generator loss.
    pub fn generator_steps(&mut self, z: &[f32], steps: usize) -> Result<f64> {
        self.critic.load_flat(z)?;
        let mut sum = 0.0;
        for _ in 0..steps {
            let fake = self.generator.forward_t(&self.noise(), true);
            let loss = bce_with_logits(&self.critic.forward_t(&fake, true), 1.0);
            self.generator_optimizer.backward_step(&loss);
            sum += loss.double_value(&[]);
        }
        Ok(sum / steps.max(1) as f64)
    }

    /// Returns whether interleaved discriminator steps are due after
    /// `round`.
    pub fn interleaves_after(&self, round: u64) -> bool {
        self.training.interleave_every > 0 && round.is_multiple_of(self.training.interleave_every)
    }

    /// Takes `steps` ordinary discriminator steps on the full objective,
    /// BCE(D(x), 1) + BCE(D(G(ζ)), 0), starting from and writing back `z`.
    /// Returns the mean loss.
    pub fn discriminator_steps(&mut self, z: &mut Vec<f32>, steps: usize) -> Result<f64> {
        self.critic.load_flat(z)?;
        self.critic.set_trainable(true);
        let device = self.critic.device();
        let mut sum = 0.0;
        for _ in 0..steps {
            let indices = Tensor::from_slice(self.sampler.next_batch()).to_device(device);
            let real = self.images.index_select(0, &indices);
            let fake = tch::no_grad(|| self.generator.forward_t(&self.noise(), true));
            let loss = bce_with_logits(&self.critic.forward_t(&real, true), 1.0)
                + bce_with_logits(&self.critic.forward_t(&fake, true), 0.0);
            self.critic_optimizer.backward_step(&loss);
            sum += loss.double_value(&[]);
        }
        self.critic.set_trainable(false);
        self.critic.write_flat(z);
        Ok(sum / steps.max(1) as f64)
    }

    /// Number of interleaved steps each time the schedule fires.
    pub fn interleave_steps(&self) -> usize {
        self.training.interleave_steps
    }

    /// Measures the mean probabilities discriminator `theta` gives to the
    /// probe batches.
    pub fn verdict(&mut self, theta: &[f32]) -> Result<Verdict> {
        self.critic.load_flat(theta)?;
        tch::no_grad(|| {
            let fake = self.generator.forward_t(&self.probe_noise, true);
            let on_real = self
                .critic
                .forward_t(&self.probe_real, true)
                .sigmoid()
                .mean(Kind::Double);
            let on_fake = self
                .critic
                .forward_t(&fake, true)
                .sigmoid()
                .mean(Kind::Double);
            Ok(Verdict {
                on_real: on_real.double_value(&[]),
                on_fake: on_fake.double_value(&[]),
            })
        })
    }

    /// Computes the full discriminator objective of `theta` on the probe
    /// batches.
    fn probe_loss(&mut self, theta: &[f32]) -> Result<f64> {
        self.critic.load_flat(theta)?;
        Ok(tch::no_grad(|| {
            let fake = self.generator.forward_t(&self.probe_noise, true);
            (bce_with_logits(&self.critic.forward_t(&self.probe_real, true), 1.0)
                + bce_with_logits(&self.critic.forward_t(&fake, true), 0.0))
            .double_value(&[])
        }))
    }

    /// Measures the diagnostics after `round` from the consensus `z` and,
    /// for a split run, the mean x_i of each half.
    pub fn diagnose(
        &mut self,
        round: u64,
        z: &[f32],
        halves: Option<(&[f32], &[f32])>,
        generator_loss: f64,
    ) -> Result<GanRoundStats> {
        let consensus = self.verdict(z)?;
        let mut stats = GanRoundStats {
            epoch: self.epoch(round),
            generator_loss,
            discriminator_loss: self.probe_loss(z)?,
            consensus_on_real: consensus.on_real,
            consensus_on_fake: consensus.on_fake,
            ..Default::default()
        };
        if let Some((real_half, fake_half)) = halves {
            let real = self.verdict(real_half)?;
            let fake = self.verdict(fake_half)?;
            stats.real_half_on_real = Some(real.on_real);
            stats.real_half_on_fake = Some(real.on_fake);
            stats.fake_half_on_real = Some(fake.on_real);
            stats.fake_half_on_fake = Some(fake.on_fake);
            stats.collapsed = is_collapsed(real, fake, self.training.collapse_threshold);
        }
        Ok(stats)
    }

    /// Lists the grids due after `round` under the schedule, as file names
    /// within the samples folder.
    pub fn grids_due(&self, round: u64) -> Vec<String> {
        grids_due(&self.training, self.epochs_per_round, round)
    }

    /// Writes the 8×8 grid of the fixed noise batch as a PNG.
    pub fn write_grid(&self, path: &Path) -> Result<()> {
        let images = tch::no_grad(|| self.generator.forward_t(&self.grid_noise, true));
        write_grid(&images, path)
    }

    /// Writes due grids into `run_dir/samples/`, returning their paths.
    pub fn write_due_grids(&self, run_dir: &Path, round: u64) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for name in self.grids_due(round) {
            let dir = run_dir.join(SAMPLES_DIR);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            let path = dir.join(name);
            self.write_grid(&path)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Lists the grids due after `round` when each round is
/// `epochs_per_round` epochs: one per scheduled epoch passed in this round,
/// and one every `sample_every` rounds.
fn grids_due(training: &GanTraining, epochs_per_round: f64, round: u64) -> Vec<String> {
    let mut names = Vec::new();
    let before = round.saturating_sub(1) as f64 * epochs_per_round;
    let after = round as f64 * epochs_per_round;
    for &epoch in &training.sample_epochs {
        if before < epoch && epoch <= after {
            names.push(format!("epoch-{epoch}.png"));
        }
    }
    if training.sample_every > 0 && round.is_multiple_of(training.sample_every) {
        names.push(format!("round-{round:06}.png"));
    }
    names
}

/// Writes up to 64 images in [-1, 1] as an 8×8 PNG grid on a black
/// background.
pub fn write_grid(images: &Tensor, path: &Path) -> Result<()> {
    let pixels = images_to_pixels(images);
    let count = (pixels.len() / 784).min((GRID_SIDE * GRID_SIDE) as usize);
    let cell = 28 + GRID_GAP;
    let side = (GRID_SIDE * cell + GRID_GAP) as usize;
    let mut canvas = vec![0u8; side * side];
    for index in 0..count {
        let (row, col) = (index as i64 / GRID_SIDE, index as i64 % GRID_SIDE);
        let (top, left) = (
            (GRID_GAP + row * cell) as usize,
            (GRID_GAP + col * cell) as usize,
        );
        for y in 0..28 {
            let source = &pixels[index * 784 + y * 28..index * 784 + y * 28 + 28];
            let start = (top + y) * side + left;
            canvas[start..start + 28].copy_from_slice(source);
        }
    }
    let tensor = Tensor::from_slice(&canvas)
        .view([1, side as i64, side as i64])
        .repeat([3, 1, 1]);
    let tmp = path.with_extension("tmp.png");
    tch::vision::image::save(&tensor, &tmp)
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(on_real: f64, on_fake: f64) -> Verdict {
        Verdict { on_real, on_fake }
    }

    #[test]
    fn collapse_needs_both_halves_degenerate() {
        assert!(is_collapsed(verdict(0.99, 0.98), verdict(0.01, 0.02), 0.9));
        assert!(!is_collapsed(verdict(0.99, 0.98), verdict(0.6, 0.02), 0.9));
        assert!(!is_collapsed(verdict(0.8, 0.3), verdict(0.7, 0.2), 0.9));
    }

    #[test]
    fn grid_schedule_follows_epochs_and_rounds() {
        let training = GanTraining {
            sample_epochs: vec![1.0, 2.5],
            sample_every: 4,
            ..Default::default()
        };
        let due: Vec<(u64, Vec<String>)> = (1..=8)
            .map(|round| (round, grids_due(&training, 0.5, round)))
            .filter(|(_, names)| !names.is_empty())
            .collect();
        let expected = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            due,
            [
                (2, expected(&["epoch-1.png"])),
                (4, expected(&["round-000004.png"])),
                (5, expected(&["epoch-2.5.png"])),
                (8, expected(&["round-000008.png"])),
            ]
        );
    }
}
