//! The consensus vector, the scaled duals and the latest local solutions,
//! and the coordinator's steps of a round on them.

use crate::{AdmmConfig, Residuals, StopReason};
use thiserror::Error;

/// A local solution that cannot enter the z-update.
#[derive(Debug, Error, PartialEq)]
pub enum StateError {
    /// x_i has another length than z.
    #[error("worker {worker} sent {got} parameters, expected {expected}")]
    Length {
        /// Worker index.
        worker: usize,
        /// Length of z.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// x_i contains NaN or ±Inf.
    #[error("worker {worker} sent a non-finite value {value} at index {index}")]
    NonFinite {
        /// Worker index.
        worker: usize,
        /// First offending position.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// The worker index is not one of the N workers.
    #[error("unknown worker {worker}; valid ids are 0..{num_workers}")]
    UnknownWorker {
        /// Index given.
        worker: usize,
        /// N.
        num_workers: usize,
    },
}

/// Result of one coordinator step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundOutcome {
    /// Residuals after the z- and dual updates.
    pub residuals: Residuals,
    /// ρ used in this round.
    pub rho: f64,
    /// ρ for the next round (after residual balancing).
    pub next_rho: f64,
    /// Set when the run should stop after this round.
    pub stop: Option<StopReason>,
}

/// Coordinator state of consensus ADMM over N workers and n parameters.
#[derive(Debug, Clone)]
pub struct ConsensusState {
    /// Consensus vector z.
    pub z: Vec<f32>,
    /// Scaled duals u_i = λ_i/ρ, one per worker.
    pub duals: Vec<Vec<f32>>,
    /// Latest local solutions x_i, one per worker.
    pub locals: Vec<Vec<f32>>,
    /// Current penalty ρ.
    pub rho: f64,
    /// Number of completed rounds.
    pub round: u64,
    z_prev: Vec<f32>,
}

impl ConsensusState {
    /// Starts from z = `z0`, every x_i = z0 and every u_i = 0.
    pub fn new(z0: Vec<f32>, num_workers: usize, rho: f64) -> Self {
        let n = z0.len();
        Self {
            duals: vec![vec![0.0; n]; num_workers],
            locals: vec![z0.clone(); num_workers],
            z_prev: z0.clone(),
            z: z0,
            rho,
            round: 0,
        }
    }

    /// Rebuilds a state saved after `round` rounds. `z_prev` starts equal
    /// to z, because it only feeds the dual residual of the saved round,
    /// which is already recorded.
    pub fn restore(
        z: Vec<f32>,
        locals: Vec<Vec<f32>>,
        duals: Vec<Vec<f32>>,
        rho: f64,
        round: u64,
    ) -> Self {
        Self {
            z_prev: z.clone(),
            z,
            locals,
            duals,
            rho,
            round,
        }
    }

    /// Number of workers N.
    pub fn num_workers(&self) -> usize {
        self.duals.len()
    }

    /// Number of parameters n.
    pub fn len(&self) -> usize {
        self.z.len()
    }

    /// Returns whether the model has no parameters.
    pub fn is_empty(&self) -> bool {
        self.z.is_empty()
    }

    /// Checks a local solution before it is stored, so that a bad upload
    /// never touches z or any dual.
    pub fn check_local(&self, worker: usize, x: &[f32]) -> Result<(), StateError> {
        if worker >= self.num_workers() {
            return Err(StateError::UnknownWorker {
                worker,
                num_workers: self.num_workers(),
            });
        }
        if x.len() != self.len() {
            return Err(StateError::Length {
                worker,
                expected: self.len(),
                got: x.len(),
            });
        }
        if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(StateError::NonFinite {
                worker,
                index,
                value,
            });
        }
        Ok(())
    }

    /// Stores worker `worker`'s x_i after checking it.
    pub fn set_local(&mut self, worker: usize, x: &[f32]) -> Result<(), StateError> {
        self.check_local(worker, x)?;
        self.locals[worker].copy_from_slice(x);
        Ok(())
    }

    /// Stores worker `worker`'s x_i by swapping buffers after checking it;
    /// `x` receives the previous x_i, so its allocation can be reused.
    pub fn swap_local(&mut self, worker: usize, x: &mut Vec<f32>) -> Result<(), StateError> {
        self.check_local(worker, x)?;
        std::mem::swap(&mut self.locals[worker], x);
        Ok(())
    }

    /// Runs the coordinator's part of one round on the stored x_i:
    /// over-relaxation, z-update, dual update, residuals, residual balancing
    /// and the stopping test.
    pub fn step(&mut self, config: &AdmmConfig) -> RoundOutcome {
        let fresh = vec![true; self.num_workers()];
        self.step_partial(config, &fresh)
    }

