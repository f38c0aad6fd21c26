//! Packing: model tensors to wire chunks and back through the project's
//! path, against one memcpy of the same bytes between warm buffers.
//!
//! The path is the one a round takes: [`Network::write_flat`] into a reused
//! vector, [`chunk_f32`] into wire chunks, a reused [`ChunkAssembler`], and
//! [`Network::load_flat`] into the model. libtorch runs on one thread, like
//! the memcpy.

use crate::report::{Bound, Figure};
use crate::stats::{gigabytes_per_second, median};
use crate::transport::SIZES_MIB;
use admm_problems::Network;
use admm_proto::{chunk_f32, ChunkAssembler};
use anyhow::Result;
use bytes::Bytes;
use std::hint::black_box;
use std::time::Instant;
use tch::Device;

/// Width of a square linear layer whose weights take `mib` MiB.
fn layer_width(mib: usize) -> usize {
    (((mib << 20) / 4) as f64).sqrt() as usize
}

/// Moves the parameters of `network` out to chunks and back in once.
fn pack_and_unpack(
    network: &mut Network,
    flat: &mut Vec<f32>,
    assembler: &mut ChunkAssembler,
) -> Result<()> {
    network.write_flat(flat);
    let chunks: Vec<Bytes> = chunk_f32(flat).collect();
    assembler.reset(flat.len() as u64, flat.len())?;
    for chunk in &chunks {
        assembler.push(chunk)?;
    }
    assembler.finish()?;
    let values = assembler.take();
    network.load_flat(&values)?;
    assembler.recycle(values);
    Ok(())
}

/// Measures the packing path and the memcpy at each size.
pub fn run(repetitions: usize) -> Result<Vec<Figure>> {
    tch::set_num_threads(1);
    let mut figures = Vec::new();
    for mib in SIZES_MIB {
        let width = layer_width(mib);
        let mut network = Network::mlp(&[width, width], Device::Cpu, 1);
        let bytes = network.num_params() * 4;
        let mut flat = Vec::new();
        let mut assembler = ChunkAssembler::new();
        let source = vec![1u8; bytes];
        let mut destination = vec![0u8; bytes];
        // Warm-up: grows the reused buffers and touches their pages.
        pack_and_unpack(&mut network, &mut flat, &mut assembler)?;
        destination.copy_from_slice(&source);

        let mut path_seconds = Vec::new();
        let mut copy_seconds = Vec::new();
        for _ in 0..repetitions {
            let start = Instant::now();
            pack_and_unpack(&mut network, &mut flat, &mut assembler)?;
            path_seconds.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            destination.copy_from_slice(black_box(&source));
            black_box(&mut destination);
            copy_seconds.push(start.elapsed().as_secs_f64());
        }
        let path_rate = gigabytes_per_second(bytes, median(&path_seconds));
        let copy_rate = gigabytes_per_second(bytes, median(&copy_seconds));
        figures.push(Figure::new(
            "packing",
            format!("{mib} MiB"),
            "tensor->bytes->tensor / memcpy bandwidth",
            path_rate / copy_rate,
            format!(
                "path {path_rate:.2} GB/s ({:.1} ms), memcpy {copy_rate:.2} GB/s ({:.1} ms)",
                median(&path_seconds) * 1e3,
                median(&copy_seconds) * 1e3
            ),
            Some(Bound::AtLeast(0.5)),
        ));
    }
    Ok(figures)
}
