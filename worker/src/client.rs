//! The worker's side of the protocol: connect (with retries), register,
//! then fetch, compute and upload until the coordinator ends the run.

use crate::config::WorkerConfig;
use admm_problems::objective::LocalSolver;
use admm_problems::{parse_device, Network};
use admm_proto::pb::coordinator_client::CoordinatorClient;
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, ParameterSpec, RegisterRequest, UpdateHeader,
    UpdateMessage,
};
use admm_proto::tuning::{MAX_MESSAGE_BYTES, WINDOW_BYTES};
use admm_proto::{chunk_f32, ChunkAssembler, DTYPE_F32, PROTOCOL_VERSION};
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

/// First and largest pause between connection attempts.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Outcome of a worker run.
#[derive(Debug, Clone)]
pub struct WorkerSummary {
    /// Rounds computed.
    pub rounds: u64,
    /// The coordinator's stop reason, or "interrupted".
    pub stop_reason: String,
}

type Client = CoordinatorClient<Channel>;

/// Connects to the coordinator, retrying with exponential backoff until
/// `timeout` has passed; each failure is logged with its cause.
pub async fn connect(url: &str, timeout: Duration) -> Result<Client> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid coordinator address {url:?}; expected http://HOST:PORT"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .connect_timeout(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    let mut pause = BACKOFF_START;
    let mut attempt = 1u32;
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(CoordinatorClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES));
            }
            Err(e) => {
                let cause = error_chain(&e);
                if Instant::now() + pause > deadline {
                    bail!(
                        "could not connect to the coordinator at {url} within {} s ({attempt} attempts): {cause}; \
                         check that it is running and reachable, or raise --connect-timeout",
                        timeout.as_secs()
                    );
                }
                warn!(address = url, attempt, retry_in_ms = pause.as_millis() as u64, cause = %cause, "coordinator not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
                attempt += 1;
            }
        }
    }
}

/// Joins an error and its sources, so "connection refused" is visible.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Builds the registration request that describes this worker and its model.
fn register_request(config: &WorkerConfig, network: &Network) -> Result<RegisterRequest> {
    Ok(RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: config.worker_id as u32,
        role: "shard".into(),
        problem: config.problem.model_id(),
        layout: network
            .layout()
            .iter()
            .map(|p| ParameterSpec {
                name: p.name.clone(),
                shape: p.shape.clone(),
                dtype: DTYPE_F32.into(),
            })
            .collect(),
        host: hostname(),
        device: config.device.clone(),
        settings_json: serde_json::to_string(config)?,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
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
    let layout_model = Network::mlp(
        &config.problem.layer_sizes(),
        tch::Device::Cpu,
        config.problem.seed,
    );
    let mut client = connect(
        &config.coordinator,
        Duration::from_secs(config.connect_timeout_seconds),
    )
    .await?;
    let reply = client
        .register(register_request(&config, &layout_model)?)
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "the coordinator rejected registration of worker {}: {}",
                config.worker_id,
                s.message()
            )
        })?
        .into_inner();
    let num_workers = reply.num_workers as usize;
    info!(worker = config.worker_id, workers = num_workers, parameters = reply.parameter_count, device = %config.device, "registered");

    let (problem, solver, id) = (
        config.problem.clone(),
        config.solver.clone(),
        config.worker_id,
    );
    let local = tokio::task::spawn_blocking(move || {
        LocalSolver::new(&problem, &solver, id, num_workers, device)
    })
    .await
    .context("local solver set-up panicked")??;
    info!(
        worker = id,
        shard_samples = local.shard_len(),
        "data shard loaded"
    );
    tokio::pin!(shutdown);
    tokio::select! {
        result = round_loop(&mut client, id, reply.next_round, local) => result,
        _ = &mut shutdown => Ok(WorkerSummary { rounds: 0, stop_reason: "interrupted".into() }),
    }
}

/// Fetch, compute, upload, until stopped.
async fn round_loop(
    client: &mut Client,
    id: usize,
    first_round: u64,
    mut local: LocalSolver,
) -> Result<WorkerSummary> {
    let n = local.network().num_params();
    let mut assembler = ChunkAssembler::new();
    let mut x = Vec::with_capacity(n);
    let mut round = first_round;
    let mut rounds_done = 0;
    loop {
        let fetched = fetch(client, id, round, &mut assembler, n).await?;
        let Some((rho, values)) = fetched.parameters else {
            info!(worker = id, rounds = rounds_done, reason = %fetched.stop_reason, "coordinator stopped the run");
            return Ok(WorkerSummary {
                rounds: rounds_done,
                stop_reason: fetched.stop_reason,
            });
        };
        round = fetched.round;
        let started = Instant::now();
        let (returned, stats, x_out) = tokio::task::spawn_blocking(move || {
            let mut x = x;
            let (z, u) = values.split_at(n);
            let stats = local.x_update(z, u, rho, &mut x);
            (local, stats, (x, values))
        })
        .await
        .context("local x-update panicked")?;
        local = returned;
        let (x_values, buffer) = x_out;
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
        if !stats.mean_loss.is_finite() {
            warn!(
                worker = id,
                round,
                loss = stats.mean_loss,
                "local loss is not finite; the coordinator will reject this update"
            );
        }
        upload(
            client,
            id,
            round,
            &x,
            stats.mean_loss,
            compute_seconds,
            stats.samples,
        )
        .await?;
        rounds_done += 1;
        round += 1;
    }
}

/// One fetched round: its number, and ρ with z followed by u_i, or `None`
/// with the stop reason.
struct Fetched {
    round: u64,
    parameters: Option<(f64, Vec<f32>)>,
    stop_reason: String,
}

async fn fetch(
    client: &mut Client,
    id: usize,
    round: u64,
    assembler: &mut ChunkAssembler,
    n: usize,
) -> Result<Fetched> {
    let mut stream = client
        .fetch_round(FetchRoundRequest {
            worker_id: id as u32,
            round,
        })
        .await
        .map_err(|s| anyhow::anyhow!("fetching round {round} failed: {}", s.message()))?
        .into_inner();
    let header = match stream.message().await? {
        Some(message) => match message.kind {
            Some(round_message::Kind::Header(header)) => header,
            _ => bail!("the coordinator sent round {round} without a header"),
        },
        None => bail!("the coordinator closed round {round} without a header"),
    };
    if header.stop {
        return Ok(Fetched {
            round: header.round,
            parameters: None,
            stop_reason: header.stop_reason,
        });
    }
    assembler.reset(header.parameter_count * 2, 2 * n)?;
    while let Some(message) = stream.message().await? {
        match message.kind {
            Some(round_message::Kind::Chunk(chunk)) => assembler.push(&chunk)?,
            _ => bail!(
                "the coordinator sent a second header in round {}",
                header.round
            ),
        }
    }
    assembler.finish()?;
    Ok(Fetched {
        round: header.round,
        parameters: Some((header.rho, assembler.take())),
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
) -> Result<()> {
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
        .map_err(|s| {
            anyhow::anyhow!(
                "the coordinator rejected the update of worker {id} for round {round}: {}",
                s.message()
            )
        })?;
    Ok(())
}
