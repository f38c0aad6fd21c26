//! The gRPC server: TLS and the token check when configured, TCP_NODELAY on
//! accepted sockets (tonic leaves Nagle on for `serve_with_incoming`, which
//! stalls chunked transfers for tens of milliseconds at a time), large
//! HTTP/2 windows and 1 MiB frames.

use crate::service::CoordinatorService;
use admm_proto::pb::coordinator_server::CoordinatorServer;
use admm_proto::security::ServerSecurity;
use admm_proto::tuning::{configure_server, MAX_MESSAGE_BYTES};
use anyhow::{Context, Result};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tracing::{info, warn};

/// Sets up the server on `listener` with `security` and returns the future
/// that serves the coordinator service until `shutdown` resolves.
///
/// Reading the TLS files happens here, before anything is spawned, so that
/// a bad file is an error of the caller and not of a background task.
pub fn serve(
    service: CoordinatorService,
    listener: TcpListener,
    security: &ServerSecurity,
    keepalive: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let mut builder = Server::builder();
    match security.tls_config()? {
        Some(tls) => {
            builder = builder
                .tls_config(tls)
                .context("failed to set up TLS for the coordinator")?;
            let mutual = security.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            info!(mutual, "TLS is on");
        }
        None => info!("TLS is off: the link to the workers is plain-text HTTP/2"),
    }
    // On loopback the token never leaves the host, so plain text is fine.
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    match &security.token {
        Some(_) if security.tls.is_none() && !loopback => warn!(
            "token authentication is on, but the token crosses the network unencrypted \
             because TLS is off; add --tls-cert and --tls-key"
        ),
        Some(_) => info!("token authentication is on"),
        None => {
            info!("token authentication is off because neither --token-file nor ADMM_TOKEN is set")
        }
    }

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let grpc = CoordinatorServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = InterceptedService::new(grpc, security.require_token());
    Ok(configure_server(builder)
        // Pings find a dead peer (a partition, a killed host) while a
        // stream waits; the timeout is twice the interval, as on the worker.
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive * 2))
        .add_service(grpc)
        .serve_with_incoming_shutdown(incoming, shutdown))
}
