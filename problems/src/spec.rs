//! Problem and local-solver options, shared by every binary as clap
//! arguments and written into each run's `config.json`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which objective to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Synthetic regression y = A·x + b: mean squared error plus ½‖θ‖².
    Regression,
    /// MNIST digit classification: cross-entropy.
    Mnist,
    /// A DCGAN on MNIST with its discriminator split into a real-data half
    /// and a fake-data half.
    Gan,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Regression => "regression",
            ProblemKind::Mnist => "mnist",
            ProblemKind::Gan => "gan",
        })
    }
}

/// Hidden layer widths of an MLP; empty means a linear model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HiddenLayers(pub Vec<usize>);

impl FromStr for HiddenLayers {
    type Err = String;

    /// Parses `256,128`, or `none` (or an empty string) for no hidden layer.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|part| match part.trim().parse::<usize>() {
                Ok(width) if width > 0 => Ok(width),
                _ => Err(format!(
                    "invalid hidden layer width {part:?} in {text:?}: expected positive integers \
                     separated by commas, or none"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// The problem a run trains; every process of a run must agree on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ProblemSpec {
    /// Problem to train: regression (synthetic, needs no data), mnist or gan.
    #[arg(long, value_enum, default_value_t = ProblemKind::Regression)]
    pub problem: ProblemKind,
    /// Seed of the data, the initial weights and the mini-batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hidden layer widths, comma separated, or none for a linear model
    /// [default: none for regression, 256 for mnist].
    #[arg(long)]
    pub hidden: Option<HiddenLayers>,
    /// Regression: input dimension d.
    #[arg(long, default_value_t = 10)]
    pub dim: usize,
    /// Regression: output dimension.
    #[arg(long, default_value_t = 1)]
    pub outputs: usize,
    /// Regression: number of samples.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Regression: standard deviation of the Gaussian noise added to y.
    #[arg(long, default_value_t = 0.1)]
    pub noise: f64,
    /// MNIST and GAN: folder holding the four IDX files, gzip-compressed or raw.
    #[arg(long, env = "ADMM_MNIST_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MNIST and GAN: train on the first N training images only (0 for all 60000).
    #[arg(long, default_value_t = 0)]
    pub train_limit: usize,
    /// Training loss evaluated at z each round: number of training samples
    /// used (0 for all).
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// Options of the GAN problem.
    #[command(flatten)]
    #[serde(default)]
    pub gan: crate::gan::GanSpec,
}

impl Default for ProblemSpec {
    fn default() -> Self {
        Self {
            problem: ProblemKind::Regression,
            seed: 0,
            hidden: None,
            dim: 10,
            outputs: 1,
            samples: 1000,
            noise: 0.1,
            data_dir: None,
            train_limit: 0,
            eval_samples: 10_000,
            gan: Default::default(),
        }
    }
}

/// Number of MNIST classes and pixels per image.
pub const MNIST_CLASSES: usize = 10;
/// Pixels of one 28×28 MNIST image.
pub const MNIST_PIXELS: usize = 28 * 28;

impl ProblemSpec {
    /// Hidden layer widths after applying the problem's default.
    pub fn hidden_layers(&self) -> Vec<usize> {
        match (&self.hidden, self.problem) {
            (Some(layers), _) => layers.0.clone(),
            (None, ProblemKind::Regression) => Vec::new(),
            (None, ProblemKind::Mnist | ProblemKind::Gan) => vec![256],
        }
    }

    /// Layer widths of the MLP, input to output.
    pub fn layer_sizes(&self) -> Vec<usize> {
        let (input, output) = match self.problem {
            ProblemKind::Regression => (self.dim, self.outputs),
            ProblemKind::Mnist | ProblemKind::Gan => (MNIST_PIXELS, MNIST_CLASSES),
        };
        let mut sizes = vec![input];
        sizes.extend(self.hidden_layers());
        sizes.push(output);
        sizes
    }

    /// Short name of the problem and model, compared at registration, for
    /// example `mnist/mlp-784-256-10`.
    pub fn model_id(&self) -> String {
        if self.problem == ProblemKind::Gan {
            return self.gan.model_id();
        }
        let sizes: Vec<String> = self.layer_sizes().iter().map(|s| s.to_string()).collect();
        format!("{}/mlp-{}", self.problem, sizes.join("-"))
    }

    /// Returns the model and the data options every worker's term depends
    /// on, as compared at registration, for example
    /// `regression/mlp-10-1 seed=0 dim=10 outputs=1 samples=1000 noise=0.1`.
    /// The data folder is left out because it differs between machines.
    pub fn run_id(&self) -> String {
        match self.problem {
            ProblemKind::Regression => format!(
                "{} seed={} dim={} outputs={} samples={} noise={}",
                self.model_id(),
                self.seed,
                self.dim,
                self.outputs,
                self.samples,
                self.noise
            ),
            ProblemKind::Mnist => format!(
                "{} seed={} train_limit={}",
                self.model_id(),
                self.seed,
                self.train_limit
            ),
            ProblemKind::Gan => format!(
                "{} seed={} train_limit={} real_workers={} cross_weight={}",
                self.model_id(),
                self.seed,
                self.train_limit,
                self.gan.real_workers,
                self.gan.cross_weight
            ),
        }
    }

    /// Builds the model whose parameters ADMM keeps in consensus: the MLP,
    /// or for the GAN the discriminator.
    pub fn build_network(&self, device: tch::Device) -> crate::Network {
        match self.problem {
            ProblemKind::Gan => crate::Network::discriminator(&self.gan, device, self.seed),
            _ => crate::Network::mlp(&self.layer_sizes(), device, self.seed),
        }
    }

    /// Checks the options, naming the first invalid value.
    pub fn validate(&self) -> Result<()> {
        if self.problem == ProblemKind::Regression {
            if self.dim == 0 || self.outputs == 0 {
                bail!(
                    "regression needs --dim and --outputs of at least 1, got dim={} outputs={}",
                    self.dim,
                    self.outputs
                );
            }
            if self.samples == 0 {
                bail!("regression needs --samples of at least 1, got 0");
            }
            if !(self.noise.is_finite() && self.noise >= 0.0) {
                bail!("--noise must be non-negative, got {}", self.noise);
            }
        }
        if self.problem != ProblemKind::Regression && self.data_dir.is_none() {
            bail!(
                "{} needs the MNIST folder: pass --data-dir DIR or set ADMM_MNIST_DIR",
                self.problem
            );
        }
        if self.problem == ProblemKind::Gan {
            self.gan.validate()?;
        }
        Ok(())
    }
}

/// The optimizer of a local x-update or of the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, with optional momentum.
    Sgd,
    /// Adam with the usual betas (0.9, 0.999).
    Adam,
}

/// How a worker (or the baseline) takes its optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct SolverSpec {
    /// Optimizer of the local steps.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// Optimizer steps per round (the inexact x-update), warm-started from
    /// the previous round.
    #[arg(long, default_value_t = 20)]
    pub local_steps: usize,
    /// Mini-batch size of each step; 0 uses the whole shard (full batch).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam's β₁ [default: 0.5 for gan, as DCGAN training uses; 0.9
    /// otherwise].
    #[arg(long)]
    #[serde(default)]
    pub beta1: Option<f64>,
}

