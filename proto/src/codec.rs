//! Splitting `f32` vectors into little-endian byte chunks and reassembling
//! them into a reusable buffer, with the length checked before anything is
//! allocated.

use bytes::Bytes;
use thiserror::Error;

/// Size of one parameter chunk on the wire. One MiB keeps each message far
/// below gRPC's 4 MiB default limit and matches the HTTP/2 frame size the
/// transport is configured with.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Errors in reassembling a parameter vector from chunks.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The chunks carry more bytes than the header declared.
    #[error(
        "received more than the declared {expected} bytes of parameters (got at least {received})"
    )]
    TooLong { expected: usize, received: usize },
    /// The stream ended before all declared bytes arrived.
    #[error("received {received} bytes of parameters, expected {expected}")]
    TooShort { expected: usize, received: usize },
    /// A declared size that is not allowed for this model.
    #[error("declared parameter count {declared} does not match the model's {expected}")]
    WrongCount { expected: usize, declared: u64 },
}

/// Splits `values` into chunks of at most [`CHUNK_BYTES`] raw little-endian
/// bytes, in order.
pub fn chunk_f32(values: &[f32]) -> impl Iterator<Item = Bytes> + '_ {
    let floats_per_chunk = CHUNK_BYTES / 4;
    values
        .chunks(floats_per_chunk)
        .map(|part| Bytes::from(f32_to_le_bytes(part)))
}

#[cfg(target_endian = "little")]
fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice::<f32, u8>(values).to_vec()
}

#[cfg(target_endian = "big")]
fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reassembles a parameter vector of a known length from byte chunks of any
/// size, writing into a buffer that is reused across rounds.
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    values: Vec<f32>,
    filled_bytes: usize,
}

impl ChunkAssembler {
    /// Creates an empty assembler; the buffer grows on the first `reset`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepares to receive `declared` values, checking the count against the
    /// model's `expected` count before any memory is allocated.
    pub fn reset(&mut self, declared: u64, expected: usize) -> Result<(), CodecError> {
        if declared != expected as u64 {
            return Err(CodecError::WrongCount { expected, declared });
        }
        self.values.resize(expected, 0.0);
        self.filled_bytes = 0;
        Ok(())
    }

    /// Number of bytes the assembler expects in total.
    pub fn expected_bytes(&self) -> usize {
        self.values.len() * 4
    }

    /// Appends one chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), CodecError> {
        let expected = self.expected_bytes();
        let end = self.filled_bytes + chunk.len();
        if end > expected {
            return Err(CodecError::TooLong {
                expected,
                received: end,
            });
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.values);
        bytes[self.filled_bytes..end].copy_from_slice(chunk);
        self.filled_bytes = end;
        Ok(())
    }

    /// Checks that every declared byte arrived and returns the values.
    pub fn finish(&mut self) -> Result<&[f32], CodecError> {
        let expected = self.expected_bytes();
        if self.filled_bytes != expected {
            return Err(CodecError::TooShort {
                expected,
                received: self.filled_bytes,
            });
        }
        #[cfg(target_endian = "big")]
        for v in self.values.iter_mut() {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
        Ok(&self.values)
    }

    /// Hands back a buffer of an earlier [`take`](Self::take) so that the
    /// next reception reuses its memory instead of allocating.
    pub fn recycle(&mut self, buffer: Vec<f32>) {
        if self.values.capacity() < buffer.capacity() {
            self.values = buffer;
            self.filled_bytes = 0;
        }
    }

    /// Gives the finished buffer to the caller, leaving an empty one behind.
    pub fn take(&mut self) -> Vec<f32> {
        self.filled_bytes = 0;
        std::mem::take(&mut self.values)
    }
}

