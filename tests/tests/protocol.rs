//! The wire protocol against a real coordinator on loopback: registration
//! checks, upload checks, connection retries and a model above 64 MiB.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_proto::pb::coordinator_client::CoordinatorClient;
use admm_proto::pb::{
    round_message, update_message, FetchRoundRequest, ParameterSpec, RegisterRequest, UpdateHeader,
    UpdateMessage,
};
use admm_proto::{chunk_f32, PROTOCOL_VERSION};
use common::{command, coordinator_config, start_coordinator, tiny_regression};
use std::process::Stdio;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

fn layout(spec: &admm_problems::ProblemSpec) -> Vec<ParameterSpec> {
    let net = admm_problems::Network::mlp(&spec.layer_sizes(), tch::Device::Cpu, spec.seed);
    net.layout()
        .iter()
        .map(|p| ParameterSpec {
            name: p.name.clone(),
            shape: p.shape.clone(),
            dtype: p.dtype.clone(),
        })
        .collect()
}

fn register_request(worker_id: u32, spec: &admm_problems::ProblemSpec) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        worker_id,
        role: "shard".into(),
        problem: spec.run_id(),
        layout: layout(spec),
        host: "test".into(),
        device: "cpu".into(),
        settings_json: "{}".into(),
        incarnation: 1,
    }
}

async fn connect(url: &str) -> CoordinatorClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = CoordinatorClient::connect(url.to_string()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator at {url} did not come up");
}

