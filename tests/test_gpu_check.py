"""benchmarks/gpu_check.py (and gpu_check.sh) on CPU: the GPU check's code runs end to end at tiny sizes, so it
cannot rot before a GPU runs it, and its figures are consistent with each other and with a hand count."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """One `gpu_check.py --cpu` run: its exit status, output and result file."""
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"stdout": proc.stdout, "result": json.loads(out.read_text())}


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow
def test_tiny_run_measures_every_stage_with_consistent_figures(tiny):
    r = tiny["result"]
    assert r["benchmark"] == "gpu_check" and r["mode"] == "cpu-tiny" and r["machine"]["cores"] >= 1
    assert set(r["stages"]) == {"align", "critic", "scoring", "vae", "generate"}
    assert not [k for k, s in r["stages"].items() if "error" in s]
    peak = r["peak_flops"]
    assert _finite(peak) and r["peak_source"].startswith("measured")

    align = r["stages"]["align"]
    assert (align["latents"], align["text_tokens"], align["tokens"]) == ([3, 16, 8, 12], 226, 226 + 3 * 4 * 6)
    assert set(align["settings"]) == {"checkpointing_batch1", "no_checkpointing_batch1", "checkpointing_batch2"}
    for s in align["settings"].values():
        assert _finite(s["step_s"], s["model_tflops"], s["mfu"], s["hfu"], s["peak_memory_gib"], s["counted_flops"])
        assert s["model_flops"] == s["batch"] * 3 * align["analytic_forward_flops_per_sample"]
        assert s["model_tflops"] == pytest.approx(s["model_flops"] / s["step_s"] / 1e12)
        assert s["mfu"] == pytest.approx(s["model_tflops"] * 1e12 / peak)
        # recomputation: HFU counts one more forward of the blocks, and only with checkpointing
        assert (s["hfu"] > s["mfu"]) == s["checkpointing"]
        # torch's FLOP counter agrees with the analytic count of what ran, within the terms the analytic count
        # rounds (3 x forward also for the input projections, whose inputs need no gradient: ~15% at this width)
        assert 0.75 < s["counted_vs_analytic_hardware_flops"] < 1.05
        assert s["attention_kernels"] and set(s["attention_kernels"]) <= {"flash", "memory-efficient", "math", "cudnn"}
        assert s["top_ops_ms"] and all(_finite(ms) for _, ms in s["top_ops_ms"])

    critic = r["stages"]["critic"]
    assert critic["lora"] == {"r": 128, "alpha": 256} and critic["batch"] == 2 and critic["frames"] == 8
    assert 0 < critic["trainable"] < critic["parameters"] and critic["answer_tokens"] > 10
    assert _finite(critic["step_s"], critic["examples_per_s"], critic["peak_memory_gib"])
    assert critic["examples_per_s"] == pytest.approx(critic["batch"] / critic["step_s"])

    scoring = r["stages"]["scoring"]
    logits, generate = scoring["modes"]["logits"], scoring["modes"]["generate"]
    for m in (logits, generate):
        assert _finite(m["videos_per_s"], m["batch_s"], m["peak_memory_gib"])
        assert m["videos_per_s"] == pytest.approx(scoring["videos"] / m["batch_s"])
    ratio = logits["videos_per_s"] / generate["videos_per_s"]
    assert scoring["logits_vs_generate_videos_per_s"] == pytest.approx(ratio)

    vae = r["stages"]["vae"]
    assert vae["encode"]["latents"] == [1, 3, 16, 8, 12] and vae["decode"]["video"][:3] == [1, 3, 9]
    # tiles smaller than the clip: the tiled path ran; diffusers' tile blending rounds the size of a decode from
    # tiles this small to within a few pixels (the JSON and the printed line show the decoded size)
    assert vae["tile_sample_min"] == [48, 72]
    assert abs(vae["decode"]["video"][3] - 64) <= 8 and abs(vae["decode"]["video"][4] - 96) <= 8
    assert _finite(vae["encode"]["s"], vae["decode"]["s"], vae["encode"]["peak_memory_gib"])

    gen = r["stages"]["generate"]
    assert gen["steps"] == 2 and gen["guidance"] == 6.0 and _finite(gen["s"], gen["step_s"], gen["peak_memory_gib"])
    assert gen["recipe_estimate_s"] == pytest.approx(gen["recipe_steps"] * gen["step_s"] + gen["decode_s"])

    # one printed line per figure, the ratios last
    lines = [line for line in tiny["stdout"].splitlines() if line.strip()]
    assert sum(line.startswith("align ") for line in lines) == 3
    assert sum(line.startswith("scoring ") for line in lines) == 2
    ratios = [i for i, line in enumerate(lines) if line.startswith("RATIO")]
    assert len(ratios) == 4 and ratios == list(range(len(lines) - 5, len(lines) - 1))


def test_analytic_flops_of_cogvideox_2b_match_a_hand_count():
    """At 49x480x720: latents 13x60x90, patches of 2x2 -> 17,550 video + 226 text tokens, d = 30 x 64 = 1920."""
    sys.path.insert(0, str(BENCH))
    from align_step import analytic_forward_flops, step_flops

    from lift.models import real

    fwd = analytic_forward_flops(real.config("cogvideox-2b", "transformer/config.json"), 13, 60, 90, 226)
    n, d = 17_776, 1920
    block = 24 * n * d * d + 4 * n * n * d  # q, k, v, out + the 4d MLP; QK^T and AV
    embed = 2 * 226 * 4096 * d + 2 * 2 * 17_550 * 64 * d  # text projection; patch embedding in and out
    assert (fwd["tokens"], fwd["block"], fwd["forward"]) == (n, block, 30 * block + embed)
    assert fwd["forward"] == 119_996_597_207_040  # ~120 TFLOP per sample
    assert step_flops(fwd, checkpointing=False) == (3 * fwd["forward"],) * 2
    assert step_flops(fwd, checkpointing=True)[1] == 3 * fwd["forward"] + 30 * block


def test_peak_table_and_override(monkeypatch):
    sys.path.insert(0, str(BENCH))
    import gpu_check
    import torch

    cuda = torch.device("cuda", 0)
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert gpu_check.peak_flops(cuda, None)[0] == peak
    assert gpu_check.peak_flops(cuda, 500.0) == (500e12, "--peak-tflops")


def test_shell_dry_run_prints_every_step(tmp_path):
    """The install steps and the timed run, checked without installing anything (no GPU here)."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "LIFT_WHEELS": str(tmp_path / "none"),
           "GPU_CHECK_TIMEOUT": "300"}
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--dry-run", "--", "--only", "align"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "requirements: torch>=2.6,<2.15 diffusers>=0.42,<0.50 transformers>=5,<6 peft>=0.17" in out
    assert "torch: " in out and "within the pin" in out  # this environment's torch satisfies the pin
    assert f"+ {sys.executable} -m pip install -q --no-deps --no-build-isolation -e ." in out
    assert (f"+ timeout --signal=INT --kill-after=30 300 env PYTHONUNBUFFERED=1 {sys.executable} "
            f"benchmarks/gpu_check.py --out {tmp_path}/gpu_check.json --deadline 240 --only align") in out
    bad = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--bogus"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr
