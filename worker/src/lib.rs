//! A consensus-ADMM worker: it owns one term f_i of the objective (a shard
//! of the training data) and, each round, fetches z, its scaled dual u_i
//! and ρ from the coordinator, runs the local x-update on its device, and
//! uploads x_i.

pub mod client;
pub mod config;
pub mod session;

pub use config::{WorkerArgs, WorkerConfig};
pub use session::{run, WorkerSummary};
