//! Quality measures of generated MNIST images: a Fréchet distance between
//! feature statistics, and the class histogram of the generated images.
//!
//! Both rest on a small MNIST classifier of this project (an MLP
//! 784-256-128-10 on images in [-1, 1]), trained once and cached. The
//! features are its 128 penultimate activations, and the distance between
//! two image sets with feature means μ and covariances Σ is
//!
//! ```text
//! d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2})
//! ```
//!
//! This is the formula of the Fréchet Inception Distance (Heusel et al.,
//! 2017) on other features: a classifier-feature FID, not the Inception FID.
//! Its values are therefore not comparable with published FIDs. Compare
//! them only with each other, from the same classifier (the same cache
//! file) and the same number of samples, since the estimate is biased
//! upwards for small sample counts.
//!
//! The class histogram counts the classifier's predicted digit for each
//! generated image. Its entropy is log2(10) ≈ 3.32 bits when every digit
//! is equally frequent, and falls towards 0 as the generator collapses onto
//! fewer digits.

use super::files::load_named_tensors;
use super::pixels_to_images;
use crate::atomic_file::write_via_temporary;
use crate::data::mnist::{self, Split};
use crate::data::shard_bounds;
use crate::network::Network;
use crate::objective::BatchSampler;
use crate::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

/// Number of digit classes.
pub const CLASSES: usize = 10;
/// Pixels of one MNIST image, the classifier's input width.
const IMAGE_PIXELS: usize = 28 * 28;
/// Hidden layer widths of the classifier; the last one is the feature width.
const HIDDEN: [usize; 2] = [256, 128];
/// Passes over the 60000 training images.
const EPOCHS: usize = 2;
/// Images per Adam step.
const BATCH_SIZE: usize = 128;
/// Adam step size at the first step; it decays linearly to 0 at the last.
const LEARNING_RATE: f64 = 2e-3;
/// Mean and standard deviation of MNIST training pixels in [-1, 1], which
/// the classifier subtracts and divides by before its first layer: inputs
/// with a mean near −0.74 slow down its training.
const PIXEL_MEAN: f64 = 2.0 * 0.1307 - 1.0;
const PIXEL_STD: f64 = 2.0 * 0.3081;
/// Seed of the initial weights and the batch order.
const SEED: u64 = 2024;
/// Random stream of the batch order.
const BATCH_STREAM: u64 = 31;
/// Lowest test accuracy at which the classifier's features and predictions
/// are trusted. Training that ends below it fails instead of being cached.
const MIN_TEST_ACCURACY: f64 = 0.97;
/// Images per forward pass when computing features.
const EVAL_BATCH: usize = 1000;
/// Maximum number of latent vectors per generator forward pass. The
/// generator runs with batch statistics in batch norm, so its images depend
/// on how the samples are split into batches. The split therefore depends
/// on the sample count alone.
const GENERATION_BATCH: usize = 500;
/// Random stream of the latent noise.
const NOISE_STREAM: u64 = 41;

/// Layer widths of the classifier, input first.
fn classifier_sizes() -> Vec<usize> {
    let mut sizes = vec![IMAGE_PIXELS];
    sizes.extend(HIDDEN);
    sizes.push(CLASSES);
    sizes
}

/// Default cache folder: `$XDG_CACHE_HOME/admm-train/classifier`, or
/// `~/.cache/admm-train/classifier` when `XDG_CACHE_HOME` is unset.
pub fn default_cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(cache) => PathBuf::from(cache),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache"),
            None => bail!(
                "cannot find a cache folder for the classifier: HOME and XDG_CACHE_HOME are \
                 unset; pass the cache folder explicitly"
            ),
        },
    };
    Ok(base.join("admm-train").join("classifier"))
}