    /// Runs a round in which only the workers marked in `fresh` delivered a
    /// new x_i. A stale worker's block enters the round as follows:
    ///
    /// - z-update: with its last x_i and its current u_i, so z stays the
    ///   minimizer for the latest information from every block;
    /// - dual update: skipped. u_i accumulates x̂_i − z once per new x_i,
    ///   and reusing an old x_i would count the same residual again;
    /// - residuals: included with its last x_i, so r measures how far every
    ///   block, stale or not, is from consensus.
    pub fn step_partial(&mut self, config: &AdmmConfig, fresh: &[bool]) -> RoundOutcome {
        let rho = self.rho;
        self.z_prev.copy_from_slice(&self.z);
        self.update_z(config);
        self.update_duals(config.alpha, fresh);
        let residuals = self.residuals(config);
        self.round += 1;
        let next_rho = match config.adaptive_rho {
            Some(balancing) => {
                let proposed = if residuals.primal > balancing.mu * residuals.dual {
                    rho * balancing.tau
                } else if residuals.dual > balancing.mu * residuals.primal {
                    rho / balancing.tau
                } else {
                    rho
                };
                proposed.clamp(balancing.rho_min, balancing.rho_max)
            }
            None => rho,
        };
        if next_rho != rho {
            self.rescale_rho(next_rho);
        }
        let stop = if residuals.converged() {
            Some(StopReason::Converged)
        } else if self.round >= config.max_rounds {
            Some(StopReason::MaxRounds)
        } else {
            None
        };
        RoundOutcome {
            residuals,
            rho,
            next_rho,
            stop,
        }
    }

    /// Sets ρ and rescales every scaled dual by ρ_old/ρ_new, so that the
    /// unscaled duals λ_i = ρ·u_i are unchanged.
    pub fn rescale_rho(&mut self, new_rho: f64) {
        let factor = self.rho / new_rho;
        for u in &mut self.duals {
            for v in u.iter_mut() {
                *v = (f64::from(*v) * factor) as f32;
            }
        }
        self.rho = new_rho;
    }

    /// z ← prox_g(mean_i(x̂_i + u_i)), with x̂_i = α·x_i + (1 − α)·z_prev.
    fn update_z(&mut self, config: &AdmmConfig) {
        let n_workers = self.num_workers() as f64;
        let n_rho = n_workers * self.rho;
        let alpha = config.alpha;
        for j in 0..self.z.len() {
            let z_old = f64::from(self.z_prev[j]);
            let mut sum = 0.0f64;
            for (x, u) in self.locals.iter().zip(&self.duals) {
                sum += alpha * f64::from(x[j]) + (1.0 - alpha) * z_old + f64::from(u[j]);
            }
            self.z[j] = config.regularizer.prox(sum / n_workers, n_rho) as f32;
        }
    }

    /// u_i ← u_i + x̂_i − z, for the workers with a fresh x_i.
    fn update_duals(&mut self, alpha: f64, fresh: &[bool]) {
        let blocks = self.locals.iter().zip(self.duals.iter_mut()).zip(fresh);
        for ((x, u), _) in blocks.filter(|(_, &is_fresh)| is_fresh) {
            for j in 0..u.len() {
                let relaxed = alpha * f64::from(x[j]) + (1.0 - alpha) * f64::from(self.z_prev[j]);
                u[j] = (f64::from(u[j]) + relaxed - f64::from(self.z[j])) as f32;
            }
        }
    }

    /// Residuals of the current x_i, z and z_prev, with their tolerances.
    pub fn residuals(&self, config: &AdmmConfig) -> Residuals {
        let n_workers = self.num_workers() as f64;
        let mut primal_sq = 0.0f64;
        let mut locals_sq = 0.0f64;
        let mut duals_sq = 0.0f64;
        for (x, u) in self.locals.iter().zip(&self.duals) {
            for j in 0..x.len() {
                let xj = f64::from(x[j]);
                primal_sq += (xj - f64::from(self.z[j])).powi(2);
                locals_sq += xj * xj;
                duals_sq += f64::from(u[j]).powi(2);
            }
        }
        let z_sq = squared_norm(&self.z);
        let change_sq: f64 = self
            .z
            .iter()
            .zip(&self.z_prev)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let scale = (self.len() as f64 * n_workers).sqrt() * config.eps_abs;
        Residuals {
            primal: primal_sq.sqrt(),
            dual: self.rho * n_workers.sqrt() * change_sq.sqrt(),
            eps_primal: scale
                + config.eps_rel * locals_sq.sqrt().max(n_workers.sqrt() * z_sq.sqrt()),
            eps_dual: scale + config.eps_rel * self.rho * duals_sq.sqrt(),
        }
    }
}

/// ‖v‖² accumulated in f64.
pub(crate) fn squared_norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum()
}

#[cfg(test)]
mod tests;
