//! The quality measures on real MNIST: the classifier, the Fréchet distance
//! between real and noise images, and the class entropy of the test set.
//!
//! Needs the MNIST IDX files in the folder that `ADMM_MNIST_DIR` names. The
//! classifier is trained once per run of this binary, in a temporary cache
//! folder, so that training and loading from the cache are both exercised.

use admm_problems::data::mnist::Split;
use admm_problems::gan::files::save_generator;
use admm_problems::gan::load_images;
use admm_problems::gan::quality::{
    entropy_bits, evaluate_generator, frechet_distance, Classifier, FeatureStats, QualityEvaluator,
    CLASSES,
};
use admm_problems::gan::GanSpec;
use admm_problems::rng::SplitMix64;
use admm_problems::Network;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use tch::{Device, Tensor};

/// Images compared per set.
const SAMPLES: usize = 10_000;

fn mnist_dir() -> PathBuf {
    match std::env::var_os("ADMM_MNIST_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "set ADMM_MNIST_DIR to the folder of the four MNIST IDX files to run the quality \
             tests"
        ),
    }
}

/// The evaluator built once for all tests, and its cache folder.
struct Shared {
    evaluator: QualityEvaluator,
    cache: tempfile::TempDir,
}

/// Runs `check` with the shared evaluator, building it on first use. Tensors
/// are not `Sync`, so the tests take turns through a mutex.
fn with_shared<T>(check: impl FnOnce(&Shared) -> T) -> T {
    static SHARED: Mutex<Option<Shared>> = Mutex::new(None);
    let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = guard.get_or_insert_with(|| {
        let cache = tempfile::tempdir().expect("temporary cache folder");
        let evaluator = QualityEvaluator::load_or_build(&mnist_dir(), cache.path(), Device::Cpu)
            .expect("classifier and test-set statistics");
        let training = evaluator
            .classifier()
            .training()
            .expect("an empty cache folder means the classifier was trained");
        println!(
            "classifier: test accuracy {:.2}%, trained in {:.1} s",
            training.test_accuracy * 100.0,
            training.seconds
        );
        Shared { evaluator, cache }
    });
    check(shared)
}

/// Uniform noise images in [-1, 1].
fn noise_images(count: usize, seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed, 0);
    let values: Vec<f32> = (0..count * 784)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    Tensor::from_slice(&values).view([count as i64, 1, 28, 28])
}

#[test]
fn classifier_reaches_accuracy() {
    let training = with_shared(|shared| shared.evaluator.classifier().training().unwrap());
    assert!(
        training.test_accuracy >= 0.97,
        "test accuracy {}",
        training.test_accuracy
    );
}

#[test]
fn cached_classifier_gives_same_features() {
    with_shared(|shared| {
        let images = load_images(&mnist_dir(), Split::Test, 200).unwrap();
        let cached =
            Classifier::load_or_train(&mnist_dir(), shared.cache.path(), Device::Cpu).unwrap();
        assert!(cached.training().is_none(), "loaded from the cache");
        let (trained_features, trained_classes) =
            shared.evaluator.classifier().features_and_classes(&images);
        let (cached_features, cached_classes) = cached.features_and_classes(&images);
        assert!(trained_features.equal(&cached_features));
        assert!(trained_classes.equal(&cached_classes));

        let again = QualityEvaluator::load_or_build(&mnist_dir(), shared.cache.path(), Device::Cpu)
            .unwrap();
        assert!(again
            .reference()
            .mean
            .equal(&shared.evaluator.reference().mean));
        assert!(again
            .reference()
            .covariance
            .equal(&shared.evaluator.reference().covariance));
    });
}

#[test]
fn frechet_separates_real_from_noise() {
    with_shared(|shared| {
        let evaluator = &shared.evaluator;
        let train = load_images(&mnist_dir(), Split::Train, SAMPLES).unwrap();
        let (features, _) = evaluator.classifier().features_and_classes(&train);
        let train_stats = FeatureStats::from_features(&features).unwrap();
        let test_vs_train = frechet_distance(evaluator.reference(), &train_stats).unwrap();
        let noise = evaluator
            .evaluate_images(&noise_images(SAMPLES, 1))
            .unwrap();
        println!(
            "classifier-feature FID: test vs train {test_vs_train:.4}, noise vs test {:.4}",
            noise.fid
        );
        assert!(test_vs_train.is_finite());
        assert!(test_vs_train >= 0.0);
        assert!(
            test_vs_train < 0.05 * noise.fid,
            "test vs train {test_vs_train} is not below 5% of noise vs test {}",
            noise.fid
        );
        assert_eq!(noise.samples, SAMPLES);
    });
}

#[test]
fn test_set_entropy_near_uniform() {
    with_shared(|shared| {
        let evaluator = &shared.evaluator;
        let test = load_images(&mnist_dir(), Split::Test, 0).unwrap();
        let report = evaluator.evaluate_images(&test).unwrap();
        let uniform = (CLASSES as f64).log2();
        println!(
        "test set: class entropy {:.4} bits (uniform {uniform:.4}), FID against itself {:.2e}, \
         histogram {:?}",
        report.class_entropy_bits, report.fid, report.class_histogram
    );
        assert_eq!(report.class_histogram.iter().sum::<u64>(), 10_000);
        assert_eq!(
            report.class_entropy_bits,
            entropy_bits(&report.class_histogram)
        );
        assert!(
            (report.class_entropy_bits - uniform).abs() < 0.02,
            "entropy {} bits",
            report.class_entropy_bits
        );
        assert!(
            report.fid < 1e-6,
            "the test set against itself: {}",
            report.fid
        );
    });
}

#[test]
fn generator_report_repeats() {
    with_shared(|shared| {
        let evaluator = &shared.evaluator;
        let spec = GanSpec::default();
        let generator = Network::generator(&spec, Device::Cpu, 4);
        let first = evaluate_generator(evaluator, &generator, spec.latent_dim, 1000, 9).unwrap();
        let second = evaluate_generator(evaluator, &generator, spec.latent_dim, 1000, 9).unwrap();
        println!("untrained generator: {first:?}");
        assert_eq!(first, second);
        assert_eq!(first.samples, 1000);
        assert_eq!(first.class_histogram.len(), CLASSES);
        assert_eq!(first.class_histogram.iter().sum::<u64>(), 1000);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generator.safetensors");
        save_generator(&generator, &path).unwrap();
        let (loaded, loaded_spec) =
            admm_problems::gan::files::load_generator(dir.path(), Device::Cpu).unwrap();
        let reloaded =
            evaluate_generator(evaluator, &loaded, loaded_spec.latent_dim, 1000, 9).unwrap();
        assert_eq!(reloaded, first);

        let json = serde_json::to_value(&first).unwrap();
        for field in ["fid", "class_histogram", "class_entropy_bits", "samples"] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
    });
}
