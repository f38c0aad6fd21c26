//! Evaluation of z and the metrics file, on a thread of their own so that
//! the next round's local computation overlaps them.

use admm_problems::evaluate::Evaluator;
use admm_report::jsonl::JsonlWriter;
use admm_report::RoundRow;
use anyhow::{Context, Result};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::info;

/// One round to complete: the row without its evaluation, and z.
pub struct EvaluationJob {
    /// Row with the round's ADMM figures filled in.
    pub row: RoundRow,
    /// Consensus z after the round.
    pub z: Arc<Vec<f32>>,
}

/// Handle of the evaluation thread.
pub struct EvaluationThread {
    jobs: mpsc::Sender<EvaluationJob>,
    handle: JoinHandle<Result<Vec<RoundRow>>>,
}

impl EvaluationThread {
    /// Starts the thread, which evaluates z with `evaluator` (when there is
    /// one; GAN rows arrive complete) and appends each row to `metrics`.
    pub fn start(mut evaluator: Option<Evaluator>, mut metrics: JsonlWriter) -> Self {
        let (jobs, receiver) = mpsc::channel::<EvaluationJob>();
        let handle = std::thread::Builder::new()
            .name("evaluation".into())
            .spawn(move || {
                let mut rows = Vec::new();
                for EvaluationJob { mut row, z } in receiver {
                    if let Some(evaluator) = evaluator.as_mut() {
                        let evaluation = evaluator.evaluate(&z)?;
                        row.loss = evaluation.loss;
                        row.objective = evaluation.loss + row.g;
                        row.test_loss = evaluation.test_loss;
                        row.test_accuracy = evaluation.test_accuracy;
                    }
                    metrics.append(&row)?;
                    info!(
                        round = row.round,
                        objective = row.objective,
                        loss = row.loss,
                        g = row.g,
                        test_accuracy = row.test_accuracy,
                        primal = row.primal_residual.unwrap_or(f64::NAN),
                        dual = row.dual_residual.unwrap_or(f64::NAN),
                        rho = row.rho.unwrap_or(f64::NAN),
                        round_seconds = row.round_seconds,
                        "round finished"
                    );
                    if let Some(gan) = &row.gan {
                        info!(
                            round = row.round,
                            epoch = gan.epoch,
                            generator_loss = gan.generator_loss,
                            z_on_real = gan.consensus_on_real,
                            z_on_fake = gan.consensus_on_fake,
                            real_half_on_real = gan.real_half_on_real,
                            real_half_on_fake = gan.real_half_on_fake,
                            fake_half_on_real = gan.fake_half_on_real,
                            fake_half_on_fake = gan.fake_half_on_fake,
                            collapsed = gan.collapsed,
                            "GAN diagnostics"
                        );
                    }
                    rows.push(row);
                }
                Ok(rows)
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        Self { jobs, handle }
    }

    /// Queues one round.
    pub fn submit(&self, job: EvaluationJob) -> Result<()> {
        self.jobs
            .send(job)
            .context("the evaluation thread has stopped")
    }

    /// Waits for every queued round and returns all rows.
    pub fn finish(self) -> Result<Vec<RoundRow>> {
        drop(self.jobs);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the evaluation thread panicked"))?
    }
}
