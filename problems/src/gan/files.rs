//! Saved generators: loading one from a run directory, a checkpoint or a
//! safetensors file with its sizes inferred from the stored tensors,
//! saving one, and exporting its samples as an IDX images file.
//!
//! Three forms are read:
//!
//! | path | content |
//! | --- | --- |
//! | run directory | `generator.safetensors`, the named form below |
//! | checkpoint folder | tensor `generator` in `state.safetensors`: one flat f32 vector in layout order |
//! | `.safetensors` file | one tensor per layout name (`convt0.weight`, `bn0.weight`, …) |
//!
//! A run directory without `generator.safetensors`, or its `checkpoints/`
//! folder, is read through the checkpoint that `checkpoints/LATEST` names.

use super::model::IMAGE_SIDE;
use super::quality::generate_images;
use super::{images_to_pixels, GanSpec};
use crate::atomic_file::write_via_temporary;
use crate::data::idx::write_idx_images;
use crate::network::Network;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// File name of the generator in a run directory.
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// File name of the tensors in a checkpoint folder.
pub const CHECKPOINT_STATE_FILE: &str = "state.safetensors";
/// Name of the generator's flat vector in a checkpoint's tensors.
pub const CHECKPOINT_GENERATOR_TENSOR: &str = "generator";
/// Folder of the checkpoints in a run directory.
const CHECKPOINT_DIR: &str = "checkpoints";
/// Pointer file naming the latest checkpoint folder.
const LATEST_FILE: &str = "LATEST";
/// File of the checkpoint's description, holding the model name.
const MANIFEST_FILE: &str = "manifest.json";
/// Name of the first generator tensor, of shape `[L, 2f, 7, 7]`.
const FIRST_TENSOR: &str = "convt0.weight";

/// The two options that fix the generator's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorSize {
    /// Length L of the latent vector.
    pub latent_dim: usize,
    /// Base number of filters f.
    pub g_filters: usize,
}

impl GeneratorSize {
    /// Number of generator parameters: convt0 has L·2f·7·7, bn0 2·2f,
    /// convt1 2f·f·4·4, bn1 2·f and convt2 f·1·4·4 values.
    pub fn parameter_count(&self) -> usize {
        let (l, f) = (self.latent_dim, self.g_filters);
        98 * l * f + 32 * f * f + 22 * f
    }

    /// Builds a GAN spec with these sizes and default values for the rest.
    pub fn spec(&self) -> GanSpec {
        GanSpec {
            latent_dim: self.latent_dim,
            g_filters: self.g_filters,
            ..Default::default()
        }
    }

    /// Every size whose generator has exactly `count` parameters, by
    /// increasing f.
    pub fn candidates_for(count: usize) -> Vec<GeneratorSize> {
        let mut sizes = Vec::new();
        let mut f = 1;
        // The smallest generator with f filters has L = 1.
        while 32 * f * f + 120 * f <= count {
            let rest = count - 32 * f * f - 22 * f;
            if rest.is_multiple_of(98 * f) {
                sizes.push(GeneratorSize {
                    latent_dim: rest / (98 * f),
                    g_filters: f,
                });
            }
            f += 1;
        }
        sizes
    }

    /// Parses a GAN model name such as `gan/dcgan-l64-g32-d32`.
    fn from_model_id(model_id: &str) -> Option<GeneratorSize> {
        let rest = model_id.strip_prefix("gan/dcgan-l")?;
        let (latent, rest) = rest.split_once("-g")?;
        let (filters, _) = rest.split_once("-d")?;
        Some(GeneratorSize {
            latent_dim: latent.parse().ok()?,
            g_filters: filters.parse().ok()?,
        })
    }
}

impl std::fmt::Display for GeneratorSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--latent-dim {} --g-filters {}",
            self.latent_dim, self.g_filters
        )
    }
}

/// Loads a saved generator onto `device` from any of the three forms of
/// the module docs, inferring its sizes from the stored tensors. The
/// returned spec carries the inferred `latent_dim` and `g_filters`; its
/// other fields are defaults.
pub fn load_generator(path: &Path, device: Device) -> Result<(Network, GanSpec)> {
    load_generator_sized(path, device, None)
}

