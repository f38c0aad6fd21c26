//! Reader of IDX files, the format of MNIST: a big-endian u32 magic, one
//! big-endian u32 per dimension, then the u8 values in row-major order.
//! Files may be gzip-compressed; compression is detected from the content
//! (the gzip magic 1f 8b), not from the file name.

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
    #[error("failed to read {path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The gzip stream is corrupt or truncated.
    #[error("{path} looks gzip-compressed but does not decompress ({source}); download it again")]
    Gzip {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Too short to hold even the header.
    #[error(
        "{path} is {len} bytes, too short for an IDX header; the file is truncated or not IDX"
    )]
    NoHeader {
        /// File path.
        path: PathBuf,
        /// Length after decompression.
        len: usize,
    },
    /// Another magic number than expected.
    #[error("{path} has magic number {found}, expected {expected} ({what}){hint}")]
    Magic {
        /// File path.
        path: PathBuf,
        /// Magic read.
        found: u32,
        /// Magic expected.
        expected: u32,
        /// "images" or "labels".
        what: &'static str,
        /// Extra advice, such as "this is a labels file".
        hint: String,
    },
    /// Fewer value bytes than the header's dimensions require.
    #[error("{path} is shorter than its header says: dimensions {dims:?} need {needed} bytes of values, found {found}; the file is truncated")]
    Truncated {
        /// File path.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<usize>,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// Dimensions that do not fit the expected data.
    #[error("{path} has dimensions {dims:?}, expected {expected}")]
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

/// Reads an IDX file of u8 values with the `expected` magic (2051 for
/// images, 2049 for labels), raw or gzip-compressed.
pub fn read_idx(path: &Path, expected: u32) -> Result<IdxArray, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.into(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| IdxError::Gzip {
                path: path.into(),
                source,
            })?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes, expected)
}

/// Parses IDX bytes (already decompressed); `path` only names the source in
/// errors.
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
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(IdxError::NoHeader {
            path: path.into(),
            len: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..rank)
        .map(|d| {
            let at = 4 + 4 * d;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    // Checked so that a corrupt header cannot overflow into a small size.
    let needed = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
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

fn magic_hint(found: u32) -> String {
    match found {
        IMAGES_MAGIC => "; this is an images file, check which file was given as labels".into(),
        LABELS_MAGIC => "; this is a labels file, check which file was given as images".into(),
        _ => "; the file is not an uncompressed or gzip-compressed IDX file".into(),
    }
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

    #[test]
    fn raw_and_gzip_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(LABELS_MAGIC, &[3], &[7, 1, 9]);
        let raw = dir.path().join("labels");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("labels-but-no-gz-suffix");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &bytes).unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        let expected = IdxArray {
            dims: vec![3],
            values: vec![7, 1, 9],
        };
        assert_eq!(read_idx(&raw, LABELS_MAGIC).unwrap(), expected);
        assert_eq!(read_idx(&gz, LABELS_MAGIC).unwrap(), expected);
    }

    #[test]
    fn images_given_as_labels_named() {
        let bytes = idx_bytes(IMAGES_MAGIC, &[1, 2, 2], &[0, 1, 2, 3]);
        let err = parse_idx(Path::new("x"), &bytes, LABELS_MAGIC)
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic number 2051, expected 2049"), "{err}");
        assert!(err.contains("images file"), "{err}");
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
}
