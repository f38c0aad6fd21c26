//! The gRPC server's transport settings: TCP_NODELAY on accepted sockets
//! (tonic leaves Nagle on for `serve_with_incoming`, which stalls chunked
//! transfers for tens of milliseconds at a time), large HTTP/2 windows and
//! 1 MiB frames.

use crate::service::CoordinatorService;
use admm_proto::pb::coordinator_server::CoordinatorServer;
use admm_proto::tuning::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, WINDOW_BYTES};
use std::future::Future;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Serves the coordinator service on `listener` until `shutdown` resolves.
pub async fn serve(
    service: CoordinatorService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let grpc = CoordinatorServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .add_service(grpc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
