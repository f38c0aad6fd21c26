//! The synthetic regression problem: x ~ N(0, I_d), y = A·x + b + noise,
//! with A and b drawn once from the seed, and the closed-form ridge
//! solution of its linear model.

use super::Dataset;
use crate::rng::SplitMix64;
use crate::spec::ProblemSpec;
use tch::{Kind, Tensor};

/// Random streams of one seed: one for A and b, one for the samples.
const STREAM_TRUTH: u64 = 0;
const STREAM_SAMPLES: u64 = 1;

/// Generates the data set of `spec` (deterministic in the seed).
pub fn generate(spec: &ProblemSpec) -> Dataset {
    let (d, p, m) = (spec.dim, spec.outputs, spec.samples);
    let mut truth = SplitMix64::new(spec.seed, STREAM_TRUTH);
    let a: Vec<f64> = (0..p * d).map(|_| truth.normal()).collect();
    let b: Vec<f64> = (0..p).map(|_| truth.normal()).collect();
    let mut rng = SplitMix64::new(spec.seed, STREAM_SAMPLES);
    let mut xs = Vec::with_capacity(m * d);
    let mut ys = Vec::with_capacity(m * p);
    for _ in 0..m {
        let x: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        for row in 0..p {
            let dot: f64 = (0..d).map(|col| a[row * d + col] * x[col]).sum();
            ys.push((dot + b[row] + spec.noise * rng.normal()) as f32);
        }
        xs.extend(x.iter().map(|&v| v as f32));
    }
    Dataset {
        inputs: Tensor::from_slice(&xs).view([m as i64, d as i64]),
        targets: Tensor::from_slice(&ys).view([m as i64, p as i64]),
    }
}

/// Minimizer of `(1/m)·Σ‖W·x + c − y‖² + ½(‖W‖² + ‖c‖²)` over the linear
/// model, flattened in the network's layout order (W row-major, then c).
///
/// Setting the gradient to zero gives `(2/m·X̃ᵀX̃ + I)·Θ = 2/m·X̃ᵀY` with
/// `X̃ = [X, 1]`, solved in f64.
pub fn ridge_solution(data: &Dataset) -> Vec<f32> {
    let m = data.len() as f64;
    let x = data.inputs.to_kind(Kind::Double);
    let y = data.targets.to_kind(Kind::Double);
    let ones = Tensor::ones([x.size()[0], 1], (Kind::Double, x.device()));
    let x_aug = Tensor::cat(&[x, ones], 1);
    let k = x_aug.size()[1];
    let gram = x_aug.transpose(0, 1).matmul(&x_aug) * (2.0 / m)
        + Tensor::eye(k, (Kind::Double, x_aug.device()));
    let rhs = x_aug.transpose(0, 1).matmul(&y) * (2.0 / m);
    let theta = Tensor::linalg_solve(&gram, &rhs, true); // [(d+1), p]
    let weight = theta.narrow(0, 0, k - 1).transpose(0, 1).contiguous(); // [p, d]
    let bias = theta.narrow(0, k - 1, 1).reshape([-1]);
    let flat = Tensor::cat(&[weight.reshape([-1]), bias], 0).to_kind(Kind::Float);
    let mut out = vec![0f32; flat.numel()];
    flat.copy_data(&mut out, flat.numel());
    out
}
