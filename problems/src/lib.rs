//! The two problems the trainer solves, and everything about them that the
//! coordinator, the workers and the baseline share.
//!
//! - [`spec`]: the problem options (`--problem`, sizes, seed, data folder),
//!   validated and serializable into a run's `config.json`.
//! - [`data`]: MNIST IDX files and the synthetic regression data.
//! - [`network`]: the models, with a fixed parameter layout and conversion
//!   between their tensors and one flat `f32` vector (the wire format).
//! - [`objective`]: a worker's local term f_i on its data shard, and the
//!   inexact x-update that minimizes `f_i(x) + (ρ/2)‖x − z + u_i‖²`.
//! - [`evaluate`]: loss, regularizer and accuracy of a parameter vector.
//! - [`baseline`]: ordinary single-process training of the same objective.
//! - [`gan`]: the DCGAN problem: its models, the two halves of the split
//!   discriminator, the coordinator's generator, and quality measures.
//! - [`device`]: parsing `cpu` / `cuda:N` and refusing absent devices.

pub mod baseline;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod gan;
pub mod network;
pub mod objective;
pub mod rng;
pub mod spec;

pub use device::parse_device;
pub use network::{Network, ParamSpec};
pub use spec::{OptimizerKind, ProblemKind, ProblemSpec, SolverSpec};
