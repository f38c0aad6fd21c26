//! The message the coordinator broadcasts for one round, encoded once into wire
//! chunks that every fetch shares.

use admm_proto::chunk_f32;
use bytes::Bytes;

/// The state workers need for round `round`: z, each worker's scaled dual
/// and ρ; or the end of the run.
#[derive(Debug)]
pub struct Published {
    /// The round workers compute next, from 1.
    pub round: u64,
    /// Penalty ρ of this round.
    pub rho: f64,
    /// Number of parameters n.
    pub parameter_count: usize,
    /// z as wire chunks.
    pub z_chunks: Vec<Bytes>,
    /// u_i as wire chunks, one list per worker.
    pub dual_chunks: Vec<Vec<Bytes>>,
    /// x_i as wire chunks, one list per worker; only in deterministic mode,
    /// where every x-update starts from the coordinator's copy.
    pub local_chunks: Option<Vec<Vec<Bytes>>>,
    /// Number of values of the shared model (the GAN generator).
    pub shared_count: usize,
    /// The shared model as wire chunks, sent to every worker.
    pub shared_chunks: Vec<Bytes>,
    /// Set when the run has ended, with the reason.
    pub stop: Option<String>,
}

impl Published {
    /// Encodes round `round` from z, the duals, the locals when given and
    /// the shared model (empty for none).
    pub fn round(
        round: u64,
        rho: f64,
        z: &[f32],
        duals: &[Vec<f32>],
        locals: Option<&[Vec<f32>]>,
        shared: &[f32],
    ) -> Self {
        Self {
            round,
            rho,
            parameter_count: z.len(),
            z_chunks: chunk_f32(z).collect(),
            dual_chunks: duals.iter().map(|u| chunk_f32(u).collect()).collect(),
            local_chunks: locals
                .map(|locals| locals.iter().map(|x| chunk_f32(x).collect()).collect()),
            shared_count: shared.len(),
            shared_chunks: chunk_f32(shared).collect(),
            stop: None,
        }
    }

    /// Builds the end-of-run message after `round` rounds.
    pub fn stop(round: u64, rho: f64, reason: String) -> Self {
        Self {
            round,
            rho,
            parameter_count: 0,
            z_chunks: Vec::new(),
            dual_chunks: Vec::new(),
            local_chunks: None,
            shared_count: 0,
            shared_chunks: Vec::new(),
            stop: Some(reason),
        }
    }
}

/// Event a worker's call sends to the round driver.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A checked x_i.
    Upload(Upload),
    /// An x_i rejected for non-finite values; the straggler policy applies.
    Rejected {
        /// Worker index.
        worker: usize,
        /// Round it belonged to.
        round: u64,
        /// Reason for the rejection.
        reason: String,
    },
}

/// A checked x_i, handed from the gRPC handler to the round driver.
#[derive(Debug)]
pub struct Upload {
    /// Worker index.
    pub worker: usize,
    /// Round it belongs to.
    pub round: u64,
    /// x_i.
    pub x: Vec<f32>,
    /// The worker's mean local loss.
    pub loss: f64,
    /// Seconds of local computation.
    pub compute_seconds: f64,
    /// Bytes received.
    pub bytes: u64,
}
