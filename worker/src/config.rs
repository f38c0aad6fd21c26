//! The worker's options.

use admm_problems::{ProblemSpec, SolverSpec};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Command-line options of `admm-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Coordinator address, such as http://10.0.0.5:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// This worker's index in 0..N; it selects the data shard.
    #[arg(long)]
    pub worker_id: usize,
    /// Device of the local computation: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch CPU threads of this process.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds to keep retrying the first connection before giving up.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// The problem; must match the coordinator's.
    #[command(flatten)]
    pub problem: ProblemSpec,
    /// The local optimizer.
    #[command(flatten)]
    pub solver: SolverSpec,
}

/// The validated worker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Coordinator URL.
    pub coordinator: String,
    /// Worker index.
    pub worker_id: usize,
    /// Device string.
    pub device: String,
    /// libtorch threads.
    pub threads: usize,
    /// Seconds of connection retries.
    pub connect_timeout_seconds: u64,
    /// The problem.
    pub problem: ProblemSpec,
    /// The local optimizer.
    pub solver: SolverSpec,
}

impl WorkerArgs {
    /// Validates every value.
    pub fn into_config(self) -> Result<WorkerConfig> {
        let coordinator = if self.coordinator.contains("://") {
            self.coordinator
        } else {
            format!("http://{}", self.coordinator)
        };
        let config = WorkerConfig {
            coordinator,
            worker_id: self.worker_id,
            device: self.device,
            threads: self.threads,
            connect_timeout_seconds: self.connect_timeout,
            problem: self.problem,
            solver: self.solver,
        };
        config.validate()?;
        Ok(config)
    }
}

impl WorkerConfig {
    /// Checks every value, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        self.problem.validate()?;
        self.solver.validate()?;
        if self.threads == 0 {
            bail!("--threads must be at least 1, got 0");
        }
        Ok(())
    }
}
