//! The files a training run leaves on disk: one [`RoundRow`] per round in a JSON
//! lines file, and PNG plots that put ADMM and the single-process baseline
//! on the same axes.
//!
//! A run directory holds:
//!
//! | file | content |
//! | --- | --- |
//! | `config.json` | the resolved configuration of the run |
//! | `metrics.jsonl` | one ADMM [`RoundRow`] per round |
//! | `baseline.jsonl` | one baseline [`RoundRow`] per round, when the baseline ran |
//! | `model.safetensors` | the final consensus parameters z |
//! | `curves_by_round.png`, `curves_by_time.png` | the plots of [`plot::write_plots`] |
//! | `logs/` | one log file per process |

pub mod jsonl;
pub mod logging;
pub mod plot;

use serde::{Deserialize, Serialize};

/// File name of the ADMM metrics in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// File name of the baseline metrics in a run directory.
pub const BASELINE_FILE: &str = "baseline.jsonl";
/// File name of the resolved configuration in a run directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the final consensus model in a run directory.
pub const MODEL_FILE: &str = "model.safetensors";

/// Figures of one round of ADMM, or of one round-sized stretch of baseline
/// training. Fields that only ADMM has are `None` for the baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRow {
    /// "admm" or "baseline".
    pub method: String,
    /// Round number, from 1.
    pub round: u64,
    /// Seconds since training started, at the end of this round.
    pub elapsed_seconds: f64,
    /// Wall time of this round, in seconds.
    pub round_seconds: f64,
    /// Training loss Σ_i f_i evaluated at the consensus z (ADMM) or at the
    /// current parameters (baseline).
    pub loss: f64,
    /// Regularizer g(z).
    pub g: f64,
    /// loss + g.
    pub objective: f64,
    /// Classification accuracy on the test set, for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Loss on the test set, where the problem has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// Each worker's mean local loss f_i over its optimizer steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_loss: Vec<f64>,
    /// Each worker's time in its local x-update, in seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_compute_seconds: Vec<f64>,
    /// Primal residual r.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primal_residual: Option<f64>,
    /// Dual residual s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_residual: Option<f64>,
    /// Primal tolerance ε_pri.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps_primal: Option<f64>,
    /// Dual tolerance ε_dual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps_dual: Option<f64>,
    /// Penalty ρ used in this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// Workers that missed this round; their last x_i and dual entered it
    /// unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_workers: Vec<usize>,
    /// Parameter bytes the coordinator sent to workers in this round.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Parameter bytes the coordinator received from workers in this round.
    #[serde(default)]
    pub bytes_received: u64,
    /// GAN diagnostics, for the GAN problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gan: Option<GanRoundStats>,
}

/// Diagnostics of a GAN round: the verdicts of the discriminators on real
/// and generated images, measured on fixed probe batches after the round.
///
/// A probability is the mean of sigmoid(D(image)) over the probe batch: the
/// probability the discriminator gives to "real". The halves are the mean
/// x_i of the real-half and of the fake-half workers; the ordinary
/// single-process baseline has only the consensus figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GanRoundStats {
    /// Passes over the training images completed, as a fraction.
    pub epoch: f64,
    /// Mean non-saturating generator loss −log D(G(ζ)) over the round's
    /// generator steps.
    pub generator_loss: f64,
    /// Full discriminator objective at z on the probe batches:
    /// BCE(D(real), 1) + BCE(D(G(ζ)), 0).
    pub discriminator_loss: f64,
    /// Consensus discriminator z on real probe images.
    pub consensus_on_real: f64,
    /// Consensus discriminator z on generated probe images.
    pub consensus_on_fake: f64,
    /// Real half on real probe images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_half_on_real: Option<f64>,
    /// Real half on generated probe images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_half_on_fake: Option<f64>,
    /// Fake half on real probe images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_half_on_real: Option<f64>,
    /// Fake half on generated probe images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fake_half_on_fake: Option<f64>,
    /// Set when the real half calls nearly every image real and the fake
    /// half nearly every image fake: the split has degenerated.
    #[serde(default)]
    pub collapsed: bool,
    /// Ordinary discriminator steps on the full objective taken at the
    /// coordinator after this round (the interleaving remedy).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interleaved_steps: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
