//! The DCGAN pair for 28×28 MNIST: a generator from a latent vector to an
//! image in [-1, 1] and a discriminator from an image to one logit.
//!
//! ```text
//! generator      z [B, L] → convT 7×7 → 2f×7×7 → BN, ReLU
//!                         → convT 4×4 /2 → f×14×14 → BN, ReLU
//!                         → convT 4×4 /2 → 1×28×28 → tanh
//! discriminator  x [B, 1, 28, 28] → conv 4×4 /2 → f×14×14 → LeakyReLU(0.2)
//!                         → conv 4×4 /2 → 2f×7×7 → BN, LeakyReLU(0.2)
//!                         → conv 7×7 → logit [B]
//! ```
//!
//! Convolutions carry no bias (batch norm follows them, or the logit needs
//! none), as in Radford et al. Weights are drawn from N(0, 0.02²) and
//! batch-norm scales from N(1, 0.02²) with a generator of our own, so every
//! process builds the same initial parameters from the same seed.

use super::GanSpec;
use crate::network::{Architecture, Network};
use crate::rng::SplitMix64;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

/// Side of an MNIST image in pixels.
pub const IMAGE_SIDE: i64 = 28;
/// Negative slope of the discriminator's LeakyReLU.
const LEAKY_SLOPE: f64 = 0.2;
/// Standard deviation of the initial weights.
const INIT_STD: f64 = 0.02;
/// Random streams of the initial weights, one per model.
const GENERATOR_STREAM: u64 = 11;
const DISCRIMINATOR_STREAM: u64 = 12;

/// The layers of one DCGAN model.
pub enum DcganLayers {
    /// Latent vector to image.
    Generator {
        /// Length L of the latent vector.
        latent: i64,
        /// The three transposed convolutions.
        convs: Vec<nn::ConvTranspose2D>,
        /// Batch norms after the first two.
        norms: Vec<nn::BatchNorm>,
    },
    /// Image to logit.
    Discriminator {
        /// The three convolutions.
        convs: Vec<nn::Conv2D>,
        /// Batch norm after the second.
        norm: nn::BatchNorm,
    },
}

impl DcganLayers {
    /// Runs the model; `train` selects batch statistics in batch norm.
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        match self {
            DcganLayers::Generator {
                latent,
                convs,
                norms,
            } => {
                let mut x = input.view([-1, *latent, 1, 1]);
                for (conv, norm) in convs.iter().zip(norms) {
                    x = norm.forward_t(&conv.forward_t(&x, train), train).relu();
                }
                convs[2].forward_t(&x, train).tanh()
            }
            DcganLayers::Discriminator { convs, norm } => {
                let x = input.view([-1, 1, IMAGE_SIDE, IMAGE_SIDE]);
                let x = leaky_relu(&convs[0].forward_t(&x, train));
                let x = leaky_relu(&norm.forward_t(&convs[1].forward_t(&x, train), train));
                convs[2].forward_t(&x, train).view([-1])
            }
        }
    }
}

/// LeakyReLU with slope [`LEAKY_SLOPE`]: max(x, 0.2·x).
fn leaky_relu(x: &Tensor) -> Tensor {
    x.maximum(&(x * LEAKY_SLOPE))
}

impl Network {
    /// Builds the DCGAN generator of `spec` on `device`, with weights drawn
    /// from `seed`. Layout: `convt0.weight`, `bn0.weight`, `bn0.bias`,
    /// `convt1.weight`, `bn1.weight`, `bn1.bias`, `convt2.weight`.
    pub fn generator(spec: &GanSpec, device: Device, seed: u64) -> Network {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (latent, f) = (spec.latent_dim as i64, spec.g_filters as i64);
        let channels = [
            (latent, 2 * f, 7, 1, 0),
            (2 * f, f, 4, 2, 1),
            (f, 1, 4, 2, 1),
        ];
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut names = Vec::new();
        for (index, &(input, output, kernel, stride, padding)) in channels.iter().enumerate() {
            let name = format!("convt{index}");
            let config = nn::ConvTransposeConfig {
                stride,
                padding,
                bias: false,
                ..Default::default()
            };
            convs.push(nn::conv_transpose2d(
                &root / name.as_str(),
                input,
                output,
                kernel,
                config,
            ));
            names.push(format!("{name}.weight"));
            if index < 2 {
                norms.push(batch_norm(&root, index, output, &mut names));
            }
        }
        let layers = DcganLayers::Generator {
            latent,
            convs,
            norms,
        };
        let mut net = Network::from_parts(vs, Architecture::Dcgan(layers), names);
        initialize(&mut net, SplitMix64::new(seed, GENERATOR_STREAM));
        net
    }

