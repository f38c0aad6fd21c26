//! `admm-train gan-bench`: the GAN comparison at equal epochs and one seed.
//! It trains the vanilla DCGAN, the plain split and each remedy, scores
//! every generator with `admm-train gan-eval`, and writes a results page
//! with the table and the sample grids.

use admm_problems::gan::trainer::SAMPLES_DIR;
use admm_problems::gan::vanilla::{BASELINE_GENERATOR_FILE, BASELINE_SAMPLES_DIR};
use admm_report::jsonl::read_rows;
use admm_report::{RoundRow, BASELINE_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tracing::info;

/// Options of `admm-train gan-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct GanBenchArgs {
    /// MNIST folder.
    #[arg(long, env = "ADMM_MNIST_DIR")]
    pub data_dir: PathBuf,
    /// Epochs every variant trains for.
    #[arg(long, default_value_t = 3.0)]
    pub epochs: f64,
    /// Train on the first N training images only (0 for all 60000).
    #[arg(long, default_value_t = 0)]
    pub train_limit: usize,
    /// Base filters of the generator and the discriminator.
    #[arg(long, default_value_t = 32)]
    pub filters: usize,
    /// Discriminator and generator steps per round.
    #[arg(long, default_value_t = 20)]
    pub local_steps: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate of both models.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Penalty ρ of the plain split and of the remedies other than the
    /// larger ρ.
    #[arg(long, default_value_t = 1.0)]
    pub rho: f64,
    /// ρ of the "larger ρ" remedy.
    #[arg(long, default_value_t = 100.0)]
    pub large_rho: f64,
    /// Cross weight of the augmentation remedy.
    #[arg(long, default_value_t = 0.5)]
    pub cross_weight: f64,
    /// Interleaving remedy: full-objective discriminator steps after every
    /// this many rounds.
    #[arg(long, default_value_t = 1)]
    pub interleave_every: u64,
    /// Interleaving remedy: steps each time.
    #[arg(long, default_value_t = 20)]
    pub interleave_steps: usize,
    /// Seed of every variant.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device of the workers, the generator and the vanilla run.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Generated images per evaluation.
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// Variants to run, comma separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Folder for the runs [default: runs/gan-bench-UNIXTIME].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Results page to write; its images go into a folder beside it with
    /// the same name.
    #[arg(long, default_value = "docs/gan-results.md")]
    pub page: PathBuf,
}

/// One configuration of the comparison.
struct Variant {
    name: &'static str,
    description: &'static str,
    flags: Vec<String>,
}

/// What one variant produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    variant: String,
    description: String,
    fid: f64,
    class_entropy_bits: f64,
    class_histogram: Vec<u64>,
    rounds: u64,
    epochs: f64,
    seconds: f64,
    seconds_per_epoch: f64,
    collapsed_rounds: u64,
    collapsed: bool,
    grids: Vec<String>,
}

/// Part of the `gan-eval` JSON this command reads.
#[derive(Debug, Deserialize)]
struct Quality {
    fid: f64,
    class_entropy_bits: f64,
    class_histogram: Vec<u64>,
}

fn variants(args: &GanBenchArgs) -> Vec<Variant> {
    let rho = |value: f64| vec!["--rho".to_string(), value.to_string()];
    let cross = vec!["--cross-weight".to_string(), args.cross_weight.to_string()];
    let interleave = vec![
        "--interleave-every".to_string(),
        args.interleave_every.to_string(),
        "--interleave-steps".to_string(),
        args.interleave_steps.to_string(),
    ];
    vec![
        Variant {
            name: "vanilla",
            description: "one process, alternating discriminator and generator steps",
            flags: Vec::new(),
        },
        Variant {
            name: "plain",
            description: "split discriminator, no remedy",
            flags: rho(args.rho),
        },
        Variant {
            name: "cross",
            description: "each half adds the other half's term with the cross weight",
            flags: [rho(args.rho), cross.clone()].concat(),
        },
        Variant {
            name: "interleave",
            description: "full-objective discriminator steps on z between rounds",
            flags: [rho(args.rho), interleave.clone()].concat(),
        },
        Variant {
            name: "large-rho",
            description: "a larger penalty ρ",
            flags: rho(args.large_rho),
        },
        Variant {
            name: "adaptive-rho",
            description: "ρ adapted by residual balancing",
            flags: [rho(args.rho), vec!["--adaptive-rho".to_string()]].concat(),
        },
        Variant {
            name: "cross+interleave",
            description: "the cross weight and interleaving together",
            flags: [rho(args.rho), cross, interleave].concat(),
        },
    ]
}

