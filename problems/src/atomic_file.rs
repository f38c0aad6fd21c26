//! Writing files through a temporary name and a rename, so that a reader,
//! or a process killed mid-write, never leaves half a file under the final
//! name.

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporary files of concurrent writes in one process.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `path` by calling `write` on a temporary path in the same folder,
/// syncing the result to disk and renaming it over `path`. The temporary
/// name carries the process id and a counter, so concurrent writers never
/// share one, and the last rename wins. The temporary file is removed when
/// `write` or the rename fails.
pub fn write_via_temporary(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temporary = temporary_path(path);
    let result = write(&temporary).and_then(|()| {
        File::open(&temporary)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("failed to sync {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| {
            format!(
                "failed to rename {} to {}",
                temporary.display(),
                path.display()
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Writes `bytes` to `path` through [`write_via_temporary`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temporary(path, |temporary| {
        std::fs::write(temporary, bytes)
            .with_context(|| format!("failed to write {}", temporary.display()))
    })
}

/// `.NAME.tmp-PID-N` beside `path`.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let counter = NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{counter}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_bytes(&path, b"first").unwrap();
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.bin"]);
    }

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_bytes(&path, b"old").unwrap();
        let err = write_via_temporary(&path, |temporary| {
            std::fs::write(temporary, b"partial")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
