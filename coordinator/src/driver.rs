//! A coordinator run from start to end: set-up, registration, the rounds,
//! and the final outputs.

use crate::config::CoordinatorConfig;
use crate::evaluation::{EvaluationJob, EvaluationThread};
use crate::round::{Published, Upload};
use crate::server;
use crate::service::{CoordinatorService, ExpectedModel, Shared};
use admm_consensus::{ConsensusState, StopReason};
use admm_problems::evaluate::Evaluator;
use admm_problems::network::save_flat_safetensors;
use admm_report::jsonl::JsonlWriter;
use admm_report::{RoundRow, CONFIG_FILE, METRICS_FILE, MODEL_FILE};
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// How long the coordinator waits for workers to collect the stop message
/// before it closes the server.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Stop reason of a run ended by a signal.
const INTERRUPTED: &str = "interrupted";

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Rounds completed.
    pub rounds: u64,
    /// Why the run stopped.
    pub stop_reason: String,
    /// Final consensus z.
    pub z: Vec<f32>,
    /// Every metrics row.
    pub rows: Vec<RoundRow>,
}

/// Runs a coordinator on `listener` until the run ends or `shutdown`
/// resolves (after which it stops at the end of the current step and still
/// writes its outputs).
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunSummary> {
    config.validate()?;
    std::fs::create_dir_all(&config.run_dir).with_context(|| {
        format!(
            "failed to create run directory {}",
            config.run_dir.display()
        )
    })?;
    tch::set_num_threads(config.threads as i32);

    let problem = config.problem.clone();
    let evaluator = tokio::task::spawn_blocking(move || Evaluator::new(&problem, tch::Device::Cpu))
        .await
        .context("evaluator set-up panicked")??;
    let mut z0 = Vec::new();
    evaluator.network().write_flat(&mut z0);
    let expected = ExpectedModel {
        model_id: config.problem.model_id(),
        layout: evaluator.network().layout().to_vec(),
        parameter_count: z0.len(),
    };
    let (upload_tx, upload_rx) = mpsc::channel(config.num_workers * 2);
    let (published_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        expected: expected.clone(),
        num_workers: config.num_workers,
        registry: Mutex::new(vec![None; config.num_workers]),
        registered: Default::default(),
        published: published_tx,
        uploads: upload_tx,
        assemblers: (0..config.num_workers)
            .map(|_| Default::default())
            .collect(),
        bytes_sent: Default::default(),
        stops_delivered: Default::default(),
        stop_delivered: Default::default(),
    });
    write_config(&config, &shared)?;
    let metrics = JsonlWriter::create(&config.run_dir.join(METRICS_FILE))?;
    let evaluation = EvaluationThread::start(evaluator, metrics);

    let address = listener.local_addr()?;
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        CoordinatorService::new(shared.clone()),
        listener,
        async {
            let _ = server_stop_rx.await;
        },
    ));
    info!(%address, workers = config.num_workers, model = %expected.model_id, parameters = z0.len(), "coordinator listening");

    let mut rounds = Rounds {
        config: &config,
        shared: &shared,
        uploads: upload_rx,
        evaluation: &evaluation,
    };
    let mut state = ConsensusState::new(z0, config.num_workers, config.admm.rho);
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        outcome = rounds.run(&mut state) => outcome,
        _ = &mut shutdown => Ok(INTERRUPTED.to_string()),
    };
    let stop_reason = match outcome {
        Ok(reason) => reason,
        Err(e) => {
            shared.published.send_replace(Some(Arc::new(Published::stop(
                state.round,
                state.rho,
                format!("error: {e:#}"),
            ))));
            let _ = server_stop_tx.send(());
            return Err(e);
        }
    };
    info!(rounds = state.round, reason = %stop_reason, "run finished");
    shared.published.send_replace(Some(Arc::new(Published::stop(
        state.round,
        state.rho,
        stop_reason.clone(),
    ))));
    write_config(&config, &shared)?;
    save_flat_safetensors(&expected.layout, &state.z, &config.run_dir.join(MODEL_FILE))?;
    let rows = evaluation.finish()?;
    if let Err(e) =
        admm_report::plot::write_plots(&config.run_dir, &config.problem.model_id(), &rows, &[])
    {
        warn!(error = %format!("{e:#}"), "failed to write plots");
    }
    // On a signal the workers are being stopped too, so nobody waits for
    // the stop message.
    if stop_reason != INTERRUPTED {
        wait_for_stop_delivery(&shared).await;
    }
    let _ = server_stop_tx.send(());
    if let Ok(Err(e)) = server.await {
        warn!(error = %e, "server ended with an error");
    }
    Ok(RunSummary {
        rounds: state.round,
        stop_reason,
        z: state.z,
        rows,
    })
}

/// The round loop and what it needs.
struct Rounds<'a> {
    config: &'a CoordinatorConfig,
    shared: &'a Shared,
    uploads: mpsc::Receiver<Upload>,
    evaluation: &'a EvaluationThread,
}

