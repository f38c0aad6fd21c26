//! Bad input through the real binaries: damaged MNIST files in a temporary
//! copy of the data folder, and invalid options. Each rejected input must
//! end the process with a non-zero status and a message on standard error
//! that names the file or value and the fix.
//!
//! Registrations of another model or layout, uploads of the wrong length
//! and a declared parameter count far above the model's are checked
//! against a real coordinator in `protocol.rs`.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{command, mnist_dir};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
const MNIST_FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Uncompressed content of one MNIST file of the shared folder, which
/// contains each file raw or as `NAME.gz`.
fn raw_mnist(name: &str) -> Vec<u8> {
    let dir = mnist_dir();
    let raw = dir.join(name);
    if raw.is_file() {
        return std::fs::read(&raw).expect("readable MNIST file");
    }
    let compressed = std::fs::read(dir.join(format!("{name}.gz"))).expect("readable MNIST file");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut bytes)
        .expect("valid gzip MNIST file");
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("write to memory");
    encoder.finish().expect("finish in memory")
}

/// Writes the four MNIST files raw into `dir/mnist`, then lets `damage`
/// change the folder; returns the folder.
fn mnist_folder(dir: &Path, damage: impl FnOnce(&Path)) -> PathBuf {
    let folder = dir.join("mnist");
    std::fs::create_dir_all(&folder).expect("create folder");
    for name in MNIST_FILES {
        std::fs::write(folder.join(name), raw_mnist(name)).expect("write MNIST file");
    }
    damage(&folder);
    folder
}

/// Trains MNIST for one short round on `data_dir`.
fn run_mnist(data_dir: &Path, run_dir: &Path) -> Output {
    command("admm-train")
        .args([
            "run",
            "--problem",
            "mnist",
            "--workers",
            "1",
            "--max-rounds",
            "1",
        ])
        .args(["--train-limit", "2000", "--eval-samples", "1000"])
        .args(["--local-steps", "2", "--no-baseline", "--data-dir"])
        .arg(data_dir)
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("admm-train starts")
}

/// Runs `admm-train run` on the regression toy with extra options.
fn run_regression(run_dir: &Path, options: &[&str]) -> Output {
    command("admm-train")
        .args(["run", "--max-rounds", "1", "--no-baseline", "--run-dir"])
        .arg(run_dir)
        .args(options)
        .output()
        .expect("admm-train starts")
}

/// Standard error of a process that must have failed, printed for the log.
fn failure_message(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("observed standard error:\n{stderr}");
    assert!(!output.status.success(), "exited successfully:\n{stderr}");
    stderr
}

/// Rejects an MNIST folder damaged by `damage`, returning the message and
/// the path of `damaged_file` in it.
fn rejected_mnist(damaged_file: &str, damage: impl FnOnce(&Path)) -> (String, String) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let folder = mnist_folder(dir.path(), damage);
    let output = run_mnist(&folder, &dir.path().join("run"));
    let path = folder.join(damaged_file).display().to_string();
    (failure_message(&output), path)
}

#[test]
fn compression_detected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let folder = mnist_folder(dir.path(), |folder| {
        // gzip bytes under the raw name, raw bytes under the .gz name.
        for name in [TRAIN_IMAGES, TEST_LABELS] {
            std::fs::write(folder.join(name), gzip(&raw_mnist(name))).unwrap();
        }
        for name in [TRAIN_LABELS, TEST_IMAGES] {
            std::fs::rename(folder.join(name), folder.join(format!("{name}.gz"))).unwrap();
        }
    });
    let run_dir = dir.path().join("run");
    let output = run_mnist(&folder, &run_dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "admm-train failed:\n{stderr}");
    let rows: Vec<admm_report::RoundRow> =
        admm_report::jsonl::read_rows(&run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 1);
    let accuracy = rows[0].test_accuracy.unwrap_or(0.0);
    assert!(accuracy > 0.2, "test accuracy {accuracy} after one round");
}

