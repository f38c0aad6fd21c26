//! The worker's side of the protocol: connect (with retries), register,
//! then fetch, compute and upload until the coordinator ends the run.

use crate::config::WorkerConfig;
use admm_problems::{Network, ProblemKind};
use admm_proto::pb::coordinator_client::CoordinatorClient;
use admm_proto::pb::{ParameterSpec, RegisterRequest};
use admm_proto::tuning::{configure_endpoint, MAX_MESSAGE_BYTES};
use admm_proto::{DTYPE_F32, PROTOCOL_VERSION};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tracing::warn;

/// First and largest pause between connection attempts.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The client every call goes through; its interceptor adds the token.
pub(crate) type Client = CoordinatorClient<
    tonic::service::interceptor::InterceptedService<Channel, admm_proto::security::AttachToken>,
>;

/// Connects to the coordinator, retrying with exponential backoff until
/// `timeout` has passed; each failure is logged with its cause. A failed TLS
/// handshake (untrusted certificate, wrong host name) ends the attempts at
/// once, because retrying cannot fix it.
pub async fn connect(
    coordinator: &crate::config::CoordinatorEndpoint,
    timeout: Duration,
    keepalive: Duration,
) -> Result<Client> {
    let url = coordinator.url.as_str();
    let endpoint = Endpoint::from_shared(url.to_string()).with_context(|| {
        format!("invalid coordinator address {url:?}; expected http://HOST:PORT")
    })?;
    let mut endpoint = configure_endpoint(endpoint)
        .connect_timeout(Duration::from_secs(10))
        // Pings keep a long wait for the next round alive through idle
        // timeouts, and detect a dead link; the timeout is twice the interval.
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive * 2)
        .keep_alive_while_idle(true);
    let security = &coordinator.security;
    if let Some(tls) = security.tls_config()? {
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("failed to set up TLS for the coordinator at {url}"))?;
    } else if security.token.is_some()
        && !endpoint
            .uri()
            .host()
            .is_some_and(admm_proto::security::is_loopback_host)
    {
        warn!(
            address = url,
            "the token crosses the network unencrypted because TLS is off; add --tls-ca"
        );
    }
    let deadline = Instant::now() + timeout;
    let mut pause = BACKOFF_START;
    let mut attempt = 1u32;
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(
                    CoordinatorClient::with_interceptor(channel, security.attach_token())
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                );
            }
            Err(e) => {
                let cause = error_chain(&e);
                if let Some(tls_error) = admm_proto::security::find_tls_error(&e) {
                    bail!(
                        "the TLS handshake with the coordinator at {url} failed: {tls_error}; \
                         check --tls-ca, --tls-domain and the coordinator's certificate"
                    );
                }
                if Instant::now() + pause > deadline {
                    bail!(
                        "could not connect to the coordinator at {url} within {} s ({attempt} attempt(s)): {cause}; \
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
pub(crate) fn register_request(
    config: &WorkerConfig,
    network: &Network,
    incarnation: u64,
) -> Result<RegisterRequest> {
    Ok(RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id: config.worker_id as u32,
        role: match config.problem.problem {
            ProblemKind::Gan => config.problem.gan.role(config.worker_id).into(),
            _ => "shard".into(),
        },
        problem: config.problem.run_id(),
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
        incarnation,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
