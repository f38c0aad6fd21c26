//! The subcommands of `admm-train`.

use crate::args::{admm_flags, fault_flags, gan_flags, problem_flags, solver_flags};
use crate::processes::{supervise, Supervised};
use admm_coordinator::faults::FaultConfig;
use admm_coordinator::AdmmArgs;
use admm_problems::baseline::{train_baseline, BaselineConfig};
use admm_problems::gan::trainer::GanTraining;
use admm_problems::gan::vanilla::train_vanilla;
use admm_problems::{ProblemKind, ProblemSpec, SolverSpec};
use admm_report::jsonl::{read_rows, JsonlWriter};
use admm_report::{RoundRow, BASELINE_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Consensus-ADMM training on one host, its single-process baseline, and
/// plots that compare the two.
#[derive(Debug, clap::Parser)]
#[command(version, allow_negative_numbers = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Launch a coordinator and N workers on loopback, then the baseline,
    /// and plot both.
    Run(RunArgs),
    /// Train the single-process baseline alone.
    Baseline(BaselineArgs),
    /// Compare the vanilla DCGAN, the plain GAN split and its remedies at
    /// equal epochs, and write a results page.
    GanBench(crate::gan_bench::GanBenchArgs),
    /// Redraw the plots of a run directory.
    Plot {
        /// Run directory holding metrics.jsonl (and baseline.jsonl).
        run_dir: PathBuf,
    },
    /// Measure a saved GAN generator: FID on the features of an MNIST
    /// classifier trained on first use (not comparable with Inception FIDs),
    /// and the entropy and histogram of its predicted classes.
    GanEval(crate::gan_commands::GanEvalArgs),
    /// Write images from a saved GAN generator to an IDX images file.
    GanExport(crate::gan_commands::GanExportArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Number of worker processes N.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Run directory [default: runs/PROBLEM-UNIXTIME].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Device of every worker: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU cores to share among the processes [default: all available].
    #[arg(long)]
    cores: Option<usize>,
    /// Skip the single-process baseline.
    #[arg(long)]
    no_baseline: bool,
    #[command(flatten)]
    problem: ProblemSpec,
    #[command(flatten)]
    solver: SolverSpec,
    #[command(flatten)]
    admm: AdmmArgs,
    #[command(flatten)]
    faults: FaultConfig,
    #[command(flatten)]
    gan: GanTraining,
}

#[derive(Debug, clap::Args)]
struct BaselineArgs {
    /// Run directory to write baseline.jsonl into.
    #[arg(long, default_value = "runs/baseline")]
    run_dir: PathBuf,
    /// Rounds to train.
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// Number of ADMM workers to match: each step's batch is batch-size × workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads of the training [default: all available cores].
    #[arg(long)]
    cores: Option<usize>,
    #[command(flatten)]
    problem: ProblemSpec,
    #[command(flatten)]
    solver: SolverSpec,
    #[command(flatten)]
    admm: AdmmArgs,
    #[command(flatten)]
    gan: GanTraining,
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run_local(args),
        Command::Baseline(args) => {
            if args.rounds == 0 {
                bail!("--rounds must be at least 1, got 0");
            }
            args.problem.validate()?;
            args.solver.validate()?;
            let admm = args.admm.resolve(args.problem.problem);
            admm.validate()?;
            if args.workers == 0 {
                bail!("--workers must be at least 1, got 0");
            }
            std::fs::create_dir_all(&args.run_dir)
                .with_context(|| format!("failed to create {}", args.run_dir.display()))?;
            let config = BaselineConfig {
                rounds: args.rounds,
                workers: args.workers,
                regularizer: admm.regularizer,
            };
            let rows = run_baseline(
                &args.problem,
                &args.solver,
                &gan_training(&args.gan, &args.solver)?,
                &config,
                &args.device,
                &args.run_dir,
                resolve_cores(args.cores)?,
            )?;
            print_summary("baseline", &rows);
            Ok(())
        }
        Command::GanBench(args) => crate::gan_bench::run(args),
        Command::Plot { run_dir } => plot(&run_dir),
        Command::GanEval(args) => crate::gan_commands::run_gan_eval(args),
        Command::GanExport(args) => crate::gan_commands::run_gan_export(args),
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

/// Resolves `--cores`: the requested count capped at the machine's, or all.
fn resolve_cores(requested: Option<usize>) -> Result<usize> {
    let available = available_cores();
    Ok(match requested {
        Some(0) => bail!("--cores must be at least 1, got 0"),
        Some(requested) if requested > available => {
            warn!(
                requested,
                available, "--cores is more than this machine has; using {available}"
            );
            available
        }
        Some(requested) => requested,
        None => available,
    })
}

/// Launches the coordinator and workers, supervises them, then runs the
/// baseline and draws the plots.
fn run_local(args: RunArgs) -> Result<()> {
    args.problem.validate()?;
    args.solver.validate()?;
    args.admm.resolve(args.problem.problem).validate()?;
    if args.workers == 0 {
        bail!("--workers must be at least 1, got 0");
    }
    check_samples_per_worker(&args.problem, args.workers)?;
    let gan = gan_training(&args.gan, &args.solver)?;
    if args.problem.problem == ProblemKind::Gan {
        gan.validate()?;
        args.problem.gan.check_workers(args.workers)?;
    }
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/{}-{stamp}", args.problem.problem))
    });
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("failed to create {}", logs.display()))?;
    let cores = resolve_cores(args.cores)?;
    // Workers compute while the coordinator mostly waits, so the workers
    // share the cores and the coordinator gets one thread.
    let worker_threads = (cores / args.workers).max(1);
    let address_file = run_dir.join("coordinator.address");
    let _ = std::fs::remove_file(&address_file);

    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    runtime.block_on(async {
        let mut coordinator_args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            args.workers.to_string(),
            "--run-dir".into(),
            run_dir.display().to_string(),
            "--address-file".into(),
            address_file.display().to_string(),
            "--threads".into(),
            "1".into(),
        ];
        coordinator_args.extend(problem_flags(&args.problem));
        coordinator_args.extend(admm_flags(&args.admm));
        coordinator_args.extend(fault_flags(&args.faults));
        if args.problem.problem == ProblemKind::Gan {
            coordinator_args.extend(gan_flags(&gan));
        }
        let coordinator = Supervised::spawn(
            "coordinator",
            &sibling_binary("admm-coordinator")?,
            &coordinator_args,
            1,
            &logs.join("coordinator.log"),
            |line| line.contains("round finished") || line.contains("WARN") || line.contains("ERROR") || line.contains("run finished"),
        )?;
        let mut children = vec![coordinator];
        let address = wait_for_address(&address_file, &mut children).await?;
        info!(%address, workers = args.workers, threads_per_worker = worker_threads, run_dir = %run_dir.display(), "coordinator up; starting workers");
        for id in 0..args.workers {
            let mut worker_args = vec![
                "--coordinator".to_string(),
                format!("http://{address}"),
                "--worker-id".into(),
                id.to_string(),
                "--device".into(),
                args.device.clone(),
                    "--threads".into(),
                worker_threads.to_string(),
                "--keepalive".into(),
                args.faults.keepalive_seconds.to_string(),
            ];
            worker_args.extend(problem_flags(&args.problem));
            worker_args.extend(solver_flags(&args.solver));
            let name = format!("worker-{id}");
            children.push(Supervised::spawn(
                &name,
                &sibling_binary("admm-worker")?,
                &worker_args,
                worker_threads,
                &logs.join(format!("{name}.log")),
                |line| line.contains("WARN") || line.contains("ERROR"),
            )?);
        }
        supervise(&mut children, admm_report::logging::shutdown_signal()).await
    })?;
    let admm_seconds = started.elapsed().as_secs_f64();
    let admm_rows: Vec<RoundRow> = read_rows(&run_dir.join(METRICS_FILE))?;
    print_summary("admm", &admm_rows);
    info!(seconds = admm_seconds, "ADMM run finished");
    if !args.no_baseline {
        let config = BaselineConfig {
            rounds: admm_rows.len() as u64,
            workers: args.workers,
            regularizer: args.admm.resolve(args.problem.problem).regularizer,
        };
        let rows = run_baseline(
            &args.problem,
            &args.solver,
            &gan,
            &config,
            &args.device,
            &run_dir,
            cores,
        )?;
        print_summary("baseline", &rows);
    }
    plot(&run_dir)?;
    eprintln!("run directory: {}", run_dir.display());
    Ok(())
}