/// Like [`load_generator`], with the sizes given. They are checked against
/// the stored tensors, and they settle a flat vector whose length fits
/// several sizes.
pub fn load_generator_sized(
    path: &Path,
    device: Device,
    size: Option<GeneratorSize>,
) -> Result<(Network, GanSpec)> {
    let (network, size) = match locate(path)? {
        Source::Named(file) => load_named(&file, device, size)?,
        Source::Checkpoint(folder) => load_checkpoint(&folder, device, size)?,
    };
    Ok((network, size.spec()))
}

/// Storage form of a saved generator.
enum Source {
    /// A safetensors file with one tensor per layout name.
    Named(PathBuf),
    /// A checkpoint folder with a flat vector in `state.safetensors`.
    Checkpoint(PathBuf),
}

/// Finds the generator's file from a path given by the user.
fn locate(path: &Path) -> Result<Source> {
    if path.is_file() {
        return Ok(Source::Named(path.to_path_buf()));
    }
    if !path.is_dir() {
        bail!(
            "generator {} not found; pass a run directory, a checkpoint folder or a \
             .safetensors file",
            path.display()
        );
    }
    let named = path.join(GENERATOR_FILE);
    if named.is_file() {
        return Ok(Source::Named(named));
    }
    if path.join(CHECKPOINT_STATE_FILE).is_file() {
        return Ok(Source::Checkpoint(path.to_path_buf()));
    }
    for root in [path.join(CHECKPOINT_DIR), path.to_path_buf()] {
        let pointer = root.join(LATEST_FILE);
        if let Ok(name) = std::fs::read_to_string(&pointer) {
            let folder = root.join(name.trim());
            if !folder.join(CHECKPOINT_STATE_FILE).is_file() {
                bail!(
                    "{} names checkpoint {}, which has no {CHECKPOINT_STATE_FILE}",
                    pointer.display(),
                    folder.display()
                );
            }
            return Ok(Source::Checkpoint(folder));
        }
    }
    bail!(
        "{} contains no generator: expected {GENERATOR_FILE} (a run directory), \
         {CHECKPOINT_STATE_FILE} (a checkpoint folder) or {CHECKPOINT_DIR}/{LATEST_FILE}",
        path.display()
    )
}

/// Reads a safetensors file, naming it in the error.
fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).with_context(|| {
        format!(
            "failed to read {} as safetensors; the file is damaged or in another format",
            path.display()
        )
    })
}

/// Loads the named form, with the sizes taken from `convt0.weight`.
fn load_named(
    path: &Path,
    device: Device,
    given: Option<GeneratorSize>,
) -> Result<(Network, GeneratorSize)> {
    let tensors = read_tensors(path)?;
    let Some((_, first)) = tensors.iter().find(|(name, _)| name == FIRST_TENSOR) else {
        let names: Vec<&str> = tensors.iter().map(|(name, _)| name.as_str()).collect();
        bail!(
            "{} has no tensor {FIRST_TENSOR}, so it is not a generator; found {names:?}",
            path.display()
        );
    };
    let shape = first.size();
    let valid = shape.len() == 4
        && shape[0] > 0
        && shape[1] > 0
        && shape[1] % 2 == 0
        && shape[2] == 7
        && shape[3] == 7;
    if !valid {
        bail!(
            "{}: tensor {FIRST_TENSOR} has shape {shape:?}, expected [L, 2f, 7, 7] with L, f ≥ 1",
            path.display()
        );
    }
    let size = GeneratorSize {
        latent_dim: shape[0] as usize,
        g_filters: shape[1] as usize / 2,
    };
    if let Some(given) = given {
        if given != size {
            bail!(
                "{} contains a generator of {size}, but {given} was given",
                path.display()
            );
        }
    }
    let mut network = Network::generator(&size.spec(), device, 0);
    load_named_tensors(&mut network, tensors, path)?;
    Ok((network, size))
}