/// Runs one fuzzer input through a [`ChunkAssembler`], as a receiver does
/// with one upload, and panics where the result breaks the assembler's
/// contract: a wrong declared count is rejected, the stream is rejected as
/// soon as it passes the declared length or when it ends short of it, and a
/// complete stream yields exactly the bytes sent. Returns whether the
/// upload was accepted. The fuzz targets and the bounded smoke test both call
/// this, so the two check the same properties.
///
/// Input layout: bytes 0..2 are the model's parameter count (u16, little
/// endian) and bytes 2..10 the count the sender declares (u64, little
/// endian). The rest is a sequence of chunks, each a u16 little-endian
/// length followed by that many bytes, or fewer where the input ends.
/// Missing header bytes read as zero.
pub fn check_fuzz_input(data: &[u8]) -> bool {
    let mut header = [0u8; 10];
    let header_len = data.len().min(header.len());
    header[..header_len].copy_from_slice(&data[..header_len]);
    let expected = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let declared = u64::from_le_bytes([
        header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9],
    ]);
    let chunks = split_chunks(&data[header_len..]);

    let mut assembler = ChunkAssembler::new();
    let accepted = assert_stream(&mut assembler, declared, expected, &chunks);
    // A second upload into the same assembler, after its buffer was taken
    // and handed back, exercises the reuse the receivers rely on.
    let buffer = assembler.take();
    assembler.recycle(buffer);
    assert_stream(&mut assembler, expected as u64, expected, &chunks);
    accepted
}

/// Splits the fuzzer's chunk sequence into its chunks.
fn split_chunks(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    while let [low, high, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*low, *high])).min(tail.len());
        let (chunk, after) = tail.split_at(len);
        chunks.push(chunk);
        rest = after;
    }
    chunks
}

/// Receives `chunks` after a header declaring `declared` values, and checks
/// each result against the stream's length. Returns whether the values were
/// accepted.
fn assert_stream(
    assembler: &mut ChunkAssembler,
    declared: u64,
    expected: usize,
    chunks: &[&[u8]],
) -> bool {
    if declared != expected as u64 {
        assert_eq!(
            assembler.reset(declared, expected),
            Err(CodecError::WrongCount { expected, declared })
        );
        return false;
    }
    assert_eq!(assembler.reset(declared, expected), Ok(()));
    let expected_bytes = expected * 4;
    assert_eq!(assembler.expected_bytes(), expected_bytes);
    let mut sent = Vec::new();
    for chunk in chunks {
        let received = sent.len() + chunk.len();
        if received > expected_bytes {
            assert_eq!(
                assembler.push(chunk),
                Err(CodecError::TooLong {
                    expected: expected_bytes,
                    received
                })
            );
            return false;
        }
        assert_eq!(assembler.push(chunk), Ok(()));
        sent.extend_from_slice(chunk);
    }
    match assembler.finish() {
        Ok(values) => {
            assert_eq!(sent.len(), expected_bytes, "accepted a short stream");
            let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            let sent_bits: Vec<u32> = sent
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(bits, sent_bits, "values differ from the bytes sent");
            true
        }
        Err(err) => {
            assert_eq!(
                err,
                CodecError::TooShort {
                    expected: expected_bytes,
                    received: sent.len()
                }
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_across_chunk_boundaries() {
        let values: Vec<f32> = (0..(CHUNK_BYTES / 4 * 2 + 7))
            .map(|i| i as f32 * 0.5)
            .collect();
        let chunks: Vec<Bytes> = chunk_f32(&values).collect();
        assert_eq!(chunks.len(), 3);
        let mut assembler = ChunkAssembler::new();
        assembler.reset(values.len() as u64, values.len()).unwrap();
        for chunk in &chunks {
            assembler.push(chunk).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), &values[..]);
    }

    #[test]
    fn odd_sized_chunks_reassemble() {
        let values = [1.0f32, -2.5, 3.25];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut assembler = ChunkAssembler::new();
        assembler.reset(3, 3).unwrap();
        for piece in bytes.chunks(5) {
            assembler.push(piece).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), &values);
    }

    #[test]
    fn wrong_declared_count_rejected() {
        let mut assembler = ChunkAssembler::new();
        let err = assembler.reset(u64::MAX, 10).unwrap_err();
        assert_eq!(
            err,
            CodecError::WrongCount {
                expected: 10,
                declared: u64::MAX
            }
        );
    }

    #[test]
    fn overlong_stream_rejected() {
        let mut assembler = ChunkAssembler::new();
        assembler.reset(1, 1).unwrap();
        assert!(assembler.push(&[0; 4]).is_ok());
        let err = assembler.push(&[0; 1]).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooLong {
                expected: 4,
                received: 5
            }
        );
    }

    #[test]
    fn short_stream_rejected() {
        let mut assembler = ChunkAssembler::new();
        assembler.reset(2, 2).unwrap();
        assembler.push(&[0; 6]).unwrap();
        let err = assembler.finish().unwrap_err();
        assert_eq!(
            err,
            CodecError::TooShort {
                expected: 8,
                received: 6
            }
        );
    }
}