/// Checks that every worker gets at least one training sample, where the
/// size of the training set is known before the data is loaded.
fn check_samples_per_worker(problem: &ProblemSpec, workers: usize) -> Result<()> {
    let (samples, flag) = match problem.problem {
        ProblemKind::Regression => (problem.samples, "--samples"),
        ProblemKind::Mnist | ProblemKind::Gan if problem.train_limit > 0 => {
            (problem.train_limit, "--train-limit")
        }
        // The size of the MNIST files is known only once the workers read them.
        ProblemKind::Mnist | ProblemKind::Gan => return Ok(()),
    };
    if samples < workers {
        bail!(
            "--workers {workers} is more than the {samples} training samples ({flag} {samples}); \
             every worker needs at least one sample, so lower --workers or raise {flag}"
        );
    }
    Ok(())
}

/// Path of another binary of this project, next to the running one.
fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{name} not found at {}; build the whole workspace (cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

/// Waits for the coordinator to write its bound address.
async fn wait_for_address(path: &Path, children: &mut [Supervised]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Ok(text.trim().to_string());
            }
        }
        if Instant::now() > deadline {
            crate::processes::terminate_all(children).await;
            bail!(
                "the coordinator did not start listening within 120 s; see {}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        supervise_early_exit(children)?;
    }
}

