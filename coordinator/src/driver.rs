//! A coordinator run from start to end: set-up (or resumption from a
//! checkpoint), registration, the rounds, and the final outputs.

use crate::checkpoint::{self, RunIdentity};
use crate::config::CoordinatorConfig;
use crate::evaluation::{EvaluationJob, EvaluationThread};
use crate::faults::StragglerPolicy;
use crate::generator::{self, GeneratorRole};
use crate::round::{Published, WorkerEvent};
use crate::server;
use crate::service::{CoordinatorService, ExpectedModel, Shared};
use admm_consensus::{ConsensusState, StopReason};
use admm_problems::evaluate::Evaluator;
use admm_problems::network::save_flat_safetensors;
use admm_problems::ProblemKind;
use admm_report::jsonl::{read_rows, JsonlWriter};
use admm_report::{RoundRow, CONFIG_FILE, METRICS_FILE, MODEL_FILE};
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// How long the coordinator waits for workers to collect the stop message
/// before it closes the server.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the server may take to close its streams before they are cut,
/// so that a peer stuck mid-stream cannot hold up shutdown.
const SERVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting round re-checks deadlines and heartbeats.
const GATHER_POLL: Duration = Duration::from_millis(100);

/// Stop reason of a run ended by a signal.
const INTERRUPTED: &str = "interrupted";

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Rounds completed.
    pub rounds: u64,
    /// Reason the run stopped.
    pub stop_reason: String,
    /// Final consensus z.
    pub z: Vec<f32>,
    /// Every metrics row of this process (after a resume, the rows before
    /// the checkpoint are in `metrics.jsonl` but not here).
    pub rows: Vec<RoundRow>,
}

