//! `admm-coordinator`: the consensus-ADMM coordinator as a stand-alone
//! process, for runs whose workers start elsewhere.

use admm_coordinator::CoordinatorArgs;
use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

/// Coordinator of consensus-ADMM training: waits for N workers, then runs
/// rounds of z-update, dual update and residuals until convergence or the
/// round limit, writing metrics, the model and plots into the run directory.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Cli {
    #[command(flatten)]
    args: CoordinatorArgs,
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
    let address_file = cli.args.address_file.clone();
    let config = cli.args.into_config()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "failed to listen on {}; is another coordinator using that port?",
                    config.listen
                )
            })?;
        if let Some(path) = address_file {
            let address = listener.local_addr()?;
            std::fs::write(&path, address.to_string())
                .with_context(|| format!("failed to write the address file {}", path.display()))?;
        }
        let summary =
            admm_coordinator::run(config, listener, admm_report::logging::shutdown_signal())
                .await?;
        tracing::info!(rounds = summary.rounds, reason = %summary.stop_reason, "coordinator done");
        Ok(())
    })
}
