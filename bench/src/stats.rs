//! Medians and unit formatting.

/// Median of `values`; the mean of the two middle values for an even count,
/// NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let len = sorted.len();
    match len {
        0 => f64::NAN,
        _ if len % 2 == 1 => sorted[len / 2],
        _ => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// Bytes per second as GB/s (10⁹ bytes).
pub fn gigabytes_per_second(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

/// Bytes in MiB.
pub fn mebibytes(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn median_of_nothing_is_nan() {
        assert!(median(&[]).is_nan());
    }
}
