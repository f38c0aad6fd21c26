//! Supervision of the coordinator and worker processes: each child's
//! standard error goes to its log file, its last lines are kept for error
//! reports, and a failure or a signal stops every child.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// Lines of each child's log kept for error reports.
const TAIL_LINES: usize = 15;
/// How long children get to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// How often exits are polled.
const POLL: Duration = Duration::from_millis(100);

/// One supervised child process.
pub struct Supervised {
    /// Name in messages, such as `worker-2`.
    pub name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `program` with `args`, logging to `log_path`. Lines for which
    /// `echo` returns true are also printed to the terminal.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        threads: usize,
        log_path: &Path,
        echo: fn(&str) -> bool,
    ) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {name} ({})", program.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let stderr = child
            .stderr
            .take()
            .context("child has no standard error pipe")?;
        let (task_tail, task_name, task_path) =
            (tail.clone(), name.to_string(), log_path.to_owned());
        tokio::spawn(async move {
            // Appending keeps the logs of an earlier run when the launcher resumes it.
            let opened = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&task_path)
                .await;
            let mut log = match opened {
                Ok(file) => Some(file),
                Err(e) => {
                    warn!(path = %task_path.display(), error = %e, "cannot create log file");
                    None
                }
            };
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = log.as_mut() {
                    let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                }
                if echo(&line) {
                    eprintln!("[{task_name}] {}", strip_timestamp(&line));
                }
                if let Ok(mut tail) = task_tail.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        info!(name, pid = child.id().unwrap_or(0), log = %log_path.display(), "started");
        Ok(Self {
            name: name.into(),
            child,
            tail,
            log_path: log_path.to_owned(),
            status: None,
        })
    }

    /// Polls the exit status, cached once the child has exited.
    fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Returns the exit status once the child has exited.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.poll()
    }

    /// Returns the last lines of the child's log.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().map(|l| format!("    {l}\n")).collect())
            .unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }
}

/// Strips the leading timestamp of a log line for the terminal.
fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((first, rest)) if first.contains('T') && first.ends_with('Z') => rest.trim_start(),
        _ => line,
    }
}

/// Waits until the first child (the coordinator) exits successfully and the
/// others follow. Any child that fails, or a signal, stops all of them.
pub async fn supervise(
    children: &mut [Supervised],
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        for index in 0..children.len() {
            let Some(status) = children[index].poll()? else {
                continue;
            };
            if !status.success() {
                let failed = &children[index];
                let message = format!(
                    "{} failed ({status}); its last log lines ({}):\n{}",
                    failed.name,
                    failed.log_path.display(),
                    failed.tail()
                );
                terminate_all(children).await;
                bail!(message);
            }
        }
        if children.iter().all(|c| c.status.is_some()) {
            return Ok(());
        }
        let coordinator_done = children.first().is_some_and(|c| c.status.is_some());
        if coordinator_done {
            return wait_for_workers(children).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut shutdown => {
                warn!("stopping every process");
                terminate_all(children).await;
                bail!("interrupted; the run directory keeps what was written so far");
            }
        }
    }
}

/// After the coordinator finished, gives workers time to exit on their own.
async fn wait_for_workers(children: &mut [Supervised]) -> Result<()> {
    let deadline = Instant::now() + TERMINATE_GRACE;
    while Instant::now() < deadline {
        let mut running = false;
        for child in children.iter_mut() {
            match child.poll()? {
                Some(status) if !status.success() => {
                    warn!(name = %child.name, %status, "exited with an error after the run ended");
                }
                Some(_) => {}
                None => running = true,
            }
        }
        if !running {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    warn!("some workers did not exit after the run ended; stopping them");
    terminate_all(children).await;
    Ok(())
}

/// SIGTERM to every running child, then SIGKILL after a grace period.
pub async fn terminate_all(children: &mut [Supervised]) {
    for child in children.iter_mut() {
        if matches!(child.poll(), Ok(None)) {
            child.signal(Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + TERMINATE_GRACE;
    while Instant::now() < deadline {
        if children.iter_mut().all(|c| !matches!(c.poll(), Ok(None))) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    for child in children.iter_mut() {
        if matches!(child.poll(), Ok(None)) {
            warn!(name = %child.name, "did not stop after SIGTERM; killing it");
            let _ = child.child.start_kill();
            let _ = child.child.wait().await;
        }
    }
}
