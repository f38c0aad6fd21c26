//! A network partition with real processes: the coordinator and worker 0
//! run in one network namespace, worker 1 in another, joined by a veth
//! pair. The test takes worker 1's end of the link down for longer than the
//! round deadline and checks that the run goes on without worker 1 and that
//! worker 1 reconnects and resynchronizes once the link is back.
//!
//! The test needs root and `ip` from iproute2. When it cannot create the
//! namespaces and the link, it prints a line starting with `skipped:` and
//! passes. Every process and every packet stays inside the two namespaces
//! that the test creates.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_report::jsonl::read_rows;
use admm_report::RoundRow;
use common::binary;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A small linear regression problem whose rounds are cheap.
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

/// Heartbeats every 200 ms, a worker counts as lost after 1.5 s of
/// silence, and a round waits at most 3 s for a missing worker.
const COORDINATOR_OPTIONS: [&str; 18] = [
    "--workers",
    "2",
    "--straggler-policy",
    "proceed",
    "--round-deadline",
    "3",
    "--heartbeat-interval-ms",
    "200",
    "--heartbeat-timeout",
    "1.5",
    "--keepalive",
    "0.5",
    "--max-rounds",
    "60",
    "--eps-abs",
    "0",
    "--eps-rel",
    "0",
];

/// The debug delay applies once per x-update, not per local step, so a
/// round takes about 0.5 s: the 60 rounds last about 30 s, and the cut
/// spans about 15 of them with about 30 left for the recovery. The local
/// steps use minibatches because with full batches the f32 iterates can
/// reach exactly zero residuals, which passes the stopping test even with
/// zero tolerances and ends the run before round 60.
const WORKER_OPTIONS: [&str; 14] = [
    "--keepalive",
    "0.5",
    "--connect-timeout",
    "60",
    "--debug-step-delay-ms",
    "500",
    "--optimizer",
    "sgd",
    "--lr",
    "0.1",
    "--local-steps",
    "10",
    "--batch-size",
    "40",
];

const MAX_ROUNDS: usize = 60;
/// Rounds completed before the link goes down.
const ROUNDS_BEFORE_CUT: usize = 10;
/// How long the link stays down: well over the 3 s round deadline and the
/// 1.5 s heartbeat timeout.
const CUT_DURATION: Duration = Duration::from_secs(8);
/// The coordinator port inside namespace A, which is empty when the test
/// starts, so any port is free.
const PORT: u16 = 50051;
/// Rounds at the end of the run in which both workers must be fresh.
const FRESH_TAIL_ROUNDS: usize = 5;
/// Upper bound on the time from the link coming back to worker 1's new
/// registration: the worker's connection backoff is at most 5 s, and
/// registration then takes one round trip.
const MAX_REJOIN_DELAY: Duration = Duration::from_secs(20);

/// Two network namespaces joined by a veth pair on a private /30 link. Drop
/// deletes the namespaces, which also deletes the veth pair.
struct Partition {
    namespace_a: String,
    namespace_b: String,
    veth_b: String,
    address_a: String,
    created: Vec<String>,
}

impl Partition {
    /// Creates the namespaces and the link, or returns why it could not.
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let subnet = pid % 256;
        // Interface names must fit in 15 bytes, and a pid has at most 7 digits.
        let mut partition = Self {
            namespace_a: format!("admm-partition-{pid}-a"),
            namespace_b: format!("admm-partition-{pid}-b"),
            veth_b: format!("adp{pid}b"),
            address_a: format!("10.213.{subnet}.1"),
            created: Vec::new(),
        };
        let veth_a = format!("adp{pid}a");
        let address_b = format!("10.213.{subnet}.2");
        let (a, b) = (partition.namespace_a.clone(), partition.namespace_b.clone());

        run_ip(&["netns", "add", &a])?;
        partition.created.push(a.clone());
        run_ip(&["netns", "add", &b])?;
        partition.created.push(b.clone());

        run_ip(&[
            "-n",
            &a,
            "link",
            "add",
            &veth_a,
            "type",
            "veth",
            "peer",
            "name",
            &partition.veth_b,
            "netns",
            &b,
        ])?;

