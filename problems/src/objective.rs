//! A worker's term f_i of the objective and its inexact x-update.
//!
//! Worker i owns shard i of the training data. Its term is the shard's mean
//! loss weighted by the shard's share of the data, `f_i = (n_i/n)·loss_i`,
//! so that Σ_i f_i is the loss over the whole training set. The x-update
//!
//! ```text
//! x_i ← argmin_x  f_i(x) + (ρ/2)·‖x − z + u_i‖²
//! ```
//!
//! is approximated by a fixed number of optimizer steps on mini-batches,
//! warm-started from the previous round's x_i (and optimizer state).

use crate::data::{self, Dataset};
use crate::network::Network;
use crate::rng::SplitMix64;
use crate::spec::{OptimizerKind, ProblemKind, ProblemSpec, SolverSpec};
use anyhow::{bail, Result};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// Mean loss of `net` on a batch: squared error summed over outputs for
/// regression, cross-entropy for classification.
pub fn data_loss(problem: ProblemKind, net: &Network, inputs: &Tensor, targets: &Tensor) -> Tensor {
    let output = net.forward(inputs);
    match problem {
        ProblemKind::Regression => (output - targets)
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .mean(Kind::Float),
        ProblemKind::Mnist | ProblemKind::Gan => {
            output.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, 0.0)
        }
    }
}

/// Loads the training set of a problem (on the CPU). For the GAN the
/// inputs are the images scaled to [-1, 1], one row of 784 per image.
pub fn load_training_data(spec: &ProblemSpec) -> Result<Dataset> {
    if spec.problem == ProblemKind::Regression {
        return Ok(data::regression::generate(spec));
    }
    let dir = spec.data_dir.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "{} needs the MNIST folder: pass --data-dir DIR or set ADMM_MNIST_DIR",
            spec.problem
        )
    })?;
    let split = data::mnist::Split::Train;
    if spec.problem == ProblemKind::Gan {
        let images = crate::gan::load_images(dir, split, spec.train_limit)?;
        let count = images.size()[0];
        return Ok(Dataset {
            inputs: images.view([count, -1]),
            targets: Tensor::zeros([count], (Kind::Int64, Device::Cpu)),
        });
    }
    data::mnist::load(dir, split, spec.train_limit)
}

/// Builds the optimizer of a solver spec over `net`'s parameters.
pub fn build_optimizer(
    solver: &SolverSpec,
    problem: ProblemKind,
    net: &Network,
) -> Result<nn::Optimizer> {
    let optimizer = match solver.optimizer {
        OptimizerKind::Adam => nn::Adam {
            beta1: solver.adam_beta1(problem),
            ..Default::default()
        }
        .build(net.var_store(), solver.lr)?,
        OptimizerKind::Sgd => nn::Sgd {
            momentum: solver.momentum,
            ..Default::default()
        }
        .build(net.var_store(), solver.lr)?,
    };
    Ok(optimizer)
}

/// Cycles through a data set in reshuffled epochs, one mini-batch at a time.
#[derive(Debug)]
pub struct BatchSampler {
    order: Vec<i64>,
    cursor: usize,
    batch_size: usize,
    rng: SplitMix64,
}

impl BatchSampler {
    /// `batch_size` 0 (or larger than the set) means the whole set each time.
    pub fn new(len: usize, batch_size: usize, rng: SplitMix64) -> Self {
        let batch_size = if batch_size == 0 {
            len
        } else {
            batch_size.min(len)
        };
        let mut sampler = Self {
            order: (0..len as i64).collect(),
            cursor: len,
            batch_size,
            rng,
        };
        sampler.cursor = sampler.order.len();
        sampler
    }

