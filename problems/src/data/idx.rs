//! Reader and writer of IDX files, the format of MNIST: a big-endian u32
//! magic, one big-endian u32 per dimension, then the u8 values in row-major
//! order. Files may be gzip-compressed; compression is detected from the
//! content (the gzip magic 1f 8b), not from the file name. The writer
//! writes uncompressed files.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Magic number of an IDX file of u8 images (three dimensions).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of u8 labels (one dimension).
pub const LABELS_MAGIC: u32 = 2049;

/// A problem with an IDX file, naming the file and what to do.
#[derive(Debug, Error)]
pub enum IdxError {
    /// The file could not be read.
    #[error("failed to read {path}: {cause}; check that the file exists and is readable")]
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error, shown in the message rather than chained as a
        /// source so that it is printed once.
        cause: std::io::Error,
    },
    /// The gzip stream is corrupt or truncated.
    #[error(
        "failed to decompress {path}: {cause}; the gzip stream is truncated or corrupt, \
         download the file again"
    )]
    Gzip {
        /// File path.
        path: PathBuf,
        /// Underlying error, shown in the message rather than chained as a
        /// source so that it is printed once.
        cause: std::io::Error,
    },
    /// Too short to hold even the header.
    #[error(
        "{path} is {len} bytes, too short for an IDX header; the file is truncated or not an IDX \
         file, download it again"
    )]
    NoHeader {
        /// File path.
        path: PathBuf,
        /// Length after decompression.
        len: usize,
    },
    /// Another magic number than expected.
    #[error("{path} has magic number {found}, expected {expected} ({what}); {hint}")]
    Magic {
        /// File path.
        path: PathBuf,
        /// Magic read.
        found: u32,
        /// Magic expected.
        expected: u32,
        /// "images" or "labels".
        what: &'static str,
        /// Advice naming what the file is instead and the fix.
        hint: &'static str,
    },
    /// Fewer value bytes than the header's dimensions require.
    #[error(
        "{path} is shorter than its header says: dimensions {dims:?} need {needed} bytes of \
         values, found {found}; the file is truncated, download it again"
    )]
    Truncated {
        /// File path.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<usize>,
        /// Bytes needed, or `usize::MAX` when the product of the dimensions
        /// overflows.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// Dimensions that do not fit the expected data.
    #[error(
        "{path} has dimensions {dims:?}, expected {expected}; replace it with the original \
         MNIST file"
    )]
    Shape {
        /// File path.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<usize>,
        /// Description of what was expected.
        expected: String,
    },
}

/// The dimensions and values of one IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<u8>,
}

/// First two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads an IDX file of u8 values with the `expected` magic (2051 for
/// images, 2049 for labels), raw or gzip-compressed.
pub fn read_idx(path: &Path, expected: u32) -> Result<IdxArray, IdxError> {
    let file_bytes = std::fs::read(path).map_err(|cause| IdxError::Io {
        path: path.into(),
        cause,
    })?;
    decode_idx(path, &file_bytes, expected)
}

