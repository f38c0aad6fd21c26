#!/usr/bin/env bash
# Sets up libtorch, builds the release binaries and runs the GAN comparison
# (`admm-train gan-bench`): the vanilla DCGAN, the plain discriminator split
# and each remedy at equal epochs, scored and written to docs/gan-results.md.
# Extra arguments go to `admm-train gan-bench`, for example --epochs 3 or
# --device cuda:0. MNIST is read from ADMM_MNIST_DIR, by default
# ../shared/data/mnist beside the checkout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

eval "$(deploy/setup.sh --print-env)"
export ADMM_MNIST_DIR="${ADMM_MNIST_DIR:-$repo/../shared/data/mnist}"
cargo build --release --locked --bins
exec target/release/admm-train gan-bench "$@"