        let address_a = format!("{}/30", partition.address_a);
        let address_b = format!("{address_b}/30");
        let ends = [
            (&a, &veth_a, &address_a),
            (&b, &partition.veth_b, &address_b),
        ];
        for (namespace, veth, address) in ends {
            run_ip(&["-n", namespace, "link", "set", "lo", "up"])?;
            run_ip(&["-n", namespace, "addr", "add", address, "dev", veth])?;
            run_ip(&["-n", namespace, "link", "set", veth, "up"])?;
        }
        Ok(partition)
    }

    /// Builds a command that runs a workspace binary inside `namespace`
    /// with plain, colourless logs.
    fn command_in(&self, namespace: &str, name: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace])
            .arg(binary(name))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        command
    }

    /// Sets worker 1's end of the link up or down.
    fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        run_ip(&["-n", &self.namespace_b, "link", "set", &self.veth_b, state])
            .unwrap_or_else(|e| panic!("failed to set the link {state}: {e}"));
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for namespace in &self.created {
            if let Err(e) = run_ip(&["netns", "del", namespace]) {
                eprintln!("failed to delete network namespace {namespace}: {e}");
            }
        }
    }
}

/// Runs `ip` with `args` and returns its error output on failure.
fn run_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("failed to run `ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A child whose standard error is collected line by line on a thread,
/// each line with the instant it arrived. Drop kills the child if it is
/// still running, so a failed assertion leaves no process behind.
struct Logged {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Logged {
    fn spawn(name: &'static str, mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        let stderr = child.stderr.take().expect("piped standard error");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Moves the lines received so far into `seen`.
    fn collect(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Moves the remaining lines into `seen` once the child has exited. The
    /// reader thread ends at end of file, which disconnects the channel.
    fn collect_after_exit(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
    }

    fn log(&self) -> String {
        let lines: Vec<&str> = self.seen.iter().map(|(_, line)| line.as_str()).collect();
        lines.join("\n")
    }

    /// Panics with the log if the child has already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("child status") {
            self.collect_after_exit();
            panic!(
                "{} exited early with {status}; log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Waits for the exit and returns the status. After `timeout` it kills
    /// the child and panics with the log.
    fn finish(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            self.collect();
            if let Some(status) = self.child.try_wait().expect("child status") {
                self.collect_after_exit();
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.collect();
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the lines that contain every needle, with their arrival
    /// instants, in log order.
    fn lines_containing(&self, needles: &[&str]) -> Vec<(Instant, &str)> {
        self.seen
            .iter()
            .filter(|(_, line)| needles.iter().all(|n| line.contains(n)))
            .map(|(at, line)| (*at, line.as_str()))
            .collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn rows(run_dir: &Path) -> Vec<RoundRow> {
    read_rows(&run_dir.join("metrics.jsonl")).unwrap_or_default()
}

/// Waits until `count` rounds are in metrics.jsonl, checking that no
/// process has exited meanwhile.
fn wait_for_rows(
    run_dir: &Path,
    count: usize,
    timeout: Duration,
    coordinator: &mut Logged,
    workers: &mut [Logged],
) {
    let deadline = Instant::now() + timeout;
    while rows(run_dir).len() < count {
        coordinator.assert_running();
        for worker in workers.iter_mut() {
            worker.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} rounds in metrics.jsonl within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Returns the value of `key=` in a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(prefix.as_str()))
}

#[test]
fn partitioned_worker_recovers() {
    let partition = match Partition::create() {
        Ok(partition) => partition,
        Err(reason) => {
            println!("skipped: cannot create network namespaces: {reason}");
            return;
        }
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary run directory");
    let listen = format!("{}:{PORT}", partition.address_a);
    let url = format!("http://{listen}");

    let mut command = partition.command_in(&partition.namespace_a, "admm-coordinator");
    command
        .args(["--listen", &listen, "--run-dir"])
        .arg(dir.path())
        .args(COORDINATOR_OPTIONS)
        .args(PROBLEM);
    let mut coordinator = Logged::spawn("coordinator", command);
    let namespaces = [&partition.namespace_a, &partition.namespace_b];
    let mut workers: Vec<Logged> = namespaces
        .iter()
        .enumerate()
        .map(|(id, namespace)| {
            let mut command = partition.command_in(namespace, "admm-worker");
            command
                .args(["--coordinator", &url, "--worker-id", &id.to_string()])
                .args(WORKER_OPTIONS)
                .args(PROBLEM);
            let name = if id == 0 { "worker 0" } else { "worker 1" };
            Logged::spawn(name, command)
        })
        .collect();

    wait_for_rows(
        dir.path(),
        ROUNDS_BEFORE_CUT,
        Duration::from_secs(60),
        &mut coordinator,
        &mut workers,
    );

    partition.set_link(false);
    let cut_at = Instant::now();
    let rounds_at_cut = rows(dir.path()).len();
    std::thread::sleep(CUT_DURATION);
    partition.set_link(true);
    let restored_at = Instant::now();
    let rounds_at_restore = rows(dir.path()).len();
    println!(
        "link down for {:.1} s, cut after round {rounds_at_cut}, restored after round {rounds_at_restore}",
        (restored_at - cut_at).as_secs_f64()
    );
    assert!(
        rounds_at_restore + 2 * FRESH_TAIL_ROUNDS < MAX_ROUNDS,
        "the link came back after round {rounds_at_restore} of {MAX_ROUNDS}, too late to see \
         worker 1 recover; rounds are faster than the test expects"
    );

    let status = coordinator.finish(Duration::from_secs(100));
    assert!(
        status.success(),
        "coordinator exited with {status}; log:\n{}",
        coordinator.log()
    );
    for worker in workers.iter_mut() {
        let status = worker.finish(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            worker.name,
            worker.log()
        );
    }
    println!(
        "run finished {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );

    let rows = rows(dir.path());
    let rounds: Vec<u64> = rows.iter().map(|r| r.round).collect();
    assert_eq!(
        rounds,
        (1..=MAX_ROUNDS as u64).collect::<Vec<_>>(),
        "metrics rows"
    );
    let stale_rounds = |worker: usize| -> Vec<u64> {
        rows.iter()
            .filter(|r| r.stale_workers.contains(&worker))
            .map(|r| r.round)
            .collect()
    };
    let worker_0_stale = stale_rounds(0);
    let worker_1_stale = stale_rounds(1);
    println!("worker 1 stale in rounds {worker_1_stale:?}");
    assert!(
        worker_0_stale.is_empty(),
        "worker 0 shares the coordinator's namespace, yet it was stale in rounds {worker_0_stale:?}"
    );
    assert!(
        !worker_1_stale.is_empty(),
        "worker 1 was never stale although its link was down for {CUT_DURATION:?}"
    );
    let first_stale = worker_1_stale[0];
    let last_stale = *worker_1_stale.last().expect("a stale round");
    assert!(
        first_stale > rounds_at_cut as u64,
        "worker 1 was stale in round {first_stale}, before the cut after round {rounds_at_cut}"
    );
    assert!(
        first_stale <= rounds_at_restore as u64 + 1,
        "worker 1 became stale only in round {first_stale}, after the link came back in round {}",
        rounds_at_restore + 1
    );
    let tail = &rows[MAX_ROUNDS - FRESH_TAIL_ROUNDS..];
    for row in tail {
        assert!(
            row.stale_workers.is_empty(),
            "round {} near the end has stale workers {:?}; worker 1 stale in rounds {worker_1_stale:?}",
            row.round,
            row.stale_workers
        );
    }

    let worker_1 = &workers[1];
    let lost = worker_1.lines_containing(&["lost the coordinator"]);
    assert!(
        !lost.is_empty(),
        "worker 1 never logged that it lost the coordinator; log:\n{}",
        worker_1.log()
    );
    let (lost_at, _) = lost[0];
    assert!(
        lost_at > cut_at,
        "worker 1 lost the coordinator before the cut; log:\n{}",
        worker_1.log()
    );
    let registrations = worker_1.lines_containing(&["registered", "next_round="]);
    assert!(
        registrations.len() >= 2,
        "worker 1 registered {} times, expected a second registration after the cut; log:\n{}",
        registrations.len(),
        worker_1.log()
    );
    let (rejoined_at, rejoin_line) = *registrations
        .iter()
        .find(|(at, _)| *at > lost_at)
        .unwrap_or_else(|| {
            panic!(
                "worker 1 did not register again after it lost the coordinator; log:\n{}",
                worker_1.log()
            )
        });
    assert!(
        rejoined_at > restored_at,
        "worker 1 registered again while the link was down; log:\n{}",
        worker_1.log()
    );
    let rejoin_delay = rejoined_at - restored_at;
    assert!(
        rejoin_delay < MAX_REJOIN_DELAY,
        "worker 1 registered again {rejoin_delay:?} after the link came back; log:\n{}",
        worker_1.log()
    );
    let next_round = log_field(rejoin_line, "next_round").unwrap_or("unknown");
    let rejoined_lines = coordinator.lines_containing(&["worker rejoined", "worker=1"]);
    assert!(
        !rejoined_lines.is_empty(),
        "the coordinator never logged that worker 1 rejoined; log:\n{}",
        coordinator.log()
    );
    let (_, coordinator_rejoin_line) = rejoined_lines[0];
    assert_eq!(
        log_field(coordinator_rejoin_line, "round"),
        Some(next_round),
        "worker 1 must resume at the coordinator's current round"
    );
    println!(
        "worker 1 noticed the loss {:.1} s after the cut and registered again {:.1} s after the \
         link came back, resuming at round {next_round}",
        (lost_at - cut_at).as_secs_f64(),
        rejoin_delay.as_secs_f64()
    );
    println!(
        "worker 1 fresh again from round {}; round {} was running when the link came back",
        last_stale + 1,
        rounds_at_restore + 1
    );
}
