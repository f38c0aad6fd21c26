//! The gRPC handlers: registration with layout checks, round fetches that
//! wait for the round to be published, and chunked uploads that are checked
//! in full before they reach the round driver.

use crate::round::{Published, Upload, WorkerEvent};
use admm_problems::ParamSpec;
use admm_proto::pb::coordinator_server::Coordinator;
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, HeartbeatReply, HeartbeatRequest,
    RegisterReply, RegisterRequest, RoundHeader, RoundMessage, SubmitReply, UpdateMessage,
};
use admm_proto::{ChunkAssembler, DTYPE_F32, PROTOCOL_VERSION};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// A registered worker, as recorded in the run's configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    /// Worker index.
    pub id: usize,
    /// Role of its term, such as "shard".
    pub role: String,
    /// Host name it reported.
    pub host: String,
    /// Device it computes on.
    pub device: String,
    /// Its resolved settings.
    pub settings: serde_json::Value,
    /// Random number of the worker process; changes when it restarts.
    pub incarnation: u64,
    /// How many times this worker id registered.
    pub registrations: u64,
}

/// The model every registering worker must match.
#[derive(Debug, Clone)]
pub struct ExpectedModel {
    /// Problem and model name, such as `mnist/mlp-784-256-10`.
    pub model_id: String,
    /// Parameter layout.
    pub layout: Vec<ParamSpec>,
    /// Number of parameters n.
    pub parameter_count: usize,
}

/// State shared by the handlers and the round driver.
pub struct Shared {
    /// Model that registrations are checked against.
    pub expected: ExpectedModel,
    /// Number of workers N.
    pub num_workers: usize,
    /// Registered workers by index.
    pub registry: Mutex<Vec<Option<WorkerInfo>>>,
    /// Signalled on each registration.
    pub registered: Notify,
    /// The round on offer (`None` before round 1).
    pub published: watch::Sender<Option<Arc<Published>>>,
    /// Checked uploads and rejections for the driver.
    pub events: mpsc::Sender<WorkerEvent>,
    /// When each worker was last heard from, by any call.
    pub last_seen: Mutex<Vec<Option<Instant>>>,
    /// Silence after which a worker counts as lost.
    pub heartbeat_timeout: Duration,
    /// Interval at which workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// Whether x-updates run in deterministic mode.
    pub deterministic: bool,
    /// Per-worker receive buffers, reused across rounds.
    pub assemblers: Vec<tokio::sync::Mutex<ChunkAssembler>>,
    /// Parameter bytes sent since the counter was last read.
    pub bytes_sent: AtomicU64,
    /// Number of stop messages delivered.
    pub stops_delivered: AtomicU64,
    /// Signalled when a stop message is delivered.
    pub stop_delivered: Notify,
}

impl Shared {
    /// Number of registered workers.
    pub fn registered_count(&self) -> usize {
        self.registry
            .lock()
            .map(|r| r.iter().flatten().count())
            .unwrap_or(0)
    }

    /// Records that worker `id` was heard from now.
    pub fn touch(&self, id: usize) {
        if let Ok(mut seen) = self.last_seen.lock() {
            seen[id] = Some(Instant::now());
        }
    }

    /// Returns whether worker `id` has been silent for longer than the heartbeat
    /// timeout (or was never heard from).
    pub fn is_lost(&self, id: usize) -> bool {
        self.last_seen
            .lock()
            .map(|seen| seen[id].is_none_or(|at| at.elapsed() > self.heartbeat_timeout))
            .unwrap_or(true)
    }
}

/// The tonic service; cheap to clone.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    /// Wraps the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn check_worker(&self, worker_id: u32) -> Result<usize, Status> {
        let id = worker_id as usize;
        if id >= self.shared.num_workers {
            return Err(Status::invalid_argument(format!(
                "unknown worker id {id}: this run has {} workers, ids 0..{}",
                self.shared.num_workers, self.shared.num_workers
            )));
        }
        let registered = self
            .shared
            .registry
            .lock()
            .map(|r| r[id].is_some())
            .unwrap_or(false);
        if !registered {
            return Err(Status::failed_precondition(format!(
                "worker {id} is not registered; call Register first"
            )));
        }
        self.shared.touch(id);
        Ok(id)
    }
}

/// Compares a declared layout with the run's, naming the first difference.
fn check_layout(
    worker: usize,
    declared: &[admm_proto::pb::ParameterSpec],
    expected: &[ParamSpec],
) -> Result<(), Status> {
    if declared.len() != expected.len() {
        return Err(Status::invalid_argument(format!(
            "worker {worker} declares {} parameter tensors, the run's model has {}",
            declared.len(),
            expected.len()
        )));
    }
    for (got, want) in declared.iter().zip(expected) {
        if got.name != want.name || got.shape != want.shape || got.dtype != want.dtype {
            return Err(Status::invalid_argument(format!(
                "worker {worker} declares tensor {} {:?} {}, the run's model has {} {:?} {}",
                got.name, got.shape, got.dtype, want.name, want.shape, want.dtype
            )));
        }
    }
    Ok(())
}

