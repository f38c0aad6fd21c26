//! `admm-train gan-export` and the option checks of `gan-eval` through the
//! real binary. The measures themselves are tested in
//! `problems/tests/quality.rs`, which trains the classifier once.

// A failed unwrap in a helper fails the test that called it, with the error.
#![allow(clippy::unwrap_used)]

mod common;

use admm_problems::data::idx::{read_idx, IMAGES_MAGIC};
use admm_problems::gan::files::{export_generated_images, save_generator, GENERATOR_FILE};
use admm_problems::gan::GanSpec;
use admm_problems::Network;
use common::command;
use std::path::Path;
use std::process::Output;
use tch::Device;

/// Saves a small untrained generator as `generator.safetensors` in `dir`.
fn save_small_generator(dir: &Path) -> Network {
    let spec = GanSpec {
        latent_dim: 8,
        g_filters: 4,
        ..Default::default()
    };
    let generator = Network::generator(&spec, Device::Cpu, 5);
    save_generator(&generator, &dir.join(GENERATOR_FILE)).unwrap();
    generator
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn export_writes_idx_images() {
    let dir = tempfile::tempdir().unwrap();
    let generator = save_small_generator(dir.path());
    let out = dir.path().join("generated-idx3-ubyte");
    let output = command("admm-train")
        .args(["gan-export", "--count", "6", "--seed", "2", "--generator"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let array = read_idx(&out, IMAGES_MAGIC).unwrap();
    assert_eq!(array.dims, [6, 28, 28]);
    let expected = dir.path().join("expected-idx3-ubyte");
    export_generated_images(&generator, 8, 6, 2, &expected).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&expected).unwrap()
    );
}

#[test]
fn invalid_options_rejected() {
    let dir = tempfile::tempdir().unwrap();
    save_small_generator(dir.path());
    let out = dir.path().join("out");
    let cases: [(&[&str], &str); 4] = [
        (
            &["gan-export", "--count", "0"],
            "--count must be at least 1, got 0",
        ),
        (
            &["gan-eval", "--samples", "1"],
            "--samples must be at least 2, got 1",
        ),
        (
            &[
                "gan-export",
                "--count",
                "1",
                "--latent-dim",
                "9",
                "--g-filters",
                "4",
            ],
            "but --latent-dim 9 --g-filters 4 was given",
        ),
        (&["gan-eval"], "pass --data-dir DIR or set ADMM_MNIST_DIR"),
    ];
    for (args, message) in cases {
        let output = command("admm-train")
            .env_remove("ADMM_MNIST_DIR")
            .args(args)
            .arg("--generator")
            .arg(dir.path())
            .args(if args[0] == "gan-export" {
                vec!["--out".into(), out.clone()]
            } else {
                Vec::new()
            })
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!out.exists());

    let missing = dir.path().join("absent");
    let output = command("admm-train")
        .args(["gan-export", "--count", "1", "--generator"])
        .arg(&missing)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("absent not found"),
        "{}",
        stderr(&output)
    );
}