/// Runs a coordinator on `listener` until the run ends or `shutdown`
/// resolves. Either way it writes a final checkpoint, the model, metrics
/// and plots.
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

    let (evaluator, mut generator, training_len) = prepare_problem(&config).await?;
    if config.num_workers > training_len {
        bail!(
            "{} workers need at least {} training samples, the data set has {training_len}; use fewer workers",
            config.num_workers,
            config.num_workers,
        );
    }
    let model = config.problem.build_network(tch::Device::Cpu);
    let mut z0 = Vec::new();
    model.write_flat(&mut z0);
    let expected = ExpectedModel {
        model_id: config.problem.run_id(),
        layout: model.layout().to_vec(),
        parameter_count: z0.len(),
    };
    let identity = RunIdentity {
        model_id: expected.model_id.clone(),
        seed: config.problem.seed,
        num_workers: config.num_workers,
        parameter_count: z0.len(),
        deterministic: config.faults.deterministic,
    };
    let metrics_path = config.run_dir.join(METRICS_FILE);
    let checkpoints = config.run_dir.join(checkpoint::CHECKPOINT_DIR);
    if !config.faults.resume && (metrics_path.exists() || checkpoints.exists()) {
        bail!(
            "run directory {} already contains a run; pass --resume to continue it, or choose a new --run-dir",
            config.run_dir.display()
        );
    }
    let (mut state, earlier_rows) = if config.faults.resume {
        let loaded = checkpoint::load_latest(&config.run_dir, &identity)?;
        if let Some(reason) = &loaded.manifest.stop_reason {
            bail!(
                "the run in {} already finished at round {} ({reason}); nothing to resume, start a new run directory",
                config.run_dir.display(),
                loaded.manifest.round
            );
        }
        let rows: Vec<RoundRow> = if metrics_path.exists() {
            read_rows(&metrics_path)?
        } else {
            Vec::new()
        };
        let kept: Vec<RoundRow> = rows
            .into_iter()
            .filter(|r| r.round <= loaded.manifest.round)
            .collect();
        info!(
            round = loaded.manifest.round,
            rows = kept.len(),
            "resuming from checkpoint"
        );
        if let Some(generator) = generator.as_mut() {
            generator.restore(&loaded.companions)?;
        }
        (loaded.state, kept)
    } else {
        (
            ConsensusState::new(z0, config.num_workers, config.admm.rho),
            Vec::new(),
        )
    };

    let (event_tx, event_rx) = mpsc::channel(config.num_workers * 4);
    let (published_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        expected: expected.clone(),
        num_workers: config.num_workers,
        registry: Mutex::new(vec![None; config.num_workers]),
        registered: Default::default(),
        published: published_tx,
        events: event_tx,
        last_seen: Mutex::new(vec![None; config.num_workers]),
        heartbeat_timeout: config.faults.heartbeat_timeout(),
        heartbeat_interval: Duration::from_millis(config.faults.heartbeat_interval_ms),
        deterministic: config.faults.deterministic,
        assemblers: (0..config.num_workers)
            .map(|_| Default::default())
            .collect(),
        bytes_sent: Default::default(),
        stops_delivered: Default::default(),
        stop_delivered: Default::default(),
    });
    // A resumed run keeps its config.json until the workers are back, so a
    // failed resumption leaves the record of the run as it was.
    if !config.faults.resume {
        write_config(&config, &shared)?;
    }
    let mut metrics = JsonlWriter::create(&metrics_path)?;
    for row in &earlier_rows {
        metrics.append(row)?;
    }
    let evaluation = EvaluationThread::start(evaluator, metrics);

    let address = listener.local_addr()?;
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        CoordinatorService::new(shared.clone()),
        listener,
        &config.security,
        config.faults.keepalive(),
        async {
            let _ = server_stop_rx.await;
        },
    )?);
    info!(%address, workers = config.num_workers, model = %expected.model_id, parameters = expected.parameter_count, round = state.round, "coordinator listening");

    let elapsed_offset = earlier_rows.last().map_or(0.0, |r| r.elapsed_seconds);
    let mut rounds = Rounds {
        config: &config,
        shared: &shared,
        events: event_rx,
        evaluation: &evaluation,
        identity: &identity,
        last_losses: vec![0.0; config.num_workers],
        elapsed_offset,
        generator,
    };
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        outcome = rounds.run(&mut state) => outcome,
        _ = &mut shutdown => Ok(INTERRUPTED.to_string()),
    };
    let (stop_reason, failure) = match outcome {
        Ok(reason) => (reason, None),
        Err(e) => (format!("error: {e:#}"), Some(e)),
    };
    info!(rounds = state.round, reason = %stop_reason, "run finished");
    shared.published.send_replace(Some(Arc::new(Published::stop(
        state.round,
        state.rho,
        stop_reason.clone(),
    ))));

    // Outputs are written on every path, so that nothing learned is lost.
    let final_reason =
        (failure.is_none() && stop_reason != INTERRUPTED).then_some(stop_reason.as_str());
    let generator = rounds.generator.take();
    if let Err(e) = write_checkpoint(&config, &state, generator.as_ref(), &identity, final_reason) {
        error!(error = %format!("{e:#}"), "failed to write the final checkpoint");
    }
    write_config(&config, &shared)?;
    save_flat_safetensors(&expected.layout, &state.z, &config.run_dir.join(MODEL_FILE))?;
    if let Some(generator) = &generator {
        tokio::task::block_in_place(|| generator.write_outputs(&config.run_dir))?;
    }
    let rows = evaluation.finish()?;
    let mut all_rows = earlier_rows;
    all_rows.extend(rows.iter().cloned());
    if let Err(e) =
        admm_report::plot::write_plots(&config.run_dir, &config.problem.model_id(), &all_rows, &[])
    {
        warn!(error = %format!("{e:#}"), "failed to write plots");
    }
    // On a signal or an error the workers are stopping too, so the
    // coordinator does not wait for them to collect the stop message.
    if failure.is_none() && stop_reason != INTERRUPTED {
        wait_for_stop_delivery(&shared).await;
    }
    let _ = server_stop_tx.send(());
    match tokio::time::timeout(SERVER_CLOSE_TIMEOUT, server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "server ended with an error"),
        Err(_) => warn!("server streams did not close in time; cutting them"),
        _ => {}
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RunSummary {
        rounds: state.round,
        stop_reason,
        z: state.z,
        rows,
    })
}

