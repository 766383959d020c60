"""The published architectures lift's cluster recipes name, built offline from their config files.

`lift/models/real_configs/` holds the hub's config files of each model (no weights; its README gives every file's
source and what could not be found). From them a model is built with random weights either at full depth on the
meta device (sizes and memory plans without the memory) or at real width with a few blocks or layers, so a step
at real heads, head dim, patch size, latent channels, text length and positional embedding runs on a CPU.
"""

from __future__ import annotations

import copy
import json
from importlib import resources

import torch

# lift's name for a real model -> its folder under real_configs (the hub id with "/" written "--")
MODELS = {
    "cogvideox-2b": "THUDM--CogVideoX-2b",
    "cogvideox-5b": "THUDM--CogVideoX-5b",
    "wan2.1-1.3b": "Wan-AI--Wan2.1-T2V-1.3B-Diffusers",
    "wan2.1-14b": "Wan-AI--Wan2.1-T2V-14B-Diffusers",
    "qwen2.5-vl-7b": "Qwen--Qwen2.5-VL-7B-Instruct",
    "qwen2-vl-2b": "Qwen--Qwen2-VL-2B-Instruct",
}
CRITICS = ("qwen2.5-vl-7b", "qwen2-vl-2b")


def hub_id(name: str) -> str:
    return _folder(name).replace("--", "/", 1)


def config(name: str, file: str = "config.json") -> dict:
    """One published config file of a real model, e.g. config("cogvideox-2b", "transformer/config.json")."""
    path = resources.files("lift.models").joinpath("real_configs", _folder(name), file)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no {file} among the shipped real configs (lift/models/real_configs/"
                                f"{_folder(name)}; its README says which files are missing)")
    return json.loads(path.read_text())


def transformer(name: str, layers: int | None = None, device: str | torch.device = "meta"):
    """The diffusion transformer of a real text-to-video model; `layers` keeps only that many blocks."""
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    cfg = config(name, "transformer/config.json")
    cls = {"CogVideoXTransformer3DModel": CogVideoXTransformer3DModel,
           "WanTransformer3DModel": WanTransformer3DModel}[cfg["_class_name"]]
    if layers is not None:
        cfg["num_layers"] = layers
    with torch.device(device):
        return cls.from_config(cfg)


def critic(name: str, layers: int | None = None, vision_layers: int | None = None,
           device: str | torch.device = "meta"):
    """A real Qwen-VL critic model; `layers` and `vision_layers` cut the language and vision towers' depth."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    if name not in CRITICS:
        raise ValueError(f"{name}: not a critic; expected one of {', '.join(CRITICS)}")
    raw = config(name)
    cfg = AutoConfig.for_model(**copy.deepcopy(raw))
    if layers is not None:
        text = getattr(cfg, "text_config", cfg)
        text.num_hidden_layers = layers
        if getattr(text, "layer_types", None):
            text.layer_types = text.layer_types[:layers]
        if hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = layers
    if vision_layers is not None:
        vision = cfg.vision_config
        vision.depth = vision_layers
        if getattr(vision, "fullatt_block_indexes", None):
            # Qwen2.5-VL: window attention in all blocks but these; keep the last block a full-attention one
            vision.fullatt_block_indexes = [vision_layers - 1]
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(cfg)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _folder(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown real model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]
