"""What only a GPU can tell about the real recipe, in one command on one GPU: speed, MFU and memory of its steps.

    python benchmarks/gpu_check.py                 # one GPU, full size, offline, ~3-5 min on an H100
    python benchmarks/gpu_check.py --cpu           # the same code at 1 block and tiny sizes (tests/test_gpu_check.py)
    bash benchmarks/gpu_check.sh                   # installs what a bare GPU box lacks, then runs this under timeout

Every model is built from the published configs shipped in lift/models/real_configs (lift/models/real.py) with
random weights, so nothing is downloaded; costs do not depend on the weights' values. Measured, each through the
stage's own code where it can run without weights or tokenizer files:
- align: the CogVideoX-2B training step at 49x480x720 (latents 13x60x90, 16 channels; text 226 x 4096) with the
  family loss (lift/models/families/cogvideox.py) through `align.make_loss_fn`, the transformer sharded by
  `parallel.shard_model` (FSDP2 `fully_shard` per block, bf16 parameters, fp32 reductions) over a one-rank process
  group, AdamW of the cluster recipe (configs/cluster/align-cogvideox-2b-8gpu.yaml); with activation checkpointing
  on and off at batch 1, and on at the recipe's batch. Step time, model TFLOP/s, MFU, peak memory, the attention
  kernel that ran and the ops with the most device time (torch.profiler, one untimed step).
  FLOPs are counted analytically from the transformer's shapes (`align_step.analytic_forward_flops`; the model
  FLOPs of MFU are 3 x forward, recomputation excluded) and, as a check, by torch.utils.flop_counter
  (FlopCounterMode) over the same untimed step (it counts what ran, recomputation included).
- critic: a LoRA step of Qwen2.5-VL-7B as configs/cluster/critic-qwen2.5-vl-7b.yaml sets it up (`critic.adapt`: r128 /
  alpha 256 on the language model, vision tower frozen, activation checkpointing; sharded like the stage), on a
  batch made by `critic.Collate` from 8 frames of 480x720: examples/s and peak memory.
- scoring: `lift score`'s `Scorer.rate` on the same model in bf16, logits mode (one prefill, last-position logits,
  each video's vision features reused by its three questions) vs generate mode (greedy, `max_new_tokens` of the
  score stage, every answer forced to that length): videos/s each and their ratio.
- vae: the CogVideoX VAE (bf16) encoding one 49x480x720 clip (`family.encode_video`) and decoding its latents
  (`pipe.decode_latents`), tiled and sliced: time and peak memory each.
- generate: 2 denoising steps of `CogVideoXPipeline` at 49x480x720 with the recipe's guidance (classifier-free:
  two transformer passes per step) and the VAE decode; prompt embeddings are given (no T5), so text encoding is
  not included. Per-step time and an estimate of the recipe's full sampling (50 steps + decode).

The critic's text goes through its real processor (`real.write_critic_processor`: the Qwen2 tokenizer, chat
template and video processor of the published files), with a caption and an answer of LiFT-HRA's lengths.
A stage that fails (out of memory, say) records its error and the next one runs; the result file is rewritten
after every stage, so a run cut short by a timeout keeps what it measured.
Peak memory is `torch.cuda.max_memory_allocated` on a GPU and the process's peak RSS (VmHWM, reset per stage) on CPU.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import functools
import gc
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402
from _common import ROOT, ratio_line, save_result  # noqa: E402
from align_step import PEAKS, analytic_forward_flops, step_flops  # noqa: E402

T2V, CRITIC = "cogvideox-2b", "qwen2.5-vl-7b"
ALIGN_CONFIG = ROOT / "configs" / "cluster" / "align-cogvideox-2b-8gpu.yaml"
CRITIC_CONFIG = ROOT / "configs" / "cluster" / "critic-qwen2.5-vl-7b.yaml"
CHART_EXAMPLE = ROOT / "charts" / "examples" / "cogvideox-2b-8gpu.yaml"  # the recipe's sampling (steps, guidance)
GIB = 2**30
# A caption and a critic's reason of LiFT-HRA's typical lengths (tens of words each)
PROMPT = ("A golden retriever runs along a wet sandy beach at sunset, splashing through shallow waves while seagulls "
          "circle overhead and the camera slowly tracks alongside it.")
REASON = ("The dog's legs blur and merge between frames, its gait stutters, and the waves move backwards for a "
          "moment, so the motion is not natural or consistent.")


@dataclass(frozen=True)
class Sizes:
    """Shapes of one run: the real recipe's (a GPU) or tiny ones (`--cpu`) through the same code."""

    frames: int
    height: int
    width: int
    """The clip of align, VAE and generation (pixels)."""
    t2v_layers: int | None
    t2v_heads: int | None
    """Transformer blocks and attention heads of CogVideoX-2B (None: all 30, and its 30 heads of 64)."""
    critic_layers: int | None
    vision_layers: int | None
    """Language-model layers and vision blocks of the critic (None: all)."""
    narrow_critic: bool
    """Narrow the critic to a few hundred hidden units (tiny runs: its real width is 4 GB of embeddings alone)."""
    critic_height: int
    critic_width: int
    """Frames the critic reads (the recipe's clips are 480x720); their number is the critic config's model.frames."""
    score_videos: int | None
    new_tokens: int | None
    """Videos per scoring batch and generate mode's answer length (None: the score stage's defaults)."""
    steps: int
    """Timed repetitions of each measurement, after one untimed warm-up."""
    vae_tile: tuple[int, int] | None
    """The VAE's tile size in pixels (None: its defaults, 240x360 for CogVideoX)."""
    vae_channels: int | None
    """Channels of every VAE block, one layer per block (None: the published 128-512, 3 layers)."""
    recipe_batch: int | None
    """Batch of the align step at the recipe's setting (None: the cluster config's trainer.batch_size)."""