    /// Builds the DCGAN discriminator of `spec` on `device`, with weights
    /// drawn from `seed`. Layout: `conv0.weight`, `conv1.weight`,
    /// `bn1.weight`, `bn1.bias`, `conv2.weight`.
    pub fn discriminator(spec: &GanSpec, device: Device, seed: u64) -> Network {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let f = spec.d_filters as i64;
        let channels = [(1, f, 4, 2, 1), (f, 2 * f, 4, 2, 1), (2 * f, 1, 7, 1, 0)];
        let mut convs = Vec::new();
        let mut names = Vec::new();
        let mut norm = None;
        for (index, &(input, output, kernel, stride, padding)) in channels.iter().enumerate() {
            let name = format!("conv{index}");
            let config = nn::ConvConfig {
                stride,
                padding,
                bias: false,
                ..Default::default()
            };
            convs.push(nn::conv2d(
                &root / name.as_str(),
                input,
                output,
                kernel,
                config,
            ));
            names.push(format!("{name}.weight"));
            if index == 1 {
                norm = Some(batch_norm(&root, index, output, &mut names));
            }
        }
        let norm = norm.expect("the second layer always has a batch norm");
        let layers = DcganLayers::Discriminator { convs, norm };
        let mut net = Network::from_parts(vs, Architecture::Dcgan(layers), names);
        initialize(&mut net, SplitMix64::new(seed, DISCRIMINATOR_STREAM));
        net
    }
}

/// Adds batch norm `bn{index}` over `channels` channels after layer
/// `index`, and appends its scale and shift to the layout `names`.
fn batch_norm(
    root: &nn::Path,
    index: usize,
    channels: i64,
    names: &mut Vec<String>,
) -> nn::BatchNorm {
    let name = format!("bn{index}");
    let norm = nn::batch_norm2d(root / name.as_str(), channels, Default::default());
    names.push(format!("{name}.weight"));
    names.push(format!("{name}.bias"));
    norm
}

/// Draws the DCGAN initial values: N(0, 0.02²) for convolutions, N(1, 0.02²)
/// for batch-norm scales and 0 for batch-norm shifts.
fn initialize(net: &mut Network, mut rng: SplitMix64) {
    let mut theta = Vec::with_capacity(net.num_params());
    for spec in net.layout() {
        let (mean, std) = if spec.name.starts_with("bn") {
            if spec.name.ends_with(".bias") {
                (0.0, 0.0)
            } else {
                (1.0, INIT_STD)
            }
        } else {
            (0.0, INIT_STD)
        };
        theta.extend((0..spec.numel()).map(|_| (mean + std * rng.normal()) as f32));
    }
    if let Err(e) = net.load_flat(&theta) {
        unreachable!("initial parameters do not fit the layout: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn shapes_match_mnist() {
        let spec = GanSpec::default();
        let g = Network::generator(&spec, Device::Cpu, 0);
        let d = Network::discriminator(&spec, Device::Cpu, 0);
        let noise = Tensor::randn([5, spec.latent_dim as i64], (Kind::Float, Device::Cpu));
        let images = g.forward_t(&noise, true);
        assert_eq!(images.size(), [5, 1, 28, 28]);
        assert!(images.abs().max().double_value(&[]) <= 1.0);
        assert_eq!(d.forward_t(&images, true).size(), [5]);
    }

    #[test]
    fn layouts_list_only_trainable_tensors() {
        let spec = GanSpec::default();
        let g = Network::generator(&spec, Device::Cpu, 0);
        let names: Vec<&str> = g.layout().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "convt0.weight",
                "bn0.weight",
                "bn0.bias",
                "convt1.weight",
                "bn1.weight",
                "bn1.bias",
                "convt2.weight"
            ]
        );
        let d = Network::discriminator(&spec, Device::Cpu, 0);
        assert_eq!(d.layout().len(), 5);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.write_flat(&mut a);
        Network::discriminator(&spec, Device::Cpu, 0).write_flat(&mut b);
        assert_eq!(a, b, "same seed, same weights");
    }
}
