//! One parameter exchange through the project's gRPC service and chunk
//! codec, against raw TCP moving the same bytes on loopback.
//!
//! An exchange is what a worker does each round. A `FetchRound` stream
//! brings the parameters from the server into a reused [`ChunkAssembler`],
//! chunked by [`chunk_f32`] as the coordinator does when it publishes a
//! round. A `SubmitUpdate` stream then carries as many bytes back into the
//! server's reused assembler. Both ends use the settings of
//! [`admm_proto::tuning`].

use crate::alloc::allocated_bytes;
use crate::report::{Bound, Figure};
use crate::stats::{gigabytes_per_second, median};
use admm_proto::pb::coordinator_client::CoordinatorClient;
use admm_proto::pb::coordinator_server::{Coordinator, CoordinatorServer};
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, HeartbeatReply, HeartbeatRequest,
    RegisterReply, RegisterRequest, RoundHeader, RoundMessage, SubmitReply, UpdateHeader,
    UpdateMessage,
};
use admm_proto::tuning::{configure_endpoint, configure_server, MAX_MESSAGE_BYTES};
use admm_proto::{chunk_f32, ChunkAssembler};
use anyhow::{bail, Context, Result};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

/// A server with the coordinator's service definition that serves one
/// fixed parameter vector and receives uploads of the same length.
struct ExchangeServer {
    parameters: Arc<Vec<f32>>,
    received: tokio::sync::Mutex<ChunkAssembler>,
}

type RoundStream = Pin<Box<dyn Stream<Item = Result<RoundMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for ExchangeServer {
    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        Err(Status::unimplemented(
            "the benchmark server takes no registrations",
        ))
    }

    type FetchRoundStream = RoundStream;

    async fn fetch_round(
        &self,
        request: Request<FetchRoundRequest>,
    ) -> Result<Response<RoundStream>, Status> {
        let header = RoundHeader {
            round: request.into_inner().round,
            parameter_count: self.parameters.len() as u64,
            ..Default::default()
        };
        let mut messages = vec![Ok(RoundMessage {
            kind: Some(round_message::Kind::Header(header)),
        })];
        messages.extend(chunk_f32(&self.parameters).map(|chunk| {
            Ok(RoundMessage {
                kind: Some(round_message::Kind::Chunk(chunk)),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn submit_update(
        &self,
        request: Request<Streaming<UpdateMessage>>,
    ) -> Result<Response<SubmitReply>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(UpdateMessage {
                kind: Some(update_message::Kind::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "an update must start with its header",
                ))
            }
        };
        let mut assembler = self.received.lock().await;
        assembler
            .reset(header.parameter_count, self.parameters.len())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        while let Some(message) = stream.message().await? {
            let Some(update_message::Kind::Chunk(chunk)) = message.kind else {
                return Err(Status::invalid_argument("a second header in one update"));
            };
            assembler
                .push(&chunk)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        assembler
            .finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(SubmitReply { accepted: true }))
    }

    async fn heartbeat(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(HeartbeatReply {}))
    }
}

/// A running benchmark server and a connected client.
pub struct GrpcPair {
    client: CoordinatorClient<Channel>,
    received: ChunkAssembler,
    upload: Vec<f32>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcPair {
    /// Starts a server on 127.0.0.1 with an ephemeral port that serves
    /// `values` values, and connects a client to it.
    pub async fn start(values: usize) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let service = ExchangeServer {
            parameters: Arc::new(vec![0.5; values]),
            received: tokio::sync::Mutex::new(ChunkAssembler::new()),
        };
        let grpc = CoordinatorServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(
            configure_server(Server::builder())
                .add_service(grpc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
        let channel = configure_endpoint(endpoint)
            .connect()
            .await
            .with_context(|| format!("failed to connect to the benchmark server at {address}"))?;
        let client = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            received: ChunkAssembler::new(),
            upload: vec![0.25; values],
            stop: Some(stop),
            server,
        })
    }

    /// Fetches the server's parameters and uploads as many values back.
    pub async fn exchange(&mut self, round: u64) -> Result<()> {
        let request = FetchRoundRequest {
            worker_id: 0,
            round,
            include_local: false,
        };
        let mut stream = self.client.fetch_round(request).await?.into_inner();
        let Some(RoundMessage {
            kind: Some(round_message::Kind::Header(header)),
        }) = stream.message().await?
        else {
            bail!("the benchmark server sent no round header");
        };
        self.received
            .reset(header.parameter_count, self.upload.len())?;
        while let Some(message) = stream.message().await? {
            let Some(round_message::Kind::Chunk(chunk)) = message.kind else {
                bail!("the benchmark server sent a second header");
            };
            self.received.push(&chunk)?;
        }
        self.received.finish()?;

        let header = UpdateHeader {
            round,
            parameter_count: self.upload.len() as u64,
            ..Default::default()
        };
        let mut messages = vec![UpdateMessage {
            kind: Some(update_message::Kind::Header(header)),
        }];
        messages.extend(chunk_f32(&self.upload).map(|chunk| UpdateMessage {
            kind: Some(update_message::Kind::Chunk(chunk)),
        }));
        self.client
            .submit_update(tokio_stream::iter(messages))
            .await?;
        Ok(())
    }

    /// Makes one empty unary call, the cheapest gRPC round trip.
    pub async fn empty_call(&mut self) -> Result<()> {
        self.client.heartbeat(HeartbeatRequest::default()).await?;
        Ok(())
    }

    /// Stops the server and waits for it.
    pub async fn shut_down(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.client);
        self.server.await??;
        Ok(())
    }
}

/// Raw TCP on loopback: the client asks with one byte, the server writes the
/// payload, the client writes the payload back and the server acknowledges
/// with one byte. Both ends read into buffers reused across exchanges.
pub struct TcpPair {
    client: TcpStream,
    buffer: Vec<u8>,
    server: tokio::task::JoinHandle<Result<()>>,
}

impl TcpPair {
    /// Starts the echo server on 127.0.0.1 with an ephemeral port and
    /// connects to it.
    pub async fn start(bytes: usize) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let payload = vec![1u8; bytes];
            let mut received = vec![0u8; bytes];
            let mut request = [0u8; 1];
            // The client closes the connection to end the loop.
            while socket.read_exact(&mut request).await.is_ok() {
                socket.write_all(&payload).await?;
                socket.read_exact(&mut received).await?;
                socket.write_all(&[1]).await?;
            }
            Ok(())
        });
        let client = TcpStream::connect(address).await?;
        client.set_nodelay(true)?;
        Ok(Self {
            client,
            buffer: vec![0u8; bytes],
            server,
        })
    }

    /// Receives the payload and sends it back.
    pub async fn exchange(&mut self) -> Result<()> {
        self.client.write_all(&[0]).await?;
        self.client.read_exact(&mut self.buffer).await?;
        self.client.write_all(&self.buffer).await?;
        let mut ack = [0u8; 1];
        self.client.read_exact(&mut ack).await?;
        Ok(())
    }

    /// Closes the connection and waits for the server.
    pub async fn shut_down(self) -> Result<()> {
        drop(self.client);
        self.server.await??;
        Ok(())
    }
}