    /// Indices of the next mini-batch.
    pub fn next_batch(&mut self) -> &[i64] {
        if self.cursor + self.batch_size > self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let start = self.cursor;
        self.cursor += self.batch_size;
        &self.order[start..self.cursor]
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// Random stream of worker `index`'s batch order.
fn sampler_stream(index: usize) -> u64 {
    1000 + index as u64
}

/// Figures of one x-update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalStats {
    /// Mean over the steps of the shard's mini-batch loss (not weighted by
    /// the shard's share).
    pub mean_loss: f64,
    /// Samples processed.
    pub samples: u64,
}

/// A worker's term f_i and its inexact x-update, whatever the problem.
pub trait LocalTerm: Send {
    /// Returns the model whose parameters are x_i, for its layout.
    fn network(&self) -> &Network;
    /// Samples in this worker's shard of the training data.
    fn shard_len(&self) -> usize;
    /// Test hook: sleeps this long in every x-update.
    fn set_step_delay(&mut self, delay: std::time::Duration);
    /// Forgets x_i and the optimizer's moments, so that the next x-update
    /// starts from z again.
    fn reset(&mut self) -> Result<()>;
    /// Prepares a deterministic x-update for `round` starting from `x`.
    fn prepare_deterministic(&mut self, x: &[f32], round: u64) -> Result<()>;
    /// Runs the x-update for consensus `z`, scaled dual `u` and penalty
    /// `rho`, writing x_i into `x`.
    fn x_update(&mut self, z: &[f32], u: &[f32], rho: f64, x: &mut Vec<f32>) -> Result<LocalStats>;
    /// Number of values of the coordinator's shared model that the term
    /// needs each round (the GAN generator), 0 for none.
    fn shared_len(&self) -> usize {
        0
    }
    /// Loads the coordinator's shared model for the coming x-update.
    fn set_shared(&mut self, values: &[f32]) -> Result<()> {
        if !values.is_empty() {
            bail!(
                "the coordinator sent {} shared values, this problem uses none",
                values.len()
            );
        }
        Ok(())
    }
}

/// Builds worker `index` of `count`'s term for `spec` on `device`.
pub fn build_local_term(
    spec: &ProblemSpec,
    solver: &SolverSpec,
    data: &Dataset,
    index: usize,
    count: usize,
    device: Device,
) -> Result<Box<dyn LocalTerm>> {
    Ok(match spec.problem {
        ProblemKind::Gan => Box::new(crate::gan::local::GanLocalSolver::new(
            spec, solver, data, index, count, device,
        )?),
        _ => Box::new(LocalSolver::new(spec, solver, data, index, count, device)?),
    })
}

impl LocalTerm for LocalSolver {
    fn network(&self) -> &Network {
        LocalSolver::network(self)
    }
    fn shard_len(&self) -> usize {
        LocalSolver::shard_len(self)
    }
    fn set_step_delay(&mut self, delay: std::time::Duration) {
        LocalSolver::set_step_delay(self, delay)
    }
    fn reset(&mut self) -> Result<()> {
        LocalSolver::reset(self)
    }
    fn prepare_deterministic(&mut self, x: &[f32], round: u64) -> Result<()> {
        LocalSolver::prepare_deterministic(self, x, round)
    }
    fn x_update(&mut self, z: &[f32], u: &[f32], rho: f64, x: &mut Vec<f32>) -> Result<LocalStats> {
        LocalSolver::x_update(self, z, u, rho, x)
    }
}

/// `(ρ/2)·‖θ − anchor‖²` over a model's parameters, as a differentiable
/// scalar.
pub fn proximal_penalty(net: &Network, anchors: &[Tensor], rho: f64) -> Tensor {
    net.params()
        .iter()
        .zip(anchors)
        .map(|((_, p), a)| (p - a).square().sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, net.device())), |acc, t| {
            acc + t
        })
        * (rho / 2.0)
}

/// Adds ρ·(θ − anchor), the gradient of `(ρ/2)·‖θ − anchor‖²`, to each
/// parameter's gradient. The result equals differentiating
/// [`proximal_penalty`], but the penalty stays out of the autograd graph,
/// where it costs about as much as the loss of a small model. Call it
/// after `backward` and before the optimizer step. Fails when a parameter
/// has no gradient.
pub fn add_proximal_gradient(net: &Network, anchors: &[Tensor], rho: f64) -> Result<()> {
    tch::no_grad(|| {
        for ((name, parameter), anchor) in net.params().iter().zip(anchors) {
            let mut gradient = parameter.grad();
            if !gradient.defined() {
                bail!("parameter {name} has no gradient after the backward pass");
            }
            let _ = gradient.g_add_(&((parameter - anchor) * rho));
        }
        Ok(())
    })
}

