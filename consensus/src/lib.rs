//! The coordinator's side of consensus ADMM, in scaled form, for
//!
//! ```text
//! minimize  f_1(x_1) + … + f_N(x_N) + g(z)   subject to  x_i = z
//! ```
//!
//! Workers compute `x_i ← argmin f_i(x) + (ρ/2)‖x − z + u_i‖²`; this crate
//! does the rest of a round, in order: over-relaxation
//! `x̂_i = α·x_i + (1 − α)·z`, the closed-form z-update
//! `z = argmin g(z) + (Nρ/2)‖z − mean(x̂_i + u_i)‖²`, the dual update
//! `u_i ← u_i + x̂_i − z`, the primal and dual residuals with their stopping
//! tolerances (Boyd et al. 2011, sections 3.3 and 7.1), and residual
//! balancing of ρ, which rescales every dual so that `λ_i = ρ·u_i` is kept.
//!
//! Vectors are stored as `f32` (the wire format); every mean and norm is
//! accumulated in `f64`.

mod config;
mod residuals;
mod state;

pub use config::{AdmmConfig, ConfigError, Regularizer, RhoBalancing};
pub use residuals::{Residuals, StopReason};
pub use state::{ConsensusState, RoundOutcome, StateError};
