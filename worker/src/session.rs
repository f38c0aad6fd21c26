//! A worker's life: load the data, connect, register, then fetch, compute
//! and upload each round until the coordinator ends the run. A lost
//! connection (a restarted coordinator, a network partition) leads back to
//! connect and register, which resynchronizes the worker with the current
//! round. Every worker, new or returning, takes that same path.

use crate::client::{connect, register_request, Client};
use crate::config::WorkerConfig;
use admm_problems::objective::{build_local_term, load_training_data, LocalTerm};
use admm_problems::{parse_device, Network};
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, HeartbeatRequest, RegisterReply,
    UpdateHeader, UpdateMessage,
};
use admm_proto::{chunk_f32, ChunkAssembler};
use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

/// Pause between registration attempts while the coordinator still
/// reserves this worker id for a previous process.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Outcome of a worker run.
#[derive(Debug, Clone)]
pub struct WorkerSummary {
    /// Rounds computed.
    pub rounds: u64,
    /// The coordinator's stop reason, or "interrupted".
    pub stop_reason: String,
}

/// Reason the round loop ended without a stop message.
enum LoopError {
    /// The connection broke or the coordinator forgot this worker; connect
    /// and register again.
    Reconnect(String),
    /// Anything else ends the worker.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for LoopError {
    fn from(error: anyhow::Error) -> Self {
        LoopError::Fatal(error)
    }
}

/// Returns whether a failed call is worth reconnecting for.
fn is_connection_loss(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
    ) || (status.code() == Code::FailedPrecondition && status.message().contains("not registered"))
}

/// Runs a worker until the coordinator stops the run or `shutdown`
/// resolves.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerSummary> {
    config.validate()?;
    let device = parse_device(&config.device)?;
    tch::set_num_threads(config.threads as i32);
    let layout_model = config.problem.build_network(tch::Device::Cpu);
    // The data is loaded before registering, so that round 1 does not wait
    // for the slowest worker's disk.
    let problem = config.problem.clone();
    let data = tokio::task::spawn_blocking(move || load_training_data(&problem))
        .await
        .context("data loading panicked")??;
    let mut session = Session {
        incarnation: new_incarnation(),
        layout_model,
        data: Some(data),
        local: None,
        device,
        current_round: Arc::new(AtomicU64::new(0)),
        heartbeat: None,
        rounds_done: 0,
        config,
    };
    tokio::pin!(shutdown);
    let result = tokio::select! {
        result = session.run_until_stopped() => result,
        _ = &mut shutdown => Ok(WorkerSummary { rounds: session.rounds_done, stop_reason: "interrupted".into() }),
    };
    if let Some(heartbeat) = session.heartbeat.take() {
        heartbeat.abort();
    }
    result
}

/// Draws a random number that distinguishes this process from a restarted one.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = admm_problems::rng::SplitMix64::new(nanos, u64::from(std::process::id()));
    rng.next_u64()
}

struct Session {
    config: WorkerConfig,
    incarnation: u64,
    layout_model: Network,
    data: Option<admm_problems::data::Dataset>,
    local: Option<Box<dyn LocalTerm>>,
    device: tch::Device,
    current_round: Arc<AtomicU64>,
    heartbeat: Option<JoinHandle<()>>,
    rounds_done: u64,
}

