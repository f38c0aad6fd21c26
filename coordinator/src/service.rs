//! The gRPC handlers: registration with layout checks, round fetches that
//! wait for the round to be published, and chunked uploads that are checked
//! in full before they reach the round driver.

use crate::round::{Published, Upload};
use admm_problems::ParamSpec;
use admm_proto::pb::coordinator_server::Coordinator;
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, RegisterReply, RegisterRequest, RoundHeader,
    RoundMessage, SubmitReply, UpdateMessage,
};
use admm_proto::{ChunkAssembler, DTYPE_F32, PROTOCOL_VERSION};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Checked uploads for the driver.
    pub uploads: mpsc::Sender<Upload>,
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
                "worker {id} declares model {}, the run (coordinator and other workers) uses {}",
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
            if let Some(existing) = &registry[id] {
                warn!(worker = id, host = %req.host, "rejected registration: duplicate worker id");
                return Err(Status::already_exists(format!(
                    "worker {id} is already registered (host {}); give each worker a distinct --worker-id",
                    existing.host
                )));
            }
            registry[id] = Some(WorkerInfo {
                id,
                role: req.role.clone(),
                host: req.host.clone(),
                device: req.device.clone(),
                settings,
            });
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
        };
        let mut messages = vec![Ok(RoundMessage {
            kind: Some(round_message::Kind::Header(header)),
        })];
        if published.stop.is_some() {
            self.shared.stops_delivered.fetch_add(1, Ordering::SeqCst);
            self.shared.stop_delivered.notify_waiters();
        } else {
            let chunks = published.z_chunks.iter().chain(&published.dual_chunks[id]);
            messages.extend(chunks.map(|c| {
                Ok(RoundMessage {
                    kind: Some(round_message::Kind::Chunk(c.clone())),
                })
            }));
            self.shared
                .bytes_sent
                .fetch_add(published.payload_bytes(), Ordering::Relaxed);
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
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
        if let Some((index, value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            warn!(worker = id, round = header.round, index, %value, "rejected update with a non-finite value");
            return Err(Status::invalid_argument(format!(
                "worker {id}, round {}: parameter {index} is {value}; the update was rejected and z is unchanged",
                header.round
            )));
        }
        if !header.loss.is_finite() {
            warn!(
                worker = id,
                round = header.round,
                loss = header.loss,
                "rejected update with a non-finite loss"
            );
            return Err(Status::invalid_argument(format!(
                "worker {id}, round {}: local loss is {}; the update was rejected and z is unchanged",
                header.round, header.loss
            )));
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
            .uploads
            .send(upload)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        Ok(Response::new(SubmitReply { accepted: true }))
    }
}
