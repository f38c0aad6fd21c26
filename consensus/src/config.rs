//! Hyperparameters of the consensus iteration, validated before a run starts.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The coordinator's term g(z) of the objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Regularizer {
    /// g(z) = 0.
    None,
    /// g(z) = (γ/2)·‖z‖².
    L2 {
        /// Weight γ.
        gamma: f64,
    },
    /// g(z) = γ·‖z‖₁.
    L1 {
        /// Weight γ.
        gamma: f64,
    },
}

impl Regularizer {
    /// Evaluates g(z).
    pub fn value(&self, z: &[f32]) -> f64 {
        match *self {
            Regularizer::None => 0.0,
            Regularizer::L2 { gamma } => {
                0.5 * gamma * z.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
            }
            Regularizer::L1 { gamma } => gamma * z.iter().map(|&v| f64::from(v).abs()).sum::<f64>(),
        }
    }

    /// Solves `argmin_z g(z) + (Nρ/2)·(z − v)²` for one coordinate, where
    /// `n_rho` is N·ρ.
    pub fn prox(&self, v: f64, n_rho: f64) -> f64 {
        match *self {
            Regularizer::None => v,
            Regularizer::L2 { gamma } => n_rho * v / (gamma + n_rho),
            Regularizer::L1 { gamma } => {
                let threshold = gamma / n_rho;
                v.signum() * (v.abs() - threshold).max(0.0)
            }
        }
    }
}

/// Residual balancing: `ρ ← τ·ρ` when `r > μ·s`, `ρ ← ρ/τ` when `s > μ·r`,
/// kept within `[rho_min, rho_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RhoBalancing {
    /// Ratio μ between the residuals that triggers a change.
    pub mu: f64,
    /// Factor τ by which ρ grows or shrinks.
    pub tau: f64,
    /// Lower bound on ρ.
    pub rho_min: f64,
    /// Upper bound on ρ.
    pub rho_max: f64,
}

impl Default for RhoBalancing {
    fn default() -> Self {
        Self {
            mu: 10.0,
            tau: 2.0,
            rho_min: 1e-6,
            rho_max: 1e6,
        }
    }
}

/// Everything the coordinator's part of a round depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmmConfig {
    /// Initial penalty ρ.
    pub rho: f64,
    /// Over-relaxation α, in [1, 1.8]; 1 disables it.
    pub alpha: f64,
    /// The coordinator's term g(z).
    pub regularizer: Regularizer,
    /// Residual balancing of ρ; `None` keeps ρ fixed.
    pub adaptive_rho: Option<RhoBalancing>,
    /// Absolute tolerance ε_abs of the stopping test.
    pub eps_abs: f64,
    /// Relative tolerance ε_rel of the stopping test.
    pub eps_rel: f64,
    /// Maximum number of rounds.
    pub max_rounds: u64,
}

impl Default for AdmmConfig {
    fn default() -> Self {
        Self {
            rho: 1.0,
            alpha: 1.0,
            regularizer: Regularizer::None,
            adaptive_rho: None,
            eps_abs: 1e-4,
            eps_rel: 1e-3,
            max_rounds: 100,
        }
    }
}

/// An invalid hyperparameter, with the value that was given.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// ρ not positive and finite.
    #[error("rho must be positive and finite, got {0}")]
    Rho(f64),
    /// α outside [1, 1.8].
    #[error("alpha (over-relaxation) must be in [1, 1.8], got {0}")]
    Alpha(f64),
    /// A negative or non-finite regularizer weight.
    #[error("regularizer weight gamma must be non-negative and finite, got {0}")]
    Gamma(f64),
    /// Tolerances must be non-negative.
    #[error("stopping tolerances must be non-negative, got eps_abs={eps_abs} eps_rel={eps_rel}")]
    Tolerance {
        /// ε_abs as given.
        eps_abs: f64,
        /// ε_rel as given.
        eps_rel: f64,
    },
    /// Zero rounds requested.
    #[error("max_rounds must be at least 1, got 0")]
    MaxRounds,
    /// Residual balancing with μ ≤ 1, τ ≤ 1 or bounds that exclude ρ.
    #[error("adaptive rho needs mu > 1, tau > 1 and 0 < rho_min <= rho <= rho_max, got mu={mu} tau={tau} rho_min={rho_min} rho={rho} rho_max={rho_max}")]
    Balancing {
        /// μ as given.
        mu: f64,
        /// τ as given.
        tau: f64,
        /// Lower bound as given.
        rho_min: f64,
        /// Initial ρ.
        rho: f64,
        /// Upper bound as given.
        rho_max: f64,
    },
}

impl AdmmConfig {
    /// Checks every field, naming the first invalid value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rho.is_finite() && self.rho > 0.0) {
            return Err(ConfigError::Rho(self.rho));
        }
        if !(1.0..=1.8).contains(&self.alpha) {
            return Err(ConfigError::Alpha(self.alpha));
        }
        match self.regularizer {
            Regularizer::None => {}
            Regularizer::L2 { gamma } | Regularizer::L1 { gamma } => {
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(ConfigError::Gamma(gamma));
                }
            }
        }
        if !(self.eps_abs >= 0.0 && self.eps_rel >= 0.0) {
            return Err(ConfigError::Tolerance {
                eps_abs: self.eps_abs,
                eps_rel: self.eps_rel,
            });
        }
        if self.max_rounds == 0 {
            return Err(ConfigError::MaxRounds);
        }
        if let Some(b) = self.adaptive_rho {
            let ok = b.mu > 1.0
                && b.tau > 1.0
                && b.rho_min > 0.0
                && b.rho_min <= self.rho
                && self.rho <= b.rho_max;
            if !ok {
                return Err(ConfigError::Balancing {
                    mu: b.mu,
                    tau: b.tau,
                    rho_min: b.rho_min,
                    rho: self.rho,
                    rho_max: b.rho_max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_values() {
        let cases = [
            (
                AdmmConfig {
                    rho: -1.0,
                    ..Default::default()
                },
                ConfigError::Rho(-1.0),
            ),
            (
                AdmmConfig {
                    rho: 0.0,
                    ..Default::default()
                },
                ConfigError::Rho(0.0),
            ),
            (
                AdmmConfig {
                    alpha: 2.0,
                    ..Default::default()
                },
                ConfigError::Alpha(2.0),
            ),
            (
                AdmmConfig {
                    regularizer: Regularizer::L1 { gamma: -0.5 },
                    ..Default::default()
                },
                ConfigError::Gamma(-0.5),
            ),
            (
                AdmmConfig {
                    max_rounds: 0,
                    ..Default::default()
                },
                ConfigError::MaxRounds,
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected));
        }
    }

    #[test]
    fn validate_accepts_defaults() {
        assert_eq!(AdmmConfig::default().validate(), Ok(()));
        let adaptive = AdmmConfig {
            adaptive_rho: Some(RhoBalancing::default()),
            ..Default::default()
        };
        assert_eq!(adaptive.validate(), Ok(()));
    }

    #[test]
    fn rho_message_names_value() {
        let message = AdmmConfig {
            rho: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(message, "rho must be positive and finite, got -1");
    }
}
