//! The coordinator of consensus ADMM: it waits for N workers to register,
//! then runs rounds until the residuals meet their tolerances or the round
//! limit is reached.
//!
//! One round, as [`driver`] runs it:
//!
//! 1. broadcast: publish z, each worker's scaled dual u_i and ρ
//!    ([`round::Published`]); workers fetch them with `FetchRound`;
//! 2. gather: collect every worker's x_i from `SubmitUpdate`, each checked
//!    for length and finite values before it is stored ([`service`]);
//! 3. update: over-relaxation, z-update, dual updates, residuals and ρ
//!    ([`admm_consensus::ConsensusState::step`]);
//! 4. for the GAN, train the generator against z and diagnose the halves
//!    ([`generator`]);
//! 5. record: evaluate z and append a row to `metrics.jsonl`, on a separate
//!    thread while the workers compute the next round ([`evaluation`]).

pub mod checkpoint;
pub mod config;
pub mod driver;
pub mod evaluation;
pub mod faults;
pub mod generator;
pub mod round;
pub mod server;
pub mod service;

pub use config::{AdmmArgs, CoordinatorArgs, CoordinatorConfig};
pub use driver::{run, RunSummary};
