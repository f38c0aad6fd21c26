//! The models, with a fixed parameter layout and conversion between their
//! tensors and one flat `f32` vector θ, the form ADMM works on.
//!
//! The layout is the creation order of the trainable tensors: `fc0.weight`,
//! `fc0.bias`, `fc1.weight`, … for an MLP, and the names of
//! [`crate::gan::model`] for the DCGAN pair. Every process builds the same
//! layout from the same options, and the coordinator checks it at
//! registration. Buffers such as batch-norm running statistics are not
//! parameters: they stay local to each process.

use crate::rng::SplitMix64;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Random stream of the initial weights.
const INIT_STREAM: u64 = 7;

/// Name, shape and element type of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Name within the model, such as `fc0.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<i64>,
    /// Element type; always "f32".
    pub dtype: String,
}

impl ParamSpec {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }
}

/// The layers of a model, by architecture.
pub(crate) enum Architecture {
    /// Linear layers with ReLU between them.
    Mlp(Vec<nn::Linear>),
    /// A DCGAN generator or discriminator.
    Dcgan(crate::gan::model::DcganLayers),
}

/// A model in a `VarStore`, with its trainable parameters in layout order.
pub struct Network {
    vs: nn::VarStore,
    architecture: Architecture,
    params: Vec<(String, Tensor)>,
    layout: Vec<ParamSpec>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("layout", &self.layout)
            .finish()
    }
}

impl Network {
    /// Builds an MLP with layer widths `sizes` (input first, output last)
    /// on `device`, with weights drawn from `seed`.
    pub fn mlp(sizes: &[usize], device: Device, seed: u64) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut layers = Vec::new();
        let mut names = Vec::new();
        for (index, pair) in sizes.windows(2).enumerate() {
            let name = format!("fc{index}");
            layers.push(nn::linear(
                &root / name.as_str(),
                pair[0] as i64,
                pair[1] as i64,
                Default::default(),
            ));
            names.push(format!("{name}.weight"));
            names.push(format!("{name}.bias"));
        }
        let mut network = Self::from_parts(vs, Architecture::Mlp(layers), names);
        network.initialize(sizes, seed);
        network
    }

    /// Assembles a model from its variable store, layers and the names of
    /// its trainable tensors in layout order.
    pub(crate) fn from_parts(
        vs: nn::VarStore,
        architecture: Architecture,
        names: Vec<String>,
    ) -> Self {
        let variables = vs.variables();
        let params: Vec<(String, Tensor)> = names
            .into_iter()
            .map(|name| {
                let tensor = variables[&name].shallow_clone();
                (name, tensor)
            })
            .collect();
        let layout = params
            .iter()
            .map(|(name, t)| ParamSpec {
                name: name.clone(),
                shape: t.size(),
                dtype: "f32".into(),
            })
            .collect();
        Self {
            vs,
            architecture,
            params,
            layout,
        }
    }

    /// Draws every weight and bias uniformly from ±1/sqrt(fan_in), the
    /// bounds of PyTorch's default `Linear` initialization. The values come
    /// from a generator of our own rather than libtorch's global one, so
    /// that building models on several threads stays deterministic.
    fn initialize(&mut self, sizes: &[usize], seed: u64) {
        let mut rng = SplitMix64::new(seed, INIT_STREAM);
        let mut theta = Vec::with_capacity(self.num_params());
        for pair in sizes.windows(2) {
            let bound = 1.0 / (pair[0] as f64).sqrt();
            let count = pair[0] * pair[1] + pair[1];
            theta.extend((0..count).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32));
        }
        // The length matches by construction: each layer is its weight, then its bias.
        if let Err(e) = self.load_flat(&theta) {
            unreachable!("initial parameters do not fit the layout: {e}");
        }
    }

    /// Runs the forward pass in training mode (batch statistics in
    /// batch-norm layers).
    pub fn forward(&self, input: &Tensor) -> Tensor {
        self.forward_t(input, true)
    }

    /// Runs the forward pass; `train` selects batch statistics (true) or
    /// running statistics (false) in batch-norm layers.
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        match &self.architecture {
            Architecture::Mlp(layers) => {
                let mut x = input.shallow_clone();
                let last = layers.len().saturating_sub(1);
                for (index, layer) in layers.iter().enumerate() {
                    x = layer.forward(&x);
                    if index < last {
                        x = x.relu();
                    }
                }
                x
            }
            Architecture::Dcgan(layers) => layers.forward_t(input, train),
        }
    }

    /// Returns the variable store, for building optimizers.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Turns gradients of the parameters on or off, so that a model used
    /// only as a fixed critic costs no weight gradients.
    pub fn set_trainable(&mut self, trainable: bool) {
        if trainable {
            self.vs.unfreeze();
        } else {
            self.vs.freeze();
        }
    }

    /// Device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Parameter tensors in layout order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Names, shapes and types of the parameters, in layout order.
    pub fn layout(&self) -> &[ParamSpec] {
        &self.layout
    }

    /// Total number of parameters n.
    pub fn num_params(&self) -> usize {
        self.layout.iter().map(ParamSpec::numel).sum()
    }

    /// Overwrites the parameters with θ.
    pub fn load_flat(&mut self, theta: &[f32]) -> Result<()> {
        if theta.len() != self.num_params() {
            bail!(
                "parameter vector has {} values, the model has {}",
                theta.len(),
                self.num_params()
            );
        }
        let device = self.device();
        tch::no_grad(|| {
            let mut offset = 0;
            for (_, tensor) in self.params.iter_mut() {
                let numel = tensor.numel();
                let source = Tensor::from_slice(&theta[offset..offset + numel])
                    .view(tensor.size().as_slice())
                    .to_device(device);
                tensor.copy_(&source);
                offset += numel;
            }
        });
        Ok(())
    }

    /// Writes θ into `out`, resizing it to n.
    pub fn write_flat(&self, out: &mut Vec<f32>) {
        out.resize(self.num_params(), 0.0);
        // One copy per tensor straight into `out`; concatenating first
        // would allocate and fill a second buffer of the whole model.
        let mut offset = 0;
        for (_, tensor) in &self.params {
            let numel = tensor.numel();
            let cpu = tensor.to_device(Device::Cpu);
            cpu.copy_data(&mut out[offset..offset + numel], numel);
            offset += numel;
        }
    }

    /// θ as one tensor on the model's device.
    pub fn flat_tensor(&self) -> Tensor {
        tch::no_grad(|| {
            let views: Vec<Tensor> = self.params.iter().map(|(_, t)| t.reshape([-1])).collect();
            Tensor::cat(&views, 0)
        })
    }

    /// Splits a flat vector into tensors shaped like the parameters, on the
    /// model's device.
    pub fn split_flat(&self, theta: &[f32]) -> Vec<Tensor> {
        let device = self.device();
        let mut offset = 0;
        self.params
            .iter()
            .map(|(_, t)| {
                let numel = t.numel();
                let part = Tensor::from_slice(&theta[offset..offset + numel])
                    .view(t.size().as_slice())
                    .to_device(device);
                offset += numel;
                part
            })
            .collect()
    }

    /// Writes the parameters to a safetensors file under their layout names.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let cpu: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(name, t)| (name.clone(), t.to_device(Device::Cpu).to_kind(Kind::Float)))
            .collect();
        Tensor::write_safetensors(&cpu, path)
            .with_context(|| format!("failed to write {}", path.display()))
    }
}