/// Size in bytes of the MNIST file `{split}-{kind}-idx?-ubyte[.gz]` in `dir`.
fn mnist_file_size(dir: &Path, split: Split, kind: &str) -> Result<u64> {
    let rank = if kind == "images" { 3 } else { 1 };
    let path = mnist::find_file(dir, &format!("{}-{kind}-idx{rank}-ubyte", split.prefix()))?;
    let metadata =
        std::fs::metadata(&path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(metadata.len())
}

/// Stem of the classifier's cache file: the architecture, the training
/// recipe, the seed and the sizes of the training files, so that another
/// recipe or other training data never reuses a stale file.
fn classifier_key(data_dir: &Path) -> Result<String> {
    let sizes = classifier_sizes()
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let images = mnist_file_size(data_dir, Split::Train, "images")?;
    let labels = mnist_file_size(data_dir, Split::Train, "labels")?;
    Ok(format!(
        "mlp-{sizes}-standardized-adam-lr{LEARNING_RATE}-linear-decay-e{EPOCHS}-b{BATCH_SIZE}-seed{SEED}-train{images}-{labels}"
    ))
}

/// Images and labels of one MNIST split, images in [-1, 1] as `[N, 1, 28, 28]`.
fn load_labelled(data_dir: &Path, split: Split) -> Result<(Tensor, Tensor)> {
    let raw = mnist::read_raw(data_dir, split)?;
    let images = pixels_to_images(&raw.images, raw.count);
    let labels = Tensor::from_slice(&raw.labels).to_kind(Kind::Int64);
    Ok((images, labels))
}

/// Test accuracy and duration of the classifier's training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrainingSummary {
    /// Fraction of the 10000 test images classified correctly.
    pub test_accuracy: f64,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// The MNIST classifier whose features and predictions the measures use.
#[derive(Debug)]
pub struct Classifier {
    net: Network,
    training: Option<TrainingSummary>,
}

impl Classifier {
    /// Loads the classifier from `cache_dir`, or trains it on the MNIST
    /// training set in `data_dir` and stores it there. A cache file that
    /// cannot be read is logged and replaced.
    pub fn load_or_train(data_dir: &Path, cache_dir: &Path, device: Device) -> Result<Self> {
        let path = cache_dir.join(format!("{}.safetensors", classifier_key(data_dir)?));
        if path.is_file() {
            match Self::load(&path, device) {
                Ok(classifier) => {
                    info!(path = %path.display(), "loaded the quality classifier");
                    return Ok(classifier);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %format!("{e:#}"), "cached quality classifier is unreadable; training it again");
                }
            }
        }
        let classifier = Self::train(data_dir, device)?;
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("failed to create {}", cache_dir.display()))?;
        write_via_temporary(&path, |temporary| {
            classifier.net.save_safetensors(temporary)
        })?;
        info!(path = %path.display(), "cached the quality classifier");
        Ok(classifier)
    }

    /// Reads classifier weights written by [`Classifier::load_or_train`].
    fn load(path: &Path, device: Device) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut net = Network::mlp(&classifier_sizes(), device, SEED);
        load_named_tensors(&mut net, tensors, path)?;
        Ok(Self {
            net,
            training: None,
        })
    }

    /// Trains the classifier with Adam on the MNIST training set and checks
    /// its accuracy on the test set.
    pub fn train(data_dir: &Path, device: Device) -> Result<Self> {
        let started = Instant::now();
        let (images, labels) = load_labelled(data_dir, Split::Train)?;
        let inputs = images.view([-1, IMAGE_PIXELS as i64]).to_device(device);
        let labels = labels.to_device(device);
        let net = Network::mlp(&classifier_sizes(), device, SEED);
        let mut optimizer = tch::nn::Adam::default().build(net.var_store(), LEARNING_RATE)?;
        let count = labels.size()[0] as usize;
        let mut sampler = BatchSampler::new(count, BATCH_SIZE, SplitMix64::new(SEED, BATCH_STREAM));
        let steps = EPOCHS * count / sampler.batch_size();
        info!(
            steps,
            batch_size = sampler.batch_size(),
            "training the quality classifier"
        );
        for step in 0..steps {
            optimizer.set_lr(LEARNING_RATE * (1.0 - step as f64 / steps as f64));
            let indices = Tensor::from_slice(sampler.next_batch()).to_device(device);
            let logits = net.forward(&standardize(&inputs.index_select(0, &indices)));
            let targets = labels.index_select(0, &indices);
            let loss =
                logits.cross_entropy_loss::<Tensor>(&targets, None, Reduction::Mean, -100, 0.0);
            optimizer.backward_step(&loss);
        }
        let mut classifier = Self {
            net,
            training: None,
        };
        let (test_images, test_labels) = load_labelled(data_dir, Split::Test)?;
        let test_accuracy = classifier.accuracy(&test_images, &test_labels);
        let seconds = started.elapsed().as_secs_f64();
        info!(test_accuracy, seconds, "trained the quality classifier");
        if test_accuracy < MIN_TEST_ACCURACY {
            bail!(
                "the quality classifier reached {:.2}% test accuracy, below the {:.0}% its \
                 measures need; check the MNIST files in {}",
                test_accuracy * 100.0,
                MIN_TEST_ACCURACY * 100.0,
                data_dir.display()
            );
        }
        classifier.training = Some(TrainingSummary {
            test_accuracy,
            seconds,
        });
        Ok(classifier)
    }

    /// Accuracy and time of the training, when this call trained the
    /// classifier rather than loading it.
    pub fn training(&self) -> Option<TrainingSummary> {
        self.training
    }

    /// Fraction of `images` whose predicted class equals `labels`.
    pub fn accuracy(&self, images: &Tensor, labels: &Tensor) -> f64 {
        let (_, classes) = self.features_and_classes(images);
        classes
            .eq_tensor(&labels.to_device(Device::Cpu))
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    }

    /// Penultimate activations (`[N, 128]`, f32) and predicted classes
    /// (`[N]`, i64) of images in [-1, 1] of shape `[N, 1, 28, 28]`, both on
    /// the CPU.
    pub fn features_and_classes(&self, images: &Tensor) -> (Tensor, Tensor) {
        let count = images.size()[0];
        let inputs = images.reshape([count, IMAGE_PIXELS as i64]);
        let mut features = Vec::new();
        let mut classes = Vec::new();
        tch::no_grad(|| {
            for start in (0..count).step_by(EVAL_BATCH) {
                let length = (count - start).min(EVAL_BATCH as i64);
                let batch = inputs.narrow(0, start, length).to_device(self.net.device());
                let (batch_features, logits) = self.forward_layers(&batch);
                features.push(batch_features.to_device(Device::Cpu));
                classes.push(logits.argmax(1, false).to_device(Device::Cpu));
            }
        });
        (Tensor::cat(&features, 0), Tensor::cat(&classes, 0))
    }

    /// Runs the MLP layer by layer on `[N, 784]` images in [-1, 1],
    /// returning the last hidden layer's activations (after ReLU) and the
    /// logits.
    fn forward_layers(&self, inputs: &Tensor) -> (Tensor, Tensor) {
        let params = self.net.params();
        let mut x = standardize(inputs);
        let layers = params.len() / 2;
        for layer in 0..layers - 1 {
            let (weight, bias) = (&params[2 * layer].1, &params[2 * layer + 1].1);
            x = x.linear(weight, Some(bias)).relu();
        }
        let (weight, bias) = (&params[2 * layers - 2].1, &params[2 * layers - 1].1);
        let logits = x.linear(weight, Some(bias));
        (x, logits)
    }
}

