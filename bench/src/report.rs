//! Figures, their targets, the printed table and the JSON file.

use serde::Serialize;
use std::fmt::Write as _;

/// Direction of a target: the ratio must be at least or at most the bound.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The ratio must be at least the threshold.
    AtLeast(f64),
    /// The ratio must be at most the threshold.
    AtMost(f64),
}

impl Bound {
    /// Checks whether `ratio` satisfies the bound.
    pub fn is_met(self, ratio: f64) -> bool {
        match self {
            Bound::AtLeast(threshold) => ratio >= threshold,
            Bound::AtMost(threshold) => ratio <= threshold,
        }
    }

    fn label(self) -> String {
        match self {
            Bound::AtLeast(threshold) => format!(">= {threshold}"),
            Bound::AtMost(threshold) => format!("<= {threshold}"),
        }
    }
}

/// One measured figure: a ratio against a baseline of the same run, with
/// the absolute values behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Benchmark name, as `--only` takes it.
    pub benchmark: &'static str,
    /// The case within the benchmark, such as the payload size.
    pub case: String,
    /// Quantities the ratio divides, such as "gRPC / raw TCP throughput".
    pub ratio_of: String,
    /// Median ratio over the repetitions.
    pub ratio: f64,
    /// Absolute medians behind the ratio, in words with units.
    pub absolute: String,
    /// Target on the ratio, where one is set.
    pub target: Option<Bound>,
    /// Whether the target is met; absent without a target.
    pub met: Option<bool>,
}

impl Figure {
    /// Creates a figure and checks its target.
    pub fn new(
        benchmark: &'static str,
        case: impl Into<String>,
        ratio_of: impl Into<String>,
        ratio: f64,
        absolute: impl Into<String>,
        target: Option<Bound>,
    ) -> Self {
        Self {
            benchmark,
            case: case.into(),
            ratio_of: ratio_of.into(),
            ratio,
            absolute: absolute.into(),
            met: target.map(|bound| bound.is_met(ratio)),
            target,
        }
    }
}

/// CPU model and core counts of the machine, from /proc/cpuinfo.
#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    /// The first `model name` line.
    pub cpu_model: String,
    /// Number of `processor` entries (logical CPUs).
    pub logical_cpus: usize,
    /// CPUs this process may run on.
    pub available_parallelism: usize,
}

impl Hardware {
    /// Reads the hardware description; missing entries read as "unknown" or 0.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let logical_cpus = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        let available_parallelism = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        Self {
            cpu_model,
            logical_cpus,
            available_parallelism,
        }
    }
}

/// Everything one invocation measured, as written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Machine the figures were measured on.
    pub hardware: Hardware,
    /// Whether `--quick` shortened the repetitions.
    pub quick: bool,
    /// Unix time at the start, in seconds.
    pub started_unix_seconds: u64,
    /// Wall time of the whole suite, in seconds.
    pub wall_seconds: f64,
    /// The figures in the order they were measured.
    pub figures: Vec<Figure>,
    /// Benchmarks that could not run, with the reason.
    pub skipped: Vec<Skipped>,
}

/// A benchmark or case that did not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Benchmark name.
    pub benchmark: &'static str,
    /// The reason, as an error message.
    pub reason: String,
}

/// Formats the figures as a Markdown table.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let hardware = &results.hardware;
    let _ = writeln!(
        out,
        "CPU: {} ({} logical CPUs, {} available)\n",
        hardware.cpu_model, hardware.logical_cpus, hardware.available_parallelism
    );
    out.push_str("| benchmark | case | ratio | value | target | met | absolute (medians) |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for figure in &results.figures {
        let target = figure.target.map(Bound::label).unwrap_or_default();
        let met = match figure.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} | {} | {} |",
            figure.benchmark,
            figure.case,
            figure.ratio_of,
            figure.ratio,
            target,
            met,
            figure.absolute
        );
    }
    for skipped in &results.skipped {
        let _ = writeln!(out, "\nskipped {}: {}", skipped.benchmark, skipped.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_at_least() {
        assert!(Bound::AtLeast(0.5).is_met(0.5));
        assert!(!Bound::AtLeast(0.5).is_met(0.49));
    }

    #[test]
    fn bound_at_most() {
        assert!(Bound::AtMost(3.0).is_met(3.0));
        assert!(!Bound::AtMost(3.0).is_met(3.01));
    }

    #[test]
    fn figure_without_target_has_no_verdict() {
        let figure = Figure::new("packing", "4 MiB", "a / b", 1.0, "", None);
        assert_eq!(figure.met, None);
    }
}
