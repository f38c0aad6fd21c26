#!/usr/bin/env bash
# Sets up libtorch (reusing the virtual environment when present), builds
# every binary and runs the whole test suite.
#
# MNIST is read from ADMM_MNIST_DIR; when unset, from ../shared/data/mnist
# beside the checkout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

eval "$(deploy/setup.sh --print-env)"
export ADMM_MNIST_DIR="${ADMM_MNIST_DIR:-$repo/../shared/data/mnist}"
if [[ ! -d "$ADMM_MNIST_DIR" ]]; then
  echo "test: MNIST folder $ADMM_MNIST_DIR not found; set ADMM_MNIST_DIR" >&2
  exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked
