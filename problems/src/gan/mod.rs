//! The second problem: a DCGAN on MNIST whose discriminator objective is
//! split into a real-data half and a fake-data half held in consensus.
//!
//! ```text
//! d1 (real half):  minimize −E_x[log D(x; θ)]          = BCE(D(x), 1)
//! d2 (fake half):  minimize −E_z[log(1 − D(G(z); θ))]  = BCE(D(G(z)), 0)
//! consensus:       θ_d1 = θ_d2 = z at the coordinator
//! generator:       minimize −E_z[log D(G(z); z)], against the consensus
//! ```
//!
//! Workers `0..real_workers` hold the real half, each on its shard of the
//! training images; the others hold the fake half, each drawing its own
//! noise. Each worker's term is weighted by 1/(workers in its half), so the
//! terms of a half add up to that half's expectation.
//!
//! The generator lives at the coordinator ([`trainer`]). It is trained
//! against z, which only the coordinator holds whole at the end of a round;
//! it must be the same for every fake-half worker, which a single owner
//! broadcasting its parameters guarantees; and the coordinator already writes
//! the checkpoints and the outputs it must appear in. The cost is the
//! generator's steps on the coordinator between rounds, small next to the
//! discriminator's local steps for the models here.
//!
//! - [`model`]: the generator and discriminator networks.
//! - [`local`]: a worker's half of the discriminator objective.
//! - [`trainer`]: the coordinator's generator, diagnostics and sample grids.
//! - [`vanilla`]: the same DCGAN trained the ordinary way in one process.
//! - [`quality`]: Fréchet distance on classifier features, class histogram.

pub mod local;
pub mod model;
pub mod trainer;
pub mod vanilla;

use crate::data::mnist::{self, Split};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Kind, Reduction, Tensor};

/// Role string of a real-half worker at registration.
pub const ROLE_REAL: &str = "real";
/// Role string of a fake-half worker at registration.
pub const ROLE_FAKE: &str = "fake";

/// Options of the GAN problem that every process of a run shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct GanSpec {
    /// GAN: length of the generator's latent vector.
    #[arg(long, default_value_t = 64)]
    pub latent_dim: usize,
    /// GAN: base number of generator filters f (layers have 2f and f).
    #[arg(long, default_value_t = 32)]
    pub g_filters: usize,
    /// GAN: base number of discriminator filters f (layers have f and 2f).
    #[arg(long, default_value_t = 32)]
    pub d_filters: usize,
    /// GAN: workers 0..K−1 hold the real-data half of the discriminator
    /// objective, the rest the fake-data half.
    #[arg(long, default_value_t = 1)]
    pub real_workers: usize,
    /// GAN: weight w of the other half's term added to each half's
    /// objective (0 is the plain split; try 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub cross_weight: f64,
}

impl Default for GanSpec {
    fn default() -> Self {
        Self {
            latent_dim: 64,
            g_filters: 32,
            d_filters: 32,
            real_workers: 1,
            cross_weight: 0.0,
        }
    }
}

impl GanSpec {
    /// Model name, for example `gan/dcgan-l64-g32-d32`.
    pub fn model_id(&self) -> String {
        format!(
            "gan/dcgan-l{}-g{}-d{}",
            self.latent_dim, self.g_filters, self.d_filters
        )
    }

    /// Checks the options, naming the first invalid value.
    pub fn validate(&self) -> Result<()> {
        if self.latent_dim == 0 || self.g_filters == 0 || self.d_filters == 0 {
            bail!(
                "--latent-dim, --g-filters and --d-filters must be at least 1, got {}, {} and {}",
                self.latent_dim,
                self.g_filters,
                self.d_filters
            );
        }
        if self.real_workers == 0 {
            bail!("--real-workers must be at least 1, got 0");
        }
        if !(self.cross_weight.is_finite() && self.cross_weight >= 0.0) {
            bail!(
                "--cross-weight must be non-negative, got {}",
                self.cross_weight
            );
        }
        Ok(())
    }

    /// Checks that `workers` leaves at least one worker for each half.
    pub fn check_workers(&self, workers: usize) -> Result<()> {
        if workers <= self.real_workers {
            bail!(
                "the GAN split needs workers for both halves: --workers {workers} with \
                 --real-workers {} leaves none for the fake half; use --workers {} or more",
                self.real_workers,
                self.real_workers + 1
            );
        }
        Ok(())
    }

    /// Role of worker `index`: [`ROLE_REAL`] or [`ROLE_FAKE`].
    pub fn role(&self, index: usize) -> &'static str {
        if index < self.real_workers {
            ROLE_REAL
        } else {
            ROLE_FAKE
        }
    }
}

/// Mean binary cross-entropy of `logits` against the constant `label`,
/// computed from the logits (stable for any logit, never log of a sigmoid).
pub fn bce_with_logits(logits: &Tensor, label: f64) -> Tensor {
    let target = logits.full_like(label);
    logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean)
}

/// Loads MNIST images scaled to [-1, 1], the generator's tanh range, as
/// `[count, 1, 28, 28]` (the first `limit` when non-zero).
pub fn load_images(dir: &Path, split: Split, limit: usize) -> Result<Tensor> {
    let raw = mnist::read_raw(dir, split)?;
    let count = if limit == 0 {
        raw.count
    } else {
        limit.min(raw.count)
    };
    Ok(pixels_to_images(&raw.images[..count * 784], count))
}

/// Converts u8 pixels (0 is background) to images in [-1, 1].
pub fn pixels_to_images(pixels: &[u8], count: usize) -> Tensor {
    Tensor::from_slice(pixels)
        .view([count as i64, 1, 28, 28])
        .to_kind(Kind::Float)
        .divide_scalar(127.5)
        .subtract_scalar(1.0)
}

/// Converts images in [-1, 1] to u8 pixels with 0 as background, the
/// inverse of [`pixels_to_images`] up to rounding.
pub fn images_to_pixels(images: &Tensor) -> Vec<u8> {
    let pixels = images
        .to_device(tch::Device::Cpu)
        .g_add_scalar(1.0)
        .multiply_scalar(127.5)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous()
        .view([-1]);
    let mut out = vec![0u8; pixels.numel()];
    let len = out.len();
    pixels.copy_data(&mut out, len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_from_logits_is_finite_at_extremes() {
        for logit in [-50.0f32, 50.0] {
            let logits = Tensor::from_slice(&[logit; 4]);
            for label in [0.0, 1.0] {
                let loss = bce_with_logits(&logits, label).double_value(&[]);
                println!("logit {logit}, label {label}: loss {loss}");
                assert!(loss.is_finite(), "logit {logit}, label {label}: {loss}");
            }
        }
        let wrong = bce_with_logits(&Tensor::from_slice(&[-50.0f32]), 1.0).double_value(&[]);
        assert!((wrong - 50.0).abs() < 1e-3, "{wrong}");
    }

    #[test]
    fn real_and_generated_images_share_one_range() {
        let pixels: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        let images = pixels_to_images(&pixels, 1);
        assert_eq!(images.min().double_value(&[]), -1.0);
        assert_eq!(images.max().double_value(&[]), 1.0);
        assert_eq!(images_to_pixels(&images), pixels);
        let spec = GanSpec::default();
        let g = crate::Network::generator(&spec, tch::Device::Cpu, 3);
        let noise = Tensor::randn([8, 64], (Kind::Float, tch::Device::Cpu)) * 100.0;
        let generated = g.forward_t(&noise, true);
        assert!(generated.min().double_value(&[]) >= -1.0);
        assert!(generated.max().double_value(&[]) <= 1.0);
    }

    #[test]
    fn roles_follow_worker_ids() {
        let spec = GanSpec {
            real_workers: 2,
            ..Default::default()
        };
        assert_eq!(
            (0..4).map(|i| spec.role(i)).collect::<Vec<_>>(),
            [ROLE_REAL, ROLE_REAL, ROLE_FAKE, ROLE_FAKE]
        );
        let err = spec.check_workers(2).unwrap_err().to_string();
        assert!(err.contains("--workers 3 or more"), "{err}");
    }
}