/// Loads what the problem needs at the coordinator: the evaluator of z,
/// or for the GAN the generator; and the number of training samples.
async fn prepare_problem(
    config: &CoordinatorConfig,
) -> Result<(Option<Evaluator>, Option<GeneratorRole>, usize)> {
    let problem = config.problem.clone();
    if problem.problem == ProblemKind::Gan {
        let training = config.gan.clone();
        let generator =
            tokio::task::spawn_blocking(move || GeneratorRole::new(&problem, &training))
                .await
                .context("generator set-up panicked")??;
        let len = generator.train_len();
        return Ok((None, Some(generator), len));
    }
    let evaluator = tokio::task::spawn_blocking(move || Evaluator::new(&problem, tch::Device::Cpu))
        .await
        .context("evaluator set-up panicked")??;
    let len = evaluator.training_len();
    Ok((Some(evaluator), None, len))
}

/// Writes a checkpoint, with the generator when there is one, without
/// blocking the async runtime's other tasks.
fn write_checkpoint(
    config: &CoordinatorConfig,
    state: &ConsensusState,
    generator: Option<&GeneratorRole>,
    identity: &RunIdentity,
    stop_reason: Option<&str>,
) -> Result<()> {
    let pause = Duration::from_millis(config.faults.checkpoint_write_delay_ms);
    let companions: Vec<(&str, &[f32])> = generator
        .map(|g| vec![(generator::CHECKPOINT_TENSOR, g.flat())])
        .unwrap_or_default();
    tokio::task::block_in_place(|| {
        checkpoint::write(
            &config.run_dir,
            state,
            &companions,
            identity,
            stop_reason,
            pause,
        )
    })
    .map(|_| ())
}