type RoundStream = Pin<Box<dyn Stream<Item = Result<RoundMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let req = request.into_inner();
        let id = req.worker_id as usize;
        if req.protocol_version != PROTOCOL_VERSION {
            warn!(
                worker = id,
                version = req.protocol_version,
                "rejected registration: protocol version"
            );
            return Err(Status::invalid_argument(format!(
                "worker {id} speaks protocol version {}, the coordinator speaks {PROTOCOL_VERSION}; \
                 run the same release on every machine",
                req.protocol_version
            )));
        }
        if id >= self.shared.num_workers {
            warn!(worker = id, "rejected registration: unknown worker id");
            return Err(Status::invalid_argument(format!(
                "worker id {id} is out of range: this run has {} workers, ids 0..{}",
                self.shared.num_workers, self.shared.num_workers
            )));
        }
        let expected = &self.shared.expected;
        if req.problem != expected.model_id {
            warn!(worker = id, declared = %req.problem, expected = %expected.model_id, "rejected registration: model");
            return Err(Status::invalid_argument(format!(
                                "worker {id} declares problem {}, the run (coordinator and other workers) uses {}; start every process with the same problem options",
                req.problem, expected.model_id
            )));
        }
        if let Err(status) = check_layout(id, &req.layout, &expected.layout) {
            warn!(worker = id, error = %status.message(), "rejected registration: layout");
            return Err(status);
        }
        if req.layout.iter().any(|p| p.dtype != DTYPE_F32) {
            return Err(Status::invalid_argument(format!(
                "worker {id} declares a dtype other than {DTYPE_F32}"
            )));
        }
        let settings = serde_json::from_str(&req.settings_json).unwrap_or(serde_json::Value::Null);
        {
            let mut registry = self
                .shared
                .registry
                .lock()
                .map_err(|_| Status::internal("registry lock poisoned"))?;
            let mut registrations = 1;
            if let Some(existing) = &registry[id] {
                // The same process registering again is resynchronizing after
                // a lost connection. Another process may take over the id
                // only once the previous one has gone silent, so that two
                // live workers never share a shard.
                if existing.incarnation != req.incarnation && !self.shared.is_lost(id) {
                    warn!(worker = id, host = %req.host, "rejected registration: worker id in use");
                    return Err(Status::already_exists(format!(
                        "worker {id} is already registered by a live process on host {}; give each worker a \
                         distinct --worker-id, or wait {} s for a stopped worker to time out",
                        existing.host,
                        self.shared.heartbeat_timeout.as_secs_f64()
                    )));
                }
                registrations = existing.registrations + 1;
            }
            registry[id] = Some(WorkerInfo {
                id,
                role: req.role.clone(),
                host: req.host.clone(),
                device: req.device.clone(),
                settings,
                incarnation: req.incarnation,
                registrations,
            });
            self.shared.touch(id);
            if registrations > 1 {
                let round = self
                    .shared
                    .published
                    .borrow()
                    .as_ref()
                    .map_or(0, |p| p.round);
                info!(worker = id, host = %req.host, round, registrations, "worker rejoined; it resynchronizes with the current round");
            }
        }
        info!(worker = id, host = %req.host, device = %req.device, role = %req.role, "worker registered");
        self.shared.registered.notify_waiters();
        let next_round = self
            .shared
            .published
            .borrow()
            .as_ref()
            .map_or(1, |p| p.round);
        Ok(Response::new(RegisterReply {
            num_workers: self.shared.num_workers as u32,
            next_round,
            parameter_count: expected.parameter_count as u64,
            deterministic: self.shared.deterministic,
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u64,
        }))
    }

    type FetchRoundStream = RoundStream;

    async fn fetch_round(
        &self,
        request: Request<FetchRoundRequest>,
    ) -> Result<Response<RoundStream>, Status> {
        let req = request.into_inner();
        let id = self.check_worker(req.worker_id)?;
        let mut rx = self.shared.published.subscribe();
        let published = rx
            .wait_for(|p| {
                p.as_ref()
                    .is_some_and(|p| p.round >= req.round || p.stop.is_some())
            })
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?
            .clone()
            .ok_or_else(|| Status::internal("no round published"))?;
        let header = RoundHeader {
            round: published.round,
            rho: published.rho,
            stop: published.stop.is_some(),
            parameter_count: published.parameter_count as u64,
            stop_reason: published.stop.clone().unwrap_or_default(),
            includes_local: req.include_local && published.local_chunks.is_some(),
            shared_count: published.shared_count as u64,
        };
        if req.include_local && published.stop.is_none() && published.local_chunks.is_none() {
            return Err(Status::failed_precondition(format!(
                "worker {id} asked for its x_i, which the coordinator sends only in deterministic mode"
            )));
        }
        let mut messages = vec![Ok(RoundMessage {
            kind: Some(round_message::Kind::Header(header)),
        })];
        if published.stop.is_some() {
            self.shared.stops_delivered.fetch_add(1, Ordering::SeqCst);
            self.shared.stop_delivered.notify_waiters();
        } else {
            let local: &[bytes::Bytes] = match (&published.local_chunks, req.include_local) {
                (Some(locals), true) => &locals[id],
                _ => &[],
            };
            let chunks = published
                .z_chunks
                .iter()
                .chain(&published.dual_chunks[id])
                .chain(local)
                .chain(&published.shared_chunks);
            let mut sent = 0u64;
            messages.extend(chunks.map(|c| {
                sent += c.len() as u64;
                Ok(RoundMessage {
                    kind: Some(round_message::Kind::Chunk(c.clone())),
                })
            }));
            self.shared.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.into_inner();
        let id = req.worker_id as usize;
        // Only the registered process counts: a heartbeat of a replaced
        // incarnation must not keep the worker looking alive.
        let current = self
            .shared
            .registry
            .lock()
            .map(|r| r.get(id).and_then(|w| w.as_ref().map(|w| w.incarnation)))
            .unwrap_or(None);
        if current != Some(req.incarnation) {
            return Err(Status::failed_precondition(format!(
                "worker {id} is not registered under this process; register again"
            )));
        }
        self.check_worker(req.worker_id)?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn submit_update(
        &self,
        request: Request<Streaming<UpdateMessage>>,
    ) -> Result<Response<SubmitReply>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(UpdateMessage {
                kind: Some(update_message::Kind::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "an update must start with its header",
                ))
            }
        };
        let id = self.check_worker(header.worker_id)?;
        let current = self
            .shared
            .published
            .borrow()
            .as_ref()
            .map(|p| (p.round, p.stop.is_some()));
        match current {
            Some((round, false)) if round == header.round => {}
            Some((round, stopped)) => {
                let state = if stopped {
                    "the run has stopped"
                } else {
                    "it is not open"
                };
                return Err(Status::failed_precondition(format!(
                    "worker {id} sent an update for round {} but {state}; the current round is {round}",
                    header.round
                )));
            }
            None => return Err(Status::failed_precondition("no round has started yet")),
        }
        let mut assembler = self.shared.assemblers[id].lock().await;
        if let Err(e) =
            assembler.reset(header.parameter_count, self.shared.expected.parameter_count)
        {
            warn!(worker = id, round = header.round, error = %e, "rejected update");
            return Err(Status::invalid_argument(format!(
                "worker {id}, round {}: {e}",
                header.round
            )));
        }
        while let Some(message) = stream.message().await? {
            let chunk = match message.kind {
                Some(update_message::Kind::Chunk(chunk)) => chunk,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "worker {id}: a second header in one update"
                    )))
                }
            };
            if let Err(e) = assembler.push(&chunk) {
                warn!(worker = id, round = header.round, error = %e, "rejected update");
                return Err(Status::invalid_argument(format!(
                    "worker {id}, round {}: {e}",
                    header.round
                )));
            }
        }
        let values = assembler.finish().map_err(|e| {
            warn!(worker = id, round = header.round, error = %e, "rejected update");
            Status::invalid_argument(format!("worker {id}, round {}: {e}", header.round))
        })?;
        let non_finite = values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(index, value)| format!("parameter {index} is {value}"))
            .or_else(|| {
                (!header.loss.is_finite()).then(|| format!("local loss is {}", header.loss))
            });
        if let Some(problem) = non_finite {
            warn!(worker = id, round = header.round, problem = %problem, "rejected update with a non-finite value");
            let reason = format!(
                "worker {id}, round {}: {problem}; the update was rejected and z is unchanged",
                header.round
            );
            let event = WorkerEvent::Rejected {
                worker: id,
                round: header.round,
                reason: reason.clone(),
            };
            let _ = self.shared.events.send(event).await;
            return Err(Status::invalid_argument(reason));
        }
        let bytes = assembler.expected_bytes() as u64;
        let upload = Upload {
            worker: id,
            round: header.round,
            x: assembler.take(),
            loss: header.loss,
            compute_seconds: header.compute_seconds,
            bytes,
        };
        drop(assembler);
        self.shared
            .events
            .send(WorkerEvent::Upload(upload))
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        Ok(Response::new(SubmitReply { accepted: true }))
    }
}