impl Default for SolverSpec {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            local_steps: 20,
            batch_size: 64,
            beta1: None,
        }
    }
}

impl SolverSpec {
    /// Checks the options, naming the first invalid value.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be positive, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.local_steps == 0 {
            bail!("--local-steps must be at least 1, got 0");
        }
        if let Some(beta1) = self.beta1 {
            if !(0.0..1.0).contains(&beta1) {
                bail!("--beta1 must be in [0, 1), got {beta1}");
            }
        }
        Ok(())
    }

    /// Adam's β₁ for `problem`.
    pub fn adam_beta1(&self, problem: ProblemKind) -> f64 {
        self.beta1.unwrap_or(match problem {
            ProblemKind::Gan => 0.5,
            _ => 0.9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_layers_parse() {
        assert_eq!("256,128".parse::<HiddenLayers>().unwrap().0, vec![256, 128]);
        assert_eq!(
            "none".parse::<HiddenLayers>().unwrap().0,
            Vec::<usize>::new()
        );
        assert_eq!("".parse::<HiddenLayers>().unwrap().0, Vec::<usize>::new());
        let err = "256,0".parse::<HiddenLayers>().unwrap_err();
        assert!(err.contains("\"0\""), "{err}");
    }

    #[test]
    fn model_id_names_sizes() {
        let spec = ProblemSpec {
            problem: ProblemKind::Mnist,
            ..Default::default()
        };
        assert_eq!(spec.model_id(), "mnist/mlp-784-256-10");
        let spec = ProblemSpec {
            dim: 3,
            outputs: 2,
            ..Default::default()
        };
        assert_eq!(spec.model_id(), "regression/mlp-3-2");
    }

    #[test]
    fn mnist_without_folder_rejected() {
        let spec = ProblemSpec {
            problem: ProblemKind::Mnist,
            data_dir: None,
            ..Default::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn solver_rejects_zero_lr() {
        let spec = SolverSpec {
            lr: 0.0,
            ..Default::default()
        };
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "--lr must be positive, got 0"
        );
    }
}