FULL = Sizes(frames=49, height=480, width=720, t2v_layers=None, t2v_heads=None, critic_layers=None, vision_layers=None,
             narrow_critic=False, critic_height=480, critic_width=720,
             score_videos=None, new_tokens=None, steps=2, vae_tile=None, vae_channels=None, recipe_batch=None)
TINY = Sizes(frames=9, height=64, width=96, t2v_layers=1, t2v_heads=2, critic_layers=1, vision_layers=1,
             narrow_critic=True,
             critic_height=56, critic_width=84, score_videos=2, new_tokens=3,
             steps=1, vae_tile=(48, 72), vae_channels=32, recipe_batch=2)


# ---------------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a block in GiB: CUDA's allocator peak on a GPU, the process's peak RSS (VmHWM) on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.gib = device, float("nan")

    @property
    def kind(self) -> str:
        return "torch.cuda.max_memory_allocated" if self.device.type == "cuda" else "process peak RSS (VmHWM)"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / GIB
        else:
            status = Path("/proc/self/status").read_text()
            self.gib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 2**20


def timed(fn, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls of `fn`, the device synchronised around each."""
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def attention_kernels(names: list[str]) -> list[str]:
    """Which scaled-dot-product attention kernels the profiled ops show (flash, memory-efficient, cudnn, math)."""
    kinds = {"flash": "flash", "efficient": "memory-efficient", "cudnn": "cudnn", "math": "math"}
    sdpa = [n for n in names if "scaled_dot_product" in n or "attention_forward" in n or "attention_backward" in n]
    return sorted({v for n in sdpa for k, v in kinds.items() if k in n})


def _register_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the CUDA attention kernels but not the CPU flash kernel; count it the same way
    (the formulas receive shapes)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    forward, backward = (getattr(aten, n, None) for n in ("_scaled_dot_product_flash_attention_for_cpu",
                                                          "_scaled_dot_product_flash_attention_for_cpu_backward"))
    if forward is not None and forward not in fc.flop_registry:
        fc.register_flop_formula(forward)(lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v))
    if backward is not None and backward not in fc.flop_registry:
        fc.register_flop_formula(backward)(lambda grad, q, k, v, *a, out_shape=None, **kw:
                                           fc.sdpa_backward_flop_count(grad, q, k, v))


def profiled(fn, device: torch.device, top: int = 8) -> dict:
    """One call of `fn` under torch.profiler and torch's FLOP counter: attention kernels, counted FLOPs, and the
    ops with the most self time on the device (the CPU without a GPU), in ms."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, FlopCounterMode(display=False) as counter:
        fn()
        sync(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ranked = sorted(events, key=lambda e: getattr(e, attr, 0.0), reverse=True)[:top]
    return {"attention_kernels": attention_kernels([e.key for e in events]),
            "counted_flops": float(counter.get_total_flops()),
            "top_ops_ms": [[e.key, round(getattr(e, attr, 0.0) / 1e3, 3)] for e in ranked]}


# ---------------------------------------------------------------------------------------------------------------
# set-up shared by the stages
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Env:
    device: torch.device
    sizes: Sizes
    peak_flops: float
    peak_source: str


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float, str]:
    """The dense bf16 peak MFU is measured against: --peak-tflops, the card's table entry, or (no entry: a CPU) the
    rate of a large matmul measured here."""
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAKS.items():
            if key in name:
                return value, f"table: {key} dense bf16"
    from align_step import matmul_peak

    dtype = torch.bfloat16 if device.type == "cuda" else None
    return matmul_peak(device, dtype), "measured: large matmul on this device (no table entry)"


def one_rank_group(device: torch.device) -> None:
    """A process group of world size 1, so FSDP2 shards (trivially) and casts exactly as on 8 ranks."""
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=torch_dist.HashStore(),
                                      rank=0, world_size=1, device_id=device if device.type == "cuda" else None)