/// The round loop and what it needs.
struct Rounds<'a> {
    config: &'a CoordinatorConfig,
    shared: &'a Shared,
    events: mpsc::Receiver<WorkerEvent>,
    evaluation: &'a EvaluationThread,
    identity: &'a RunIdentity,
    last_losses: Vec<f64>,
    elapsed_offset: f64,
    generator: Option<GeneratorRole>,
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
            let outcome = state.step_partial(&self.config.admm, &gathered.fresh);
            let gan = match self.generator.as_mut() {
                Some(generator) => {
                    let threshold = self.config.gan.collapse_threshold;
                    let stats = tokio::task::block_in_place(|| {
                        generator.after_round(round, state, threshold)
                    })?;
                    tokio::task::block_in_place(|| {
                        generator.write_due_grids(&self.config.run_dir, round)
                    })?;
                    Some(stats)
                }
                None => None,
            };
            let stale_workers: Vec<usize> = (0..gathered.fresh.len())
                .filter(|&i| !gathered.fresh[i])
                .collect();
            let row = RoundRow {
                method: "admm".into(),
                round,
                elapsed_seconds: self.elapsed_offset + start.elapsed().as_secs_f64(),
                round_seconds: round_start.elapsed().as_secs_f64(),
                g: self.config.admm.regularizer.value(&state.z),
                worker_loss: self.last_losses.clone(),
                worker_compute_seconds: gathered.compute_seconds,
                primal_residual: Some(outcome.residuals.primal),
                dual_residual: Some(outcome.residuals.dual),
                eps_primal: Some(outcome.residuals.eps_primal),
                eps_dual: Some(outcome.residuals.eps_dual),
                rho: Some(outcome.rho),
                stale_workers,
                bytes_sent: self.shared.bytes_sent.swap(0, Ordering::Relaxed),
                bytes_received: gathered.bytes,
                loss: gan.as_ref().map_or(0.0, |s| s.discriminator_loss),
                objective: gan.as_ref().map_or(0.0, |s| s.discriminator_loss),
                gan,
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
            let every = self.config.faults.checkpoint_every;
            if outcome.stop.is_none() && every > 0 && round.is_multiple_of(every) {
                write_checkpoint(
                    self.config,
                    state,
                    self.generator.as_ref(),
                    self.identity,
                    None,
                )?;
            }
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
    async fn wait_for_workers(&mut self) -> Result<()> {
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

    /// Publishes z, the duals and ρ (and in deterministic mode every x_i)
    /// for `round`.
    fn broadcast(&self, round: u64, state: &ConsensusState) {
        let locals = self
            .config
            .faults
            .deterministic
            .then_some(state.locals.as_slice());
        let shared = self.generator.as_ref().map_or(&[][..], |g| g.flat());
        let published = Published::round(round, state.rho, &state.z, &state.duals, locals, shared);
        self.shared
            .published
            .send_replace(Some(Arc::new(published)));
    }

    /// Collects x_i for `round` from every worker that delivers it, and
    /// applies the straggler policy to the others.
    async fn gather(&mut self, round: u64, state: &mut ConsensusState) -> Result<Gathered> {
        let n = self.config.num_workers;
        let faults = &self.config.faults;
        let deadline = Instant::now() + faults.round_deadline();
        let mut gathered = Gathered {
            fresh: vec![false; n],
            compute_seconds: vec![0.0; n],
            bytes: 0,
        };
        let mut rejected: Vec<Option<String>> = vec![None; n];
        loop {
            let missing: Vec<usize> = (0..n).filter(|&i| !gathered.fresh[i]).collect();
            if missing.is_empty() {
                return Ok(gathered);
            }
            let now = Instant::now();
            let past_deadline = now >= deadline;
            let lost: Vec<usize> = missing
                .iter()
                .copied()
                .filter(|&i| self.shared.is_lost(i))
                .collect();
            let first_rejection = missing.iter().find_map(|&i| rejected[i].clone());
            match faults.straggler_policy {
                StragglerPolicy::Fail => {
                    if let Some(reason) = first_rejection {
                        bail!("round {round}: {reason}; the straggler policy is fail");
                    }
                    if !lost.is_empty() {
                        bail!("round {round}: workers {lost:?} sent nothing for {} s; the straggler policy is fail", faults.heartbeat_timeout_seconds);
                    }
                    if past_deadline {
                        bail!("round {round}: workers {missing:?} missed the {} s round deadline; the straggler policy is fail", faults.round_deadline_seconds);
                    }
                }
                StragglerPolicy::Wait => {
                    // A rejected worker moves on to the next round, so
                    // waiting for it cannot succeed.
                    if let Some(reason) = first_rejection {
                        bail!(
                            "round {round}: {reason}; lower --lr or use --straggler-policy proceed to go on without the worker"
                        );
                    }
                    if past_deadline {
                        bail!(
                            "round {round}: waited {} s for workers {missing:?}; restart them, raise --round-deadline, or use --straggler-policy proceed",
                            faults.round_deadline_seconds
                        );
                    }
                }
                StragglerPolicy::Proceed => {
                    let all_gone = missing
                        .iter()
                        .all(|&i| lost.contains(&i) || rejected[i].is_some());
                    let any_fresh = gathered.fresh.iter().any(|&f| f);
                    if any_fresh && (past_deadline || all_gone) {
                        warn!(round, stale = ?missing, lost = ?lost, "round proceeds without some workers; their last x_i and dual stay in");
                        return Ok(gathered);
                    }
                    if !any_fresh && now >= deadline + faults.round_deadline() {
                        bail!("round {round}: no worker delivered within twice the {} s round deadline", faults.round_deadline_seconds);
                    }
                }
            }
            let event = tokio::select! {
                event = self.events.recv() => event,
                _ = tokio::time::sleep(GATHER_POLL) => continue,
            };
            match event {
                None => bail!("the event channel closed during round {round}"),
                Some(WorkerEvent::Rejected {
                    worker,
                    round: r,
                    reason,
                }) if r == round => rejected[worker] = Some(reason),
                Some(WorkerEvent::Rejected { .. }) => {}
                Some(WorkerEvent::Upload(mut upload)) => {
                    if upload.round != round {
                        warn!(
                            worker = upload.worker,
                            round = upload.round,
                            current = round,
                            "dropped an update of another round"
                        );
                        continue;
                    }
                    let worker = upload.worker;
                    state.swap_local(worker, &mut upload.x)?;
                    self.shared.assemblers[worker]
                        .lock()
                        .await
                        .recycle(upload.x);
                    gathered.fresh[worker] = true;
                    rejected[worker] = None;
                    self.last_losses[worker] = upload.loss;
                    gathered.compute_seconds[worker] = upload.compute_seconds;
                    gathered.bytes += upload.bytes;
                }
            }
        }
    }
}

/// Per-round figures from the workers.
struct Gathered {
    fresh: Vec<bool>,
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