/// Loads the flat vector of a checkpoint folder. The sizes come from the
/// caller, else from the model name in `manifest.json`, else from the
/// vector's length when exactly one size fits it.
fn load_checkpoint(
    folder: &Path,
    device: Device,
    given: Option<GeneratorSize>,
) -> Result<(Network, GeneratorSize)> {
    let path = folder.join(CHECKPOINT_STATE_FILE);
    let tensors = read_tensors(&path)?;
    let Some((_, flat)) = tensors
        .into_iter()
        .find(|(name, _)| name == CHECKPOINT_GENERATOR_TENSOR)
    else {
        bail!(
            "{} has no tensor {CHECKPOINT_GENERATOR_TENSOR}; the checkpoint is not of a GAN run \
             that stores its generator",
            path.display()
        );
    };
    if flat.dim() != 1 {
        bail!(
            "{}: tensor {CHECKPOINT_GENERATOR_TENSOR} has shape {:?}, expected one flat vector",
            path.display(),
            flat.size()
        );
    }
    let values = tensor_values(&flat, &path, CHECKPOINT_GENERATOR_TENSOR)?;
    let size = match given.or(manifest_size(folder)?) {
        Some(size) => {
            if size.parameter_count() != values.len() {
                bail!(
                    "{}: tensor {CHECKPOINT_GENERATOR_TENSOR} has {} values, but a generator of \
                     {size} has {}",
                    path.display(),
                    values.len(),
                    size.parameter_count()
                );
            }
            size
        }
        None => size_for_count(values.len(), &path)?,
    };
    let mut network = Network::generator(&size.spec(), device, 0);
    network.load_flat(&values)?;
    Ok((network, size))
}

/// The generator sizes in a checkpoint's model name, when the folder has a
/// readable manifest of a GAN run.
fn manifest_size(folder: &Path) -> Result<Option<GeneratorSize>> {
    let path = folder.join(MANIFEST_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("invalid JSON in {}", path.display()))?;
    Ok(manifest
        .get("model_id")
        .and_then(|id| id.as_str())
        .and_then(GeneratorSize::from_model_id))
}

/// The only generator size with `count` parameters.
fn size_for_count(count: usize, path: &Path) -> Result<GeneratorSize> {
    let candidates = GeneratorSize::candidates_for(count);
    match candidates.as_slice() {
        [size] => Ok(*size),
        [] => bail!(
            "{}: tensor {CHECKPOINT_GENERATOR_TENSOR} has {count} values, which fits no \
             generator size",
            path.display()
        ),
        several => {
            let listed: Vec<String> = several.iter().map(ToString::to_string).collect();
            bail!(
                "{}: tensor {CHECKPOINT_GENERATOR_TENSOR} has {count} values, which fits several \
                 generator sizes ({}); pass the run's --latent-dim and --g-filters",
                path.display(),
                listed.join("; ")
            )
        }
    }
}

/// Values of a tensor as f32, rejecting NaN and Inf.
fn tensor_values(tensor: &Tensor, path: &Path, name: &str) -> Result<Vec<f32>> {
    let flat = tensor
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let mut values = vec![0f32; flat.numel()];
    let len = values.len();
    flat.f_copy_data(&mut values, len)
        .with_context(|| format!("failed to read tensor {name} of {}", path.display()))?;
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: tensor {name} contains {} at index {index}; the weights are unusable",
            path.display(),
            values[index]
        );
    }
    Ok(values)
}

/// Copies `tensors` into `network` by layout name, checking that every
/// layout name is present with its shape and finite values and that no
/// other tensor is stored. `path` names the source in errors.
pub(crate) fn load_named_tensors(
    network: &mut Network,
    tensors: Vec<(String, Tensor)>,
    path: &Path,
) -> Result<()> {
    let mut theta = Vec::with_capacity(network.num_params());
    for spec in network.layout() {
        let Some((_, tensor)) = tensors.iter().find(|(name, _)| *name == spec.name) else {
            bail!("{} has no tensor {}", path.display(), spec.name);
        };
        if tensor.size() != spec.shape {
            bail!(
                "{}: tensor {} has shape {:?}, expected {:?}",
                path.display(),
                spec.name,
                tensor.size(),
                spec.shape
            );
        }
        theta.extend(tensor_values(tensor, path, &spec.name)?);
    }
    let layout = network.layout();
    if let Some((extra, _)) = tensors
        .iter()
        .find(|(name, _)| !layout.iter().any(|spec| spec.name == *name))
    {
        bail!(
            "{} contains tensor {extra}, which the model does not have",
            path.display()
        );
    }
    network.load_flat(&theta)
}