/// Standardizes images in [-1, 1] with the MNIST pixel statistics.
fn standardize(inputs: &Tensor) -> Tensor {
    (inputs - PIXEL_MEAN) / PIXEL_STD
}

/// Mean and covariance of a set of feature vectors, in f64 on the CPU.
#[derive(Debug)]
pub struct FeatureStats {
    /// Mean μ, shape `[d]`.
    pub mean: Tensor,
    /// Unbiased covariance Σ (divided by count − 1), shape `[d, d]`.
    pub covariance: Tensor,
    /// Number of feature vectors.
    pub count: usize,
}

impl FeatureStats {
    /// Computes the statistics of `features` of shape `[N, d]`, N ≥ 2.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let size = features.size();
        if size.len() != 2 || size[0] < 2 {
            bail!("feature statistics need at least 2 feature rows of shape [N, d], got {size:?}");
        }
        let features = features.to_device(Device::Cpu).to_kind(Kind::Double);
        let mean = features.mean_dim(0, false, Kind::Double);
        let centered = &features - &mean;
        let covariance = centered.transpose(0, 1).mm(&centered) / (size[0] - 1) as f64;
        Ok(Self {
            mean,
            covariance,
            count: size[0] as usize,
        })
    }

    /// Writes the statistics to a safetensors file through a temporary file.
    fn save(&self, path: &Path) -> Result<()> {
        let count = Tensor::from_slice(&[self.count as i64]);
        let tensors = [
            ("mean", &self.mean),
            ("covariance", &self.covariance),
            ("count", &count),
        ];
        write_via_temporary(path, |temporary| {
            Tensor::write_safetensors(&tensors, temporary)
                .with_context(|| format!("failed to write {}", temporary.display()))
        })
    }

    /// Reads statistics written by [`FeatureStats::save`].
    fn load(path: &Path) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let take = |name: &str| -> Result<Tensor> {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .with_context(|| format!("{} has no tensor {name}", path.display()))
        };
        let mean = take("mean")?.to_kind(Kind::Double);
        let covariance = take("covariance")?.to_kind(Kind::Double);
        let count = take("count")?.int64_value(&[0]);
        let d = mean.size()[0];
        if mean.dim() != 1 || covariance.size() != [d, d] || count < 2 {
            bail!(
                "{} contains a mean of shape {:?}, a covariance of shape {:?} and count {count}; \
                 expected [d], [d, d] and at least 2",
                path.display(),
                mean.size(),
                covariance.size()
            );
        }
        Ok(Self {
            mean,
            covariance,
            count: count as usize,
        })
    }
}

