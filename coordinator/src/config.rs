//! The coordinator's options, as clap arguments and as the validated
//! configuration written into the run's `config.json`.

use crate::faults::FaultConfig;
use admm_consensus::{AdmmConfig, Regularizer, RhoBalancing};
use admm_problems::gan::trainer::GanTraining;
use admm_problems::{ProblemKind, ProblemSpec};
use admm_proto::security::{ServerSecurity, ServerSecurityArgs};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Kind of the regularizer g(z) at the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RegularizerKind {
    /// g = 0.
    None,
    /// g = (γ/2)·‖z‖².
    L2,
    /// g = γ·‖z‖₁.
    L1,
}

/// ADMM hyperparameters as command-line options.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct AdmmArgs {
    /// Initial penalty ρ (positive).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub rho: f64,
    /// Over-relaxation α in [1, 1.8]; 1 turns it off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Regularizer g(z) held by the coordinator [default: l2 for regression
    /// (the θ₂ term ½‖θ‖²), none for mnist].
    #[arg(long, value_enum)]
    pub regularizer: Option<RegularizerKind>,
    /// Weight γ of the regularizer.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Adapt ρ by residual balancing, rescaling every dual.
    #[arg(long)]
    pub adaptive_rho: bool,
    /// Residual ratio μ that triggers a ρ change.
    #[arg(long, default_value_t = 10.0)]
    pub rho_mu: f64,
    /// Factor τ of a ρ change.
    #[arg(long, default_value_t = 2.0)]
    pub rho_tau: f64,
    /// Lower bound on an adapted ρ.
    #[arg(long, default_value_t = 1e-4)]
    pub rho_min: f64,
    /// Upper bound on an adapted ρ.
    #[arg(long, default_value_t = 1e4)]
    pub rho_max: f64,
    /// Absolute stopping tolerance ε_abs.
    #[arg(long, default_value_t = 1e-5)]
    pub eps_abs: f64,
    /// Relative stopping tolerance ε_rel.
    #[arg(long, default_value_t = 1e-4)]
    pub eps_rel: f64,
    /// Maximum number of rounds.
    #[arg(long, default_value_t = 100)]
    pub max_rounds: u64,
}

impl AdmmArgs {
    /// Builds the ADMM configuration, with the problem's default regularizer.
    pub fn resolve(&self, problem: ProblemKind) -> AdmmConfig {
        let kind = self.regularizer.unwrap_or(match problem {
            ProblemKind::Regression => RegularizerKind::L2,
            ProblemKind::Mnist | ProblemKind::Gan => RegularizerKind::None,
        });
        let regularizer = match kind {
            RegularizerKind::None => Regularizer::None,
            RegularizerKind::L2 => Regularizer::L2 { gamma: self.gamma },
            RegularizerKind::L1 => Regularizer::L1 { gamma: self.gamma },
        };
        AdmmConfig {
            rho: self.rho,
            alpha: self.alpha,
            regularizer,
            adaptive_rho: self.adaptive_rho.then_some(RhoBalancing {
                mu: self.rho_mu,
                tau: self.rho_tau,
                rho_min: self.rho_min,
                rho_max: self.rho_max,
            }),
            eps_abs: self.eps_abs,
            eps_rel: self.eps_rel,
            max_rounds: self.max_rounds,
        }
    }
}

/// Command-line options of `admm-coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// JSON configuration file (the `coordinator` object of a run's
    /// config.json); it replaces every other option except TLS and the token.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Number of workers N that must register before round 1.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Run directory for config.json, metrics.jsonl, the model and plots.
    #[arg(long, default_value = "runs/latest")]
    pub run_dir: PathBuf,
    /// File to write the bound address into once listening (for launchers
    /// that pass port 0).
    #[arg(long)]
    pub address_file: Option<PathBuf>,
    /// libtorch CPU threads of the coordinator (its evaluation of z).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds to wait for all workers to register before giving up.
    #[arg(long, default_value_t = 600)]
    pub register_timeout: u64,
    /// The problem.
    #[command(flatten)]
    pub problem: ProblemSpec,
    /// ADMM hyperparameters.
    #[command(flatten)]
    pub admm: AdmmArgs,
    /// Fault tolerance.
    #[command(flatten)]
    pub faults: FaultConfig,
    /// The GAN generator, diagnostics and remedies.
    #[command(flatten)]
    pub gan: GanTraining,
    /// TLS and token authentication.
    #[command(flatten)]
    pub security: ServerSecurityArgs,
}

/// The validated configuration of one coordinator run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Number of workers N.
    pub num_workers: usize,
    /// Run directory.
    pub run_dir: PathBuf,
    /// libtorch threads.
    pub threads: usize,
    /// Seconds to wait for registrations.
    pub register_timeout_seconds: u64,
    /// The problem.
    pub problem: ProblemSpec,
    /// ADMM hyperparameters.
    pub admm: AdmmConfig,
    /// Fault tolerance.
    #[serde(default)]
    pub faults: FaultConfig,
    /// The GAN generator, diagnostics and remedies (GAN problem only).
    #[serde(default)]
    pub gan: GanTraining,
    /// TLS and token authentication; the default serves plain text to any
    /// worker. `config.json` records only whether a token is set.
    #[serde(default)]
    pub security: ServerSecurity,
}

impl CoordinatorArgs {
    /// Resolves defaults and validates every value. With `--config`, the
    /// file replaces every other option except TLS and the token.
    pub fn into_config(self) -> Result<CoordinatorConfig> {
        if let Some(path) = &self.config {
            let mut config = CoordinatorConfig::from_file(path)?;
            config.security = self.security.resolve()?;
            config
                .validate()
                .with_context(|| format!("invalid configuration file {}", path.display()))?;
            return Ok(config);
        }
        let admm = self.admm.resolve(self.problem.problem);
        let config = CoordinatorConfig {
            listen: self.listen,
            num_workers: self.workers,
            run_dir: self.run_dir,
            threads: self.threads,
            register_timeout_seconds: self.register_timeout,
            problem: self.problem,
            admm,
            faults: self.faults,
            gan: self.gan,
            security: self.security.resolve()?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl CoordinatorConfig {
    /// Reads a configuration written as JSON, in the layout of the
    /// `coordinator` object of a run's `config.json`. Unknown fields are
    /// errors, so that a misspelt option is never silently ignored.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read configuration file {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "invalid configuration file {}; fix the field named above",
                path.display()
            )
        })
    }

    /// Checks every value, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        self.admm.validate()?;
        self.problem.validate()?;
        self.faults.validate()?;
        self.security.validate()?;
        if self.num_workers == 0 {
            bail!("--workers must be at least 1, got 0");
        }
        if self.problem.problem == ProblemKind::Gan {
            self.gan.validate()?;
            self.problem.gan.check_workers(self.num_workers)?;
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1, got 0");
        }
        Ok(())
    }
}