/// Writes u8 images (row-major, 0 is background) as an uncompressed IDX
/// file with magic 2051 and dimensions `[count, rows, cols]`, through a
/// temporary file and a rename. Fails when `pixels` does not contain exactly
/// `count × rows × cols` values or a dimension does not fit in a u32.
pub fn write_idx_images(
    path: &Path,
    pixels: &[u8],
    count: usize,
    rows: usize,
    cols: usize,
) -> anyhow::Result<()> {
    let dims = [count, rows, cols];
    let expected = value_count(&dims);
    if pixels.len() != expected {
        anyhow::bail!(
            "cannot write {}: {} pixels given, dimensions {dims:?} need {expected}",
            path.display(),
            pixels.len()
        );
    }
    let mut bytes = Vec::with_capacity(header_len(dims.len()) + pixels.len());
    bytes.extend(IMAGES_MAGIC.to_be_bytes());
    for dim in dims {
        let dim = u32::try_from(dim).map_err(|_| {
            anyhow::anyhow!(
                "cannot write {}: dimension {dim} does not fit in the u32 of an IDX header",
                path.display()
            )
        })?;
        bytes.extend(dim.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    crate::atomic_file::write_bytes(path, &bytes)
}

/// Decodes the content of an IDX file, decompressing it first when it
/// starts with the gzip magic; `path` only names the source in errors.
pub fn decode_idx(path: &Path, file_bytes: &[u8], expected: u32) -> Result<IdxArray, IdxError> {
    if file_bytes.starts_with(&GZIP_MAGIC) {
        let bytes = decompress(path, file_bytes)?;
        parse_idx(path, &bytes, expected)
    } else {
        parse_idx(path, file_bytes, expected)
    }
}

/// Decompresses a gzip stream, keeping no more than the header and the
/// value bytes the header declares, so that memory stays bounded by the
/// data actually present however large the stream expands.
fn decompress(path: &Path, compressed: &[u8]) -> Result<Vec<u8>, IdxError> {
    let gzip_error = |cause| IdxError::Gzip {
        path: path.into(),
        cause,
    };
    let mut decoder = GzDecoder::new(compressed);
    let mut bytes = Vec::new();
    read_at_most(&mut decoder, &mut bytes, 4).map_err(gzip_error)?;
    if let Some(&rank) = bytes.get(3) {
        let header = header_len(usize::from(rank));
        read_at_most(&mut decoder, &mut bytes, header - 4).map_err(gzip_error)?;
        if bytes.len() == header {
            let needed = value_count(&read_dims(&bytes, usize::from(rank)));
            read_at_most(&mut decoder, &mut bytes, needed).map_err(gzip_error)?;
        }
    }
    // Reading the rest, into a fixed-size buffer, makes the decoder check
    // the stream's CRC-32 and length, which catch a corrupt body.
    std::io::copy(&mut decoder, &mut std::io::sink()).map_err(gzip_error)?;
    Ok(bytes)
}

/// Appends up to `limit` bytes of `reader` to `out`; fewer at its end.
fn read_at_most(reader: &mut impl Read, out: &mut Vec<u8>, limit: usize) -> std::io::Result<()> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    reader.take(limit).read_to_end(out)?;
    Ok(())
}

/// Length of an IDX header of `rank` dimensions: the magic, then one u32
/// per dimension.
fn header_len(rank: usize) -> usize {
    4 + 4 * rank
}

/// The `rank` big-endian u32 dimensions after the magic of a complete header.
fn read_dims(header: &[u8], rank: usize) -> Vec<usize> {
    header[4..header_len(rank)]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect()
}

/// Number of values of an array of `dims`, saturated at `usize::MAX` so
/// that a corrupt header cannot overflow into a small size.
fn value_count(dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Parses IDX bytes (already decompressed); `path` only names the source in
/// errors. Nothing is allocated before the header's size is checked against
/// the bytes present.
pub fn parse_idx(path: &Path, bytes: &[u8], expected: u32) -> Result<IdxArray, IdxError> {
    if bytes.len() < 4 {
        return Err(IdxError::NoHeader {
            path: path.into(),
            len: bytes.len(),
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected {
        return Err(IdxError::Magic {
            path: path.into(),
            found: magic,
            expected,
            what: if expected == IMAGES_MAGIC {
                "images"
            } else {
                "labels"
            },
            hint: magic_hint(magic),
        });
    }
    let rank = (magic & 0xff) as usize;
    let header = header_len(rank);
    if bytes.len() < header {
        return Err(IdxError::NoHeader {
            path: path.into(),
            len: bytes.len(),
        });
    }
    let dims = read_dims(bytes, rank);
    let needed = value_count(&dims);
    let found = bytes.len() - header;
    if found < needed {
        return Err(IdxError::Truncated {
            path: path.into(),
            dims,
            needed,
            found,
        });
    }
    Ok(IdxArray {
        dims,
        values: bytes[header..header + needed].to_vec(),
    })
}

/// Advice for a file of magic `found`: what it is instead, and the fix.
fn magic_hint(found: u32) -> &'static str {
    match found {
        IMAGES_MAGIC => "the file contains images, not labels: put the labels file under this name",
        LABELS_MAGIC => "the file contains labels, not images: put the images file under this name",
        _ => "the file is not an MNIST IDX file (raw or gzip-compressed): download it again",
    }
}

/// Runs one fuzzer input through [`decode_idx`] as images and as labels,
/// and panics where the result breaks the reader's contract: a decoded
/// array contains exactly the values its dimensions declare, and every error
/// names the file. Returns whether either decoding succeeded. The fuzz
/// targets and the bounded smoke test both call this, so the two check the
/// same properties.
pub fn check_fuzz_input(data: &[u8]) -> bool {
    let path = Path::new("fuzz-input");
    let mut accepted = false;
    for expected in [IMAGES_MAGIC, LABELS_MAGIC] {
        match decode_idx(path, data, expected) {
            Ok(array) => {
                accepted = true;
                let rank = (expected & 0xff) as usize;
                assert_eq!(array.dims.len(), rank, "rank of a decoded array");
                assert_eq!(
                    array.values.len(),
                    value_count(&array.dims),
                    "values of dimensions {:?}",
                    array.dims
                );
                if !data.starts_with(&GZIP_MAGIC) {
                    let header = header_len(rank);
                    assert_eq!(
                        array.values,
                        data[header..header + array.values.len()],
                        "values of a raw file"
                    );
                }
            }
            Err(err) => {
                let message = err.to_string();
                assert!(message.contains("fuzz-input"), "unnamed file: {message}");
            }
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(magic: u32, dims: &[u32], values: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(values);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn raw_and_gzip_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(LABELS_MAGIC, &[3], &[7, 1, 9]);
        let raw = dir.path().join("labels");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("labels-but-no-gz-suffix");
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        let expected = IdxArray {
            dims: vec![3],
            values: vec![7, 1, 9],
        };
        assert_eq!(read_idx(&raw, LABELS_MAGIC).unwrap(), expected);
        assert_eq!(read_idx(&gz, LABELS_MAGIC).unwrap(), expected);
    }

    #[test]
    fn written_images_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images-idx3-ubyte");
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 11) as u8).collect();
        write_idx_images(&path, &pixels, 2, 3, 4).unwrap();
        let array = read_idx(&path, IMAGES_MAGIC).unwrap();
        assert_eq!(array.dims, [2, 3, 4]);
        assert_eq!(array.values, pixels);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            idx_bytes(IMAGES_MAGIC, &[2, 3, 4], &pixels)
        );
    }

    #[test]
    fn write_rejects_wrong_pixel_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images");
        let err = write_idx_images(&path, &[0; 5], 1, 2, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 pixels given"), "{err}");
        assert!(err.contains("need 4"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn images_given_as_labels_named() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[1, 2, 2], &[0, 1, 2, 3]);
        let err = parse_idx(Path::new("x"), &bytes, LABELS_MAGIC)
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic number 2051, expected 2049"), "{err}");
        assert!(err.contains("contains images, not labels"), "{err}");
    }

    #[test]
    fn truncated_file_rejected() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[2, 2, 2], &[0; 5]);
        let err = parse_idx(Path::new("t"), &bytes, IMAGES_MAGIC).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::Truncated {
                    needed: 8,
                    found: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn huge_dimensions_rejected_without_allocating() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[0; 4]);
        let err = parse_idx(Path::new("h"), &bytes, IMAGES_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { .. }), "{err}");
    }

    #[test]
    fn short_header_rejected() {
        let err = parse_idx(Path::new("s"), &[0, 0], IMAGES_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::NoHeader { len: 2, .. }), "{err}");
        let err = parse_idx(Path::new("s"), &IMAGES_MAGIC.to_be_bytes(), IMAGES_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::NoHeader { len: 4, .. }), "{err}");
    }

    #[test]
    fn corrupt_gzip_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read_idx(&path, IMAGES_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
    }

    #[test]
    fn gzip_keeps_declared_values_only() {
        let mut bytes = idx_bytes(LABELS_MAGIC, &[3], &[7, 1, 9]);
        bytes.extend([5; 1000]);
        let array = decode_idx(Path::new("g"), &gzip(&bytes), LABELS_MAGIC).unwrap();
        assert_eq!(array.values, [7, 1, 9]);
    }

    #[test]
    fn gzip_checksum_checked() {
        let mut compressed = gzip(&idx_bytes(LABELS_MAGIC, &[3], &[7, 1, 9]));
        let crc_at = compressed.len() - 8;
        compressed[crc_at] ^= 0xff;
        let err = decode_idx(Path::new("c.gz"), &compressed, LABELS_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("c.gz"), "{err}");
    }

    #[test]
    fn gzip_huge_dimensions_rejected() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[0; 4]);
        let err = decode_idx(Path::new("h.gz"), &gzip(&bytes), IMAGES_MAGIC).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { found: 4, .. }), "{err}");
    }
}