/// Runs the comparison and writes the page.
pub fn run(args: GanBenchArgs) -> Result<()> {
    if !(args.epochs.is_finite() && args.epochs > 0.0) {
        bail!("--epochs must be positive, got {}", args.epochs);
    }
    let all = variants(&args);
    let chosen: Vec<&Variant> = if args.variants.is_empty() {
        all.iter().collect()
    } else {
        args.variants
            .iter()
            .map(|name| {
                all.iter().find(|v| v.name == name).with_context(|| {
                    let names: Vec<&str> = all.iter().map(|v| v.name).collect();
                    format!("unknown variant {name:?}; choose from {}", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let train_len = if args.train_limit == 0 {
        60_000
    } else {
        args.train_limit.min(60_000)
    };
    let images_per_round = (args.local_steps * args.batch_size) as f64;
    let rounds = ((args.epochs * train_len as f64) / images_per_round).ceil() as u64;
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/gan-bench-{stamp}"))
    });
    if work_dir.exists() {
        bail!(
            "{} already exists; choose a new --work-dir",
            work_dir.display()
        );
    }
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("failed to create {}", work_dir.display()))?;
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    info!(rounds, epochs = args.epochs, variants = chosen.len(), work_dir = %work_dir.display(), "GAN comparison");
    let mut outcomes = Vec::new();
    for variant in chosen {
        let run_dir = work_dir.join(variant.name);
        info!(variant = variant.name, "training");
        let started = Instant::now();
        train(&exe, &args, variant, rounds, &run_dir)?;
        let seconds = started.elapsed().as_secs_f64();
        let outcome = summarize(&exe, &args, variant, &run_dir, seconds)?;
        info!(
            variant = variant.name,
            fid = outcome.fid,
            entropy = outcome.class_entropy_bits,
            collapsed_rounds = outcome.collapsed_rounds,
            seconds,
            "variant done"
        );
        outcomes.push(outcome);
    }
    write_page(&args, rounds, &work_dir, &outcomes)
}

/// Common flags of every variant's training command.
fn common_flags(args: &GanBenchArgs) -> Vec<String> {
    let filters = args.filters.to_string();
    ["--problem", "gan", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([args.data_dir.display().to_string()])
        .chain(
            [
                ("--train-limit", args.train_limit.to_string()),
                ("--g-filters", filters.clone()),
                ("--d-filters", filters),
                ("--local-steps", args.local_steps.to_string()),
                ("--batch-size", args.batch_size.to_string()),
                ("--lr", args.lr.to_string()),
                ("--generator-lr", args.lr.to_string()),
                ("--seed", args.seed.to_string()),
                ("--device", args.device.clone()),
                ("--generator-device", args.device.clone()),
                ("--sample-epochs", sample_epochs(args.epochs)),
            ]
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_string(), value]),
        )
        .collect()
}

/// Grid epochs: a third, two thirds and all of the run.
fn sample_epochs(epochs: f64) -> String {
    [epochs / 3.0, 2.0 * epochs / 3.0, epochs]
        .iter()
        .map(|e| format!("{}", (e * 100.0).round() / 100.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn train(
    exe: &Path,
    args: &GanBenchArgs,
    variant: &Variant,
    rounds: u64,
    run_dir: &Path,
) -> Result<()> {
    let mut command = Command::new(exe);
    if variant.name == "vanilla" {
        command
            .args(["baseline", "--rounds", &rounds.to_string(), "--run-dir"])
            .arg(run_dir);
    } else {
        command
            .args([
                "run",
                "--workers",
                "2",
                "--no-baseline",
                "--max-rounds",
                &rounds.to_string(),
            ])
            .args(["--eps-abs", "0", "--eps-rel", "0", "--run-dir"])
            .arg(run_dir);
    }
    command.args(common_flags(args)).args(&variant.flags);
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("failed to create {}", run_dir.display()))?;
    let log = run_dir.join("bench.log");
    let file = std::fs::File::create(&log)
        .with_context(|| format!("failed to create {}", log.display()))?;
    let status = command
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("failed to start {}", exe.display()))?;
    if !status.success() {
        bail!(
            "variant {} failed ({status}); see {}",
            variant.name,
            log.display()
        );
    }
    Ok(())
}

fn summarize(
    exe: &Path,
    args: &GanBenchArgs,
    variant: &Variant,
    run_dir: &Path,
    seconds: f64,
) -> Result<Outcome> {
    let vanilla = variant.name == "vanilla";
    let (metrics, generator, samples) = if vanilla {
        (BASELINE_FILE, BASELINE_GENERATOR_FILE, BASELINE_SAMPLES_DIR)
    } else {
        (METRICS_FILE, "generator.safetensors", SAMPLES_DIR)
    };
    let rows: Vec<RoundRow> = read_rows(&run_dir.join(metrics))?;
    let last = rows
        .last()
        .with_context(|| format!("{} has no rows", run_dir.join(metrics).display()))?;
    let epochs = last.gan.as_ref().map_or(0.0, |g| g.epoch);
    let flags: Vec<bool> = rows
        .iter()
        .map(|r| r.gan.as_ref().is_some_and(|g| g.collapsed))
        .collect();
    // The split counts as collapsed when the flag fires in at least a
    // quarter of the second half's rounds: the flag comes and goes as the
    // generator moves, but a healthy split never settles into it.
    let second_half = &flags[flags.len() / 2..];
    let flagged_late = second_half.iter().filter(|&&f| f).count();
    let quality_path = run_dir.join("quality.json");
    let status = Command::new(exe)
        .args(["gan-eval", "--generator"])
        .arg(run_dir.join(generator))
        .args(["--samples", &args.eval_samples.to_string()])
        .args(["--seed", &args.seed.to_string(), "--device", &args.device])
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--json")
        .arg(&quality_path)
        .status()
        .context("failed to start gan-eval")?;
    if !status.success() {
        bail!("gan-eval failed for variant {} ({status})", variant.name);
    }
    let quality: Quality = serde_json::from_slice(
        &std::fs::read(&quality_path)
            .with_context(|| format!("failed to read {}", quality_path.display()))?,
    )
    .with_context(|| format!("invalid {}", quality_path.display()))?;
    let mut grids: Vec<String> = std::fs::read_dir(run_dir.join(samples))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("epoch-") && name.ends_with(".png"))
                .collect()
        })
        .unwrap_or_default();
    grids.sort_by(|a, b| epoch_of(a).total_cmp(&epoch_of(b)));
    let grids = grids
        .into_iter()
        .map(|name| run_dir.join(samples).join(name).display().to_string())
        .collect();
    Ok(Outcome {
        variant: variant.name.to_string(),
        description: variant.description.to_string(),
        fid: quality.fid,
        class_entropy_bits: quality.class_entropy_bits,
        class_histogram: quality.class_histogram,
        rounds: last.round,
        epochs,
        seconds,
        seconds_per_epoch: last.elapsed_seconds / epochs.max(f64::MIN_POSITIVE),
        collapsed_rounds: flags.iter().filter(|&&f| f).count() as u64,
        collapsed: flagged_late * 4 >= second_half.len() && flagged_late > 0,
        grids,
    })
}