impl Session {
    /// Connects, registers and runs rounds, reconnecting after a lost
    /// connection until the connect timeout runs out.
    async fn run_until_stopped(&mut self) -> Result<WorkerSummary> {
        let timeout = Duration::from_secs(self.config.connect_timeout_seconds);
        let keepalive = Duration::from_secs_f64(self.config.keepalive_seconds);
        // Set while the worker has no working connection; reconnecting gives
        // up once this is older than the connect timeout.
        let mut lost_since: Option<Instant> = None;
        loop {
            if let Some(since) = lost_since {
                if since.elapsed() > timeout {
                    bail!(
                        "lost the coordinator at {} for more than {} s; check that it is running, or raise --connect-timeout",
                        self.config.coordinator.url,
                        timeout.as_secs()
                    );
                }
            }
            let mut client = connect(&self.config.coordinator, timeout, keepalive).await?;
            let reply = match self.register(&mut client, timeout).await {
                Ok(reply) => reply,
                Err(LoopError::Reconnect(cause)) => {
                    // A coordinator that is exiting (or restarting) can
                    // accept a connection and then drop it.
                    warn!(worker = self.config.worker_id, cause = %cause, "registration interrupted; reconnecting");
                    lost_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(REGISTER_RETRY).await;
                    continue;
                }
                Err(LoopError::Fatal(e)) => return Err(e),
            };
            self.prepare_local(&reply).await?;
            self.start_heartbeats(client.clone(), &reply);
            match self.round_loop(&mut client, &reply).await {
                Ok(stop_reason) => {
                    info!(worker = self.config.worker_id, rounds = self.rounds_done, reason = %stop_reason, "coordinator stopped the run");
                    return Ok(WorkerSummary {
                        rounds: self.rounds_done,
                        stop_reason,
                    });
                }
                Err(LoopError::Reconnect(cause)) => {
                    warn!(worker = self.config.worker_id, cause = %cause, "lost the coordinator; reconnecting");
                    lost_since = Some(Instant::now());
                    // Heartbeats on the old channel would make the worker
                    // look alive while it cannot take part in a round.
                    if let Some(heartbeat) = self.heartbeat.take() {
                        heartbeat.abort();
                    }
                }
                Err(LoopError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// Registers, retrying while the coordinator still reserves this id for
    /// a previous process of this worker.
    async fn register(
        &self,
        client: &mut Client,
        timeout: Duration,
    ) -> Result<RegisterReply, LoopError> {
        let deadline = Instant::now() + timeout;
        let id = self.config.worker_id;
        let mut attempts = 0u32;
        loop {
            let request = register_request(&self.config, &self.layout_model, self.incarnation)?;
            match client.register(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    info!(
                        worker = id,
                        workers = reply.num_workers,
                        next_round = reply.next_round,
                        deterministic = reply.deterministic,
                        "registered"
                    );
                    return Ok(reply);
                }
                Err(status)
                    if status.code() == Code::AlreadyExists && Instant::now() < deadline =>
                {
                    if attempts == 0 {
                        warn!(
                            worker = id,
                            message = status.message(),
                            "worker id in use; retrying until the previous process times out"
                        );
                    }
                    attempts += 1;
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
                Err(status) if is_connection_loss(&status) => {
                    return Err(LoopError::Reconnect(status.message().to_string()));
                }
                Err(status) => {
                    return Err(LoopError::Fatal(anyhow!(
                        "the coordinator rejected registration of worker {id}: {}",
                        status.message()
                    )));
                }
            }
        }
    }

    /// Builds the local solver on the first registration; later
    /// registrations keep it, and check that N did not change.
    async fn prepare_local(&mut self, reply: &RegisterReply) -> Result<()> {
        let count = reply.num_workers as usize;
        if let Some(data) = self.data.take() {
            let (problem, solver, id, device) = (
                self.config.problem.clone(),
                self.config.solver.clone(),
                self.config.worker_id,
                self.device,
            );
            let mut local = tokio::task::spawn_blocking(move || {
                build_local_term(&problem, &solver, &data, id, count, device)
            })
            .await
            .context("local solver set-up panicked")??;
            local.set_step_delay(Duration::from_millis(self.config.debug_step_delay_ms));
            info!(
                worker = id,
                shard_samples = local.shard_len(),
                "data shard ready"
            );
            self.local = Some(local);
        }
        Ok(())
    }

    /// Sends heartbeats on their own task, so that a long local step does
    /// not look like a lost worker.
    fn start_heartbeats(&mut self, mut client: Client, reply: &RegisterReply) {
        if let Some(previous) = self.heartbeat.take() {
            previous.abort();
        }
        let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(10));
        let (worker_id, incarnation) = (self.config.worker_id as u32, self.incarnation);
        let round = self.current_round.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let request = HeartbeatRequest {
                    worker_id,
                    incarnation,
                    round: round.load(Ordering::Relaxed),
                };
                if let Err(status) = client.heartbeat(request).await {
                    debug!(worker = worker_id, error = %status.message(), "heartbeat failed");
                }
            }
        }));
    }

    /// Fetch, compute, upload, until the stop message or an error.
    async fn round_loop(
        &mut self,
        client: &mut Client,
        reply: &RegisterReply,
    ) -> Result<String, LoopError> {
        let id = self.config.worker_id;
        let deterministic = reply.deterministic;
        let mut local = self
            .local
            .take()
            .ok_or_else(|| anyhow!("the local solver is missing"))?;
        let n = local.network().num_params();
        let shared_len = local.shared_len();
        let mut assembler = ChunkAssembler::new();
        let mut x = Vec::with_capacity(n);
        let mut round = reply.next_round;
        let result = loop {
            let fetched = match fetch(
                client,
                id,
                round,
                deterministic,
                &mut assembler,
                (n, shared_len),
            )
            .await
            {
                Ok(fetched) => fetched,
                Err(e) => break Err(e),
            };
            let Some((rho, values, shared)) = fetched.parameters else {
                break Ok(fetched.stop_reason);
            };
            round = fetched.round;
            self.current_round.store(round, Ordering::Relaxed);
            let started = Instant::now();
            let (returned, stats, buffers) = tokio::task::spawn_blocking(move || {
                let mut x = x;
                let (z, rest) = values.split_at(n);
                let (u, warm_start) = rest.split_at(n);
                let stats = local.set_shared(&shared).and_then(|()| {
                    if deterministic {
                        local
                            .prepare_deterministic(warm_start, round)
                            .and_then(|()| local.x_update(z, u, rho, &mut x))
                    } else {
                        local.x_update(z, u, rho, &mut x)
                    }
                });
                (local, stats, (x, values))
            })
            .await
            .map_err(|e| anyhow!("local x-update panicked: {e}"))?;
            local = returned;
            let (x_values, buffer) = buffers;
            x = x_values;
            assembler.recycle(buffer);
            let stats = stats.with_context(|| format!("local x-update of round {round} failed"))?;
            let compute_seconds = started.elapsed().as_secs_f64();
            debug!(
                worker = id,
                round,
                loss = stats.mean_loss,
                compute_seconds,
                "local update done"
            );
            if self.config.debug_nan_round == Some(round) {
                warn!(worker = id, round, "test hook: making x_i non-finite");
                x[0] = f32::NAN;
            }
            match upload(
                client,
                id,
                round,
                &x,
                stats.mean_loss,
                compute_seconds,
                stats.samples,
            )
            .await
            {
                Ok(()) => self.rounds_done += 1,
                Err(status) if status.code() == Code::InvalidArgument => {
                    error!(worker = id, round, error = %status.message(), "update rejected; restarting from z next round");
                    local.reset()?;
                }
                Err(status)
                    if status.code() == Code::FailedPrecondition
                        && !status.message().contains("not registered") =>
                {
                    warn!(worker = id, round, error = %status.message(), "update arrived too late; going on with the current round");
                }
                Err(status) if is_connection_loss(&status) => {
                    break Err(LoopError::Reconnect(status.message().to_string()))
                }
                Err(status) => {
                    break Err(LoopError::Fatal(anyhow!(
                        "upload of round {round} failed: {}",
                        status.message()
                    )))
                }
            }
            round += 1;
        };
        self.local = Some(local);
        result
    }
}