impl Rounds<'_> {
    /// Runs rounds until a stop reason, which it returns.
    async fn run(&mut self, state: &mut ConsensusState) -> Result<String> {
        self.wait_for_workers().await?;
        write_config(self.config, self.shared)?;
        let start = Instant::now();
        loop {
            let round = state.round + 1;
            let round_start = Instant::now();
            self.broadcast(round, state);
            let gathered = self.gather(round, state).await?;
            let outcome = state.step(&self.config.admm);
            let row = RoundRow {
                method: "admm".into(),
                round,
                elapsed_seconds: start.elapsed().as_secs_f64(),
                round_seconds: round_start.elapsed().as_secs_f64(),
                g: self.config.admm.regularizer.value(&state.z),
                worker_loss: gathered.losses,
                worker_compute_seconds: gathered.compute_seconds,
                primal_residual: Some(outcome.residuals.primal),
                dual_residual: Some(outcome.residuals.dual),
                eps_primal: Some(outcome.residuals.eps_primal),
                eps_dual: Some(outcome.residuals.eps_dual),
                rho: Some(outcome.rho),
                bytes_sent: self.shared.bytes_sent.swap(0, Ordering::Relaxed),
                bytes_received: gathered.bytes,
                ..Default::default()
            };
            if outcome.next_rho != outcome.rho {
                info!(
                    round,
                    from = outcome.rho,
                    to = outcome.next_rho,
                    "rho adapted"
                );
            }
            self.evaluation.submit(EvaluationJob {
                row,
                z: Arc::new(state.z.clone()),
            })?;
            if let Some(reason) = outcome.stop {
                if reason == StopReason::Converged {
                    info!(
                        round,
                        primal = outcome.residuals.primal,
                        dual = outcome.residuals.dual,
                        "residuals within tolerance"
                    );
                }
                return Ok(reason.to_string());
            }
        }
    }

    /// Waits until all N workers have registered.
    async fn wait_for_workers(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.config.register_timeout_seconds);
        loop {
            let notified = self.shared.registered.notified();
            let count = self.shared.registered_count();
            if count == self.config.num_workers {
                info!(workers = count, "all workers registered");
                return Ok(());
            }
            info!(
                registered = count,
                expected = self.config.num_workers,
                "waiting for workers"
            );
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, notified).await.is_err() {
                bail!(
                    "only {count} of {} workers registered within {} s; start the missing workers or raise --register-timeout",
                    self.config.num_workers,
                    self.config.register_timeout_seconds
                );
            }
        }
    }

    /// Publishes z, the duals and ρ for `round`.
    fn broadcast(&self, round: u64, state: &ConsensusState) {
        let published = Published::round(round, state.rho, &state.z, &state.duals);
        self.shared
            .published
            .send_replace(Some(Arc::new(published)));
    }

    /// Collects every worker's x_i for `round` into the state.
    async fn gather(&mut self, round: u64, state: &mut ConsensusState) -> Result<Gathered> {
        let n = self.config.num_workers;
        let mut received = vec![false; n];
        let mut gathered = Gathered {
            losses: vec![0.0; n],
            compute_seconds: vec![0.0; n],
            bytes: 0,
        };
        while received.iter().any(|r| !r) {
            let Some(mut upload) = self.uploads.recv().await else {
                bail!("the upload channel closed during round {round}");
            };
            if upload.round != round {
                warn!(
                    worker = upload.worker,
                    round = upload.round,
                    current = round,
                    "dropped an update of another round"
                );
                continue;
            }
            state.swap_local(upload.worker, &mut upload.x)?;
            self.shared.assemblers[upload.worker]
                .lock()
                .await
                .recycle(upload.x);
            received[upload.worker] = true;
            gathered.losses[upload.worker] = upload.loss;
            gathered.compute_seconds[upload.worker] = upload.compute_seconds;
            gathered.bytes += upload.bytes;
        }
        Ok(gathered)
    }
}

/// Per-round figures from the workers.
struct Gathered {
    losses: Vec<f64>,
    compute_seconds: Vec<f64>,
    bytes: u64,
}

/// Waits briefly for every worker to collect the stop message.
async fn wait_for_stop_delivery(shared: &Shared) {
    let deadline = Instant::now() + STOP_GRACE;
    while shared.stops_delivered.load(Ordering::SeqCst) < shared.registered_count() as u64 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            warn!("not every worker collected the stop message; closing anyway");
            return;
        }
        let _ = tokio::time::timeout(
            remaining.min(Duration::from_millis(200)),
            shared.stop_delivered.notified(),
        )
        .await;
    }
}

/// Writes `config.json`: the coordinator's configuration and the workers
/// registered so far.
fn write_config(config: &CoordinatorConfig, shared: &Shared) -> Result<()> {
    let workers = shared
        .registry
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let document = serde_json::json!({
        "coordinator": config,
        "model": { "id": shared.expected.model_id, "parameters": shared.expected.parameter_count, "layout": shared.expected.layout },
        "workers": workers,
    });
    write_atomic(
        &config.run_dir.join(CONFIG_FILE),
        &serde_json::to_vec_pretty(&document)?,
    )
}

/// Writes a file through a temporary name and a rename, so readers never
/// see half of it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to rename {} to {}", tmp.display(), path.display()))
}
