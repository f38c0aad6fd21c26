//! Bounded fuzzing on the stable toolchain. Deterministic pseudo-random and
//! mutated inputs go through the same checks as the cargo-fuzz targets in
//! `fuzz/`, `check_fuzz_input` of the IDX reader and of the chunk codec. A
//! global allocator records the largest allocation of each input, so that a
//! header cannot make a decoder allocate beyond what the input contains.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use admm_problems::data::idx::{self, IMAGES_MAGIC, LABELS_MAGIC};
use admm_problems::rng::SplitMix64;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::time::Instant;

/// Inputs per target, with a fixed seed so that a failure reproduces.
const INPUTS: usize = 300_000;
const SEED: u64 = 0x5eed;

/// Largest ratio of output to input of a deflate stream: a 258-byte match
/// costs at least 2 bits, so a stream expands at most about 1032 times.
const DEFLATE_MAX_RATIO: usize = 1032;

/// Allocations a decoder makes whatever the input, in bytes: the error's
/// path and message, flate2's input buffer and inflate state.
const FIXED_ALLOCATION: usize = 128 << 10;

/// The system allocator, recording on each thread the largest single
/// request since [`largest_allocation`] last reset it.
struct PeakAllocator;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with` because the allocator also runs while thread-locals are
    // being torn down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call forwards to `System` with the caller's arguments
// unchanged. The recording touches only a const-initialized thread-local
// `Cell`, which neither allocates nor runs a destructor.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread, in bytes.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}

/// Byte-level mutations in the style of libFuzzer's, drawn from one seed.
struct Mutator {
    rng: SplitMix64,
}

impl Mutator {
    fn below(&mut self, bound: usize) -> usize {
        self.rng.below(bound.max(1))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.rng.next_u64() as u8).collect()
    }

    /// Returns a value that often sits on the boundary of a length or count.
    fn interesting_u32(&mut self) -> u32 {
        const VALUES: [u32; 12] = [
            0,
            1,
            2,
            3,
            28,
            255,
            2049,
            2051,
            60_000,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
        ];
        VALUES[self.below(VALUES.len())]
    }

    /// Applies one to four random mutations.
    fn mutate(&mut self, input: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            let at = self.below(input.len());
            match self.below(7) {
                0 if !input.is_empty() => input[at] ^= 1 << self.below(8),
                1 if !input.is_empty() => input[at] = [0, 1, 0x7f, 0x80, 0xff][self.below(5)],
                2 => input.truncate(self.below(input.len() + 1)),
                3 => {
                    let len = 1 + self.below(16);
                    let extra = self.bytes(len);
                    let at = self.below(input.len() + 1);
                    input.splice(at..at, extra);
                }
                4 if input.len() >= 4 => {
                    let at = self.below(input.len() - 3);
                    let value = self.interesting_u32().to_be_bytes();
                    input[at..at + 4].copy_from_slice(&value);
                }
                5 if !input.is_empty() => {
                    let end = at + self.below(input.len() - at) + 1;
                    let copy = input[at..end].to_vec();
                    input.extend(copy);
                }
                _ => {
                    let len = self.below(32);
                    let extra = self.bytes(len);
                    input.extend(extra);
                }
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("write to memory");
    encoder.finish().expect("finish in memory")
}

/// Builds a valid IDX file of labels or of small images, raw or
/// gzip-compressed, or else random bytes.
fn idx_seed(mutator: &mut Mutator) -> Vec<u8> {
    let (magic, dims) = if mutator.below(2) == 0 {
        (LABELS_MAGIC, vec![mutator.below(64) as u32])
    } else {
        let dims = [mutator.below(8), 1 + mutator.below(8), 1 + mutator.below(8)];
        (IMAGES_MAGIC, dims.map(|d| d as u32).to_vec())
    };
    let count: u32 = dims.iter().product();
    let mut file = magic.to_be_bytes().to_vec();
    for d in &dims {
        file.extend(d.to_be_bytes());
    }
    file.extend(mutator.bytes(count as usize));
    match mutator.below(8) {
        0 => {
            let len = mutator.below(64);
            mutator.bytes(len)
        }
        1 | 2 => gzip(&file),
        _ => file,
    }
}

/// Builds a valid upload in the layout of
/// `admm_proto::codec::check_fuzz_input`: the model's count, the declared
/// count (mostly equal, sometimes far larger), and the parameter bytes split
/// at random points.
fn chunk_seed(mutator: &mut Mutator) -> Vec<u8> {
    let expected = mutator.below(2000) as u16;
    let declared = match mutator.below(8) {
        0 => u64::MAX,
        1 => u64::from(expected) << (1 + mutator.below(40)),
        _ => u64::from(expected),
    };
    let mut input = expected.to_le_bytes().to_vec();
    input.extend(declared.to_le_bytes());
    let mut payload = mutator.bytes(usize::from(expected) * 4);
    while !payload.is_empty() {
        let len = (1 + mutator.below(4096)).min(payload.len());
        let rest = payload.split_off(len);
        input.extend((len as u16).to_le_bytes());
        input.extend(&payload);
        payload = rest;
    }
    input
}

#[test]
fn idx_reader_survives_fuzzing() {
    let started = Instant::now();
    let mut mutator = Mutator {
        rng: SplitMix64::new(SEED, 0),
    };
    let mut accepted = 0;
    let mut largest_seen = 0;
    for _ in 0..INPUTS {
        let mut input = idx_seed(&mut mutator);
        if mutator.below(4) != 0 {
            mutator.mutate(&mut input);
        }
        let (decoded, largest) = largest_allocation(|| idx::check_fuzz_input(&input));
        accepted += usize::from(decoded);
        largest_seen = largest_seen.max(largest);
        let bound = if input.starts_with(&[0x1f, 0x8b]) {
            2 * DEFLATE_MAX_RATIO * input.len() + FIXED_ALLOCATION
        } else {
            input.len() + FIXED_ALLOCATION
        };
        assert!(
            largest <= bound,
            "an input of {} bytes made the reader allocate {largest} bytes at once: {input:02x?}",
            input.len()
        );
    }
    println!(
        "idx: {INPUTS} inputs in {:.1} s, {accepted} decoded, largest allocation {largest_seen} \
         bytes",
        started.elapsed().as_secs_f64()
    );
    assert!(accepted > INPUTS / 10, "only {accepted} inputs decoded");
    assert!(accepted < INPUTS, "every input decoded");
}

#[test]
fn chunk_assembler_survives_fuzzing() {
    let started = Instant::now();
    let mut mutator = Mutator {
        rng: SplitMix64::new(SEED, 1),
    };
    let mut accepted = 0;
    let mut largest_seen = 0;
    for _ in 0..INPUTS {
        let mut input = chunk_seed(&mut mutator);
        if mutator.below(2) == 0 {
            mutator.mutate(&mut input);
        }
        let (complete, largest) =
            largest_allocation(|| admm_proto::codec::check_fuzz_input(&input));
        accepted += usize::from(complete);
        largest_seen = largest_seen.max(largest);
        let model_count = match input.as_slice() {
            [low, high, ..] => usize::from(u16::from_le_bytes([*low, *high])),
            _ => 0,
        };
        // The parameter buffer, the check's copy of the bytes sent and its
        // list of chunk slices; nothing may grow with the declared count.
        let bound = 8 * model_count + 16 * input.len() + FIXED_ALLOCATION;
        assert!(
            largest <= bound,
            "an upload of {} bytes for {model_count} parameters allocated {largest} bytes at once",
            input.len()
        );
    }
    println!(
        "chunks: {INPUTS} inputs in {:.1} s, {accepted} accepted, largest allocation \
         {largest_seen} bytes",
        started.elapsed().as_secs_f64()
    );
    assert!(accepted > INPUTS / 10, "only {accepted} uploads accepted");
    assert!(accepted < INPUTS, "every upload accepted");
}