#[test]
fn wrong_magic_rejected() {
    let (message, path) = rejected_mnist(TRAIN_IMAGES, |folder| {
        let file = folder.join(TRAIN_IMAGES);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[..4].copy_from_slice(&2052u32.to_be_bytes());
        std::fs::write(&file, bytes).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(
        message.contains("magic number 2052, expected 2051"),
        "{message}"
    );
    assert!(message.contains("download it again"), "{message}");
}

#[test]
fn images_as_labels_rejected() {
    let (message, path) = rejected_mnist(TRAIN_LABELS, |folder| {
        std::fs::copy(folder.join(TRAIN_IMAGES), folder.join(TRAIN_LABELS)).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("contains images, not labels"), "{message}");
    assert!(message.contains("put the labels file"), "{message}");
}

#[test]
fn labels_as_images_rejected() {
    let (message, path) = rejected_mnist(TEST_IMAGES, |folder| {
        std::fs::copy(folder.join(TEST_LABELS), folder.join(TEST_IMAGES)).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("contains labels, not images"), "{message}");
}

#[test]
fn truncated_file_rejected() {
    let (message, path) = rejected_mnist(TRAIN_IMAGES, |folder| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(folder.join(TRAIN_IMAGES))
            .unwrap();
        file.set_len(1_000_000).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(
        message.contains("shorter than its header says"),
        "{message}"
    );
    assert!(message.contains("need 47040000 bytes"), "{message}");
    assert!(message.contains("download it again"), "{message}");
}

#[test]
fn huge_dimensions_rejected() {
    let (message, path) = rejected_mnist(TRAIN_IMAGES, |folder| {
        let mut header = 2051u32.to_be_bytes().to_vec();
        for dim in [u32::MAX, 28, 28] {
            header.extend(dim.to_be_bytes());
        }
        header.extend([0; 784]);
        std::fs::write(folder.join(TRAIN_IMAGES), header).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(
        message.contains("shorter than its header says"),
        "{message}"
    );
}

#[test]
fn empty_images_rejected() {
    let (message, path) = rejected_mnist(TRAIN_IMAGES, |folder| {
        let mut images = 2051u32.to_be_bytes().to_vec();
        for dim in [0u32, 28, 28] {
            images.extend(dim.to_be_bytes());
        }
        std::fs::write(folder.join(TRAIN_IMAGES), images).unwrap();
        let mut labels = 2049u32.to_be_bytes().to_vec();
        labels.extend(0u32.to_be_bytes());
        std::fs::write(folder.join(TRAIN_LABELS), labels).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("contains no images"), "{message}");
}

#[test]
fn truncated_gzip_rejected() {
    let name = format!("{TRAIN_IMAGES}.gz");
    let (message, path) = rejected_mnist(&name, |folder| {
        let compressed = gzip(&raw_mnist(TRAIN_IMAGES));
        std::fs::remove_file(folder.join(TRAIN_IMAGES)).unwrap();
        std::fs::write(folder.join(&name), &compressed[..compressed.len() / 2]).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("failed to decompress"), "{message}");
    assert!(message.contains("download the file again"), "{message}");
}

#[test]
fn corrupt_gzip_rejected() {
    let (message, path) = rejected_mnist(TEST_LABELS, |folder| {
        let mut compressed = gzip(&raw_mnist(TEST_LABELS));
        let middle = compressed.len() / 2;
        for byte in &mut compressed[middle..middle + 16] {
            *byte ^= 0x5a;
        }
        std::fs::write(folder.join(TEST_LABELS), compressed).unwrap();
    });
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("failed to decompress"), "{message}");
    assert!(message.contains("truncated or corrupt"), "{message}");
}

#[test]
fn negative_rho_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let message = failure_message(&run_regression(dir.path(), &["--rho=-1"]));
    assert!(
        message.contains("rho must be positive and finite, got -1"),
        "{message}"
    );
}

#[test]
fn negative_rho_as_separate_value() {
    let dir = tempfile::tempdir().unwrap();
    let message = failure_message(&run_regression(dir.path(), &["--rho", "-1"]));
    // NOTE: clap reads a separate "-1" as an unknown option ("unexpected
    // argument '-1' found", exit status 2), so the message names the value
    // but not --rho until `AdmmArgs::rho` sets `allow_negative_numbers`.
    assert!(message.contains("-1"), "{message}");
}

#[test]
fn zero_rho_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let message = failure_message(&run_regression(dir.path(), &["--rho", "0"]));
    assert!(
        message.contains("rho must be positive and finite, got 0"),
        "{message}"
    );
}

#[test]
fn invalid_alpha_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for alpha in ["2", "0.5", "NaN"] {
        let message = failure_message(&run_regression(dir.path(), &["--alpha", alpha]));
        assert!(
            message.contains("alpha (over-relaxation) must be in [1, 1.8]"),
            "{message}"
        );
        assert!(message.contains(&format!("got {alpha}")), "{message}");
    }
}

#[test]
fn unknown_option_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_regression(dir.path(), &["--no-such-option"]);
    let message = failure_message(&output);
    assert_eq!(output.status.code(), Some(2), "clap's usage error status");
    assert!(
        message.contains("unexpected argument '--no-such-option'"),
        "{message}"
    );
    assert!(message.contains("--help"), "{message}");
}

#[test]
fn zero_workers_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let message = failure_message(&run_regression(dir.path(), &["--workers", "0"]));
    assert!(
        message.contains("--workers must be at least 1, got 0"),
        "{message}"
    );
}

#[test]
fn more_workers_than_samples_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_regression(dir.path(), &["--samples", "3", "--workers", "4"]);
    let message = failure_message(&output);
    assert!(message.contains("--workers 4"), "{message}");
    assert!(message.contains("3 training samples"), "{message}");
    assert!(
        message.contains("lower --workers or raise --samples"),
        "{message}"
    );
}

#[test]
fn baseline_rejects_zero_rho() {
    let dir = tempfile::tempdir().unwrap();
    let output = command("admm-train")
        .args(["baseline", "--rounds", "1", "--rho", "0", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let message = failure_message(&output);
    assert!(
        message.contains("rho must be positive and finite, got 0"),
        "{message}"
    );
}

/// Writes a coordinator configuration file after `edit` changes its JSON.
fn config_file(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let config = common::coordinator_config(common::tiny_regression(), 1, 1, &dir.join("run"));
    let mut value = serde_json::to_value(&config).unwrap();
    edit(&mut value);
    let path = dir.join("coordinator.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    path
}

#[test]
fn config_file_unknown_field_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), |v| {
        v["admm"]["rhoo"] = serde_json::json!(2.0);
    });
    let output = common::command("admm-coordinator")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    assert!(!output.status.success());
    assert!(log.contains("unknown field `rhoo`"), "{log}");
    assert!(log.contains("coordinator.json"), "{log}");
}

#[test]
fn config_file_invalid_rho_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), |v| {
        v["admm"]["rho"] = serde_json::json!(-1.0);
    });
    let output = common::command("admm-coordinator")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    assert!(!output.status.success());
    assert!(
        log.contains("rho must be positive and finite, got -1"),
        "{log}"
    );
}
