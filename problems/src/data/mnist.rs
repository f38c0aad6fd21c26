//! The MNIST training and test sets from a folder of IDX files.

use super::idx::{read_idx, IdxError, IMAGES_MAGIC, LABELS_MAGIC};
use super::Dataset;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Mean and standard deviation of MNIST training pixels scaled to [0, 1],
/// used to standardize the classifier's inputs.
const PIXEL_MEAN: f64 = 0.1307;
const PIXEL_STD: f64 = 0.3081;

/// Half of MNIST to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// 60000 training images.
    Train,
    /// 10000 test images.
    Test,
}

impl Split {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Finds `name` or `name.gz` in `dir`; the content decides how it is read.
pub(crate) fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [name.to_string(), format!("{name}.gz")] {
        let path = dir.join(&candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "MNIST file {name} (or {name}.gz) not found in {}; pass --data-dir with the folder \
         holding the four IDX files",
        dir.display()
    )
}

/// Raw MNIST images (u8, 0 is background) and labels of one split.
#[derive(Debug, Clone)]
pub struct RawMnist {
    /// `count × 28 × 28` pixels.
    pub images: Vec<u8>,
    /// `count` labels in 0..=9.
    pub labels: Vec<u8>,
    /// Number of images.
    pub count: usize,
}

/// Reads one split, checking that images and labels agree.
pub fn read_raw(dir: &Path, split: Split) -> Result<RawMnist> {
    let images_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
    let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
    let images = read_idx(&images_path, IMAGES_MAGIC)?;
    let labels = read_idx(&labels_path, LABELS_MAGIC)?;
    if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 {
        return Err(IdxError::Shape {
            path: images_path,
            dims: images.dims,
            expected: "[count, 28, 28]".into(),
        }
        .into());
    }
    let count = images.dims[0];
    if count == 0 {
        bail!(
            "{} contains no images; replace it with the original MNIST file",
            images_path.display()
        );
    }
    if labels.dims != [count] {
        return Err(IdxError::Shape {
            path: labels_path,
            dims: labels.dims,
            expected: format!("[{count}] to match {}", images_path.display()),
        }
        .into());
    }
    if let Some(bad) = labels.values.iter().find(|&&l| l > 9) {
        bail!(
            "{} contains invalid label {bad}, expected 0..=9; the file is corrupt, download it \
             again",
            labels_path.display()
        );
    }
    Ok(RawMnist {
        images: images.values,
        labels: labels.values,
        count,
    })
}

/// Loads one split as standardized `[count, 784]` inputs and `i64` labels,
/// keeping the first `limit` images when `limit` is non-zero.
pub fn load(dir: &Path, split: Split, limit: usize) -> Result<Dataset> {
    let raw = read_raw(dir, split)?;
    let count = if limit == 0 {
        raw.count
    } else {
        limit.min(raw.count)
    };
    let pixels = &raw.images[..count * 784];
    // In-place steps: a chain of out-of-place ones keeps every intermediate
    // alive until the statement ends, four float copies of the images.
    let mut inputs = Tensor::from_slice(pixels)
        .view([count as i64, 784])
        .to_kind(Kind::Float);
    let _ = inputs.divide_scalar_(255.0);
    let _ = inputs.subtract_scalar_(PIXEL_MEAN);
    let _ = inputs.divide_scalar_(PIXEL_STD);
    let targets = Tensor::from_slice(&raw.labels[..count]).to_kind(Kind::Int64);
    Ok(Dataset { inputs, targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an uncompressed IDX file with big-endian `dims` and `values`.
    fn write_idx(path: &Path, type_and_rank: u32, dims: &[u32], values: &[u8]) {
        let mut bytes = type_and_rank.to_be_bytes().to_vec();
        for dim in dims {
            bytes.extend(dim.to_be_bytes());
        }
        bytes.extend(values);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn load_standardizes_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 784).map(|i| (i % 256) as u8).collect();
        write_idx(
            &dir.path().join("t10k-images-idx3-ubyte"),
            0x0803,
            &[2, 28, 28],
            &pixels,
        );
        write_idx(
            &dir.path().join("t10k-labels-idx1-ubyte"),
            0x0801,
            &[2],
            &[7, 1],
        );

        let data = load(dir.path(), Split::Test, 0).unwrap();
        assert_eq!(data.inputs.size(), [2, 784]);
        let inputs = Vec::<f32>::try_from(data.inputs.view([-1])).unwrap();
        for (index, (&pixel, &value)) in pixels.iter().zip(&inputs).enumerate() {
            let expected = ((f64::from(pixel) / 255.0 - PIXEL_MEAN) / PIXEL_STD) as f32;
            assert!(
                (value - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "pixel {index}: {value} != {expected}"
            );
        }
        let labels = Vec::<i64>::try_from(&data.targets).unwrap();
        assert_eq!(labels, [7, 1]);
    }
}
