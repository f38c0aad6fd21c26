//! The GAN problem: the collapse flag on forced and healthy halves, and a
//! short split run with real processes that leaves grids, metrics, a
//! checkpoint with the generator, and the baseline's outputs.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_problems::gan::trainer::{GanTrainer, GanTraining};
use admm_problems::{Network, ProblemKind, ProblemSpec};
use admm_report::jsonl::read_rows;
use admm_report::RoundRow;
use common::{command, mnist_dir};
use tch::Device;

fn small_gan() -> ProblemSpec {
    let mut spec = ProblemSpec {
        problem: ProblemKind::Gan,
        data_dir: Some(mnist_dir()),
        train_limit: 512,
        ..Default::default()
    };
    spec.gan.g_filters = 8;
    spec.gan.d_filters = 8;
    spec
}

/// Builds a discriminator whose output ignores the image: batch norm scales of 0
/// and shifts of 1 feed a constant into the last layer, whose weights all
/// have the sign of `verdict`.
fn constant_discriminator(spec: &ProblemSpec, verdict: f32) -> Vec<f32> {
    let mut net = Network::discriminator(&spec.gan, Device::Cpu, spec.seed);
    let mut theta = Vec::new();
    net.write_flat(&mut theta);
    let mut offset = 0;
    for param in net.layout() {
        let value = match param.name.as_str() {
            "bn1.weight" => Some(0.0),
            "bn1.bias" => Some(1.0),
            "conv2.weight" => Some(0.1 * verdict),
            _ => None,
        };
        if let Some(value) = value {
            theta[offset..offset + param.numel()].fill(value);
        }
        offset += param.numel();
    }
    net.load_flat(&theta).unwrap();
    theta
}

#[test]
fn collapse_flag_fires_on_degenerate_halves_only() {
    let spec = small_gan();
    let mut trainer = GanTrainer::new(&spec, &GanTraining::default(), 1).unwrap();
    let all_real = constant_discriminator(&spec, 1.0);
    let all_fake = constant_discriminator(&spec, -1.0);
    let degenerate = trainer
        .diagnose(1, &all_real, Some((&all_real, &all_fake)), 0.0)
        .unwrap();
    println!("degenerate halves: {degenerate:?}");
    assert!(degenerate.collapsed);
    assert!(degenerate.real_half_on_fake.unwrap() > 0.99);
    assert!(degenerate.fake_half_on_real.unwrap() < 0.01);

    let mut healthy = Vec::new();
    Network::discriminator(&spec.gan, Device::Cpu, spec.seed).write_flat(&mut healthy);
    let fresh = trainer
        .diagnose(1, &healthy, Some((&healthy, &healthy)), 0.0)
        .unwrap();
    println!("fresh halves: {fresh:?}");
    assert!(!fresh.collapsed);
    // One half degenerate is not a collapse of the split.
    let one_sided = trainer
        .diagnose(1, &healthy, Some((&all_real, &healthy)), 0.0)
        .unwrap();
    assert!(!one_sided.collapsed);
}

#[test]
fn short_split_run_writes_grids_metrics_and_generator() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let output = command("admm-train")
        .args([
            "run",
            "--problem",
            "gan",
            "--workers",
            "3",
            "--real-workers",
            "2",
        ])
        .args([
            "--train-limit",
            "512",
            "--g-filters",
            "8",
            "--d-filters",
            "8",
        ])
        .args([
            "--max-rounds",
            "4",
            "--local-steps",
            "2",
            "--batch-size",
            "16",
        ])
        .args(["--lr", "2e-4", "--rho", "1", "--cross-weight", "0.5"])
        .args(["--interleave-every", "2", "--interleave-steps", "2"])
        .args(["--sample-every", "2", "--sample-epochs", "0.1"])
        .args(["--checkpoint-every", "2", "--cores", "2"])
        .arg("--data-dir")
        .arg(mnist_dir())
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "admm-train failed:\n{stderr}");

    let rows: Vec<RoundRow> = read_rows(&run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let gan = row.gan.as_ref().expect("every GAN row has diagnostics");
        for p in [
            gan.consensus_on_real,
            gan.consensus_on_fake,
            gan.real_half_on_real.unwrap(),
            gan.fake_half_on_fake.unwrap(),
        ] {
            assert!((0.0..=1.0).contains(&p), "probability {p} in {gan:?}");
        }
        assert!(gan.generator_loss.is_finite());
        let interleaved = if row.round % 2 == 0 { 2 } else { 0 };
        assert_eq!(gan.interleaved_steps, interleaved, "round {}", row.round);
    }
    // 2 real workers × 2 steps × 16 images per round over 512 images.
    let epoch = rows[3].gan.as_ref().unwrap().epoch;
    assert!((epoch - 4.0 * 64.0 / 512.0).abs() < 1e-9, "{epoch}");

    for name in [
        "round-000002.png",
        "round-000004.png",
        "epoch-0.1.png",
        "final.png",
    ] {
        let path = run_dir.join("samples").join(name);
        assert!(path.is_file(), "{} is missing", path.display());
    }
    assert!(run_dir.join("baseline-samples/final.png").is_file());
    assert!(run_dir.join("generator.safetensors").is_file());
    assert!(run_dir.join("baseline-generator.safetensors").is_file());
    let baseline: Vec<RoundRow> = read_rows(&run_dir.join("baseline.jsonl")).unwrap();
    assert_eq!(baseline.len(), 4);
    assert!(baseline[3].gan.is_some());

    let latest = std::fs::read_to_string(run_dir.join("checkpoints/LATEST")).unwrap();
    let state = run_dir
        .join("checkpoints")
        .join(latest.trim())
        .join("state.safetensors");
    let tensors = tch::Tensor::read_safetensors(&state).unwrap();
    let generator = tensors
        .iter()
        .find(|(name, _)| name == "generator")
        .expect("the checkpoint holds the generator");
    let expected = Network::generator(&small_gan().gan, Device::Cpu, 0).num_params();
    assert_eq!(generator.1.numel(), expected);

    // The evaluation command reads the generator from the checkpoint.
    let report = dir.path().join("quality.json");
    let output = command("admm-train")
        .args(["gan-eval", "--generator"])
        .arg(state.parent().unwrap())
        .args(["--samples", "200", "--json"])
        .arg(&report)
        .arg("--data-dir")
        .arg(mnist_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gan-eval failed:\n{stderr}");
    let quality: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    println!("quality of the short run's generator: {quality}");
    let fid = quality["fid"].as_f64().unwrap();
    assert!(fid.is_finite(), "{quality}");
    assert!(fid > 0.0, "{quality}");
    let histogram: u64 = quality["class_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(histogram, 200);
}
