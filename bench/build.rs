//! Embeds the libtorch path and links libtorch_cuda; see `admm-build`.

fn main() {
    admm_build::link_libtorch();
}
