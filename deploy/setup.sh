#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment that provides libtorch
# 2.11.0 from the PyPI torch wheel, then prints the environment variables
# that point the tch build at it.
#
# Usage: source <(deploy/setup.sh --print-env)   or   deploy/setup.sh
#
# The environment lives outside the checkout, so that fresh clones and CI
# runs on the same machine reuse it. Override its place with ADMM_VENV.
set -euo pipefail

torch_version="2.11.0"
venv="${ADMM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/admm-train/venv-torch-$torch_version}"
python="${PYTHON:-python3}"

print_env=0
if [[ "${1:-}" == "--print-env" ]]; then
  print_env=1
fi

log() { echo "setup: $*" >&2; }

installed_version() {
  "$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true
}

if [[ "$(installed_version)" != "$torch_version" ]]; then
  log "creating the virtual environment in $venv (torch==$torch_version, a few GiB)"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet "torch==$torch_version" numpy >&2
  if [[ "$(installed_version)" != "$torch_version" ]]; then
    log "torch $torch_version did not import from $venv; remove that folder and run again"
    exit 1
  fi
else
  log "reusing the virtual environment in $venv (torch $torch_version)"
fi

if [[ "$print_env" -eq 1 ]]; then
  echo "export ADMM_VENV='$venv'"
  echo "export VIRTUAL_ENV='$venv'"
  echo "export LIBTORCH_USE_PYTORCH=1"
  echo "export PATH='$venv/bin':\"\$PATH\""
fi
