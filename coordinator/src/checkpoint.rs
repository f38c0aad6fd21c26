//! Checkpoints of the complete coordinator state, written atomically.
//!
//! A checkpoint is a folder `checkpoints/round-NNNNNNNN/` holding
//! `state.safetensors` (z, every x_i as `x.I` and every dual as `u.I`) and
//! `manifest.json` (round, ρ, sizes, seed, mode). It is written under a
//! temporary name, every file and the folder are fsynced, the folder is
//! renamed into place, and only then does the pointer file
//! `checkpoints/LATEST` move to it (again write, fsync, rename). A process
//! killed at any point therefore leaves `LATEST` naming a complete
//! checkpoint, or no pointer at all before the first one.

use admm_consensus::ConsensusState;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::Tensor;
use tracing::{debug, info};

/// Version of the checkpoint layout.
const FORMAT_VERSION: u32 = 1;
/// Folder of the checkpoints inside the run directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Pointer file naming the latest complete checkpoint.
const LATEST_FILE: &str = "LATEST";
const STATE_FILE: &str = "state.safetensors";
const MANIFEST_FILE: &str = "manifest.json";
/// Complete checkpoints kept; older ones are deleted.
const KEEP: usize = 2;

/// The small description written beside the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version of the checkpoint.
    pub format_version: u32,
    /// Rounds completed.
    pub round: u64,
    /// ρ for the next round.
    pub rho: f64,
    /// Number of workers N.
    pub num_workers: usize,
    /// Number of parameters n.
    pub parameter_count: usize,
    /// Problem and model name.
    pub model_id: String,
    /// Seed of the data, initial weights and batch order.
    pub seed: u64,
    /// Whether the run is in deterministic mode.
    pub deterministic: bool,
    /// Set when the run had already stopped, with the reason.
    pub stop_reason: Option<String>,
    /// Size of `state.safetensors` in bytes, checked on load.
    pub state_bytes: u64,
}

/// Identity of the run a checkpoint belongs to.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// Problem and model name.
    pub model_id: String,
    /// Seed.
    pub seed: u64,
    /// Number of workers.
    pub num_workers: usize,
    /// Number of parameters.
    pub parameter_count: usize,
    /// Deterministic mode.
    pub deterministic: bool,
}

/// Writes a checkpoint of `state`, and of the `companions` (models the
/// problem trains beside the consensus, such as the GAN generator, as flat
/// vectors under their names), into `run_dir` and returns its folder.
/// `pause` (a test hook) sleeps between the tensors and the manifest.
pub fn write(
    run_dir: &Path,
    state: &ConsensusState,
    companions: &[(&str, &[f32])],
    identity: &RunIdentity,
    stop_reason: Option<&str>,
    pause: Duration,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINT_DIR);
    fs::create_dir_all(&root).with_context(|| format!("failed to create {}", root.display()))?;
    let name = format!("round-{:08}", state.round);
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .with_context(|| format!("failed to remove stale {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    info!(round = state.round, path = %root.join(&name).display(), "writing checkpoint");

    let mut tensors: Vec<(String, Tensor)> = vec![("z".into(), Tensor::from_slice(&state.z))];
    for (i, x) in state.locals.iter().enumerate() {
        tensors.push((format!("x.{i}"), Tensor::from_slice(x)));
    }
    for (i, u) in state.duals.iter().enumerate() {
        tensors.push((format!("u.{i}"), Tensor::from_slice(u)));
    }
    for (name, values) in companions {
        tensors.push((name.to_string(), Tensor::from_slice(values)));
    }
    let state_path = tmp.join(STATE_FILE);
    Tensor::write_safetensors(&tensors, &state_path)
        .with_context(|| format!("failed to write {}", state_path.display()))?;
    sync_file(&state_path)?;
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        round: state.round,
        rho: state.rho,
        num_workers: identity.num_workers,
        parameter_count: identity.parameter_count,
        model_id: identity.model_id.clone(),
        seed: identity.seed,
        deterministic: identity.deterministic,
        stop_reason: stop_reason.map(str::to_string),
        state_bytes: fs::metadata(&state_path)?.len(),
    };
    let manifest_path = tmp.join(MANIFEST_FILE);
    fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("failed to write {}", manifest_path.display()))?;
    sync_file(&manifest_path)?;
    sync_dir(&tmp)?;

    let target = root.join(&name);
    if target.exists() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("failed to replace {}", target.display()))?;
    }
    fs::rename(&tmp, &target)
        .with_context(|| format!("failed to rename {} to {}", tmp.display(), target.display()))?;
    sync_dir(&root)?;
    let pointer_tmp = root.join(format!(".{LATEST_FILE}.tmp"));
    fs::write(&pointer_tmp, &name)
        .with_context(|| format!("failed to write {}", pointer_tmp.display()))?;
    sync_file(&pointer_tmp)?;
    fs::rename(&pointer_tmp, root.join(LATEST_FILE))?;
    sync_dir(&root)?;
    prune(&root, &name)?;
    debug!(round = state.round, "checkpoint complete");
    Ok(target)
}