/// Splits the anchor z − u_i of the x-update like the model's parameters.
pub fn anchors(net: &Network, z: &[f32], u: &[f32]) -> Vec<Tensor> {
    let anchor: Vec<f32> = z.iter().zip(u).map(|(&z, &u)| z - u).collect();
    net.split_flat(&anchor)
}

/// Worker i's model, data shard and optimizer.
pub struct LocalSolver {
    problem: ProblemKind,
    net: Network,
    shard: Dataset,
    weight: f64,
    sampler: BatchSampler,
    optimizer: nn::Optimizer,
    local_steps: usize,
    initialized: bool,
    solver: SolverSpec,
    seed: u64,
    index: usize,
    step_delay: std::time::Duration,
}

impl LocalSolver {
    /// Prepares worker `index` of `count`: builds the model on `device` and
    /// takes shard `index` of the training data.
    pub fn new(
        spec: &ProblemSpec,
        solver: &SolverSpec,
        data: &Dataset,
        index: usize,
        count: usize,
        device: Device,
    ) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("worker id {index} is out of range for {count} workers");
        }
        if data.len() < count {
            bail!(
                "{count} workers need at least {count} training samples, but the data set has {}; \
                 use fewer workers or more samples",
                data.len()
            );
        }
        // A copy, so that the other shards are freed with `data`.
        let shard = data.shard(index, count).to_owned_copy().to_device(device);
        let weight = shard.len() as f64 / data.len() as f64;
        let net = Network::mlp(&spec.layer_sizes(), device, spec.seed);
        let optimizer = build_optimizer(solver, spec.problem, &net)?;
        let sampler = BatchSampler::new(
            shard.len(),
            solver.batch_size,
            SplitMix64::new(spec.seed, sampler_stream(index)),
        );
        Ok(Self {
            problem: spec.problem,
            net,
            shard,
            weight,
            sampler,
            optimizer,
            local_steps: solver.local_steps,
            initialized: false,
            solver: solver.clone(),
            seed: spec.seed,
            index,
            step_delay: std::time::Duration::ZERO,
        })
    }

    /// Returns the model, for its layout.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Test hook: sleeps this long in every x-update, to simulate a slow
    /// device or a long local step.
    pub fn set_step_delay(&mut self, delay: std::time::Duration) {
        self.step_delay = delay;
    }

    /// Forgets the local state (x_i and the optimizer's moments), so that
    /// the next x-update starts from z again. Used after an update was
    /// rejected for non-finite values.
    pub fn reset(&mut self) -> Result<()> {
        self.initialized = false;
        self.optimizer = build_optimizer(&self.solver, self.problem, &self.net)?;
        Ok(())
    }

    /// Prepares a deterministic x-update for `round`: starts from `x`,
    /// with a fresh optimizer and a batch order that depends on the round
    /// alone, so the update is a function of (x_i, z, u_i, ρ, round).
    pub fn prepare_deterministic(&mut self, x: &[f32], round: u64) -> Result<()> {
        self.net.load_flat(x)?;
        self.initialized = true;
        self.optimizer = build_optimizer(&self.solver, self.problem, &self.net)?;
        let stream = sampler_stream(self.index) ^ round.wrapping_mul(0x9E37_79B9);
        self.sampler = BatchSampler::new(
            self.shard.len(),
            self.solver.batch_size,
            SplitMix64::new(self.seed, stream),
        );
        Ok(())
    }

    /// Samples in this worker's shard.
    pub fn shard_len(&self) -> usize {
        self.shard.len()
    }

    /// Runs the inexact x-update for consensus `z`, scaled dual `u` and
    /// penalty `rho`, and writes x_i into `x`. The first call starts from z;
    /// later calls start from the previous x_i.
    pub fn x_update(
        &mut self,
        z: &[f32],
        u: &[f32],
        rho: f64,
        x: &mut Vec<f32>,
    ) -> Result<LocalStats> {
        if z.len() != self.net.num_params() || u.len() != z.len() {
            bail!(
                "received z of {} and u of {} values, the model has {}",
                z.len(),
                u.len(),
                self.net.num_params()
            );
        }
        if !self.initialized {
            self.net.load_flat(z)?;
            self.initialized = true;
        }
        let anchors = anchors(&self.net, z, u);
        let mut loss_sum = 0.0;
        let mut samples = 0u64;
        for _ in 0..self.local_steps {
            let indices =
                Tensor::from_slice(self.sampler.next_batch()).to_device(self.net.device());
            let inputs = self.shard.inputs.index_select(0, &indices);
            let targets = self.shard.targets.index_select(0, &indices);
            let loss = data_loss(self.problem, &self.net, &inputs, &targets);
            self.optimizer.zero_grad();
            (&loss * self.weight).backward();
            add_proximal_gradient(&self.net, &anchors, rho)?;
            self.optimizer.step();
            loss_sum += loss.double_value(&[]);
            samples += indices.size()[0] as u64;
        }
        if !self.step_delay.is_zero() {
            std::thread::sleep(self.step_delay);
        }
        self.net.write_flat(x);
        Ok(LocalStats {
            mean_loss: loss_sum / self.local_steps as f64,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_visits_every_sample_each_epoch() {
        let mut sampler = BatchSampler::new(10, 5, SplitMix64::new(3, 0));
        let mut seen: Vec<i64> = sampler.next_batch().to_vec();
        seen.extend(sampler.next_batch());
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn full_batch_when_zero() {
        let mut sampler = BatchSampler::new(7, 0, SplitMix64::new(3, 0));
        assert_eq!(sampler.batch_size(), 7);
        assert_eq!(sampler.next_batch().len(), 7);
    }

    /// Returns each parameter's gradient as a vector.
    fn gradients(net: &Network) -> Vec<Vec<f32>> {
        net.params()
            .iter()
            .map(|(_, p)| Vec::<f32>::try_from(p.grad().reshape([-1])).unwrap())
            .collect()
    }

    #[test]
    fn proximal_gradient_matches_penalty() {
        let net = Network::mlp(&[3, 4, 2], Device::Cpu, 4);
        let values: Vec<f32> = (0..net.num_params())
            .map(|i| i as f32 * 0.05 - 0.6)
            .collect();
        let anchors = net.split_flat(&values);
        let rho = 0.7;

        proximal_penalty(&net, &anchors, rho).backward();
        let expected = gradients(&net);
        tch::no_grad(|| {
            for (_, p) in net.params() {
                let _ = p.grad().zero_();
            }
        });
        add_proximal_gradient(&net, &anchors, rho).unwrap();
        let actual = gradients(&net);

        assert_eq!(actual.len(), expected.len());
        for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
            assert_eq!(a.len(), e.len(), "parameter {index}");
            for (x, y) in a.iter().zip(e) {
                assert!((x - y).abs() <= 1e-6, "parameter {index}: {x} != {y}");
            }
        }
    }

    #[test]
    fn proximal_gradient_needs_a_gradient() {
        let net = Network::mlp(&[2, 1], Device::Cpu, 0);
        let anchors = net.split_flat(&vec![0.0; net.num_params()]);
        let err = add_proximal_gradient(&net, &anchors, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no gradient"), "{err}");
    }

    #[test]
    fn x_update_with_huge_rho_stays_at_anchor() {
        let spec = ProblemSpec {
            dim: 3,
            samples: 50,
            ..Default::default()
        };
        let solver = SolverSpec {
            optimizer: OptimizerKind::Sgd,
            lr: 1e-4,
            local_steps: 50,
            batch_size: 0,
            ..Default::default()
        };
        let data = load_training_data(&spec).unwrap();
        let mut local = LocalSolver::new(&spec, &solver, &data, 0, 2, Device::Cpu).unwrap();
        let n = local.network().num_params();
        let z = vec![0.5f32; n];
        let u = vec![0.1f32; n];
        let mut x = Vec::new();
        local.x_update(&z, &u, 1e4, &mut x).unwrap();
        for &v in &x {
            assert!((v - 0.4).abs() < 1e-2, "x={v}, expected about z − u = 0.4");
        }
    }
}