/// Fetches a round and returns z followed by the dual.
async fn fetch(client: &mut CoordinatorClient<Channel>, round: u64) -> Vec<f32> {
    let mut stream = client
        .fetch_round(FetchRoundRequest {
            worker_id: 0,
            round,
            include_local: false,
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(round_message::Kind::Chunk(chunk)) = message.kind {
            bytes.extend_from_slice(&chunk);
        }
    }
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

async fn submit(
    client: &mut CoordinatorClient<Channel>,
    round: u64,
    declared: u64,
    values: &[f32],
) -> Result<(), tonic::Status> {
    let header = UpdateHeader {
        worker_id: 0,
        round,
        parameter_count: declared,
        loss: 0.5,
        compute_seconds: 0.0,
        samples: 1,
    };
    let mut messages = vec![UpdateMessage {
        kind: Some(update_message::Kind::Header(header)),
    }];
    messages.extend(chunk_f32(values).map(|c| UpdateMessage {
        kind: Some(update_message::Kind::Chunk(c)),
    }));
    client
        .submit_update(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_leave_z_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_regression();
    let mut config = coordinator_config(spec.clone(), 1, 1, dir.path());
    // Under the default wait policy a rejected update ends the run; proceed
    // keeps the round open for the valid update that follows.
    config.faults.straggler_policy = admm_coordinator::faults::StragglerPolicy::Proceed;
    let (url, coordinator) = start_coordinator(config).await;
    let mut client = connect(&url).await;
    client
        .register(register_request(0, &spec))
        .await
        .expect("registration accepted");
    let fetched = fetch(&mut client, 1).await;
    let n = fetched.len() / 2;
    assert_eq!(n, 4, "3 weights and a bias");

    let err = submit(&mut client, 1, n as u64 - 1, &vec![1.0; n - 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("declared parameter count 3"),
        "{}",
        err.message()
    );

    let err = submit(&mut client, 1, n as u64, &vec![1.0; n - 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("expected 16"), "{}", err.message());

    let err = submit(&mut client, 1, n as u64, &vec![1.0; n + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = submit(&mut client, 1, u64::MAX, &[1.0]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut poisoned = vec![1.0f32; n];
    poisoned[2] = f32::NAN;
    let err = submit(&mut client, 1, n as u64, &poisoned)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("parameter 2 is NaN"),
        "{}",
        err.message()
    );
    poisoned[2] = f32::INFINITY;
    assert_eq!(
        submit(&mut client, 1, n as u64, &poisoned)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let good = [0.25f32, -0.5, 0.75, 2.0];
    submit(&mut client, 1, n as u64, &good)
        .await
        .expect("a valid update is accepted");
    let summary = coordinator.await.unwrap().unwrap();
    // With g = 0, one worker, α = 1 and u = 0, the z-update returns x exactly.
    assert_eq!(summary.z, good);
    assert_eq!(summary.rounds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_registrations_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_regression();
    let (url, coordinator) =
        start_coordinator(coordinator_config(spec.clone(), 2, 1, dir.path())).await;
    let mut client = connect(&url).await;

    let mut other_size = spec.clone();
    other_size.dim = 5;
    let err = client
        .register(register_request(0, &other_size))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("regression/mlp-5-1"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("regression/mlp-3-1"),
        "{}",
        err.message()
    );

    let mut other_problem = register_request(0, &spec);
    other_problem.problem = "mnist/mlp-784-256-10".into();
    let err = client.register(other_problem).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("mnist/mlp-784-256-10"),
        "{}",
        err.message()
    );

    let mut other_version = register_request(0, &spec);
    other_version.protocol_version = PROTOCOL_VERSION + 1;
    let err = client.register(other_version).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
        "{}",
        err.message()
    );

    let mut other_layout = register_request(0, &spec);
    other_layout.layout[0].shape = vec![1, 4];
    let err = client.register(other_layout).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("[1, 4]") && err.message().contains("[1, 3]"),
        "{}",
        err.message()
    );

    let err = client
        .register(register_request(7, &spec))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("worker id 7"), "{}", err.message());

    client
        .register(register_request(0, &spec))
        .await
        .expect("matching registration accepted");
    // The same process registering again is a resynchronization.
    client
        .register(register_request(0, &spec))
        .await
        .expect("re-registration of the same process accepted");
    // Another process may not take the id while the first one is alive.
    let mut impostor = register_request(0, &spec);
    impostor.incarnation = 2;
    let err = client.register(impostor).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains("distinct --worker-id"),
        "{}",
        err.message()
    );
    coordinator.abort();
}

#[test]
fn worker_waits_for_late_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let problem = ["--hidden", "none", "--dim", "3", "--samples", "64"];
    let worker = command("admm-worker")
        .args([
            "--coordinator",
            &format!("http://{address}"),
            "--worker-id",
            "0",
            "--connect-timeout",
            "60",
        ])
        .args(problem)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let coordinator = command("admm-coordinator")
        .args([
            "--listen",
            &address,
            "--workers",
            "1",
            "--max-rounds",
            "3",
            "--run-dir",
        ])
        .arg(dir.path())
        .args(problem)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker_out = worker.wait_with_output().unwrap();
    let coordinator_out = coordinator.wait_with_output().unwrap();
    let worker_log = String::from_utf8_lossy(&worker_out.stderr);
    assert!(worker_out.status.success(), "worker failed:\n{worker_log}");
    assert!(
        coordinator_out.status.success(),
        "coordinator failed:\n{}",
        String::from_utf8_lossy(&coordinator_out.stderr)
    );
    assert!(
        worker_log.contains("coordinator not reachable yet"),
        "{worker_log}"
    );
    assert!(worker_log.contains(&address), "{worker_log}");
    assert!(
        worker_log.to_lowercase().contains("connection refused"),
        "{worker_log}"
    );
    assert!(worker_log.contains("rounds=3"), "{worker_log}");
}

#[test]
fn worker_gives_up_after_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = command("admm-worker")
        .args([
            "--coordinator",
            &format!("http://127.0.0.1:{port}"),
            "--worker-id",
            "0",
            "--connect-timeout",
            "1",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        log.contains("could not connect to the coordinator"),
        "{log}"
    );
    assert!(log.contains("--connect-timeout"), "{log}");
}

/// A model of about 67 MB of f32 parameters (1024 → 16384 → 1) through a
/// full round with real processes, far above gRPC's 4 MiB message limit.
#[test]
fn large_model_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let problem = [
        "--dim",
        "1024",
        "--hidden",
        "16384",
        "--samples",
        "32",
        "--eval-samples",
        "32",
    ];
    let address_file = dir.path().join("address");
    let coordinator = command("admm-coordinator")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--max-rounds",
            "1",
            "--run-dir",
        ])
        .arg(dir.path())
        .arg("--address-file")
        .arg(&address_file)
        .args(problem)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut address = String::new();
    for _ in 0..600 {
        address = std::fs::read_to_string(&address_file).unwrap_or_default();
        if !address.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!address.is_empty(), "coordinator never wrote its address");
    let worker = command("admm-worker")
        .args([
            "--coordinator",
            &format!("http://{address}"),
            "--worker-id",
            "0",
            "--local-steps",
            "1",
            "--batch-size",
            "8",
        ])
        .args(problem)
        .output()
        .unwrap();
    let coordinator_out = coordinator.wait_with_output().unwrap();
    assert!(
        worker.status.success(),
        "worker failed:\n{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    assert!(
        coordinator_out.status.success(),
        "coordinator failed:\n{}",
        String::from_utf8_lossy(&coordinator_out.stderr)
    );
    let rows: Vec<admm_report::RoundRow> =
        admm_report::jsonl::read_rows(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 1);
    let parameters = 1024 * 16384 + 16384 + 16384 + 1;
    assert!(parameters * 4 >= 64 << 20, "model must be at least 64 MiB");
    assert_eq!(rows[0].bytes_received, parameters as u64 * 4);
    assert_eq!(rows[0].bytes_sent, parameters as u64 * 8, "z and the dual");
    assert!(rows[0].loss.is_finite());
}