def shard(model: torch.nn.Module, blocks: list, trainer, device: torch.device) -> torch.nn.Module:
    """`parallel.shard_model` as on a multi-rank job (for one plain process it shards nothing, and the bf16
    policy would be missing)."""
    from lift.train import parallel

    return parallel.shard_model(model, blocks, SimpleNamespace(distributed=True, device=device), trainer)


def stage_config(stage: str, path: Path):
    from lift import stages

    return stages.load(stage, str(path), [])


def narrowed(config):
    """A Qwen-VL config at a few hundred hidden units, head dims, vocabulary and token ids kept (tiny runs)."""
    cfg = copy.deepcopy(config)
    text, vision = cfg.text_config, cfg.vision_config
    head_dim = text.hidden_size // text.num_attention_heads  # the multimodal rotary sections need it unchanged
    text.num_attention_heads, text.num_key_value_heads = 2, 1
    text.hidden_size, text.intermediate_size = 2 * head_dim, 4 * head_dim
    vision.hidden_size, vision.num_heads, vision.intermediate_size = 64, 2, 128
    vision.out_hidden_size = text.hidden_size
    return cfg


def t2v_model(sizes: Sizes, device: torch.device):
    """CogVideoX-2B's transformer with random weights, at the run's depth (and width: heads, for tiny runs)."""
    from lift.models import real

    if sizes.t2v_heads is None:
        return real.transformer(T2V, sizes.t2v_layers, device=device)
    cut = real.transformer(T2V, sizes.t2v_layers, device="meta")
    with torch.device(device):
        return type(cut).from_config({**cut.config, "num_attention_heads": sizes.t2v_heads})


def critic_model(sizes: Sizes, device: torch.device, dtype: torch.dtype = torch.float32):
    """Qwen2.5-VL-7B with random weights, at the run's depth (and width, narrowed for tiny runs)."""
    from transformers import AutoModelForImageTextToText

    from lift.models import real

    if not sizes.narrow_critic:
        return real.critic(CRITIC, sizes.critic_layers, sizes.vision_layers, device=device, dtype=dtype)
    cut = real.critic(CRITIC, sizes.critic_layers, sizes.vision_layers, device="meta").config
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(narrowed(cut)).to(dtype)