/// Fails when the coordinator exited before it started listening.
fn supervise_early_exit(children: &mut [Supervised]) -> Result<()> {
    if let Some(coordinator) = children.first_mut() {
        if let Some(status) = coordinator.exit_status()? {
            bail!("coordinator exited ({status}) before it started listening; its last log lines:\n{}", coordinator.tail());
        }
    }
    Ok(())
}

/// The coordinator's GAN options with the generator's steps and batch
/// taken from the workers' --local-steps and --batch-size, so that a
/// generator step matches a discriminator step and epochs count alike.
fn gan_training(training: &GanTraining, solver: &SolverSpec) -> Result<GanTraining> {
    let defaults = GanTraining::default();
    if training.generator_steps != defaults.generator_steps
        && training.generator_steps != solver.local_steps
    {
        bail!(
            "admm-train takes the generator's steps per round from --local-steps ({}); drop --generator-steps {}",
            solver.local_steps,
            training.generator_steps
        );
    }
    if training.generator_batch_size != defaults.generator_batch_size
        && training.generator_batch_size != solver.batch_size
    {
        bail!(
            "admm-train takes the generator's batch size from --batch-size ({}); drop --generator-batch-size {}",
            solver.batch_size,
            training.generator_batch_size
        );
    }
    Ok(GanTraining {
        generator_steps: solver.local_steps,
        generator_batch_size: solver.batch_size,
        ..training.clone()
    })
}

/// Trains the baseline with all cores and writes baseline.jsonl.
fn run_baseline(
    problem: &ProblemSpec,
    solver: &SolverSpec,
    gan: &GanTraining,
    config: &BaselineConfig,
    device: &str,
    run_dir: &Path,
    cores: usize,
) -> Result<Vec<RoundRow>> {
    let device_name = device;
    let device = admm_problems::parse_device(device)?;
    tch::set_num_threads(cores as i32);
    info!(
        rounds = config.rounds,
        threads = cores,
        "training the single-process baseline"
    );
    let mut writer = JsonlWriter::create(&run_dir.join(BASELINE_FILE))?;
    // Training runs on this thread, so a small runtime watches for Ctrl-C
    // and SIGTERM and the loop checks the flag after every round.
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let flag = interrupted.clone();
    watcher.spawn(async move {
        admm_report::logging::shutdown_signal().await;
        flag.store(true, Ordering::SeqCst);
    });
    let on_row = |row: &RoundRow| {
        if interrupted.load(Ordering::SeqCst) {
            bail!(
                "interrupted during the baseline; {} keeps the rows written so far",
                run_dir.display()
            );
        }
        if row.round.is_multiple_of(10) || row.round == config.rounds {
            info!(
                round = row.round,
                objective = row.objective,
                loss = row.loss,
                test_accuracy = row.test_accuracy,
                epoch = row.gan.as_ref().map(|g| g.epoch),
                "baseline round"
            );
        }
        writer.append(row)
    };
    let result = if problem.problem == ProblemKind::Gan {
        let gan = GanTraining {
            generator_device: device_name.to_string(),
            ..gan.clone()
        };
        train_vanilla(problem, &gan, config.rounds, run_dir, on_row)
    } else {
        train_baseline(problem, solver, config, device, on_row).map(|(rows, _)| rows)
    };
    watcher.shutdown_background();
    result
}

/// Redraws the plots of a run directory.
fn plot(run_dir: &Path) -> Result<()> {
    let admm: Vec<RoundRow> = read_rows(&run_dir.join(METRICS_FILE))?;
    let baseline_path = run_dir.join(BASELINE_FILE);
    let baseline: Vec<RoundRow> = if baseline_path.exists() {
        read_rows(&baseline_path)?
    } else {
        Vec::new()
    };
    let title = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for path in admm_report::plot::write_plots(run_dir, &title, &admm, &baseline)? {
        info!(path = %path.display(), "plot written");
    }
    Ok(())
}

/// Prints the last row's figures.
fn print_summary(method: &str, rows: &[RoundRow]) {
    let Some(last) = rows.last() else {
        eprintln!("{method}: no rounds recorded");
        return;
    };
    let accuracy = last
        .test_accuracy
        .map(|a| format!(", test accuracy {:.2}%", a * 100.0))
        .unwrap_or_default();
    if let Some(gan) = &last.gan {
        let collapsed = rows
            .iter()
            .filter(|r| r.gan.as_ref().is_some_and(|g| g.collapsed))
            .count();
        eprintln!(
            "{method}: {} rounds ({:.2} epochs) in {:.1} s, discriminator loss {:.4}, generator loss {:.4}, \
             P(real) on real {:.3} and on generated {:.3}, collapse flagged in {collapsed} rounds",
            last.round,
            gan.epoch,
            last.elapsed_seconds,
            gan.discriminator_loss,
            gan.generator_loss,
            gan.consensus_on_real,
            gan.consensus_on_fake
        );
        return;
    }
    eprintln!(
        "{method}: {} rounds in {:.1} s, objective {:.6}, loss {:.6}, g {:.6}{accuracy}",
        last.round, last.elapsed_seconds, last.objective, last.loss, last.g
    );
}
