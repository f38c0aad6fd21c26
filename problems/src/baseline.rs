//! Ordinary single-process training of the same model and objective,
//! `loss(θ) + g(θ)`, as the reference ADMM is compared with.
//!
//! A baseline "round" is `local_steps` optimizer steps on mini-batches of
//! `batch_size × workers` samples, so that a baseline round and an ADMM
//! round of N workers see the same number of samples.

use crate::data::mnist;
use crate::evaluate::evaluate_network;
use crate::network::Network;
use crate::objective::{build_optimizer, data_loss, load_training_data, BatchSampler};
use crate::rng::SplitMix64;
use crate::spec::{ProblemKind, ProblemSpec, SolverSpec};
use admm_consensus::Regularizer;
use admm_report::RoundRow;
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Random stream of the baseline's mini-batch order.
const BASELINE_STREAM: u64 = 999;

/// How long and on what objective the baseline trains.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineConfig {
    /// Number of rounds.
    pub rounds: u64,
    /// Number of ADMM workers it is compared with; scales the batch size.
    pub workers: usize,
    /// The same g as the ADMM run.
    pub regularizer: Regularizer,
}

/// g(θ) as a differentiable tensor.
fn regularizer_tensor(regularizer: Regularizer, net: &Network) -> Tensor {
    let zero = Tensor::zeros([], (Kind::Float, net.device()));
    net.params()
        .iter()
        .fold(zero, |acc, (_, p)| match regularizer {
            Regularizer::None => acc,
            Regularizer::L2 { gamma } => acc + p.square().sum(Kind::Float) * (gamma / 2.0),
            Regularizer::L1 { gamma } => acc + p.abs().sum(Kind::Float) * gamma,
        })
}

/// Trains the baseline, calling `on_row` after each round, and returns the
/// rows and the trained model.
pub fn train_baseline(
    spec: &ProblemSpec,
    solver: &SolverSpec,
    config: &BaselineConfig,
    device: Device,
    mut on_row: impl FnMut(&RoundRow) -> Result<()>,
) -> Result<(Vec<RoundRow>, Network)> {
    let data = load_training_data(spec)?.to_device(device);
    let eval_len = if spec.eval_samples == 0 {
        data.len()
    } else {
        spec.eval_samples.min(data.len())
    };
    let train_eval = data.slice(0, eval_len);
    let test = match spec.problem {
        ProblemKind::Mnist | ProblemKind::Gan => {
            let dir = spec
                .data_dir
                .as_deref()
                .unwrap_or(std::path::Path::new("."));
            Some(mnist::load(dir, mnist::Split::Test, 0)?.to_device(device))
        }
        ProblemKind::Regression => None,
    };
    let net = Network::mlp(&spec.layer_sizes(), device, spec.seed);
    let mut optimizer = build_optimizer(solver, spec.problem, &net)?;
    let batch = solver.batch_size.saturating_mul(config.workers.max(1));
    let mut sampler = BatchSampler::new(
        data.len(),
        batch,
        SplitMix64::new(spec.seed, BASELINE_STREAM),
    );
    let mut rows = Vec::new();
    let mut theta = Vec::new();
    // Training time only: evaluation is left out, as the coordinator
    // evaluates z while the workers compute the next round.
    let mut train_seconds = 0.0;
    for round in 1..=config.rounds {
        let round_start = Instant::now();
        for _ in 0..solver.local_steps {
            let indices = Tensor::from_slice(sampler.next_batch()).to_device(device);
            let inputs = data.inputs.index_select(0, &indices);
            let targets = data.targets.index_select(0, &indices);
            let objective = data_loss(spec.problem, &net, &inputs, &targets)
                + regularizer_tensor(config.regularizer, &net);
            optimizer.backward_step(&objective);
        }
        let round_seconds = round_start.elapsed().as_secs_f64();
        train_seconds += round_seconds;
        let evaluation = evaluate_network(spec.problem, &net, &train_eval, test.as_ref());
        net.write_flat(&mut theta);
        let g = config.regularizer.value(&theta);
        let row = RoundRow {
            method: "baseline".into(),
            round,
            elapsed_seconds: train_seconds,
            round_seconds,
            loss: evaluation.loss,
            g,
            objective: evaluation.loss + g,
            test_accuracy: evaluation.test_accuracy,
            test_loss: evaluation.test_loss,
            ..Default::default()
        };
        on_row(&row)?;
        rows.push(row);
    }
    Ok((rows, net))
}