/// Squared Fréchet distance between the Gaussians fitted to two feature
/// sets, `‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^{1/2})`, in f64.
///
/// Σ₁Σ₂ is not symmetric, but it is similar to the symmetric positive
/// semi-definite M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}, so tr((Σ₁Σ₂)^{1/2}) is the sum of
/// the square roots of M's eigenvalues. Σ₁^{1/2} and M's eigenvalues come
/// from symmetric eigendecompositions. Eigenvalues that rounding makes
/// slightly negative are clamped to 0, and so is a slightly negative result.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.mean.size() != b.mean.size() {
        bail!(
            "cannot compare feature statistics of widths {:?} and {:?}",
            a.mean.size(),
            b.mean.size()
        );
    }
    let mean_term = (&a.mean - &b.mean)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let sqrt_a = symmetric_sqrt(&a.covariance)?;
    let product = sqrt_a.mm(&b.covariance).mm(&sqrt_a);
    let product = (&product + product.transpose(0, 1)) / 2.0;
    let (eigenvalues, _) = product
        .f_linalg_eigh("L")
        .context("eigendecomposition of Σ₁^½ Σ₂ Σ₁^½ failed")?;
    let trace_sqrt = eigenvalues
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let traces = a.covariance.trace().double_value(&[]) + b.covariance.trace().double_value(&[]);
    let distance = mean_term + traces - 2.0 * trace_sqrt;
    if !distance.is_finite() {
        bail!("the Fréchet distance is {distance}; the feature statistics contain NaN or Inf");
    }
    Ok(distance.max(0.0))
}

/// Square root of a symmetric positive semi-definite matrix, V·diag(√λ)·Vᵀ,
/// with negative eigenvalues λ clamped to 0.
fn symmetric_sqrt(matrix: &Tensor) -> Result<Tensor> {
    let (eigenvalues, eigenvectors) = matrix
        .f_linalg_eigh("L")
        .context("eigendecomposition of a covariance matrix failed")?;
    let scaled = &eigenvectors * eigenvalues.clamp_min(0.0).sqrt().unsqueeze(0);
    Ok(scaled.mm(&eigenvectors.transpose(0, 1)))
}

/// Counts of each predicted class, from a `[N]` tensor of class indices.
pub fn class_histogram(classes: &Tensor) -> Vec<u64> {
    let counts = classes
        .to_device(Device::Cpu)
        .to_kind(Kind::Int64)
        .bincount::<Tensor>(None, CLASSES as i64);
    (0..CLASSES as i64)
        .map(|class| counts.int64_value(&[class]) as u64)
        .collect()
}

/// Entropy in bits of the class frequencies of a histogram; 0 for an
/// empty one.
pub fn entropy_bits(histogram: &[u64]) -> f64 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0.0;
    }
    histogram
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / total as f64;
            // p·log2(1/p) rather than −p·log2(p), so that one class gives
            // +0 and not −0.
            p * (1.0 / p).log2()
        })
        .sum()
}

/// The quality figures of one set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Squared Fréchet distance between the classifier features of the
    /// images and of the MNIST test set (not an Inception FID).
    pub fid: f64,
    /// Number of images the classifier assigns to each digit 0..=9.
    pub class_histogram: Vec<u64>,
    /// Entropy of the class frequencies in bits; log2(10) ≈ 3.32 is uniform.
    pub class_entropy_bits: f64,
    /// Number of images measured.
    pub samples: usize,
}

/// The classifier and the MNIST test set's feature statistics.
#[derive(Debug)]
pub struct QualityEvaluator {
    classifier: Classifier,
    reference: FeatureStats,
}

