#!/usr/bin/env bash
# benchmarks/gpu_check.py on a bare GPU box: install what it lacks, run the check under a time limit, leave
# gpu_check.json, its log and the card's nvidia-smi report in $OUT (default benchmarks/results).
#
#   bash benchmarks/gpu_check.sh --download   # where the package registry is reachable: wheels the box lacks -> .whl/
#   bash benchmarks/gpu_check.sh              # on the GPU box (no registry needed when .whl/ came along)
#   bash benchmarks/gpu_check.sh --dry-run    # print every step and check the requirements; install and run nothing
#
# Arguments after `--` go to gpu_check.py (e.g. -- --only align --peak-tflops 989).
#
# Steps on the box: (1) a CUDA torch within pyproject.toml's pin (the box's own when it has one, else
# torch==$LIFT_TORCH from the registry); (2) the project, `pip install --no-deps --no-build-isolation -e .`;
# (3) the packages gpu_check.py imports that are missing or outside their pyproject.toml pins, from .whl/ when it
# exists (offline), else from the registry; (4) gpu_check.py under `timeout` $GPU_CHECK_TIMEOUT seconds (default
# 420, with --deadline 60 s earlier so that it skips what it cannot finish and still writes its file): a 15-minute
# device lease holds start-up, one run and one rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-python3}"
out="${OUT:-benchmarks/results}"
wheels="${LIFT_WHEELS:-.whl}"
limit="${GPU_CHECK_TIMEOUT:-420}"
torch_version="${LIFT_TORCH:-2.14.1}"
# What gpu_check.py imports beyond torch (lift's own imports included: quicktok-v1 holds the critic's real Qwen2
# vocabulary, av comes with lift.io.video); pins come from pyproject.toml. The wheels of those a box lacks come to
# ~47 MiB, within the device tool's 64 MiB with the repository (~15 MiB).
needs=(diffusers transformers peft omegaconf importlib_metadata quicktok-v1 av)
mode=run
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=dry-run ;;
    --download) mode=download ;;
    --) shift; args=("$@"); break ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --download or -- ARGS)" >&2; exit 2 ;;
  esac
  shift
done

step() { echo "+ $*"; }
run() { step "$@"; [ "$mode" = dry-run ] || "$@"; }

# The requirement strings of `needs` (and torch) as pyproject.toml pins them; `missing` prints those this Python
# lacks or holds outside the pin (torch also when it has no CUDA device).
requirements() {
  "$py" - "$@" <<'EOF'
import re, sys
text = open("pyproject.toml").read()
deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
pins = {re.split(r"[<>=!~ ;\[]", d)[0].lower().replace("_", "-"): d
        for d in re.findall(r'^\s*"([^"]+)"', deps, re.M)}
mode, names = sys.argv[1], sys.argv[2:]
reqs = [pins.get(n.lower().replace("_", "-"), n) for n in names]
if mode == "all":
    print("\n".join(reqs))
    sys.exit()
from importlib import metadata
from packaging.requirements import Requirement
for req in reqs:
    r = Requirement(req)
    try:
        ok = r.specifier.contains(metadata.version(r.name), prereleases=True)
    except metadata.PackageNotFoundError:
        ok = False
    if ok and r.name == "torch" and mode != "dry-run":
        import torch
        ok = torch.cuda.is_available()
    if not ok:
        print(req)
EOF
}

if [ "$mode" = download ]; then
  # The box runs CPython 3.12 on x86-64 with torch, transformers and most of their needs but not these; pinned to
  # the versions of this checkout's environment (the ones the tests ran with).
  mkdir -p "$wheels"
  pinned=()
  for name in diffusers omegaconf importlib_metadata peft quicktok-v1 av; do
    pinned+=("$name==$("$py" -c "from importlib import metadata; print(metadata.version('$name'))")")
  done
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
  done
  run "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$wheels" "${pinned[@]}"
  echo "wheels in $wheels: carry it to the GPU box (the device tool's carry: [\"$wheels\"])"
  exit 0
fi

mkdir -p "$out"
log="$out/gpu_check.log"
[ "$mode" = dry-run ] || exec > >(tee -a "$log") 2>&1
echo "gpu_check.sh $mode on $(hostname) at $(date -u +%FT%TZ); python: $("$py" --version 2>&1)"
if [ "$mode" != dry-run ]; then
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (see $out/nvidia-smi.txt)"
fi

from_wheels=()
[ -d "$wheels" ] && from_wheels=(--no-index --find-links "$wheels")
echo "requirements: $(requirements all torch "${needs[@]}" | tr '\n' ' ')"

# (1) a CUDA torch within the pin
if [ -n "$(requirements "$mode" torch)" ]; then
  run "$py" -m pip install -q "torch==$torch_version"
else
  echo "torch: $("$py" -c 'from importlib import metadata; print(metadata.version("torch"))') within the pin"
fi
# (2) the project, without resolving its dependencies (the box may have no registry)
run "$py" -m pip install -q --no-deps --no-build-isolation -e .
# (3) what gpu_check.py imports, where missing or outside the pins
mapfile -t missing < <(requirements "$mode" "${needs[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$mode" = dry-run ] && [ ${#from_wheels[@]} -gt 0 ]; then  # do the wheels cover them?
    "$py" -m pip install -q --dry-run --ignore-installed --no-deps "${from_wheels[@]}" "${missing[@]}"
  fi
  run "$py" -m pip install -q --no-deps "${from_wheels[@]}" "${missing[@]}"
else
  echo "all of ${needs[*]} present within their pins"
fi
run "$py" -c "import diffusers, omegaconf, peft, quicktok, transformers, lift.models.real, lift.stages.critic"
# (4) the check, under its time limit; its file is rewritten after every stage
status=0
run timeout --signal=INT --kill-after=30 "$limit" env PYTHONUNBUFFERED=1 "$py" benchmarks/gpu_check.py \
  --out "$out/gpu_check.json" --deadline "$((limit - 60))" "${args[@]}" || status=$?
[ "$mode" = dry-run ] || echo "gpu_check.py exit status $status; results in $out/gpu_check.json, log $log"
exit "$status"
