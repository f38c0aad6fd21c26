//! Arbitrary bytes as the content of an IDX file, raw or gzip-compressed,
//! read as images and as labels.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    admm_problems::data::idx::check_fuzz_input(data);
});
