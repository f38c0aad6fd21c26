//! The worker's options.

use admm_problems::{ProblemSpec, SolverSpec};
use admm_proto::security::{ClientSecurity, ClientSecurityArgs};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Command-line options of `admm-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Coordinator address, such as http://10.0.0.5:50051 (https:// with
    /// --tls-ca, which also turns a given http:// into https://).
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
    /// Test hook: milliseconds each local x-update sleeps, to simulate a slow
    /// device.
    #[arg(long, default_value_t = 0, hide = true)]
    pub debug_step_delay_ms: u64,
    /// Test hook: make x_i of this round non-finite, to exercise rejection.
    #[arg(long, hide = true)]
    pub debug_nan_round: Option<u64>,
    /// HTTP/2 keepalive ping interval, in seconds; the ping timeout is twice
    /// this.
    #[arg(long = "keepalive", default_value_t = 10.0)]
    pub keepalive: f64,
    /// TLS and the token to present.
    #[command(flatten)]
    pub security: ClientSecurityArgs,
}

/// The coordinator's URL and how to reach it: TLS settings and the token.
///
/// Serialized into the settings a worker reports at registration, with the
/// token reduced to a flag saying whether one is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorEndpoint {
    /// URL with its scheme: https:// exactly when TLS is on.
    pub url: String,
    /// TLS and token settings.
    pub security: ClientSecurity,
}

impl CoordinatorEndpoint {
    /// Builds the endpoint from an address with or without a scheme; TLS
    /// turns http:// into https://.
    pub fn new(address: &str, security: ClientSecurity) -> Result<Self> {
        let rest = match address.split_once("://") {
            None => address,
            Some(("http", rest)) => rest,
            Some(("https", rest)) if security.tls.is_some() => rest,
            Some(("https", _)) => {
                bail!("--coordinator {address} uses https:// but no --tls-ca is given to verify it")
            }
            Some((scheme, _)) => {
                bail!(
                    "--coordinator {address} has scheme {scheme}://; expected http:// or https://"
                )
            }
        };
        let scheme = if security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Self {
            url: format!("{scheme}://{rest}"),
            security,
        })
    }
}

impl fmt::Display for CoordinatorEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The validated worker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Coordinator URL, TLS settings and token.
    pub coordinator: CoordinatorEndpoint,
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
    /// Milliseconds each x-update sleeps (a test hook; 0 in real runs).
    #[serde(default)]
    pub debug_step_delay_ms: u64,
    /// Round whose x_i is made non-finite (a test hook; unset in real runs).
    #[serde(default)]
    pub debug_nan_round: Option<u64>,
    /// HTTP/2 keepalive interval, in seconds.
    pub keepalive_seconds: f64,
}

impl WorkerArgs {
    /// Validates every value.
    pub fn into_config(self) -> Result<WorkerConfig> {
        let coordinator = CoordinatorEndpoint::new(&self.coordinator, self.security.resolve()?)?;
        let config = WorkerConfig {
            coordinator,
            worker_id: self.worker_id,
            device: self.device,
            threads: self.threads,
            connect_timeout_seconds: self.connect_timeout,
            problem: self.problem,
            solver: self.solver,
            debug_step_delay_ms: self.debug_step_delay_ms,
            debug_nan_round: self.debug_nan_round,
            keepalive_seconds: self.keepalive,
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
        if !(self.keepalive_seconds.is_finite() && self.keepalive_seconds > 0.0) {
            bail!(
                "--keepalive must be a positive number of seconds, got {}",
                self.keepalive_seconds
            );
        }
        self.coordinator.security.validate()?;
        if self.threads == 0 {
            bail!("--threads must be at least 1, got 0");
        }
        Ok(())
    }
}
