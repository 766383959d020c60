#!/usr/bin/env bash
# Create ./.venv with PyTorch and the project. `--test` adds the test extras.
# torch/torchvision go in first and pinned, so resolving the project never pulls a different (multi-GB) build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
venv="${LIFT_VENV:-.venv}"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
install "$venv" "torch==${LIFT_TORCH:-2.14.1}" "torchvision==${LIFT_TORCHVISION:-0.29.1}"
install "$venv" -e ".${extras}"
echo "lift installed in $venv: $("$venv/bin/lift" --help | head -1)"
