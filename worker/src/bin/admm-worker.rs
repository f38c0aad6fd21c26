//! `admm-worker`: one consensus-ADMM worker process.

use admm_worker::WorkerArgs;
use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;

/// Worker of consensus-ADMM training: dials the coordinator, registers, and
/// runs the local x-update on its data shard every round until the
/// coordinator stops the run.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

fn main() -> ExitCode {
    admm_report::logging::init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = cli.args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let summary = admm_worker::run(config, admm_report::logging::shutdown_signal()).await?;
        tracing::info!(rounds = summary.rounds, reason = %summary.stop_reason, "worker done");
        Ok(())
    });
    // Dropping the runtime would wait for a local step still running on a
    // blocking thread; after a signal the process exits without it.
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    result
}

/// Maximum wait for background work once the worker has stopped.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
