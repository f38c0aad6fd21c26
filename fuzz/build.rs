//! Embeds the libtorch path that the `idx` target needs through
//! `admm-problems`; see `admm-build`.

fn main() {
    admm_build::link_libtorch();
}
