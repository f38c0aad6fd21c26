//! Training data: MNIST from IDX files and the synthetic regression set.
//! Both end as a [`Dataset`] of input rows and targets on the CPU.

pub mod idx;
pub mod mnist;
pub mod regression;

use tch::Tensor;

/// Inputs (one row per sample, `f32`) and targets (`f32` rows for
/// regression, `i64` class labels for classification).
#[derive(Debug)]
pub struct Dataset {
    /// Shape `[samples, features]`.
    pub inputs: Tensor,
    /// Shape `[samples, outputs]` or `[samples]`.
    pub targets: Tensor,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.inputs.size()[0] as usize
    }

    /// Returns whether the set has no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start..end`, sharing memory with `self`.
    pub fn slice(&self, start: usize, end: usize) -> Dataset {
        Dataset {
            inputs: self.inputs.narrow(0, start as i64, (end - start) as i64),
            targets: self.targets.narrow(0, start as i64, (end - start) as i64),
        }
    }

    /// Copies both tensors into memory of their own, so that a slice of a
    /// larger set no longer keeps the whole set alive.
    pub fn to_owned_copy(&self) -> Dataset {
        Dataset {
            inputs: self.inputs.copy(),
            targets: self.targets.copy(),
        }
    }

    /// Shard `index` of `count` contiguous, near-equal shards. The first
    /// `len % count` shards get one sample more.
    pub fn shard(&self, index: usize, count: usize) -> Dataset {
        let (start, end) = shard_bounds(self.len(), index, count);
        self.slice(start, end)
    }

    /// Moves both tensors to `device`.
    pub fn to_device(&self, device: tch::Device) -> Dataset {
        Dataset {
            inputs: self.inputs.to_device(device),
            targets: self.targets.to_device(device),
        }
    }
}

/// Bounds `[start, end)` of shard `index` of `count` over `len` samples.
pub fn shard_bounds(len: usize, index: usize, count: usize) -> (usize, usize) {
    let base = len / count;
    let extra = len % count;
    let start = index * base + index.min(extra);
    let size = base + usize::from(index < extra);
    (start, start + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_once() {
        for (len, count) in [(10, 3), (60000, 4), (5, 5), (7, 1)] {
            let mut next = 0;
            for index in 0..count {
                let (start, end) = shard_bounds(len, index, count);
                assert_eq!(start, next, "len={len} count={count} index={index}");
                assert!(end > start);
                next = end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn owned_copy_keeps_values_not_storage() {
        let data = Dataset {
            inputs: tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([6, 2]),
            targets: tch::Tensor::arange(6, (tch::Kind::Int64, tch::Device::Cpu)),
        };
        let slice = data.slice(2, 4);
        let copy = slice.to_owned_copy();
        assert_eq!(copy.len(), 2);
        let inputs = Vec::<f32>::try_from(copy.inputs.view([-1])).unwrap();
        assert_eq!(inputs, [4.0, 5.0, 6.0, 7.0]);
        let targets = Vec::<i64>::try_from(&copy.targets).unwrap();
        assert_eq!(targets, [2, 3]);
        assert_ne!(copy.inputs.data_ptr(), slice.inputs.data_ptr());
        assert_ne!(copy.targets.data_ptr(), slice.targets.data_ptr());
    }
}
