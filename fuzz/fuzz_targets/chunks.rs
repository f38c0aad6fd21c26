//! Arbitrary uploads, a declared parameter count and chunks of any size,
//! through the receiver's chunk assembler.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    admm_proto::codec::check_fuzz_input(data);
});
