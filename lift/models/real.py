"""The published architectures lift's cluster recipes name, built offline from their config files.

`lift/models/real_configs/` holds the hub's config files of each model (no weights; its README gives every file's
source and what could not be found). From them a model is built with random weights either at full depth on the
meta device (sizes and memory plans without the memory) or at real width with a few blocks or layers, so a step
at real heads, head dim, patch size, latent channels, text length and positional embedding runs on a CPU.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources

import torch

from lift.io import storage

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
           device: str | torch.device = "meta", dtype: torch.dtype | None = None):
    """A real Qwen-VL critic model; `layers` and `vision_layers` cut the language and vision towers' depth; `dtype`
    builds it in that dtype (default float32)."""
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
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype)
    return _initialised(model, device)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


T2V = ("cogvideox-2b", "cogvideox-5b", "wan2.1-1.3b", "wan2.1-14b")
# What a real-width tokenizer reads: printable ASCII, alone and after "▁" (the word start). The published
# SentencePiece vocabularies cannot be downloaded here; this one keeps T5's layout and special tokens.
_CHARACTERS = [chr(c) for c in range(33, 127)]


def t2v_family(name: str) -> str:
    """The lift family (lift/models/families) of a real text-to-video model, from its pipeline class."""
    from lift.models import families

    pipeline = config(name, "model_index.json")["_class_name"]
    return next(f for f in families.NAMES if families.get(f).pipeline == pipeline)


def tokenizer(name: str):
    """The text tokenizer of a real text-to-video model, of the published class and special tokens (<pad> 0, </s> 1,
    <unk> 2, the <extra_id_N> sentinels last, N descending, as T5 and UMT5 number them) and text length; its
    vocabulary is printable ASCII pieces (a few hundred) instead of the published 32k (T5) or 256k (UMT5)."""
    import transformers

    cfg = config(name, "tokenizer/tokenizer_config.json")
    specials = [cfg["pad_token"], cfg["eos_token"], cfg["unk_token"]]
    pieces = [(p, 0.0) for p in specials] + [("\u2581", -2.0)]
    pieces += [(c, -10.0) for c in _CHARACTERS] + [("\u2581" + c, -8.0) for c in _CHARACTERS]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(cfg["extra_ids"]))]
    return getattr(transformers, cfg["tokenizer_class"])(vocab=pieces, **{k: v for k, v in cfg.items()
                                                                            if k != "tokenizer_class"})


def text_encoder(name: str, layers: int | None = None, vocab_size: int | None = None,
                 device: str | torch.device = "meta"):
    """The T5 / UMT5 encoder of a real text-to-video model at real width (d_model, heads, d_ff); `layers` keeps that
    many layers, `vocab_size` that many embedding rows (the reduced tokenizer's)."""
    import transformers

    cfg = config(name, "text_encoder/config.json")
    if layers is not None:
        cfg["num_layers"] = layers
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    model_cls = getattr(transformers, cfg["architectures"][0])
    with torch.device("meta"):
        model = model_cls(transformers.AutoConfig.for_model(**cfg))
    return _initialised(model, device)


def _initialised(model, device: str | torch.device):
    """A transformers model built on the meta device, on `device` with its random initial weights: drawn once, by
    the model's own initialisation (`init_weights`, which also restores the non-persistent buffers), not first by
    torch's default initialisation of every layer and then again by transformers' as a build on `device` would
    (the 7B critic at 1 block: 15 s against 36 s)."""
    if torch.device(device).type == "meta":
        return model
    model.to_empty(device=device)
    model.init_weights()
    return model


def write_t2v(name: str, out_url: str, layers: int = 1, text_layers: int = 1, seed: int = 0) -> dict:
    """A complete diffusers pipeline folder of a real text-to-video model with random weights, loadable by
    `lift.models.load_t2v(t2v_family(name), out_url)` as the hub's checkpoint is: the transformer at real width
    with `layers` blocks, the VAE and scheduler exactly as published, the text encoder at real width with
    `text_layers` layers over `tokenizer(name)`'s reduced vocabulary. Returns parameter counts per component."""
    import diffusers

    if name not in T2V:
        raise ValueError(f"{name}: not a text-to-video model; expected one of {', '.join(T2V)}")
    index = config(name, "model_index.json")
    scheduler_cfg = config(name, "scheduler/scheduler_config.json")
    vae_cfg = config(name, "vae/config.json")
    tok = tokenizer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = {
            "transformer": transformer(name, layers, device="cpu"),
            "vae": getattr(diffusers, vae_cfg["_class_name"]).from_config(vae_cfg),
            "text_encoder": text_encoder(name, text_layers, len(tok), device="cpu"),
        }
    pipe = getattr(diffusers, index["_class_name"])(
        tokenizer=tok, scheduler=getattr(diffusers, scheduler_cfg["_class_name"]).from_config(scheduler_cfg), **parts)
    with storage.writing_folder(out_url) as local:
        pipe.save_pretrained(local)
    return {part: parameters(module) for part, module in parts.items()}


def _folder(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown real model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name]


# Byte-level BPE tokens of Qwen2, Qwen2.5 and Qwen3 (one vocabulary); the added tokens are numbered from here.
QWEN2_BPE_TOKENS = 151643
# The files of a critic's hub folder copied as published (model and generation settings, tokenizer, processor).
_CRITIC_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "preprocessor_config.json",
                 "chat_template.json")


