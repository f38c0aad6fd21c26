//! `admm-train`: runs consensus-ADMM training on one host with one command
//! (a coordinator and N workers as separate processes on loopback), the
//! single-process baseline, and the plots that compare them.

mod args;
mod commands;
mod gan_bench;
mod processes;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    admm_report::logging::init();
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
