//! Evaluation of a parameter vector: the training loss over (a fixed subset
//! of) the training set and, for classifiers, test loss and accuracy.

use crate::data::{mnist, Dataset};
use crate::network::Network;
use crate::objective::{data_loss, load_training_data};
use crate::spec::{ProblemKind, ProblemSpec};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// Samples per forward pass, so evaluation memory stays bounded.
const EVAL_BATCH: usize = 4096;

/// Figures of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean training loss.
    pub loss: f64,
    /// Mean test loss, where the problem has a test set.
    pub test_loss: Option<f64>,
    /// Test accuracy in [0, 1], for classifiers.
    pub test_accuracy: Option<f64>,
}

/// A model and the data it is evaluated on.
pub struct Evaluator {
    problem: ProblemKind,
    net: Network,
    train: Dataset,
    test: Option<Dataset>,
    training_len: usize,
}

impl Evaluator {
    /// Loads the evaluation data of `spec`. The training loss uses the first
    /// `spec.eval_samples` training samples (all when 0).
    pub fn new(spec: &ProblemSpec, device: Device) -> Result<Self> {
        let train = load_training_data(spec)?;
        let training_len = train.len();
        let keep = if spec.eval_samples == 0 {
            train.len()
        } else {
            spec.eval_samples.min(train.len())
        };
        // A copy, so that the rest of the training set is freed.
        let train = train.slice(0, keep).to_owned_copy().to_device(device);
        let test = match spec.problem {
            ProblemKind::Regression => None,
            ProblemKind::Mnist | ProblemKind::Gan => {
                let dir = spec
                    .data_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new("."));
                Some(mnist::load(dir, mnist::Split::Test, 0)?.to_device(device))
            }
        };
        let net = Network::mlp(&spec.layer_sizes(), device, spec.seed);
        Ok(Self {
            problem: spec.problem,
            net,
            train,
            test,
            training_len,
        })
    }

    /// Returns the evaluation model, for its layout and initial parameters.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Number of samples in the whole training set.
    pub fn training_len(&self) -> usize {
        self.training_len
    }

    /// Evaluates θ.
    pub fn evaluate(&mut self, theta: &[f32]) -> Result<Evaluation> {
        self.net.load_flat(theta)?;
        Ok(evaluate_network(
            self.problem,
            &self.net,
            &self.train,
            self.test.as_ref(),
        ))
    }
}

/// Evaluates `net` as it is.
pub fn evaluate_network(
    problem: ProblemKind,
    net: &Network,
    train: &Dataset,
    test: Option<&Dataset>,
) -> Evaluation {
    tch::no_grad(|| {
        let (loss, _) = batched_loss(problem, net, train);
        let (test_loss, test_accuracy) = match test {
            Some(test) => {
                let (loss, accuracy) = batched_loss(problem, net, test);
                (Some(loss), accuracy)
            }
            None => (None, None),
        };
        Evaluation {
            loss,
            test_loss,
            test_accuracy,
        }
    })
}

/// Mean loss and, for classifiers, accuracy over a data set.
fn batched_loss(problem: ProblemKind, net: &Network, data: &Dataset) -> (f64, Option<f64>) {
    let mut loss_sum = 0.0;
    let mut correct = 0i64;
    let len = data.len();
    let mut start = 0;
    while start < len {
        let end = (start + EVAL_BATCH).min(len);
        let batch = data.slice(start, end);
        let count = (end - start) as f64;
        loss_sum +=
            data_loss(problem, net, &batch.inputs, &batch.targets).double_value(&[]) * count;
        if problem == ProblemKind::Mnist {
            let predicted: Tensor = net.forward(&batch.inputs).argmax(1, false);
            correct += predicted
                .eq_tensor(&batch.targets)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        start = end;
    }
    let accuracy = (problem == ProblemKind::Mnist).then(|| correct as f64 / len.max(1) as f64);
    (loss_sum / len.max(1) as f64, accuracy)
}
