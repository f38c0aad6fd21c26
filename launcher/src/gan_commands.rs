//! The `gan-eval` and `gan-export` subcommands: quality measures of a saved
//! generator, and its samples as an IDX images file.

use admm_problems::gan::files::{export_generated_images, load_generator_sized, GeneratorSize};
use admm_problems::gan::quality::{
    default_cache_dir, evaluate_generator, QualityEvaluator, QualityReport, CLASSES,
};
use admm_problems::gan::GanSpec;
use admm_problems::Network;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tracing::info;

/// Help shared by the `--generator` options.
const GENERATOR_HELP: &str = "Saved generator: a run directory (reads generator.safetensors, \
    else the checkpoint that checkpoints/LATEST names), a checkpoint folder (reads the tensor \
    `generator` from state.safetensors), or a .safetensors file with the generator's tensors \
    under their layout names";

/// Options of `admm-train gan-eval`.
#[derive(Debug, clap::Args)]
pub struct GanEvalArgs {
    #[arg(long, help = GENERATOR_HELP)]
    generator: PathBuf,
    /// Number of images to generate and measure (at least 2). Distances
    /// from different sample counts are not comparable.
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// Seed of the latent noise; the same seed gives the same images and
    /// figures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder of the four MNIST IDX files. The classifier trains on the
    /// training set, and the images are compared with the test set.
    #[arg(long, env = "ADMM_MNIST_DIR")]
    data_dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Device of the generator and the classifier: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Folder that caches the classifier's weights and the test set's
    /// feature statistics [default: ~/.cache/admm-train/classifier].
    #[arg(long, env = "ADMM_CLASSIFIER_CACHE")]
    classifier_cache: Option<PathBuf>,
    #[command(flatten)]
    size: SizeArgs,
}

/// Options of `admm-train gan-export`.
#[derive(Debug, clap::Args)]
pub struct GanExportArgs {
    #[arg(long, help = GENERATOR_HELP)]
    generator: PathBuf,
    /// Number of images to write.
    #[arg(long)]
    count: usize,
    /// IDX images file to write: magic 2051, dimensions [count, 28, 28],
    /// u8 pixels with 0 as background, like the MNIST images files.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the latent noise; the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device of the generator: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    size: SizeArgs,
}

/// Generator sizes for a checkpoint whose flat vector fits several.
#[derive(Debug, clap::Args)]
struct SizeArgs {
    /// Length of the generator's latent vector. Needed only for a checkpoint
    /// whose generator sizes cannot be inferred; otherwise read from the
    /// file and checked against this value.
    #[arg(long, requires = "g_filters")]
    latent_dim: Option<usize>,
    /// Base number of generator filters; given together with --latent-dim.
    #[arg(long, requires = "latent_dim")]
    g_filters: Option<usize>,
}

impl SizeArgs {
    fn size(&self) -> Option<GeneratorSize> {
        Some(GeneratorSize {
            latent_dim: self.latent_dim?,
            g_filters: self.g_filters?,
        })
    }
}

/// Loads the generator named by `--generator` onto `device`.
fn load(path: &Path, device: &str, size: &SizeArgs) -> Result<(Network, GanSpec)> {
    let device = admm_problems::parse_device(device)?;
    let (generator, spec) = load_generator_sized(path, device, size.size())?;
    info!(
        path = %path.display(),
        latent_dim = spec.latent_dim,
        g_filters = spec.g_filters,
        "loaded the generator"
    );
    Ok((generator, spec))
}

/// Runs `gan-eval`: generates images, measures them, prints the report and
/// writes it as JSON when `--json` is given.
pub fn run_gan_eval(args: GanEvalArgs) -> Result<()> {
    if args.samples < 2 {
        bail!("--samples must be at least 2, got {}", args.samples);
    }
    let Some(data_dir) = args.data_dir.as_deref() else {
        bail!("gan-eval needs the MNIST folder: pass --data-dir DIR or set ADMM_MNIST_DIR");
    };
    let cache_dir = match &args.classifier_cache {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let (generator, spec) = load(&args.generator, &args.device, &args.size)?;
    let evaluator = QualityEvaluator::load_or_build(data_dir, &cache_dir, generator.device())?;
    info!(
        samples = args.samples,
        seed = args.seed,
        "generating and measuring images"
    );
    let report = evaluate_generator(
        &evaluator,
        &generator,
        spec.latent_dim,
        args.samples,
        args.seed,
    )?;
    print_report(&args.generator, &spec, args.seed, &report);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        admm_problems::atomic_file::write_bytes(path, &json)?;
        info!(path = %path.display(), "report written");
    }
    Ok(())
}

/// Prints a quality report for a reader.
fn print_report(path: &Path, spec: &GanSpec, seed: u64, report: &QualityReport) {
    println!(
        "generator {} (latent {}, {} filters): {} samples, seed {seed}",
        path.display(),
        spec.latent_dim,
        spec.g_filters,
        report.samples
    );
    println!(
        "FID on classifier features: {:.4} (not comparable with Inception FIDs)",
        report.fid
    );
    println!(
        "class entropy: {:.4} bits (uniform classes: {:.4})",
        report.class_entropy_bits,
        (CLASSES as f64).log2()
    );
    println!("class histogram:");
    for (digit, &count) in report.class_histogram.iter().enumerate() {
        let share = 100.0 * count as f64 / report.samples as f64;
        println!("  {digit}: {count:>7} ({share:5.1}%)");
    }
}

/// Runs `gan-export`: writes `--count` generated images as an IDX file.
pub fn run_gan_export(args: GanExportArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1, got 0");
    }
    let (generator, spec) = load(&args.generator, &args.device, &args.size)?;
    export_generated_images(
        &generator,
        spec.latent_dim,
        args.count,
        args.seed,
        &args.out,
    )?;
    println!(
        "wrote {} generated images to {}",
        args.count,
        args.out.display()
    );
    Ok(())
}
