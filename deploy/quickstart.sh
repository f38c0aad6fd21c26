#!/usr/bin/env bash
# Sets up libtorch, builds the release binaries and runs the regression toy
# (the θ₁/θ₂ split of a linear model, sharded over two workers) with its
# baseline. Extra arguments go to `admm-train run`; without --run-dir the
# run goes to a new folder runs/quickstart-UNIXTIME.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

eval "$(deploy/setup.sh --print-env)"
cargo build --release --locked --bins
run_dir=(--run-dir "runs/quickstart-$(date +%s)")
for argument in "$@"; do
  if [[ "$argument" == --run-dir || "$argument" == --run-dir=* ]]; then
    run_dir=()
  fi
done
exec target/release/admm-train run \
  --workers 2 "${run_dir[@]}" \
  --problem regression --dim 10 --samples 1000 --hidden none \
  --optimizer sgd --lr 0.05 --local-steps 20 --batch-size 64 \
  --rho 1 --max-rounds 100 "$@"
