//! Whole runs through `admm-train`, with a real coordinator and real worker
//! processes on loopback: the regression toy against its closed form, MNIST
//! accuracy, and a failing worker.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_problems::data::regression::{generate, ridge_solution};
use admm_problems::ProblemSpec;
use admm_report::jsonl::read_rows;
use admm_report::RoundRow;
use common::{command, mnist_dir, read_flat};
use std::path::Path;

fn relative_error(got: &[f32], expected: &[f32]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(expected)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|&b| f64::from(b).powi(2)).sum();
    (diff / norm).sqrt()
}

fn run_regression(workers: usize, run_dir: &Path) -> Vec<f32> {
    let output = command("admm-train")
        .args([
            "run",
            "--workers",
            &workers.to_string(),
            "--hidden",
            "none",
            "--dim",
            "8",
            "--samples",
            "600",
        ])
        .args([
            "--optimizer",
            "sgd",
            "--lr",
            "0.1",
            "--local-steps",
            "20",
            "--batch-size",
            "0",
        ])
        .args([
            "--rho",
            "1",
            "--max-rounds",
            "300",
            "--eps-abs",
            "1e-7",
            "--eps-rel",
            "1e-6",
            "--no-baseline",
        ])
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "admm-train failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    read_flat(
        &run_dir.join("model.safetensors"),
        &["fc0.weight", "fc0.bias"],
    )
}

#[test]
fn two_block_regression_matches_ridge() {
    let dir = tempfile::tempdir().unwrap();
    let z = run_regression(1, dir.path());
    let spec = ProblemSpec {
        dim: 8,
        samples: 600,
        hidden: Some("none".parse().unwrap()),
        ..Default::default()
    };
    let optimum = ridge_solution(&generate(&spec));
    let error = relative_error(&z, &optimum);
    println!("two-block split: relative error to the ridge solution {error:.3e}");
    assert!(error < 1e-3, "relative error {error}");
}

#[test]
fn sharded_regression_matches_ridge() {
    let dir = tempfile::tempdir().unwrap();
    let z = run_regression(3, dir.path());
    let spec = ProblemSpec {
        dim: 8,
        samples: 600,
        hidden: Some("none".parse().unwrap()),
        ..Default::default()
    };
    let optimum = ridge_solution(&generate(&spec));
    let error = relative_error(&z, &optimum);
    println!("three shards: relative error to the ridge solution {error:.3e}");
    assert!(error < 1e-3, "relative error {error}");
}

#[test]
fn mnist_four_workers_reach_97_percent() {
    let dir = tempfile::tempdir().unwrap();
    let output = command("admm-train")
        .args([
            "run",
            "--problem",
            "mnist",
            "--workers",
            "4",
            "--max-rounds",
            "100",
        ])
        .args([
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--local-steps",
            "50",
            "--batch-size",
            "64",
            "--rho",
            "0.1",
        ])
        .arg("--data-dir")
        .arg(mnist_dir())
        .arg("--run-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "admm-train failed:\n{log}");
    let rows: Vec<RoundRow> = read_rows(&dir.path().join("metrics.jsonl")).unwrap();
    let last = rows.last().expect("at least one round");
    let accuracy = last.test_accuracy.expect("classifier rows carry accuracy");
    println!(
        "MNIST, 4 workers: {} rounds, test accuracy {:.4}, {:.1} s",
        last.round, accuracy, last.elapsed_seconds
    );
    assert!(accuracy >= 0.97, "test accuracy {accuracy}");
    assert_eq!(last.worker_loss.len(), 4);
    assert!(last.primal_residual.is_some());
    for file in [
        "config.json",
        "model.safetensors",
        "curves_by_round.png",
        "curves_by_time.png",
        "baseline.jsonl",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let baseline: Vec<RoundRow> = read_rows(&dir.path().join("baseline.jsonl")).unwrap();
    assert_eq!(baseline.len(), rows.len());
    println!(
        "baseline: test accuracy {:.4}",
        baseline.last().unwrap().test_accuracy.unwrap()
    );
}

#[test]
fn failing_worker_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = command("admm-train")
        .args([
            "run",
            "--workers",
            "2",
            "--device",
            "cuda:7",
            "--hidden",
            "none",
            "--no-baseline",
        ])
        .arg("--run-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("worker-"),
        "the failing process is named:\n{log}"
    );
    assert!(log.contains("cuda:7"), "the cause is shown:\n{log}");
}