/// Writes θ to a safetensors file with the names and shapes of `layout`.
pub fn save_flat_safetensors(layout: &[ParamSpec], theta: &[f32], path: &Path) -> Result<()> {
    let mut offset = 0;
    let mut tensors = Vec::with_capacity(layout.len());
    for spec in layout {
        let numel = spec.numel();
        let Some(values) = theta.get(offset..offset + numel) else {
            bail!(
                "parameter vector of {} values is too short for the layout",
                theta.len()
            );
        };
        tensors.push((
            spec.name.clone(),
            Tensor::from_slice(values).view(spec.shape.as_slice()),
        ));
        offset += numel;
    }
    Tensor::write_safetensors(&tensors, path)
        .with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_round_trip() {
        let mut net = Network::mlp(&[3, 4, 2], Device::Cpu, 1);
        assert_eq!(net.num_params(), 3 * 4 + 4 + 4 * 2 + 2);
        let names: Vec<&str> = net.layout().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"]);
        let theta: Vec<f32> = (0..net.num_params()).map(|i| i as f32 / 10.0).collect();
        net.load_flat(&theta).unwrap();
        let mut back = Vec::new();
        net.write_flat(&mut back);
        assert_eq!(back, theta);
    }

    #[test]
    fn same_seed_same_weights() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Network::mlp(&[5, 3], Device::Cpu, 9).write_flat(&mut a);
        Network::mlp(&[5, 3], Device::Cpu, 9).write_flat(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_length_rejected() {
        let mut net = Network::mlp(&[2, 1], Device::Cpu, 0);
        let err = net.load_flat(&[0.0; 2]).unwrap_err().to_string();
        assert!(err.contains("has 2 values, the model has 3"), "{err}");
    }
}
