//! A worker's half of the split discriminator objective and its inexact
//! x-update.
//!
//! ```text
//! real half:  f_i(θ) = (1/K)·[BCE(D(x; θ), 1) + w·BCE(D(G(ζ); θ), 0)]
//! fake half:  f_i(θ) = (1/M)·[BCE(D(G(ζ); θ), 0) + w·BCE(D(x; θ), 1)]
//! ```
//!
//! with K real-half and M fake-half workers. x comes from the worker's shard
//! of the training images and ζ from the worker's own noise stream. G is the
//! coordinator's generator of this round, and w the cross weight (0 for the
//! plain split). The x-update takes `local_steps` optimizer steps on
//! `f_i(θ) + (ρ/2)·‖θ − z + u_i‖²`, warm-started from the previous x_i.

use super::{bce_with_logits, GanSpec, ROLE_REAL};
use crate::data::Dataset;
use crate::network::Network;
use crate::objective::{
    anchors, build_optimizer, proximal_penalty, BatchSampler, LocalStats, LocalTerm,
};
use crate::rng::SplitMix64;
use crate::spec::{ProblemKind, ProblemSpec, SolverSpec};
use anyhow::{bail, Result};
use std::time::Duration;
use tch::nn;
use tch::{Device, Kind, Tensor};

/// Random stream of a worker's batch order.
fn sampler_stream(index: usize) -> u64 {
    2000 + index as u64
}

/// One worker's half of the discriminator objective.
pub struct GanLocalSolver {
    real_half: bool,
    spec: GanSpec,
    discriminator: Network,
    generator: Network,
    images: Tensor,
    weight: f64,
    sampler: BatchSampler,
    optimizer: nn::Optimizer,
    solver: SolverSpec,
    initialized: bool,
    seed: u64,
    index: usize,
    step_delay: Duration,
}

impl GanLocalSolver {
    /// Prepares worker `index` of `count`: its half follows from the index
    /// (see [`GanSpec::role`]), and it takes its half's share of `data`.
    pub fn new(
        spec: &ProblemSpec,
        solver: &SolverSpec,
        data: &Dataset,
        index: usize,
        count: usize,
        device: Device,
    ) -> Result<Self> {
        let gan = &spec.gan;
        gan.check_workers(count)?;
        if index >= count {
            bail!("worker id {index} is out of range for {count} workers");
        }
        let real_half = gan.role(index) == ROLE_REAL;
        let (position, half_size) = if real_half {
            (index, gan.real_workers)
        } else {
            (index - gan.real_workers, count - gan.real_workers)
        };
        if data.len() < half_size {
            bail!(
                "{half_size} workers in one half need at least {half_size} training images, the \
                 data set has {}",
                data.len()
            );
        }
        let images = data.shard(position, half_size).inputs.to_device(device);
        let discriminator = Network::discriminator(gan, device, spec.seed);
        let generator = Network::generator(gan, device, spec.seed);
        let optimizer = build_optimizer(solver, ProblemKind::Gan, &discriminator)?;
        let sampler = BatchSampler::new(
            images.size()[0] as usize,
            solver.batch_size,
            SplitMix64::new(spec.seed, sampler_stream(index)),
        );
        // Each worker draws its own noise; the seed keeps runs repeatable.
        tch::manual_seed((spec.seed.wrapping_mul(1000) + index as u64) as i64);
        Ok(Self {
            real_half,
            spec: gan.clone(),
            discriminator,
            generator,
            images,
            weight: 1.0 / half_size as f64,
            sampler,
            optimizer,
            solver: solver.clone(),
            initialized: false,
            seed: spec.seed,
            index,
            step_delay: Duration::ZERO,
        })
    }

    /// Returns whether this worker computes the real-data half.
    pub fn is_real_half(&self) -> bool {
        self.real_half
    }

    /// Computes the half's own term and, with a cross weight, the other
    /// half's term, on one mini-batch.
    fn terms(&mut self) -> (Tensor, Option<Tensor>) {
        let device = self.discriminator.device();
        let cross = self.spec.cross_weight > 0.0;
        let real_term = |this: &mut Self| {
            let indices = Tensor::from_slice(this.sampler.next_batch()).to_device(device);
            let real = this.images.index_select(0, &indices);
            bce_with_logits(&this.discriminator.forward_t(&real, true), 1.0)
        };
        let fake_term = |this: &Self| {
            let noise = Tensor::randn(
                [
                    this.sampler.batch_size() as i64,
                    this.spec.latent_dim as i64,
                ],
                (Kind::Float, device),
            );
            let fake = tch::no_grad(|| this.generator.forward_t(&noise, true));
            bce_with_logits(&this.discriminator.forward_t(&fake, true), 0.0)
        };
        if self.real_half {
            let own = real_term(self);
            (own, cross.then(|| fake_term(self)))
        } else {
            let own = fake_term(self);
            (own, cross.then(|| real_term(self)))
        }
    }
}

impl LocalTerm for GanLocalSolver {
    fn network(&self) -> &Network {
        &self.discriminator
    }

    fn shard_len(&self) -> usize {
        self.images.size()[0] as usize
    }

    fn set_step_delay(&mut self, delay: Duration) {
        self.step_delay = delay;
    }

    fn reset(&mut self) -> Result<()> {
        self.initialized = false;
        self.optimizer = build_optimizer(&self.solver, ProblemKind::Gan, &self.discriminator)?;
        Ok(())
    }

    fn prepare_deterministic(&mut self, x: &[f32], round: u64) -> Result<()> {
        self.discriminator.load_flat(x)?;
        self.initialized = true;
        self.optimizer = build_optimizer(&self.solver, ProblemKind::Gan, &self.discriminator)?;
        let stream = sampler_stream(self.index) ^ round.wrapping_mul(0x9E37_79B9);
        self.sampler = BatchSampler::new(
            self.shard_len(),
            self.solver.batch_size,
            SplitMix64::new(self.seed, stream),
        );
        tch::manual_seed((self.seed ^ stream) as i64);
        Ok(())
    }

    fn x_update(&mut self, z: &[f32], u: &[f32], rho: f64, x: &mut Vec<f32>) -> Result<LocalStats> {
        let n = self.discriminator.num_params();
        if z.len() != n || u.len() != n {
            bail!(
                "received z of {} and u of {} values, the discriminator has {n}",
                z.len(),
                u.len()
            );
        }
        if !self.initialized {
            self.discriminator.load_flat(z)?;
            self.initialized = true;
        }
        let anchors = anchors(&self.discriminator, z, u);
        let mut own_sum = 0.0;
        for _ in 0..self.solver.local_steps {
            let (own, other) = self.terms();
            own_sum += own.double_value(&[]);
            let loss = match other {
                Some(other) => own + other * self.spec.cross_weight,
                None => own,
            };
            let objective =
                loss * self.weight + proximal_penalty(&self.discriminator, &anchors, rho);
            self.optimizer.backward_step(&objective);
        }
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        self.discriminator.write_flat(x);
        Ok(LocalStats {
            mean_loss: own_sum / self.solver.local_steps as f64,
            samples: (self.solver.local_steps * self.sampler.batch_size()) as u64,
        })
    }

    fn shared_len(&self) -> usize {
        self.generator.num_params()
    }

    fn set_shared(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.generator.num_params() {
            bail!(
                "the coordinator sent a generator of {} values, this worker's has {}; start every \
                 process with the same --latent-dim and --g-filters",
                values.len(),
                self.generator.num_params()
            );
        }
        self.generator.load_flat(values)
    }
}
