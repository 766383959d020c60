#!/usr/bin/env bash
# Install the checkov security scanner into its own virtual environment, .venv-checkov/ at the repo root.
#
# Why separate: checkov 3.3 pins old boto3/botocore releases and brings ~60 dependencies; installed beside this
# project it would drag s3fs/aiobotocore back (see ../shared/DESIGN.md, "Pitfalls"). Tests call it as a
# subprocess (tests/test_chart.py), found at $LIFT_CHECKOV or .venv-checkov/bin/checkov.
#
# Idempotent: does nothing when .venv-checkov/bin/checkov already exists (pass --force to reinstall).
# Usage:  bash scripts/setup-checkov.sh [--force]        (under a minute with uv, a few with pip)
# Env:    PYTHON   interpreter to create the venv with (default: python3)
#         CHECKOV_VERSION   pip requirement spec for checkov (default: ">=3.2,<4")
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-checkov"
python="${PYTHON:-python3}"
spec="checkov${CHECKOV_VERSION:->=3.2,<4}"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv"
elif [[ -x "$venv/bin/checkov" ]]; then
    echo "checkov already installed: $venv/bin/checkov ($("$venv/bin/checkov" --version 2>/dev/null || echo '?'))"
    exit 0
fi

# Build in a temporary folder and move it into place last, so an interrupted install is never taken as done.
tmp="$venv.partial"
rm -rf "$tmp"
"$python" -m venv "$tmp"
source "$root/scripts/install.sh"
install "$tmp" "$spec"
rm -rf "$venv"
mv "$tmp" "$venv"
# A venv's scripts carry absolute shebangs to the folder they were created in: rewrite them after the move.
grep -rlI --null "^#!$tmp/bin/" "$venv/bin" | xargs -0 -r sed -i "1s|^#!$tmp/bin/|#!$venv/bin/|"
sed -i "s|$tmp|$venv|g" "$venv/bin/activate" "$venv/pyvenv.cfg" 2>/dev/null || true
"$venv/bin/checkov" --version
echo "checkov installed: $venv/bin/checkov"
