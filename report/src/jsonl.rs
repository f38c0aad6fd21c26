//! Appending rows to, and reading rows from, JSON lines files.

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A JSON lines file open for appending; each row is flushed as written so
/// that a crash loses at most the row being written.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    /// Appends one row and flushes it.
    pub fn append<T: Serialize>(&mut self, row: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, row)?;
        self.out.write_all(b"\n")?;
        self.out
            .flush()
            .with_context(|| format!("failed to write {}", self.path.display()))
    }
}

/// Reads every row of a JSON lines file, naming the line of a bad row.
pub fn read_rows<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("failed to read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&line)
            .with_context(|| format!("invalid row at {}:{}", path.display(), index + 1))?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoundRow;

    #[test]
    fn rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let rows = vec![
            RoundRow {
                method: "admm".into(),
                round: 1,
                rho: Some(1.0),
                ..Default::default()
            },
            RoundRow {
                method: "admm".into(),
                round: 2,
                worker_loss: vec![0.5, 0.25],
                ..Default::default()
            },
        ];
        let mut writer = JsonlWriter::create(&path).unwrap();
        for row in &rows {
            writer.append(row).unwrap();
        }
        let read: Vec<RoundRow> = read_rows(&path).unwrap();
        assert_eq!(read, rows);
    }

    #[test]
    fn bad_row_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, "{\"method\":\"admm\",\"round\":1,\"elapsed_seconds\":0,\"round_seconds\":0,\"loss\":0,\"g\":0,\"objective\":0}\nnot json\n").unwrap();
        let err = read_rows::<RoundRow>(&path).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.jsonl:2"), "{err:#}");
    }
}
