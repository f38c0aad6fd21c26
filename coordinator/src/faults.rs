//! Options for surviving faults: the per-round deadline, what a round does
//! about a worker that misses it, heartbeats, checkpoints, resumption and
//! the deterministic mode.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Policy of a round towards a worker that has not delivered x_i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StragglerPolicy {
    /// Wait for every worker up to the round deadline, then fail the run.
    Wait,
    /// Go on without the missing workers once the deadline passes or their
    /// heartbeats stop, using their last x_i and dual (marked stale).
    Proceed,
    /// Fail the run as soon as a worker is lost, rejected or late.
    Fail,
}

/// Fault-tolerance options as command-line flags and as configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Seconds a round may take before the straggler policy applies.
    #[arg(long = "round-deadline", default_value_t = 120.0)]
    pub round_deadline_seconds: f64,
    /// Policy towards a worker that misses a round.
    #[arg(long = "straggler-policy", value_enum, default_value_t = StragglerPolicy::Wait)]
    pub straggler_policy: StragglerPolicy,
    /// Interval between worker heartbeats, in milliseconds.
    #[arg(long = "heartbeat-interval-ms", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// Seconds without any message after which a worker counts as lost.
    #[arg(long = "heartbeat-timeout", default_value_t = 10.0)]
    pub heartbeat_timeout_seconds: f64,
    /// Write a checkpoint every N rounds (0: only at the end of the run).
    #[arg(long = "checkpoint-every", default_value_t = 10)]
    pub checkpoint_every: u64,
    /// Continue from the last complete checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Make every x-update a function of (x_i, z, u_i, ρ, round) alone, so
    /// that a killed and resumed run ends with the same parameters as an
    /// uninterrupted one.
    #[arg(long)]
    pub deterministic: bool,
    /// HTTP/2 keepalive ping interval, in seconds; the ping timeout is twice
    /// this.
    #[arg(long = "keepalive", default_value_t = 10.0)]
    pub keepalive_seconds: f64,
    /// Test hook: milliseconds to pause in the middle of each checkpoint
    /// write.
    #[arg(long = "checkpoint-write-delay-ms", default_value_t = 0, hide = true)]
    pub checkpoint_write_delay_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            round_deadline_seconds: 120.0,
            straggler_policy: StragglerPolicy::Wait,
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_seconds: 10.0,
            checkpoint_every: 10,
            resume: false,
            deterministic: false,
            keepalive_seconds: 10.0,
            checkpoint_write_delay_ms: 0,
        }
    }
}

impl FaultConfig {
    /// Checks every value, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("--round-deadline", self.round_deadline_seconds),
            ("--heartbeat-timeout", self.heartbeat_timeout_seconds),
            ("--keepalive", self.keepalive_seconds),
        ] {
            if !(value.is_finite() && value > 0.0) {
                bail!("{name} must be a positive number of seconds, got {value}");
            }
        }
        if self.heartbeat_interval_ms == 0 {
            bail!("--heartbeat-interval-ms must be at least 1, got 0");
        }
        if self.heartbeat_interval_ms as f64 / 1000.0 >= self.heartbeat_timeout_seconds {
            bail!(
                "--heartbeat-interval-ms ({} ms) must be shorter than --heartbeat-timeout ({} s)",
                self.heartbeat_interval_ms,
                self.heartbeat_timeout_seconds
            );
        }
        Ok(())
    }

    /// Returns the round deadline.
    pub fn round_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.round_deadline_seconds)
    }

    /// Returns the silence after which a worker counts as lost.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_timeout_seconds)
    }

    /// Returns the HTTP/2 keepalive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive_seconds)
    }
}
