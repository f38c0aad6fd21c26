//! Choosing the libtorch device from a `--device` string.

use anyhow::{bail, Context, Result};
use tch::Device;

/// Parses `cpu` or `cuda:N` (or `cuda`, meaning `cuda:0`) and checks that the
/// device exists. A missing CUDA device is an error, never a fall-back to
/// the CPU.
pub fn parse_device(text: &str) -> Result<Device> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let index = if text.eq_ignore_ascii_case("cuda") {
        0
    } else if let Some(index) = text.strip_prefix("cuda:") {
        index
            .parse::<usize>()
            .with_context(|| format!("invalid device {text:?}: expected cpu or cuda:N"))?
    } else {
        bail!("invalid device {text:?}: expected cpu or cuda:N");
    };
    if !tch::Cuda::is_available() {
        bail!(
            "device {text} requested but CUDA is not available (libtorch found no GPU or was \
             built without CUDA); use --device cpu or run on a machine with a GPU"
        );
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        bail!(
            "device {text} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{})",
            count.saturating_sub(1)
        );
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
    }

    #[test]
    fn garbage_rejected() {
        let err = parse_device("gpu0").unwrap_err().to_string();
        assert!(err.contains("gpu0"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn absent_cuda_rejected() {
        if tch::Cuda::is_available() {
            let err = parse_device("cuda:999").unwrap_err().to_string();
            assert!(err.contains("cuda:999"), "{err}");
        } else {
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("not available"), "{err}");
        }
    }
}