impl QualityEvaluator {
    /// Loads or trains the classifier, and loads or computes the test set's
    /// feature statistics, caching both in `cache_dir`.
    pub fn load_or_build(data_dir: &Path, cache_dir: &Path, device: Device) -> Result<Self> {
        let classifier = Classifier::load_or_train(data_dir, cache_dir, device)?;
        let test_images = mnist_file_size(data_dir, Split::Test, "images")?;
        let path = cache_dir.join(format!(
            "test-stats-{}-t10k{test_images}.safetensors",
            classifier_key(data_dir)?
        ));
        // A classifier trained in this call has new weights, so statistics
        // of an earlier one are never reused with it.
        if path.is_file() && classifier.training.is_none() {
            match FeatureStats::load(&path) {
                Ok(reference) => {
                    return Ok(Self {
                        classifier,
                        reference,
                    })
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %format!("{e:#}"), "cached test-set statistics are unreadable; computing them again");
                }
            }
        }
        let (images, _) = load_labelled(data_dir, Split::Test)?;
        let (features, _) = classifier.features_and_classes(&images);
        let reference = FeatureStats::from_features(&features)?;
        reference.save(&path)?;
        info!(path = %path.display(), "cached the test set's feature statistics");
        Ok(Self {
            classifier,
            reference,
        })
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Feature statistics of the MNIST test set.
    pub fn reference(&self) -> &FeatureStats {
        &self.reference
    }

    /// Measures images in [-1, 1] of shape `[N, 1, 28, 28]`, N ≥ 2, against
    /// the MNIST test set.
    pub fn evaluate_images(&self, images: &Tensor) -> Result<QualityReport> {
        let size = images.size();
        if size.len() != 4 || size[1..] != [1, 28, 28] {
            bail!("expected images of shape [N, 1, 28, 28], got {size:?}");
        }
        let (features, classes) = self.classifier.features_and_classes(images);
        let stats = FeatureStats::from_features(&features)?;
        let class_histogram = class_histogram(&classes);
        Ok(QualityReport {
            fid: frechet_distance(&stats, &self.reference)?,
            class_entropy_bits: entropy_bits(&class_histogram),
            class_histogram,
            samples: stats.count,
        })
    }
}

/// Generates `count` images with `generator` from latent noise of length
/// `latent_dim` drawn from `seed`, and returns them on the CPU as
/// `[count, 1, 28, 28]` in [-1, 1].
///
/// The noise is N(0, 1) from the project's SplitMix64, so it does not
/// depend on libtorch's global seed. The generator runs with batch
/// statistics in batch norm (its running statistics are not saved with
/// it), in near-equal batches of at most 500; the same seed and count
/// therefore give the same images.
pub fn generate_images(
    generator: &Network,
    latent_dim: usize,
    count: usize,
    seed: u64,
) -> Result<Tensor> {
    if count == 0 {
        bail!("the number of images to generate must be at least 1, got 0");
    }
    let mut rng = SplitMix64::new(seed, NOISE_STREAM);
    let noise: Vec<f32> = (0..count * latent_dim)
        .map(|_| rng.normal() as f32)
        .collect();
    let noise = Tensor::from_slice(&noise).view([count as i64, latent_dim as i64]);
    let batches = count.div_ceil(GENERATION_BATCH);
    let mut images = Vec::with_capacity(batches);
    tch::no_grad(|| {
        for batch in 0..batches {
            let (start, end) = shard_bounds(count, batch, batches);
            let latent = noise
                .narrow(0, start as i64, (end - start) as i64)
                .to_device(generator.device());
            images.push(generator.forward_t(&latent, true).to_device(Device::Cpu));
        }
    });
    let images = Tensor::cat(&images, 0);
    if images.isfinite().logical_not().any().int64_value(&[]) != 0 {
        bail!("the generator produced NaN or Inf pixels; its weights are unusable");
    }
    Ok(images)
}