/// Writes a generator's tensors under their layout names, the form that
/// [`load_generator`] reads, through a temporary file.
pub fn save_generator(generator: &Network, path: &Path) -> Result<()> {
    let first = generator.layout().first().map(|spec| spec.name.as_str());
    if first != Some(FIRST_TENSOR) {
        bail!(
            "cannot save a model whose first tensor is {first:?} as a generator; expected \
             {FIRST_TENSOR}"
        );
    }
    write_via_temporary(path, |temporary| generator.save_safetensors(temporary))
}

/// Generates `count` images from `seed` (see [`generate_images`]) and
/// writes them to `path` as an IDX images file of u8 pixels, 0 being
/// background like MNIST.
pub fn export_generated_images(
    generator: &Network,
    latent_dim: usize,
    count: usize,
    seed: u64,
    path: &Path,
) -> Result<()> {
    let images = generate_images(generator, latent_dim, count, seed)?;
    let pixels = images_to_pixels(&images);
    let side = IMAGE_SIDE as usize;
    write_idx_images(path, &pixels, count, side, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{read_idx, IMAGES_MAGIC};

    fn small() -> GeneratorSize {
        GeneratorSize {
            latent_dim: 8,
            g_filters: 4,
        }
    }

    fn flat(network: &Network) -> Vec<f32> {
        let mut values = Vec::new();
        network.write_flat(&mut values);
        values
    }

    /// Writes a checkpoint folder with the generator's flat vector and a
    /// z tensor beside it, like the coordinator's.
    fn write_checkpoint(folder: &Path, values: &[f32], model_id: Option<&str>) {
        std::fs::create_dir_all(folder).unwrap();
        let tensors = [
            ("z", Tensor::from_slice(&[0f32; 3])),
            (CHECKPOINT_GENERATOR_TENSOR, Tensor::from_slice(values)),
        ];
        Tensor::write_safetensors(&tensors, folder.join(CHECKPOINT_STATE_FILE)).unwrap();
        if let Some(id) = model_id {
            let manifest = serde_json::json!({ "model_id": id, "round": 3 });
            std::fs::write(folder.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        }
    }

    #[test]
    fn parameter_count_matches_network() {
        for (latent_dim, g_filters) in [(64, 32), (8, 4), (1, 1), (100, 7)] {
            let size = GeneratorSize {
                latent_dim,
                g_filters,
            };
            let network = Network::generator(&size.spec(), Device::Cpu, 0);
            assert_eq!(size.parameter_count(), network.num_params(), "{size}");
            assert!(GeneratorSize::candidates_for(network.num_params()).contains(&size));
        }
    }

    #[test]
    fn model_id_parsed() {
        let spec = GanSpec::default();
        assert_eq!(
            GeneratorSize::from_model_id(&spec.model_id()),
            Some(GeneratorSize {
                latent_dim: 64,
                g_filters: 32
            })
        );
        assert_eq!(GeneratorSize::from_model_id("mnist/mlp-784-256-10"), None);
    }

    #[test]
    fn named_file_loads_with_inferred_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        let saved = Network::generator(&small().spec(), Device::Cpu, 7);
        save_generator(&saved, &path).unwrap();
        let (loaded, spec) = load_generator(&path, Device::Cpu).unwrap();
        assert_eq!((spec.latent_dim, spec.g_filters), (8, 4));
        assert_eq!(flat(&loaded), flat(&saved));
    }

    #[test]
    fn run_directory_loads_generator_file() {
        let dir = tempfile::tempdir().unwrap();
        let saved = Network::generator(&small().spec(), Device::Cpu, 8);
        save_generator(&saved, &dir.path().join(GENERATOR_FILE)).unwrap();
        let (loaded, spec) = load_generator(dir.path(), Device::Cpu).unwrap();
        assert_eq!((spec.latent_dim, spec.g_filters), (8, 4));
        assert_eq!(flat(&loaded), flat(&saved));
    }

    #[test]
    fn checkpoint_folder_loads_flat_vector() {
        let dir = tempfile::tempdir().unwrap();
        let saved = Network::generator(&small().spec(), Device::Cpu, 9);
        let values = flat(&saved);
        // No other size has as many parameters as the 8·4 generator.
        assert_eq!(GeneratorSize::candidates_for(values.len()), [small()]);
        let folder = dir.path().join("round-00000003");
        write_checkpoint(&folder, &values, None);
        let (loaded, spec) = load_generator(&folder, Device::Cpu).unwrap();
        assert_eq!((spec.latent_dim, spec.g_filters), (8, 4));
        assert_eq!(flat(&loaded), values);
    }

    #[test]
    fn run_directory_falls_back_to_latest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let saved = Network::generator(&small().spec(), Device::Cpu, 10);
        let root = dir.path().join(CHECKPOINT_DIR);
        write_checkpoint(&root.join("round-00000005"), &flat(&saved), None);
        std::fs::write(root.join(LATEST_FILE), "round-00000005\n").unwrap();
        let (loaded, _) = load_generator(dir.path(), Device::Cpu).unwrap();
        assert_eq!(flat(&loaded), flat(&saved));
    }

    #[test]
    fn ambiguous_flat_vector_needs_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GanSpec::default();
        let saved = Network::generator(&spec, Device::Cpu, 11);
        let values = flat(&saved);
        let folder = dir.path().join("round-00000001");
        write_checkpoint(&folder, &values, None);
        let err = load_generator(&folder, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fits several generator sizes"), "{err}");
        assert!(err.contains("--latent-dim 64 --g-filters 32"), "{err}");

        let given = GeneratorSize {
            latent_dim: 64,
            g_filters: 32,
        };
        let (loaded, _) = load_generator_sized(&folder, Device::Cpu, Some(given)).unwrap();
        assert_eq!(flat(&loaded), values);

        write_checkpoint(&folder, &values, Some(&spec.model_id()));
        let (loaded, found) = load_generator(&folder, Device::Cpu).unwrap();
        assert_eq!((found.latent_dim, found.g_filters), (64, 32));
        assert_eq!(flat(&loaded), values);
    }

    #[test]
    fn missing_generator_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_generator(&dir.path().join("absent"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent not found"), "{err}");
        let err = load_generator(dir.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("contains no generator"), "{err}");
        let folder = dir.path().join("round-00000001");
        std::fs::create_dir_all(&folder).unwrap();
        Tensor::write_safetensors(
            &[("z", Tensor::from_slice(&[0f32; 3]))],
            folder.join(CHECKPOINT_STATE_FILE),
        )
        .unwrap();
        let err = load_generator(&folder, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no tensor generator"), "{err}");
    }

    #[test]
    fn bad_tensors_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        let discriminator = Network::discriminator(&small().spec(), Device::Cpu, 0);
        discriminator.save_safetensors(&path).unwrap();
        let err = load_generator(&path, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("no tensor convt0.weight"), "{err}");

        let generator = Network::generator(&small().spec(), Device::Cpu, 0);
        let mut tensors: Vec<(String, Tensor)> = generator
            .params()
            .iter()
            .map(|(name, t)| (name.clone(), t.detach().copy()))
            .collect();
        let _ = tensors[1].1.fill_(f64::NAN);
        Tensor::write_safetensors(&tensors, &path).unwrap();
        let err = load_generator(&path, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("tensor bn0.weight contains NaN"), "{err}");

        let _ = tensors[1].1.fill_(1.0);
        tensors[3].1 = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&tensors, &path).unwrap();
        let err = load_generator(&path, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("convt1.weight has shape [2, 2], expected [8, 4, 4, 4]"),
            "{err}"
        );

        save_generator(&generator, &path).unwrap();
        let wrong = GeneratorSize {
            latent_dim: 9,
            g_filters: 4,
        };
        let err = load_generator_sized(&path, Device::Cpu, Some(wrong))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but --latent-dim 9 --g-filters 4 was given"),
            "{err}"
        );

        let err = save_generator(&discriminator, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"conv0.weight\""), "{err}");
    }

    #[test]
    fn exported_images_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generated-idx3-ubyte");
        let generator = Network::generator(&small().spec(), Device::Cpu, 12);
        export_generated_images(&generator, 8, 7, 3, &path).unwrap();
        let array = read_idx(&path, IMAGES_MAGIC).unwrap();
        assert_eq!(array.dims, [7, 28, 28]);
        let images = generate_images(&generator, 8, 7, 3).unwrap();
        assert_eq!(array.values, images_to_pixels(&images));
        assert!(array.values.iter().any(|&p| p != array.values[0]));
    }
}
