//! Training runs through `admm-train run`, with the peak resident memory
//! of the processes it starts.
//!
//! The launcher binds the coordinator to 127.0.0.1 with an ephemeral port.
//! While it runs, its child processes are found through
//! `/proc/PID/task/*/children` and their `VmHWM` is polled. `VmHWM` only
//! grows, so the last value read before a process exits is its peak up to
//! that moment.

use crate::Settings;
use admm_report::jsonl::read_rows;
use admm_report::{RoundRow, BASELINE_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

/// Interval between two reads of the children's memory.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Peak resident memory of one process started by the launcher.
#[derive(Debug, Clone)]
pub struct ProcessPeak {
    /// The process's command name, such as `admm-coordinat` (the kernel
    /// keeps 15 bytes).
    pub command: String,
    /// Its process id.
    pub pid: u32,
    /// `VmHWM` in bytes.
    pub peak_bytes: u64,
}

/// Rows and memory peaks of one training run.
#[derive(Debug)]
pub struct TrainingRun {
    /// Rows of metrics.jsonl, one per ADMM round.
    pub metrics: Vec<RoundRow>,
    /// Rows of baseline.jsonl; empty with `--no-baseline`.
    pub baseline: Vec<RoundRow>,
    /// Peak memory of each child process of the launcher.
    pub peaks: Vec<ProcessPeak>,
}

/// Runs `admm-train run` with `args` in a fresh run directory named `name`
/// under the output folder, and returns its rows and memory peaks.
pub fn train(settings: &Settings, name: &str, args: &[String]) -> Result<TrainingRun> {
    let run_dir = settings.out_dir.join(name);
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("failed to clear {}", run_dir.display()))?;
    }
    let log_path = settings.out_dir.join(format!("{name}.log"));
    let log = File::create(&log_path)
        .with_context(|| format!("failed to create {}", log_path.display()))?;
    let program = settings.bin_dir.join("admm-train");
    let mut child = Command::new(&program)
        .arg("run")
        .arg("--run-dir")
        .arg(&run_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("failed to start {}", program.display()))?;
    let mut peaks: BTreeMap<u32, ProcessPeak> = BTreeMap::new();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        for pid in children_of(child.id()) {
            if let Some(peak) = read_peak(pid) {
                peaks.insert(pid, peak);
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    if !status.success() {
        bail!(
            "admm-train run failed ({status}); see {}",
            log_path.display()
        );
    }
    let metrics = read_rows(&run_dir.join(METRICS_FILE))?;
    let baseline_path = run_dir.join(BASELINE_FILE);
    let baseline = if baseline_path.exists() {
        read_rows(&baseline_path)?
    } else {
        Vec::new()
    };
    Ok(TrainingRun {
        metrics,
        baseline,
        peaks: peaks.into_values().collect(),
    })
}

/// Process ids of the children of every thread of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            text.split_whitespace()
                .filter_map(|id| id.parse::<u32>().ok()),
        );
    }
    children
}

/// `VmHWM` and command name of a process; `None` once it has exited.
fn read_peak(pid: u32) -> Option<ProcessPeak> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let command = std::fs::read_to_string(proc_dir.join("comm")).ok()?;
    Some(ProcessPeak {
        command: command.trim().to_string(),
        pid,
        peak_bytes: parse_vm_hwm(&status)?,
    })
}

/// Parses the `VmHWM:` line of /proc/PID/status into bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Returns the run called `name` of this invocation, training it with
/// `args` first unless an earlier benchmark already did.
pub fn train_cached(settings: &Settings, name: &str, args: &[String]) -> Result<Rc<TrainingRun>> {
    if let Some(run) = settings.runs.borrow().get(name) {
        return Ok(run.clone());
    }
    println!("  training {name} ...");
    let run = Rc::new(train(settings, name, args)?);
    settings
        .runs
        .borrow_mut()
        .insert(name.to_string(), run.clone());
    Ok(run)
}

/// Common flags of MNIST runs: the data folder and no per-round
/// checkpoints.
pub fn mnist_flags(data_dir: &Path) -> Vec<String> {
    vec![
        "--problem".into(),
        "mnist".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--checkpoint-every".into(),
        "0".into(),
    ]
}

/// Turns string literals into owned arguments.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// Median of a per-row value over the rows after the first `skip`.
pub fn median_after(rows: &[RoundRow], skip: usize, value: impl Fn(&RoundRow) -> f64) -> f64 {
    let values: Vec<f64> = rows.iter().skip(skip).map(value).collect();
    crate::stats::median(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parsed_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
    }

    #[test]
    fn vm_hwm_missing() {
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }
}