/// Generates `samples` images from `seed` and measures them against the
/// MNIST test set.
pub fn evaluate_generator(
    evaluator: &QualityEvaluator,
    generator: &Network,
    latent_dim: usize,
    samples: usize,
    seed: u64,
) -> Result<QualityReport> {
    if samples < 2 {
        bail!("the Fréchet distance needs at least 2 samples, got {samples}");
    }
    let images = generate_images(generator, latent_dim, samples, seed)?;
    evaluator.evaluate_images(&images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(mean: &[f64], covariance: &[f64]) -> FeatureStats {
        let d = mean.len() as i64;
        FeatureStats {
            mean: Tensor::from_slice(mean),
            covariance: Tensor::from_slice(covariance).view([d, d]),
            count: 100,
        }
    }

    #[test]
    fn frechet_of_identical_stats_is_zero() {
        let a = stats(&[1.0, 2.0], &[2.0, 0.5, 0.5, 1.0]);
        let b = stats(&[1.0, 2.0], &[2.0, 0.5, 0.5, 1.0]);
        let distance = frechet_distance(&a, &b).unwrap();
        assert!(distance.abs() < 1e-10, "{distance}");
    }

    #[test]
    fn frechet_of_diagonal_stats_matches_closed_form() {
        // With commuting covariances the distance is
        // ‖μ₁ − μ₂‖² + Σ_k (√a_k − √b_k)².
        let a = stats(
            &[0.0, 1.0, 0.0],
            &[4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0],
        );
        let b = stats(
            &[3.0, 1.0, 0.0],
            &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        );
        let expected = 9.0 + (2.0f64 - 1.0).powi(2) + 0.0 + 9.0;
        let distance = frechet_distance(&a, &b).unwrap();
        assert!(
            (distance - expected).abs() < 1e-9,
            "{distance} vs {expected}"
        );
    }

    #[test]
    fn frechet_is_symmetric_for_non_commuting() {
        let a = stats(&[0.0, 0.0], &[2.0, 1.0, 1.0, 2.0]);
        let b = stats(&[1.0, -1.0], &[1.0, 0.0, 0.0, 3.0]);
        let ab = frechet_distance(&a, &b).unwrap();
        let ba = frechet_distance(&b, &a).unwrap();
        assert!((ab - ba).abs() < 1e-9, "{ab} vs {ba}");
        // Reference value from the 2×2 identity tr(√(Σ₁Σ₂)) = √(tr + 2√det)
        // of Σ₁Σ₂, whose trace is 8 and determinant 9.
        let expected = 2.0 + 4.0 + 4.0 - 2.0 * (8.0f64 + 2.0 * 3.0).sqrt();
        assert!((ab - expected).abs() < 1e-9, "{ab} vs {expected}");
    }

    #[test]
    fn frechet_rejects_mismatched_widths() {
        let a = stats(&[0.0], &[1.0]);
        let b = stats(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0]);
        let err = frechet_distance(&a, &b).unwrap_err().to_string();
        assert!(err.contains("[1] and [2]"), "{err}");
    }

    #[test]
    fn stats_of_features_match_definition() {
        let features = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 2.0, 5.0, 4.0]).view([3, 2]);
        let s = FeatureStats::from_features(&features).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(Vec::<f64>::try_from(&s.mean).unwrap(), [3.0, 2.0]);
        let covariance = Vec::<f64>::try_from(&s.covariance.view([-1])).unwrap();
        assert_eq!(covariance, [4.0, 4.0, 4.0, 4.0]);
        let one_row = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        assert!(FeatureStats::from_features(&one_row).is_err());
    }

    #[test]
    fn stats_survive_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.safetensors");
        let s = stats(&[1.0, 2.0], &[2.0, 0.5, 0.5, 1.0]);
        s.save(&path).unwrap();
        let back = FeatureStats::load(&path).unwrap();
        assert_eq!(back.count, 100);
        assert!(back.mean.equal(&s.mean));
        assert!(back.covariance.equal(&s.covariance));
    }

    #[test]
    fn entropy_of_histograms() {
        assert_eq!(entropy_bits(&[5; 10]), 10f64.log2());
        assert_eq!(entropy_bits(&[0, 0, 7, 0, 0, 0, 0, 0, 0, 0]), 0.0);
        assert_eq!(entropy_bits(&[3, 3, 0, 0, 0, 0, 0, 0, 0, 0]), 1.0);
        assert_eq!(entropy_bits(&[0; 10]), 0.0);
        let classes = Tensor::from_slice(&[0i64, 9, 9, 3]);
        assert_eq!(class_histogram(&classes), [1, 0, 0, 1, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn generated_images_repeat_with_seed() {
        let spec = super::super::GanSpec {
            latent_dim: 8,
            g_filters: 4,
            ..Default::default()
        };
        let generator = Network::generator(&spec, Device::Cpu, 1);
        let a = generate_images(&generator, 8, 1003, 5).unwrap();
        let b = generate_images(&generator, 8, 1003, 5).unwrap();
        let c = generate_images(&generator, 8, 1003, 6).unwrap();
        assert_eq!(a.size(), [1003, 1, 28, 28]);
        assert!(a.equal(&b), "same seed, same images");
        assert!(!a.equal(&c), "another seed, other images");
        assert!(generate_images(&generator, 8, 0, 5).is_err());
    }
}