@functools.cache
def critic_processor() -> str:
    """The real critic's processor folder (Qwen2 tokenizer, chat template, video processor; no weights), written
    once per run (deriving the tokenizer's merges takes ~20 CPU-seconds)."""
    from lift.models import real

    folder = tempfile.mkdtemp(prefix="lift-gpu-check-processor-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    real.write_critic_processor(CRITIC, folder)
    return folder


def random_frames(n_videos: int, frames: int, height: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=g) for _ in range(n_videos)]


def t2v_pipeline(transformer, vae=None):
    """CogVideoXPipeline around random-weight parts, with the published scheduler (no T5: embeddings are given)."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    from lift.models import real

    scheduler = CogVideoXDDIMScheduler.from_config(real.config(T2V, "scheduler/scheduler_config.json"))
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def vae_model(env: Env):
    """The CogVideoX VAE (random weights, the family's dtype, narrowed for tiny runs), tiled and sliced."""
    from diffusers import AutoencoderKLCogVideoX

    from lift.core import dist
    from lift.models import families, real

    dtype = families.get("cogvideox").dtypes(dist.compute_dtype(env.device))["vae"]
    cfg = real.config(T2V, "vae/config.json")
    if (channels := env.sizes.vae_channels) is not None:
        cfg.update(block_out_channels=[channels] * len(cfg["block_out_channels"]), layers_per_block=1)
    with torch.device(env.device):
        vae = AutoencoderKLCogVideoX.from_config(cfg).to(dtype).eval()
    tile = env.sizes.vae_tile
    vae.enable_tiling(**({"tile_sample_min_height": tile[0], "tile_sample_min_width": tile[1]} if tile else {}))
    vae.enable_slicing()
    return vae


def latent_shape(sizes: Sizes, vae_config: dict) -> tuple[int, int, int]:
    """(frames, height, width) of the latents of a clip: 4x in time after the first frame, 8x in space."""
    spatial = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return ((sizes.frames - 1) // vae_config["temporal_compression_ratio"] + 1, sizes.height // spatial,
            sizes.width // spatial)


# ---------------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------------

def align(env: Env) -> dict:
    """CogVideoX-2B training steps: checkpointing on and off at batch 1, on at the recipe's batch."""
    from lift.models import families, real
    from lift.stages import align as align_stage
    from lift.train import optim

    cfg = stage_config("align", ALIGN_CONFIG)
    family, device, sizes = families.get("cogvideox"), env.device, env.sizes
    torch.manual_seed(0)
    model = t2v_model(sizes, device)
    model.train()
    transformer_cfg = dict(model.config)
    frames, h, w = latent_shape(sizes, real.config(T2V, "vae/config.json"))
    text = transformer_cfg["max_text_seq_length"]
    fwd = analytic_forward_flops(transformer_cfg, frames, h, w, text)
    model = shard(model, family.blocks(model), cfg.trainer, device)
    pipe = t2v_pipeline(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.build_optimizer(params, cfg.trainer, device)
    loss_fn = align_stage.make_loss_fn(pipe, family, cfg.trainer.seed, device)
    recipe_batch = sizes.recipe_batch or int(cfg.trainer.batch_size)
    out = {"model": real.hub_id(T2V), "layers": transformer_cfg["num_layers"], "latents": [frames, 16, h, w],
           "text_tokens": text, "tokens": fwd["tokens"], "analytic_forward_flops_per_sample": fwd["forward"],
           "heads": transformer_cfg["num_attention_heads"], "parameters": real.parameters(model),
           "optimizer": "AdamW (cluster recipe), fused on CUDA", "settings": {}}
    for ckpt, batch in ((True, 1), (False, 1), (True, recipe_batch)):
        key = f"{'checkpointing' if ckpt else 'no_checkpointing'}_batch{batch}"
        try:
            out["settings"][key] = _align_setting(env, model, params, opt, loss_fn, fwd, ckpt, batch,
                                                  (frames, h, w), text, transformer_cfg["text_embed_dim"],
                                                  float(cfg.trainer.grad_clip))
        except Exception as e:  # out of memory, typically: recorded, the next setting runs
            out["settings"][key] = {"error": _error(e), "checkpointing": ckpt, "batch": batch}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def _align_setting(env, model, params, opt, loss_fn, fwd, ckpt, batch, shape, text, text_dim, grad_clip) -> dict:
    device = env.device
    (model.enable_gradient_checkpointing if ckpt else model.disable_gradient_checkpointing)()
    g = torch.Generator().manual_seed(batch)
    frames, h, w = shape
    data = {"latents": torch.randn(batch, frames, 16, h, w, generator=g),
            "embeds": torch.randn(batch, text, text_dim, generator=g), "weight": torch.ones(batch),
            "reward": torch.ones(batch), "index": list(range(batch))}
    step_no = [0]

    def step():
        loss, _ = loss_fn(model, data, step_no[0])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_no[0] += 1

    with PeakMemory(device) as mem:
        profile = profiled(step, device)  # the untimed warm-up step
        times = timed(step, env.sizes.steps, device)
    model_flops, hardware_flops = (batch * f for f in step_flops(fwd, ckpt))
    step_s = statistics.median(times)
    tflops = model_flops / step_s / 1e12
    return {"checkpointing": ckpt, "batch": batch, "step_s": step_s, "all_step_s": times,
            "model_flops": model_flops, "hardware_flops": hardware_flops, "model_tflops": tflops,
            "mfu": model_flops / step_s / env.peak_flops, "hfu": hardware_flops / step_s / env.peak_flops,
            "peak_memory_gib": mem.gib, "memory": mem.kind, **profile,
            "counted_vs_analytic_hardware_flops": profile["counted_flops"] / hardware_flops}


def critic_step(env: Env) -> dict:
    """A LoRA step of the 7B critic as its cluster recipe sets it up and `lift critic` takes it (`answer_loss`), on a
    batch `critic.Collate` makes."""
    from lift.models.critic import Collate, CriticExample, answer_loss, answer_text
    from lift.stages import critic
    from lift.train import optim

    cfg = stage_config("critic", CRITIC_CONFIG)
    device, sizes = env.device, env.sizes
    torch.manual_seed(0)
    model = critic.adapt(critic_model(sizes, device), cfg)
    model = shard(model, critic.blocks(model), cfg.trainer, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.build_optimizer(params, cfg.trainer, device)
    batch_size = int(cfg.trainer.batch_size)
    answer = answer_text("Bad", REASON, cfg.model.answer_format, cfg.model.with_reasons)
    frames = random_frames(batch_size, cfg.model.frames, sizes.critic_height, sizes.critic_width)
    collate = Collate(critic_processor(), cfg.model.sample_fps)
    batch = collate([{"frames": f, "example": CriticExample("v.mp4", PROMPT, "motion", answer, str(i))}
                     for i, f in enumerate(frames)])
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch["inputs"].items()}

    def step():
        answer_loss(model, inputs).backward()  # the stage's loss: the head at the answer's positions
        torch.nn.utils.clip_grad_norm_(params, float(cfg.trainer.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)

    with PeakMemory(device) as mem:
        profile = profiled(step, device)
        times = timed(step, sizes.steps, device)
    step_s = statistics.median(times)
    return {"model": CRITIC, "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha},
            "trainable": sum(p.numel() for p in params), "parameters": sum(p.numel() for p in model.parameters()),
            "batch": batch_size, "frames": cfg.model.frames, "frame_size": [sizes.critic_height, sizes.critic_width],
            "sequence_tokens": int(inputs["input_ids"].shape[1]),
            "answer_tokens": int((inputs["labels"] != -100).sum()) // batch_size,
            "step_s": step_s, "all_step_s": times, "examples_per_s": batch_size / step_s,
            "peak_memory_gib": mem.gib, "memory": mem.kind, **profile}


def scoring(env: Env) -> dict:
    """`Scorer.rate` in logits and generate mode on the same batch of videos."""
    from transformers import AutoProcessor

    from lift import models, stages
    from lift.core import dist
    from lift.io import storage
    from lift.models.scoring import Item, Scorer

    critic_cfg, score_cfg = stage_config("critic", CRITIC_CONFIG), stages.load("score", None, [])
    device, sizes = env.device, env.sizes
    n_videos = sizes.score_videos or int(score_cfg.batch_size)
    new_tokens = sizes.new_tokens or int(score_cfg.max_new_tokens)
    torch.manual_seed(0)
    model = critic_model(sizes, device, dist.compute_dtype(device))
    model.generation_config.min_new_tokens = new_tokens  # random weights: every answer runs to its full length
    with tempfile.TemporaryDirectory(prefix="lift-gpu-check-") as tmp:
        processor = AutoProcessor.from_pretrained(critic_processor())
        storage.write_marker(tmp, "critic-model", "", {}, answer_format=critic_cfg.model.answer_format,
                             frames=critic_cfg.model.frames, sample_fps=critic_cfg.model.sample_fps)
        with _patched(models, "load_critic", lambda *a, **k: (model, processor)):
            scorer = Scorer(tmp, device, max_new_tokens=new_tokens)
    items = [Item(str(i), f"{i}.mp4", f"{i}.mp4", PROMPT) for i in range(n_videos)]
    frames = random_frames(n_videos, scorer.frames, sizes.critic_height, sizes.critic_width)
    out = {"model": CRITIC, "dtype": str(next(model.parameters()).dtype), "videos": n_videos,
           "questions_per_video": 3, "new_tokens": new_tokens, "frames": scorer.frames,
           "frame_size": [sizes.critic_height, sizes.critic_width], "modes": {}}
    for mode in ("logits", "generate"):
        with PeakMemory(device) as mem:
            scorer.rate(items, frames, mode)  # warm-up
            times = timed(lambda: scorer.rate(items, frames, mode), sizes.steps, device)
        s = statistics.median(times)
        out["modes"][mode] = {"batch_s": s, "all_batch_s": times, "videos_per_s": n_videos / s,
                              "peak_memory_gib": mem.gib, "memory": mem.kind}
    out["logits_vs_generate_videos_per_s"] = (out["modes"]["logits"]["videos_per_s"] /
                                              out["modes"]["generate"]["videos_per_s"])
    return out


@contextlib.contextmanager
def _patched(module, name: str, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def vae(env: Env) -> dict:
    """Tiled and sliced VAE encode of one clip (`family.encode_video`) and decode of its latents."""
    from lift.models import families

    device, sizes = env.device, env.sizes
    model = vae_model(env)
    pipe = t2v_pipeline(None, model)
    family = families.get("cogvideox")
    clip = torch.rand(1, 3, sizes.frames, sizes.height, sizes.width, generator=torch.Generator().manual_seed(0))
    clip = (clip * 2 - 1).to(device)
    out = {"clip": [sizes.frames, sizes.height, sizes.width], "dtype": str(model.dtype),
           "tile_sample_min": [model.tile_sample_min_height, model.tile_sample_min_width]}
    with torch.no_grad():
        with PeakMemory(device) as mem:
            latents = family.encode_video(pipe, clip)
            times = timed(lambda: family.encode_video(pipe, clip), sizes.steps, device)
        out["encode"] = {"s": statistics.median(times), "all_s": times, "peak_memory_gib": mem.gib,
                         "memory": mem.kind, "latents": list(latents.shape)}
        with PeakMemory(device) as mem:
            video = pipe.decode_latents(latents)
            times = timed(lambda: pipe.decode_latents(latents), sizes.steps, device)
        out["decode"] = {"s": statistics.median(times), "all_s": times, "peak_memory_gib": mem.gib,
                         "memory": mem.kind, "video": list(video.shape)}
    return out


def generate(env: Env) -> dict:
    """2 denoising steps of CogVideoXPipeline with the recipe's guidance, and its VAE decode."""
    from lift.core import dist
    from lift.models import real

    device, sizes = env.device, env.sizes
    sampling = yaml.safe_load(CHART_EXAMPLE.read_text())["stages"]["generate"]["config"]["sampling"]
    dtype = dist.compute_dtype(device)
    torch.manual_seed(0)
    transformer = t2v_model(sizes, device).to(dtype).eval()
    pipe = t2v_pipeline(transformer, vae_model(env))
    cfg = transformer.config
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, cfg["max_text_seq_length"], cfg["text_embed_dim"], generator=g).to(device, dtype)
    marks = []

    def on_step(pipe_, i, t, kwargs):
        sync(device)
        marks.append(time.perf_counter())
        return kwargs

    def sample():
        marks.clear()
        sync(device)
        marks.append(time.perf_counter())
        pipe(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), height=sizes.height,
             width=sizes.width, num_frames=sizes.frames, num_inference_steps=2,
             guidance_scale=float(sampling["guidance"]), generator=torch.Generator().manual_seed(1),
             output_type="pt", callback_on_step_end=on_step)

    with PeakMemory(device) as mem:
        sample()  # warm-up
        totals = timed(sample, sizes.steps, device)
    step_s = (marks[-1] - marks[0]) / 2
    total = statistics.median(totals)
    decode = total - 2 * step_s  # what follows the last step: the VAE decode and post-processing
    return {"clip": [sizes.frames, sizes.height, sizes.width], "steps": 2, "guidance": sampling["guidance"],
            "dtype": str(dtype), "s": total, "all_s": totals, "step_s": step_s, "decode_s": decode,
            "recipe_steps": sampling["steps"], "recipe_estimate_s": sampling["steps"] * step_s + decode,
            "peak_memory_gib": mem.gib, "memory": mem.kind}


STAGES = {"align": align, "critic": critic_step, "scoring": scoring, "vae": vae, "generate": generate}


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------

def _error(e: BaseException) -> str:
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"


def lines(stage: str, r: dict) -> list[str]:
    """One line per measured figure."""
    if "error" in r:
        return [f"{stage}: FAILED {r['error']}"]
    if stage == "align":
        out = []
        for key, s in r["settings"].items():
            if "error" in s:
                out.append(f"align {key}: FAILED {s['error']}")
                continue
            out.append(f"align {key}: step {s['step_s']:.3f} s, {s['model_tflops']:.2f} model TFLOP/s, "
                       f"MFU {s['mfu']:.1%} (HFU {s['hfu']:.1%}), peak memory {s['peak_memory_gib']:.2f} GiB, "
                       f"attention {'/'.join(s['attention_kernels']) or 'none seen'}, FLOP counter / analytic "
                       f"{s['counted_vs_analytic_hardware_flops']:.3f}")
        return out
    if stage == "critic":
        return [f"critic LoRA step: batch {r['batch']} x {r['sequence_tokens']} tokens, step {r['step_s']:.3f} s, "
                f"{r['examples_per_s']:.2f} examples/s, peak memory {r['peak_memory_gib']:.2f} GiB, attention "
                f"{'/'.join(r['attention_kernels']) or 'none seen'}"]
    if stage == "scoring":
        return [f"scoring {mode}: {m['videos_per_s']:.3f} videos/s ({r['videos']} videos x 3 questions in "
                f"{m['batch_s']:.3f} s), peak memory {m['peak_memory_gib']:.2f} GiB"
                for mode, m in r["modes"].items()]
    if stage == "vae":
        shapes = {"encode": f"latents {r['encode']['latents']}", "decode": f"video {r['decode']['video']}"}
        return [f"vae {k} (tiled, sliced) of {'x'.join(map(str, r['clip']))}: {r[k]['s']:.3f} s, peak memory "
                f"{r[k]['peak_memory_gib']:.2f} GiB, {shapes[k]}" for k in ("encode", "decode")]
    return [f"generate 2 steps at {'x'.join(map(str, r['clip']))}, guidance {r['guidance']}: {r['s']:.3f} s "
            f"({r['step_s']:.3f} s/step, decode {r['decode_s']:.3f} s), peak memory {r['peak_memory_gib']:.2f} "
            f"GiB; {r['recipe_steps']} steps + decode ~ {r['recipe_estimate_s']:.1f} s"]


def ratios(result: dict) -> list[str]:
    """The RATIO lines: MFU against its target, logits vs generate scoring."""
    out = []
    for key, s in result["stages"].get("align", {}).get("settings", {}).items():
        if "mfu" in s:
            out.append(ratio_line(f"MFU, CogVideoX-2B align step, {key.replace('_', ' ')} "
                                  f"({result['peak_source']})", s["mfu"], ">= 0.40", s["mfu"] >= 0.4))
    r = result["stages"].get("scoring", {}).get("logits_vs_generate_videos_per_s")
    if r is not None:
        out.append(ratio_line("scoring videos/s, logits / generate mode, 7B critic shape", r, "report", True))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", "--tiny", dest="tiny", action="store_true",
                    help="tiny sizes on the CPU (the test's run): 1 block, few layers, small clips")
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/gpu_check.json)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, overriding the table")
    ap.add_argument("--only", default=",".join(STAGES), help=f"comma-separated stages of {', '.join(STAGES)}")
    ap.add_argument("--deadline", type=float, default=420.0,
                    help="seconds after which the stages not yet started are skipped (their entry says so)")
    args = ap.parse_args(argv)
    only = args.only.split(",")
    if unknown := [s for s in only if s not in STAGES]:
        ap.error(f"--only: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    if not args.tiny and not torch.cuda.is_available():
        ap.error("no GPU: run with --cpu for the tiny sizes")
    device = torch.device("cuda", 0) if not args.tiny else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    t0 = time.perf_counter()
    env = Env(device, TINY if args.tiny else FULL, *peak_flops(device, args.peak_tflops))
    one_rank_group(device)
    result = {"mode": "cpu-tiny" if args.tiny else "gpu", "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "cuda": torch.version.cuda, "sizes": asdict(env.sizes),
              "peak_flops": env.peak_flops, "peak_source": env.peak_source, "stages": {}}
    print(f"gpu_check on {result['device']} ({result['mode']}): peak {env.peak_flops / 1e12:.1f} TFLOP/s "
          f"({env.peak_source})", flush=True)
    for name in only:
        if time.perf_counter() - t0 > args.deadline:
            result["stages"][name] = {"error": f"skipped: past the --deadline of {args.deadline:.0f} s"}
        else:
            s0 = time.perf_counter()
            try:
                result["stages"][name] = STAGES[name](env)
            except Exception as e:  # recorded; the next stage runs
                result["stages"][name] = {"error": _error(e)}
                traceback.print_exc()
            result["stages"][name]["wall_s"] = time.perf_counter() - s0
            gc.collect()  # the stage's model and optimizer, which FSDP's hooks hold in reference cycles
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for line in lines(name, result["stages"][name]):
            print(line, flush=True)
        result["wall_s"] = time.perf_counter() - t0
        path = save_result("gpu_check", result, path=args.out)
    for line in ratios(result):
        print(line)
    print(f"results: {path} ({result['wall_s']:.0f} s)")
    return 1 if any("error" in s for s in result["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
