//! Helpers shared by the integration tests: locating the built binaries and
//! the MNIST folder, and starting an in-process coordinator on port 0.

#![allow(dead_code)]

use admm_consensus::{AdmmConfig, Regularizer};
use admm_coordinator::{CoordinatorConfig, RunSummary};
use admm_problems::ProblemSpec;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Path of a workspace binary; the test suite runs after `cargo build`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found; run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// Returns the MNIST folder from `ADMM_MNIST_DIR`.
pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("ADMM_MNIST_DIR")
        .expect("set ADMM_MNIST_DIR to the folder holding the MNIST IDX files");
    PathBuf::from(dir)
}

/// Builds a command for a workspace binary with plain, colourless logs.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    command
}

/// Returns a small linear regression problem.
pub fn tiny_regression() -> ProblemSpec {
    ProblemSpec {
        dim: 3,
        samples: 64,
        hidden: Some("none".parse().expect("valid")),
        ..Default::default()
    }
}

/// Builds a coordinator configuration for in-process tests.
pub fn coordinator_config(
    problem: ProblemSpec,
    workers: usize,
    rounds: u64,
    run_dir: &Path,
) -> CoordinatorConfig {
    CoordinatorConfig {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        num_workers: workers,
        run_dir: run_dir.to_owned(),
        threads: 1,
        register_timeout_seconds: 60,
        problem,
        faults: Default::default(),
        gan: Default::default(),
        security: Default::default(),
        admm: AdmmConfig {
            regularizer: Regularizer::None,
            max_rounds: rounds,
            eps_abs: 0.0,
            eps_rel: 0.0,
            ..Default::default()
        },
    }
}

/// Starts a coordinator in this process on a free port; returns its URL and
/// the task that yields its summary.
pub async fn start_coordinator(
    config: CoordinatorConfig,
) -> (String, JoinHandle<anyhow::Result<RunSummary>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let task = tokio::spawn(admm_coordinator::run(
        config,
        listener,
        std::future::pending(),
    ));
    (url, task)
}

/// Reads a safetensors file into one flat vector in file order of `names`.
pub fn read_flat(path: &Path, names: &[&str]) -> Vec<f32> {
    let tensors = tch::Tensor::read_safetensors(path).expect("readable safetensors");
    let mut out = Vec::new();
    for name in names {
        let tensor = &tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("tensor {name} missing"))
            .1;
        let flat = tensor.reshape([-1]);
        let mut values = vec![0f32; flat.numel()];
        let len = values.len();
        flat.copy_data(&mut values, len);
        out.extend(values);
    }
    out
}