/// One fetched round: its number, and ρ with z, u_i (and x_i in
/// deterministic mode) in one buffer and the shared model in another, or
/// `None` with the stop reason.
struct Fetched {
    round: u64,
    parameters: Option<(f64, Vec<f32>, Vec<f32>)>,
    stop_reason: String,
}

async fn fetch(
    client: &mut Client,
    id: usize,
    round: u64,
    include_local: bool,
    assembler: &mut ChunkAssembler,
    (n, shared_len): (usize, usize),
) -> Result<Fetched, LoopError> {
    let request = FetchRoundRequest {
        worker_id: id as u32,
        round,
        include_local,
    };
    let mut stream = match client.fetch_round(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if is_connection_loss(&status) => {
            return Err(LoopError::Reconnect(status.message().to_string()))
        }
        Err(status) => {
            return Err(anyhow!("fetching round {round} failed: {}", status.message()).into())
        }
    };
    let next = |result: Result<Option<admm_proto::pb::RoundMessage>, Status>| match result {
        Ok(message) => Ok(message),
        Err(status) if is_connection_loss(&status) => {
            Err(LoopError::Reconnect(status.message().to_string()))
        }
        Err(status) => Err(LoopError::Fatal(anyhow!(
            "round {round} stream failed: {}",
            status.message()
        ))),
    };
    let header = match next(stream.message().await)? {
        Some(admm_proto::pb::RoundMessage {
            kind: Some(round_message::Kind::Header(header)),
        }) => header,
        _ => return Err(anyhow!("the coordinator sent round {round} without a header").into()),
    };
    if header.stop {
        return Ok(Fetched {
            round: header.round,
            parameters: None,
            stop_reason: header.stop_reason,
        });
    }
    // z and u_i, then x_i; without x_i the last n values are zeros and are
    // only read in deterministic mode, where x_i is always present.
    let blocks: u64 = if header.includes_local { 3 } else { 2 };
    // A declared count so large that the product overflows is rejected
    // like any other wrong count.
    let declared = header
        .parameter_count
        .saturating_mul(blocks)
        .saturating_add(header.shared_count);
    if header.shared_count != shared_len as u64 {
        return Err(anyhow!(
            "round {}: the coordinator sent a shared model of {} values, this worker expects {shared_len}; start every process with the same problem options",
            header.round,
            header.shared_count
        )
        .into());
    }
    assembler
        .reset(declared, blocks as usize * n + shared_len)
        .map_err(anyhow::Error::from)?;
    while let Some(message) = next(stream.message().await)? {
        match message.kind {
            Some(round_message::Kind::Chunk(chunk)) => {
                assembler.push(&chunk).map_err(anyhow::Error::from)?
            }
            _ => {
                return Err(anyhow!(
                    "the coordinator sent a second header in round {}",
                    header.round
                )
                .into())
            }
        }
    }
    assembler.finish().map_err(anyhow::Error::from)?;
    let mut values = assembler.take();
    let shared = values.split_off(blocks as usize * n);
    values.resize(3 * n, 0.0);
    Ok(Fetched {
        round: header.round,
        parameters: Some((header.rho, values, shared)),
        stop_reason: String::new(),
    })
}

async fn upload(
    client: &mut Client,
    id: usize,
    round: u64,
    x: &[f32],
    loss: f64,
    compute_seconds: f64,
    samples: u64,
) -> Result<(), Status> {
    let header = UpdateHeader {
        worker_id: id as u32,
        round,
        parameter_count: x.len() as u64,
        loss,
        compute_seconds,
        samples,
    };
    let mut messages = vec![UpdateMessage {
        kind: Some(update_message::Kind::Header(header)),
    }];
    messages.extend(chunk_f32(x).map(|c| UpdateMessage {
        kind: Some(update_message::Kind::Chunk(c)),
    }));
    client
        .submit_update(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}