@functools.cache
def qwen2_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's byte-level BPE (vocabulary and merges) from the token ranks the `quicktok-v1` package ships (its
    `qwen3` encoding; Qwen2, 2.5 and 3 share it). The merges are derived from the ranks as for any tiktoken-style
    vocabulary: every split of a token into two tokens, ordered by the merged token's rank, which reproduces
    rank-order BPE (tests/test_critic_real.py compares the result with quicktok's own encoder)."""
    try:
        import quicktok
    except ImportError as e:
        raise ImportError("the real Qwen2 vocabulary comes from the quicktok-v1 package (the test extra: "
                          "pip install 'lift-k8s[test]')") from e
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    encoding = quicktok.get_encoding("qwen3")
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(QWEN2_BPE_TOKENS)}
    chars = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    merges = sorted((rank, ranks[token[:i]], ranks[token[i:]], i) for token, rank in ranks.items()
                    for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks)
    tokens = {rank: token for token, rank in ranks.items()}
    return ({text(token): rank for token, rank in ranks.items()},
            [(text(tokens[r][:i]), text(tokens[r][i:])) for r, _, _, i in merges])


def write_critic_processor(name: str, out_dir: str) -> None:
    """A real critic's hub folder without weights: the real Qwen2 tokenizer (tokenizer.json of `qwen2_bpe` with the
    published added tokens at their ids) and the published config.json, generation_config.json,
    tokenizer_config.json, preprocessor_config.json (image and video processor settings) and chat_template.json.
    AutoProcessor loads it as the hub's folder."""
    import os
    import shutil

    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    os.makedirs(out_dir, exist_ok=True)
    for file in _CRITIC_FILES:
        with resources.as_file(resources.files("lift.models").joinpath("real_configs", _folder(name), file)) as src:
            shutil.copyfile(src, os.path.join(out_dir, file))
    vocab, merges = qwen2_bpe()
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=None, pad_token=None)
    added = sorted((int(i), t) for i, t in config(name, "tokenizer_config.json")["added_tokens_decoder"].items())
    if [i for i, _ in added] != list(range(QWEN2_BPE_TOKENS, QWEN2_BPE_TOKENS + len(added))):
        raise ValueError(f"{name}: tokenizer_config.json's added tokens do not follow the BPE tokens in order")
    tokenizer.backend_tokenizer.add_tokens([AddedToken(t["content"], special=t["special"], normalized=False)
                                            for _, t in added])
    tokenizer.backend_tokenizer.save(os.path.join(out_dir, "tokenizer.json"))


def write_critic(name: str, out_dir: str, layers: int = 1, vision_layers: int = 1, seed: int = 0) -> int:
    """A complete critic folder of a real Qwen-VL model laid out as its hub checkpoint, with random weights: the
    config cut to `layers` language and `vision_layers` vision blocks at real width, safetensors in the published
    bfloat16, and `write_critic_processor`'s files. `lift.models.load_critic` loads it as it loads the hub's
    folder. Returns the parameter count."""
    from transformers import GenerationConfig

    write_critic_processor(name, out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = critic(name, layers, vision_layers, device="cpu", dtype=torch.bfloat16)
    model.generation_config = GenerationConfig.from_pretrained(out_dir)  # the published one
    model.save_pretrained(out_dir)  # its cut config.json replaces the published one
    return parameters(model)