/// Payload sizes of the transport and packing benchmarks, in MiB.
pub const SIZES_MIB: [usize; 3] = [4, 64, 256];

/// Measures the exchange over gRPC and raw TCP at each size, alternating
/// the two so that both see the same machine load.
pub fn run(repetitions: usize) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut figures = Vec::new();
        for mib in SIZES_MIB {
            let bytes = mib << 20;
            let mut grpc = GrpcPair::start(bytes / 4).await?;
            let mut tcp = TcpPair::start(bytes).await?;
            // One warm-up exchange each grows the buffers and windows.
            grpc.exchange(0).await?;
            tcp.exchange().await?;
            let mut grpc_seconds = Vec::new();
            let mut tcp_seconds = Vec::new();
            for round in 1..=repetitions as u64 {
                let start = Instant::now();
                grpc.exchange(round).await?;
                grpc_seconds.push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                tcp.exchange().await?;
                tcp_seconds.push(start.elapsed().as_secs_f64());
            }
            grpc.shut_down().await?;
            tcp.shut_down().await?;
            // Both directions carry the payload.
            let moved = 2 * bytes;
            let grpc_rate = gigabytes_per_second(moved, median(&grpc_seconds));
            let tcp_rate = gigabytes_per_second(moved, median(&tcp_seconds));
            let target = (mib >= 64).then_some(Bound::AtLeast(0.5));
            figures.push(Figure::new(
                "transport",
                format!("{mib} MiB each way"),
                "gRPC / raw TCP throughput",
                grpc_rate / tcp_rate,
                format!(
                    "gRPC {grpc_rate:.2} GB/s ({:.1} ms), TCP {tcp_rate:.2} GB/s ({:.1} ms)",
                    median(&grpc_seconds) * 1e3,
                    median(&tcp_seconds) * 1e3
                ),
                target,
            ));
        }
        Ok(figures)
    })
}

/// Bytes allocated, on both ends together, by one in-process gRPC exchange
/// of `mib` MiB each way, as a multiple of the payload (both directions).
pub fn allocation_per_exchange(mib: usize, repetitions: usize) -> Result<Figure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bytes = mib << 20;
    let counts = runtime.block_on(async {
        let mut grpc = GrpcPair::start(bytes / 4).await?;
        grpc.exchange(0).await?;
        let mut counts = Vec::new();
        for round in 1..=repetitions as u64 {
            let before = allocated_bytes();
            grpc.exchange(round).await?;
            counts.push((allocated_bytes() - before) as f64);
        }
        grpc.shut_down().await?;
        anyhow::Ok(counts)
    })?;
    let payload = (2 * bytes) as f64;
    let allocated = median(&counts);
    Ok(Figure::new(
        "memory",
        format!("allocation per {mib} MiB exchange"),
        "bytes allocated / payload",
        allocated / payload,
        format!(
            "{:.1} MiB allocated for {:.1} MiB moved",
            allocated / (1u64 << 20) as f64,
            payload / (1u64 << 20) as f64
        ),
        Some(Bound::AtMost(3.0)),
    ))
}

/// Median time of an empty unary gRPC call on loopback, in seconds.
pub fn empty_call_seconds(repetitions: usize) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut grpc = GrpcPair::start(1).await?;
        grpc.empty_call().await?;
        let mut seconds = Vec::new();
        for _ in 0..repetitions {
            let start = Instant::now();
            grpc.empty_call().await?;
            seconds.push(start.elapsed().as_secs_f64());
        }
        grpc.shut_down().await?;
        Ok(median(&seconds))
    })
}
