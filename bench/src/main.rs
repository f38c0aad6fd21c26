//! `admm-bench`: the performance benchmarks of the trainer. Every figure is
//! a ratio against a baseline measured in the same invocation, so that it
//! holds on a loaded machine. The absolute medians are printed beside it.
//!
//! Benchmarks that train start the release binaries next to this one
//! (`admm-train`, `admm-coordinator`, `admm-worker`) on 127.0.0.1.

mod alloc;
mod convergence;
mod framework;
mod memory;
mod packing;
mod processes;
mod report;
mod rounds;
mod scaling;
mod stats;
mod transport;

use anyhow::{bail, Context, Result};
use clap::Parser;
use report::{Figure, Hardware, Results, Skipped};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

/// Names accepted by `--only`, in the order the suite runs them.
const BENCHMARKS: [&str; 7] = [
    "transport",
    "packing",
    "framework",
    "memory",
    "overhead",
    "scaling",
    "convergence",
];

/// Runs the performance benchmarks and prints a table of ratios against
/// baselines measured in the same run.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Fewer repetitions and shorter training runs (a smoke run of about
    /// two minutes on two cores).
    #[arg(long)]
    quick: bool,
    /// Run only this benchmark: transport, packing, framework, memory,
    /// overhead, scaling or convergence.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Folder for results.json and the run directories of the training
    /// benchmarks [default: runs/bench-UNIXTIME].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// MNIST folder for the overhead, scaling and memory benchmarks.
    #[arg(long, env = "ADMM_MNIST_DIR")]
    data_dir: Option<PathBuf>,
    /// Python interpreter with torch for the framework reference
    /// [default: $ADMM_VENV/bin/python, else python3].
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Settings every benchmark reads.
pub struct Settings {
    /// Shortened repetitions and runs.
    pub quick: bool,
    /// Folder for run directories.
    pub out_dir: PathBuf,
    /// MNIST folder, when given.
    pub data_dir: Option<PathBuf>,
    /// Python interpreter for the reference script.
    pub python: PathBuf,
    /// Folder holding `admm-train` and the other release binaries.
    pub bin_dir: PathBuf,
    /// Training runs done so far, by name, shared between benchmarks.
    pub runs: RefCell<HashMap<String, Rc<processes::TrainingRun>>>,
}

impl Settings {
    /// Returns the MNIST folder, or an error that says how to pass it.
    pub fn mnist_dir(&self) -> Result<&std::path::Path> {
        self.data_dir
            .as_deref()
            .context("MNIST is needed: pass --data-dir DIR or set ADMM_MNIST_DIR")
    }

    /// Picks the quick or the full value of a setting.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(name) = &cli.only {
        if !BENCHMARKS.contains(&name.as_str()) {
            bail!(
                "unknown benchmark {name:?} for --only; expected one of {}",
                BENCHMARKS.join(", ")
            );
        }
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out_dir = cli
        .out_dir
        .unwrap_or_else(|| PathBuf::from(format!("runs/bench-{started}")));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let python = cli
        .python
        .unwrap_or_else(|| match std::env::var_os("ADMM_VENV") {
            Some(venv) => PathBuf::from(venv).join("bin/python"),
            None => PathBuf::from("python3"),
        });
    let bin_dir = std::env::current_exe()
        .context("failed to locate the admm-bench binary")?
        .parent()
        .context("the admm-bench binary has no parent folder")?
        .to_path_buf();
    let context = Settings {
        quick: cli.quick,
        out_dir,
        data_dir: cli.data_dir,
        python,
        bin_dir,
        runs: RefCell::default(),
    };

    let hardware = Hardware::detect();
    println!(
        "admm-bench on {} ({} logical CPUs){}",
        hardware.cpu_model,
        hardware.logical_cpus,
        if context.quick { ", quick run" } else { "" }
    );
    let suite_start = Instant::now();
    let mut figures = Vec::new();
    let mut skipped = Vec::new();
    for name in BENCHMARKS {
        if cli.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let start = Instant::now();
        println!("running {name} ...");
        match run_benchmark(name, &context) {
            Ok(new) => {
                for figure in &new {
                    println!(
                        "  {} / {}: {} = {:.3} ({})",
                        figure.benchmark,
                        figure.case,
                        figure.ratio_of,
                        figure.ratio,
                        figure.absolute
                    );
                }
                figures.extend(new);
            }
            Err(e) => {
                eprintln!("  {name} failed: {e:#}");
                skipped.push(Skipped {
                    benchmark: name,
                    reason: format!("{e:#}"),
                });
            }
        }
        println!("  {name} took {:.0} s", start.elapsed().as_secs_f64());
    }
    let results = Results {
        hardware,
        quick: context.quick,
        started_unix_seconds: started,
        wall_seconds: suite_start.elapsed().as_secs_f64(),
        figures,
        skipped,
    };
    println!("\n{}", report::table(&results));
    let json_path = context.out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    println!(
        "wrote {} ({:.0} s in all)",
        json_path.display(),
        results.wall_seconds
    );
    Ok(())
}

/// Runs one benchmark by name.
fn run_benchmark(name: &str, context: &Settings) -> Result<Vec<Figure>> {
    match name {
        "transport" => transport::run(context.pick(3, 15)),
        "packing" => packing::run(context.pick(3, 15)),
        "framework" => framework::run(context),
        "memory" => memory::run(context),
        "overhead" => rounds::run(context),
        "scaling" => scaling::run(context),
        "convergence" => convergence::run(context),
        _ => bail!("unknown benchmark {name:?}"),
    }
}
