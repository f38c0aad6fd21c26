//! Primal and dual residuals and the stopping test of Boyd et al. (2011),
//! section 3.3.

use serde::{Deserialize, Serialize};

/// Residuals of one round and the tolerances they are compared against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Residuals {
    /// r = sqrt(Σ_i ‖x_i − z‖²).
    pub primal: f64,
    /// s = ρ·sqrt(N)·‖z − z_prev‖.
    pub dual: f64,
    /// ε_pri = sqrt(nN)·ε_abs + ε_rel·max(sqrt(Σ‖x_i‖²), sqrt(N)·‖z‖).
    pub eps_primal: f64,
    /// ε_dual = sqrt(nN)·ε_abs + ε_rel·ρ·sqrt(Σ‖u_i‖²).
    pub eps_dual: f64,
}

impl Residuals {
    /// Returns whether both residuals are within their tolerances.
    pub fn converged(&self) -> bool {
        self.primal <= self.eps_primal && self.dual <= self.eps_dual
    }
}

/// Reason a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Both residuals fell within their tolerances.
    Converged,
    /// The round limit was reached.
    MaxRounds,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Converged => "converged",
            StopReason::MaxRounds => "max_rounds",
        })
    }
}
