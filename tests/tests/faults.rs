//! Faults with real processes on loopback: a worker killed and restarted,
//! the coordinator killed while writing a checkpoint and resumed, a
//! non-finite update, a signal while a peer is stuck mid-stream, and a
//! coordinator started on a port in use.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_report::jsonl::read_rows;
use admm_report::RoundRow;
use common::{command, read_flat};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A small convex problem whose rounds are cheap and deterministic.
const PROBLEM: [&str; 8] = [
    "--hidden",
    "none",
    "--dim",
    "6",
    "--samples",
    "400",
    "--eval-samples",
    "400",
];
const SOLVER: [&str; 8] = [
    "--optimizer",
    "sgd",
    "--lr",
    "0.1",
    "--local-steps",
    "10",
    "--batch-size",
    "0",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child whose standard error is collected line by line on a thread.
struct Logged {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// Kills the child if a test ends (or fails) while it is still running.
impl Drop for Logged {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Logged {
    fn spawn(mut cmd: std::process::Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing every needle; panics after `timeout`.
    fn wait_for(&mut self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.clone();
        }
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
            }
        }
        panic!(
            "no line with {needles:?} within {timeout:?}; log so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the exit and returns success and the whole log.
    fn finish(mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return (status.success(), self.seen.join("\n"));
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; log:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn coordinator(port: u16, run_dir: &Path, workers: usize, extra: &[&str]) -> Logged {
    let mut cmd = command("admm-coordinator");
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--workers",
        &workers.to_string(),
        "--run-dir",
    ])
    .arg(run_dir)
    .args(PROBLEM)
    .args(["--eps-abs", "0", "--eps-rel", "0"])
    .args(extra);
    Logged::spawn(cmd)
}

fn worker(port: u16, id: usize, extra: &[&str]) -> Logged {
    worker_with(port, id, &SOLVER, extra)
}

fn worker_with(port: u16, id: usize, solver: &[&str], extra: &[&str]) -> Logged {
    let mut cmd = command("admm-worker");
    cmd.args([
        "--coordinator",
        &format!("http://127.0.0.1:{port}"),
        "--worker-id",
        &id.to_string(),
        "--connect-timeout",
        "60",
    ])
    .args(PROBLEM)
    .args(solver)
    .args(extra);
    Logged::spawn(cmd)
}

fn rows(run_dir: &Path) -> Vec<RoundRow> {
    read_rows(&run_dir.join("metrics.jsonl")).unwrap_or_default()
}

fn wait_for_rows(run_dir: &Path, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while rows(run_dir).len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} rounds within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs coordinator and workers to the end and returns the final objective.
fn clean_run(
    run_dir: &Path,
    workers: usize,
    coordinator_args: &[&str],
    solver: &[&str],
    worker_args: &[&str],
) -> f64 {
    let port = free_port();
    let coordinator = coordinator(port, run_dir, workers, coordinator_args);
    let workers: Vec<Logged> = (0..workers)
        .map(|id| worker_with(port, id, solver, worker_args))
        .collect();
    let (ok, log) = coordinator.finish(Duration::from_secs(300));
    assert!(ok, "coordinator failed:\n{log}");
    for w in workers {
        let (ok, log) = w.finish(Duration::from_secs(60));
        assert!(ok, "worker failed:\n{log}");
    }
    rows(run_dir).last().unwrap().objective
}

const PROCEED: [&str; 10] = [
    "--max-rounds",
    "60",
    "--straggler-policy",
    "proceed",
    "--heartbeat-interval-ms",
    "200",
    "--heartbeat-timeout",
    "1.5",
    "--round-deadline",
    "30",
];

#[test]
fn killed_worker_rejoins_and_run_completes() {
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = clean_run(
        reference_dir.path(),
        4,
        &PROCEED,
        &SOLVER,
        &["--debug-step-delay-ms", "100"],
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut coordinator = coordinator(port, dir.path(), 4, &PROCEED);
    let mut workers: Vec<Logged> = (0..4)
        .map(|id| worker(port, id, &["--debug-step-delay-ms", "100"]))
        .collect();
    wait_for_rows(dir.path(), 8, Duration::from_secs(120));
    workers[2].child.kill().unwrap();
    let _ = workers[2].child.wait();
    workers[2] = worker(port, 2, &["--debug-step-delay-ms", "100"]);
    let rejoin = coordinator.wait_for(&["worker rejoined", "worker=2"], Duration::from_secs(60));
    let rejoin_round: u64 = rejoin
        .split_whitespace()
        .find_map(|field| field.strip_prefix("round="))
        .and_then(|v| v.parse().ok())
        .expect("round in the rejoin line");
    let (ok, log) = coordinator.finish(Duration::from_secs(300));
    assert!(ok, "coordinator failed:\n{log}");
    for w in workers {
        let (ok, log) = w.finish(Duration::from_secs(60));
        assert!(ok, "worker failed:\n{log}");
    }

    let rows = rows(dir.path());
    assert_eq!(rows.len(), 60);
    let stale: Vec<u64> = rows
        .iter()
        .filter(|r| r.stale_workers.contains(&2))
        .map(|r| r.round)
        .collect();
    assert!(
        !stale.is_empty(),
        "the killed worker was never marked stale"
    );
    let last_stale = *stale.last().unwrap();
    println!("worker 2 stale in rounds {stale:?}, rejoined during round {rejoin_round}");
    assert!(
        last_stale <= rejoin_round + 2,
        "rejoined in round {rejoin_round}, stale until round {last_stale}"
    );
    let objective = rows.last().unwrap().objective;
    let gap = (objective - reference).abs() / reference.abs();
    println!(
        "final objective {objective:.6} against {reference:.6} without the fault ({:.3}%)",
        gap * 100.0
    );
    assert!(
        gap < 0.01,
        "objective {objective} is {gap:.4} away from {reference}"
    );
}

fn model_values(run_dir: &Path) -> Vec<f32> {
    read_flat(
        &run_dir.join("model.safetensors"),
        &["fc0.weight", "fc0.bias"],
    )
}

const DETERMINISTIC: [&str; 6] = [
    "--max-rounds",
    "12",
    "--deterministic",
    "--checkpoint-every",
    "4",
    "--rho",
];

#[test]
fn coordinator_killed_mid_checkpoint_resumes_identically() {
    let adam = [
        "--optimizer",
        "adam",
        "--lr",
        "0.05",
        "--local-steps",
        "10",
        "--batch-size",
        "32",
    ];
    let reference_dir = tempfile::tempdir().unwrap();
    let mut args: Vec<&str> = DETERMINISTIC.to_vec();
    args.push("1");
    clean_run(reference_dir.path(), 2, &args, &adam, &[]);
    let reference = model_values(reference_dir.path());

    let dir: PathBuf = tempfile::tempdir().unwrap().keep();
    let port = free_port();
    let mut slow_args = args.clone();
    slow_args.extend(["--checkpoint-write-delay-ms", "2000"]);
    let mut first = coordinator(port, &dir, 2, &slow_args);
    let workers: Vec<Logged> = (0..2).map(|id| worker_with(port, id, &adam, &[])).collect();
    first.wait_for(&["writing checkpoint", "round=8"], Duration::from_secs(120));
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let latest = std::fs::read_to_string(dir.join("checkpoints/LATEST")).unwrap();
    assert_eq!(
        latest.trim(),
        "round-00000004",
        "the interrupted write must not move LATEST"
    );

    let mut resume_args = args.clone();
    resume_args.push("--resume");
    let mut second = coordinator(port, &dir, 2, &resume_args);
    second.wait_for(
        &["resuming from checkpoint", "round=4"],
        Duration::from_secs(60),
    );
    let mut workers = workers;
    for w in workers.iter_mut() {
        w.wait_for(&["lost the coordinator"], Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.seen.iter().filter(|l| l.contains("registered")).count() < 2 {
            assert!(
                Instant::now() < deadline,
                "worker did not register again:\n{}",
                w.seen.join("\n")
            );
            if let Ok(line) = w.lines.recv_timeout(Duration::from_millis(100)) {
                w.seen.push(line);
            }
        }
    }
    let (ok, log) = second.finish(Duration::from_secs(300));
    assert!(ok, "resumed coordinator failed:\n{log}");
    for w in workers {
        let (ok, log) = w.finish(Duration::from_secs(60));
        assert!(ok, "worker failed:\n{log}");
    }
    let resumed = model_values(&dir);
    let rows = rows(&dir);
    assert_eq!(rows.last().unwrap().round, 12);
    let rounds: Vec<u64> = rows.iter().map(|r| r.round).collect();
    assert_eq!(
        rounds,
        (1..=12).collect::<Vec<_>>(),
        "metrics rows after the resume"
    );
    let differing = resumed
        .iter()
        .zip(&reference)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differing, 0, "resumed {resumed:?}\nreference {reference:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_update_rejected_and_run_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = coordinator(
        port,
        dir.path(),
        2,
        &["--max-rounds", "6", "--straggler-policy", "proceed"],
    );
    let healthy = worker(port, 0, &[]);
    let broken = worker(port, 1, &["--debug-nan-round", "3"]);
    let (ok, log) = coordinator.finish(Duration::from_secs(120));
    assert!(ok, "coordinator failed:\n{log}");
    assert!(
        log.contains("rejected update with a non-finite value"),
        "{log}"
    );
    assert!(log.contains("worker=1"), "{log}");
    assert!(log.contains("round=3"), "{log}");
    let (ok, broken_log) = broken.finish(Duration::from_secs(60));
    assert!(ok, "{broken_log}");
    assert!(broken_log.contains("update rejected"), "{broken_log}");
    assert!(healthy.finish(Duration::from_secs(60)).0);
    let rows = rows(dir.path());
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[2].stale_workers,
        vec![1],
        "round 3 proceeds without worker 1"
    );
    assert!(
        rows[3].stale_workers.is_empty(),
        "worker 1 is back in round 4"
    );
    assert!(model_values(dir.path()).iter().all(|v| v.is_finite()));
}

#[test]
fn non_finite_update_fails_run_under_fail_policy() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = coordinator(
        port,
        dir.path(),
        2,
        &["--max-rounds", "6", "--straggler-policy", "fail"],
    );
    let _healthy = worker(port, 0, &[]);
    let _broken = worker(port, 1, &["--debug-nan-round", "2"]);
    let (ok, log) = coordinator.finish(Duration::from_secs(120));
    assert!(!ok, "{log}");
    assert!(
        log.contains("worker 1, round 2: parameter 0 is NaN"),
        "{log}"
    );
    assert!(
        dir.path().join("checkpoints/LATEST").exists(),
        "a final checkpoint is written on failure"
    );
}

#[test]
fn sigterm_stops_coordinator_with_stuck_peer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut coordinator = coordinator(port, dir.path(), 2, &["--max-rounds", "1000"]);
    let _fast = worker(port, 0, &[]);
    // Worker 1 registers and then takes far longer than the test for its
    // first round, so the coordinator is waiting mid-round.
    let _slow = worker(port, 1, &["--debug-step-delay-ms", "600000"]);
    coordinator.wait_for(&["all workers registered"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &coordinator.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (_, log) = coordinator.finish(Duration::from_secs(30));
    let took = started.elapsed();
    println!("coordinator stopped {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(
        dir.path().join("checkpoints/LATEST").exists(),
        "final checkpoint missing:\n{log}"
    );
    assert!(dir.path().join("model.safetensors").exists());
}

#[test]
fn second_coordinator_on_busy_port_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let coordinator = coordinator(port, dir.path(), 1, &[]);
    let (ok, log) = coordinator.finish(Duration::from_secs(30));
    assert!(!ok);
    assert!(
        log.contains(&format!("failed to listen on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn long_local_step_outlasts_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The step takes over ten keepalive timeouts (0.2 s pings, 0.4 s timeout).
    let coordinator = coordinator(
        port,
        dir.path(),
        1,
        &["--max-rounds", "2", "--keepalive", "0.2"],
    );
    let slow = worker(
        port,
        0,
        &["--keepalive", "0.2", "--debug-step-delay-ms", "5000"],
    );
    let (ok, log) = coordinator.finish(Duration::from_secs(120));
    assert!(ok, "coordinator failed:\n{log}");
    let (ok, worker_log) = slow.finish(Duration::from_secs(60));
    assert!(ok, "worker failed:\n{worker_log}");
    assert!(!worker_log.contains("lost the coordinator"), "{worker_log}");
    let rows = rows(dir.path());
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].worker_compute_seconds[0] >= 5.0,
        "{:?}",
        rows[0].worker_compute_seconds
    );
}

#[test]
fn sigterm_stops_worker_mid_step() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut coordinator = coordinator(port, dir.path(), 1, &["--max-rounds", "5"]);
    let mut slow = worker(port, 0, &["--debug-step-delay-ms", "600000"]);
    coordinator.wait_for(&["all workers registered"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &slow.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    slow.wait_for(&["received SIGTERM"], Duration::from_secs(10));
    let (_, log) = slow.finish(Duration::from_secs(30));
    let took = started.elapsed();
    println!("worker stopped {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{log}");
}
