//! Shared build-script logic for every crate that links libtorch into a
//! binary or a test.
//!
//! `torch-sys` finds libtorch (here inside the PyTorch wheel, through
//! `LIBTORCH_USE_PYTORCH=1`) and exports its library folder as
//! `DEP_TCH_LIBTORCH_LIB` to the crates that depend on it directly. From
//! that folder this helper:
//!
//! - embeds it as an rpath, so binaries start without `LD_LIBRARY_PATH`;
//! - links `libtorch_cuda` with `--no-as-needed` when the libtorch is a CUDA
//!   build. The linker otherwise drops it, because no symbol of ours names
//!   it, and CUDA then reports itself unavailable at run time.

use std::path::Path;

/// Emits the link arguments; call it from a `build.rs` of a crate that
/// lists `torch-sys` among its dependencies.
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is not set; add torch-sys to this crate's \
             dependencies so that the libtorch folder is embedded"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