/// Deletes complete checkpoints beyond the newest [`KEEP`].
fn prune(root: &Path, latest: &str) -> Result<()> {
    let mut names: Vec<String> = fs::read_dir(root)?
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .filter(|name| name.starts_with("round-") && name.as_str() <= latest)
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP);
    for name in &names[..excess] {
        fs::remove_dir_all(root.join(name))
            .with_context(|| format!("failed to delete old checkpoint {name}"))?;
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to fsync {}", path.display()))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to fsync folder {}", path.display()))
}

/// A loaded checkpoint.
pub struct Loaded {
    /// Its manifest.
    pub manifest: Manifest,
    /// The consensus state it holds.
    pub state: ConsensusState,
    /// The other tensors in it (such as `generator`), as flat vectors.
    pub companions: Vec<(String, Vec<f32>)>,
    /// Its folder.
    pub path: PathBuf,
}

/// Loads the checkpoint `LATEST` names, checking it against `identity`.
pub fn load_latest(run_dir: &Path, identity: &RunIdentity) -> Result<Loaded> {
    let root = run_dir.join(CHECKPOINT_DIR);
    let pointer = root.join(LATEST_FILE);
    let name = fs::read_to_string(&pointer).with_context(|| {
        format!(
            "no checkpoint to resume from: {} is missing; start without --resume",
            pointer.display()
        )
    })?;
    let path = root.join(name.trim());
    let manifest_path = path.join(MANIFEST_FILE);
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(&manifest_path)
            .with_context(|| format!("failed to read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("invalid checkpoint manifest {}", manifest_path.display()))?;
    check_identity(&manifest, identity, &manifest_path)?;
    let state_path = path.join(STATE_FILE);
    let size = fs::metadata(&state_path)
        .with_context(|| format!("failed to read {}", state_path.display()))?
        .len();
    if size != manifest.state_bytes {
        bail!(
            "{} is {size} bytes, its manifest says {}; the checkpoint is corrupt, resume from an earlier one or start over",
            state_path.display(),
            manifest.state_bytes
        );
    }
    let tensors = Tensor::read_safetensors(&state_path)
        .with_context(|| format!("failed to read {}", state_path.display()))?;
    let take = |name: &str| -> Result<Vec<f32>> {
        let tensor = &tensors
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("{} has no tensor {name}", state_path.display()))?
            .1;
        if tensor.numel() != manifest.parameter_count {
            bail!(
                "{}: tensor {name} has {} values, expected {}",
                state_path.display(),
                tensor.numel(),
                manifest.parameter_count
            );
        }
        let mut values = vec![0f32; tensor.numel()];
        let len = values.len();
        tensor.f_copy_data(&mut values, len)?;
        Ok(values)
    };
    let z = take("z")?;
    let locals = (0..manifest.num_workers)
        .map(|i| take(&format!("x.{i}")))
        .collect::<Result<Vec<_>>>()?;
    let duals = (0..manifest.num_workers)
        .map(|i| take(&format!("u.{i}")))
        .collect::<Result<Vec<_>>>()?;
    let consensus_name =
        |name: &str| name == "z" || name.starts_with("x.") || name.starts_with("u.");
    let mut companions = Vec::new();
    for (name, tensor) in tensors.iter().filter(|(n, _)| !consensus_name(n)) {
        let mut values = vec![0f32; tensor.numel()];
        let len = values.len();
        tensor.f_copy_data(&mut values, len)?;
        companions.push((name.clone(), values));
    }
    let state = ConsensusState::restore(z, locals, duals, manifest.rho, manifest.round);
    info!(round = manifest.round, path = %path.display(), "loaded checkpoint");
    Ok(Loaded {
        manifest,
        state,
        companions,
        path,
    })
}

fn check_identity(manifest: &Manifest, identity: &RunIdentity, path: &Path) -> Result<()> {
    if manifest.format_version != FORMAT_VERSION {
        bail!(
            "{} has format version {}, this build reads {FORMAT_VERSION}",
            path.display(),
            manifest.format_version
        );
    }
    let mismatches = [
        (
            "model",
            manifest.model_id.clone(),
            identity.model_id.clone(),
        ),
        ("seed", manifest.seed.to_string(), identity.seed.to_string()),
        (
            "workers",
            manifest.num_workers.to_string(),
            identity.num_workers.to_string(),
        ),
        (
            "parameters",
            manifest.parameter_count.to_string(),
            identity.parameter_count.to_string(),
        ),
        (
            "deterministic",
            manifest.deterministic.to_string(),
            identity.deterministic.to_string(),
        ),
    ];
    for (what, saved, now) in mismatches {
        if saved != now {
            bail!("cannot resume: the checkpoint {} has {what} {saved}, this run has {now}; resume with the original options", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RunIdentity {
        RunIdentity {
            model_id: "m".into(),
            seed: 1,
            num_workers: 2,
            parameter_count: 3,
            deterministic: false,
        }
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ConsensusState::new(vec![1.0, 2.0, 3.0], 2, 0.5);
        state.locals[1] = vec![4.0, 5.0, 6.0];
        state.duals[0] = vec![-1.0, 0.0, 1.0];
        state.round = 7;
        let generator = [0.25f32, -0.5];
        write(
            dir.path(),
            &state,
            &[("generator", &generator)],
            &identity(),
            None,
            Duration::ZERO,
        )
        .unwrap();
        let loaded = load_latest(dir.path(), &identity()).unwrap();
        assert_eq!(loaded.manifest.round, 7);
        assert_eq!(
            loaded.companions,
            [("generator".to_string(), generator.to_vec())]
        );
        assert_eq!(loaded.state.z, state.z);
        assert_eq!(loaded.state.locals, state.locals);
        assert_eq!(loaded.state.duals, state.duals);
        assert_eq!(loaded.state.rho, 0.5);
    }

    #[test]
    fn interrupted_write_keeps_previous() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ConsensusState::new(vec![1.0; 3], 2, 1.0);
        state.round = 4;
        write(dir.path(), &state, &[], &identity(), None, Duration::ZERO).unwrap();
        // A half-written checkpoint of a later round, as a kill leaves it.
        let partial = dir.path().join(CHECKPOINT_DIR).join(".tmp-round-00000006");
        fs::create_dir_all(&partial).unwrap();
        fs::write(partial.join(STATE_FILE), b"partial").unwrap();
        assert_eq!(
            load_latest(dir.path(), &identity()).unwrap().manifest.round,
            4
        );
    }

    #[test]
    fn old_checkpoints_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ConsensusState::new(vec![1.0; 3], 2, 1.0);
        for round in 1..=4 {
            state.round = round;
            write(dir.path(), &state, &[], &identity(), None, Duration::ZERO).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path().join(CHECKPOINT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("round-"))
            .collect();
        names.sort();
        assert_eq!(names, ["round-00000003", "round-00000004"]);
    }

    #[test]
    fn mismatched_run_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let state = ConsensusState::new(vec![1.0; 3], 2, 1.0);
        write(dir.path(), &state, &[], &identity(), None, Duration::ZERO).unwrap();
        let other = RunIdentity {
            num_workers: 3,
            ..identity()
        };
        let err = load_latest(dir.path(), &other).err().unwrap().to_string();
        assert!(err.contains("workers 2, this run has 3"), "{err}");
    }

    #[test]
    fn missing_checkpoint_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_latest(dir.path(), &identity())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("LATEST"), "{err}");
    }
}