fn epoch_of(name: &str) -> f64 {
    name.trim_start_matches("epoch-")
        .trim_end_matches(".png")
        .parse()
        .unwrap_or(f64::MAX)
}

/// Model name and core count of this machine, from /proc/cpuinfo.
fn hardware() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    format!("{model}, {cores} cores available")
}

fn write_page(
    args: &GanBenchArgs,
    rounds: u64,
    work_dir: &Path,
    outcomes: &[Outcome],
) -> Result<()> {
    let assets = args.page.with_extension("");
    std::fs::create_dir_all(&assets)
        .with_context(|| format!("failed to create {}", assets.display()))?;
    let asset_name = assets
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let vanilla_fid = outcomes
        .iter()
        .find(|o| o.variant == "vanilla")
        .map(|o| o.fid);
    let mut page = String::new();
    let command: Vec<String> = std::env::args().collect();
    writeln!(page, "# GAN split: results\n")?;
    writeln!(
        page,
        "Written by `admm-train gan-bench` from the runs in `{}`. Every variant trains the \
         same DCGAN ({} filters) for {} epochs ({rounds} rounds of {} steps at batch {}) from \
         seed {}. FID is the Fréchet distance between features of the project's own MNIST \
         classifier for {} generated images and for the MNIST test set (a classifier-feature \
         FID, not the Inception FID). Entropy is that of the classifier's class histogram of \
         the generated images, in bits (3.32 for ten equal classes).\n",
        work_dir.display(),
        args.filters,
        args.epochs,
        args.local_steps,
        args.batch_size,
        args.seed,
        args.eval_samples
    )?;
    writeln!(page, "- Hardware: {} (device {}).", hardware(), args.device)?;
    writeln!(page, "- Command: `{}`\n", command.join(" "))?;
    writeln!(
        page,
        "| variant | FID | FID / vanilla | class entropy (bits) | collapse flag (rounds flagged) | s per epoch | epochs |"
    )?;
    writeln!(page, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for o in outcomes {
        let ratio = vanilla_fid.map_or("n/a".into(), |v| format!("{:.2}×", o.fid / v));
        let flag = if o.variant == "vanilla" {
            "n/a".to_string()
        } else {
            format!(
                "{} ({} of {})",
                if o.collapsed { "yes" } else { "no" },
                o.collapsed_rounds,
                o.rounds
            )
        };
        writeln!(
            page,
            "| {} | {:.2} | {ratio} | {:.2} | {flag} | {:.1} | {:.2} |",
            o.variant, o.fid, o.class_entropy_bits, o.seconds_per_epoch, o.epochs
        )?;
    }
    writeln!(
        page,
        "\nThe collapse column says whether the flag fired in at least a quarter of the \
         rounds of the second half of the run, and in how many rounds it fired in all.\n"
    )?;
    writeln!(page, "## Variants\n")?;
    for o in outcomes {
        writeln!(page, "- `{}`: {}.", o.variant, o.description)?;
    }
    writeln!(page, "\n## Sample grids\n")?;
    writeln!(
        page,
        "The same 64 noise vectors for every variant and epoch.\n"
    )?;
    for o in outcomes {
        writeln!(page, "### {}\n", o.variant)?;
        for grid in &o.grids {
            let source = Path::new(grid);
            let name = format!(
                "{}-{}",
                o.variant.replace('+', "-"),
                source
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            std::fs::copy(source, assets.join(&name))
                .with_context(|| format!("failed to copy {}", source.display()))?;
            let epoch = epoch_of(&source.file_name().unwrap_or_default().to_string_lossy());
            writeln!(
                page,
                "![{} at epoch {epoch}]({asset_name}/{name})",
                o.variant
            )?;
        }
        writeln!(page)?;
    }
    std::fs::write(&args.page, page)
        .with_context(|| format!("failed to write {}", args.page.display()))?;
    let json = assets.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(outcomes)?)
        .with_context(|| format!("failed to write {}", json.display()))?;
    eprintln!("results: {} and {}", args.page.display(), json.display());
    Ok(())
}
