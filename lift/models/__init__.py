"""The one way every stage loads and exports models, whatever the URL.

Every model becomes a local folder first (`local_dir`), because the sharded loads read its safetensors files
themselves: a local folder (plain path or file://) is used in place; a hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct)
is downloaded into the Hugging Face cache ($HF_HOME, or found there alone with HF_HUB_OFFLINE=1); a model on object
storage (s3://, gs://, memory://, ...) is downloaded once per node into a local cache keyed by the URL and the
remote listing (sizes and ETags or mtimes, `_SUCCESS` included), so a rewritten model is fetched again and an
unchanged one is not. The reverse, a folder written by `save_pretrained` going to any URL, is
`storage.save_folder`; the dtype a model computes in is `dist.compute_dtype`.

Cache: $LIFT_CACHE (default ~/.cache/lift/models). Old versions of a model are not pruned: delete the folder.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, Callable

import filelock
import torch

from lift.io import storage
from lift.models import families

if TYPE_CHECKING:  # transformers and diffusers take seconds to import: only the loaders below need them
    from diffusers import DiffusionPipeline
    from transformers import PreTrainedModel, ProcessorMixin

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Weight files of other frameworks and formats that hub repositories ship beside the safetensors ones
_UNREAD_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.gguf"]
# Listing fields that change when an object is rewritten, in order of preference (s3, gcs, local, memory).
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "created")


def cache_root() -> str:
    return os.environ.get("LIFT_CACHE") or os.path.expanduser("~/.cache/lift/models")


def local_dir(name_or_path: str) -> str:
    """The local folder of a model: a local folder in place, a hub id's snapshot in the Hugging Face cache, a remote
    folder in lift's cache."""
    if storage.protocol_of(name_or_path) != "file":
        return _fetch(name_or_path)
    path = name_or_path.removeprefix("file://")
    if os.path.isdir(path):
        return path
    if not name_or_path.startswith("file://") and _HUB_ID.fullmatch(name_or_path):
        return _hub_snapshot(name_or_path)
    raise FileNotFoundError(f"{name_or_path}: no such model folder")


def _hub_snapshot(repo_id: str) -> str:
    """The hub model's files in the Hugging Face cache, downloaded if missing (every rank of a node may ask at once:
    huggingface_hub locks each file), without the weight formats lift never reads."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, ignore_patterns=_UNREAD_WEIGHTS)
    except LocalEntryNotFoundError:
        offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise FileNotFoundError(f"{repo_id}: not a local folder, and not in the Hugging Face cache "
                                f"({constants.HF_HUB_CACHE}) while {offline}") from None


def _version(info: dict) -> str:
    return next((str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None), "")


def cached_path(url: str) -> tuple[str, list[str]]:
    """(the cache folder of the remote folder `url` as it is now, the files under it): a version of the folder (a
    file added, resized or rewritten) has a folder of its own. Lists the folder; downloads nothing."""
    fs, root = storage.filesystem(url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    infos = fs.find(root, detail=True)
    files = {path[len(root):].lstrip("/"): info for path, info in infos.items() if info.get("type") != "directory"}
    if not files:
        raise FileNotFoundError(f"{url}: no model files under this URL")
    listing = sorted((rel, info.get("size"), _version(info)) for rel, info in files.items())
    key = hashlib.sha256(json.dumps([url, listing]).encode()).hexdigest()[:16]
    slug = re.sub(r"[^\w.-]+", "_", url.split("://", 1)[-1]).strip("_")[-80:]
    return os.path.join(cache_root(), f"{slug}-{key}"), sorted(files)


def _fetch(url: str) -> str:
    """Download a remote folder into the cache, once per node: the first of a node's ranks to ask downloads it under
    a file lock while the others wait for it and find it complete (8 ranks each downloading the 7B critic would
    move 133 GB). Into a temporary folder first, renamed into place when complete, so a crash mid-download never
    leaves a partial model behind."""
    final, files = cached_path(url)
    if os.path.isdir(final):
        return final
    fs, root = storage.filesystem(url)
    root, name = root.rstrip("/"), os.path.basename(final)
    os.makedirs(os.path.join(cache_root(), ".locks"), exist_ok=True)
    with filelock.FileLock(os.path.join(cache_root(), ".locks", f"{name}.lock")):
        if os.path.isdir(final):  # downloaded by another rank while this one waited
            return final
        tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root())
        try:
            targets = [os.path.join(tmp, rel) for rel in files]
            for target in targets:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get([f"{root}/{rel}" for rel in files], targets)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):  # not a lost race with a node sharing this cache: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


class Checkpoint:
    """The safetensors weights of one model folder, read tensor by tensor and row range by row range.

    Each read maps its file and is unmapped once the rows it returns are freed: only those rows' pages become
    resident, and only until the caller has copied them, so a rank reading the rows of its FSDP shard holds that
    shard and no more. (A file kept open would keep every page read resident; safetensors' "pread" backend reads a
    whole tensor to slice it.) `rename` maps a file's tensor names to the model's (transformers renames older
    layouts on load). A `parallel.Source`.
    """

    def __init__(self, folder: str, stem: str, rename: Callable[[str], str] = lambda name: name):
        from safetensors import safe_open

        index = os.path.join(folder, f"{stem}.safetensors.index.json")
        if os.path.isfile(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        elif os.path.isfile(os.path.join(folder, f"{stem}.safetensors")):
            files = [f"{stem}.safetensors"]
        else:
            raise FileNotFoundError(f"{folder}: no {stem}.safetensors or {stem}.safetensors.index.json")
        self.where: dict[str, tuple[str, str]] = {}  # model name -> (file, name in the file)
        for file in files:
            with safe_open(os.path.join(folder, file), "pt") as handle:
                self.where.update((rename(name), (os.path.join(folder, file), name)) for name in handle.keys())

    def __contains__(self, name: str) -> bool:
        return name in self.where

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype most of the weights are stored in (the published models: one for all)."""
        from safetensors import safe_open

        stored: collections.Counter = collections.Counter()
        for file in sorted({file for file, _ in self.where.values()}):
            with safe_open(file, "pt") as handle:
                stored.update(handle.get_slice(name).get_dtype() for name in handle.keys())
        floating = [(n, d) for d, n in stored.items() if d in _SAFETENSORS_FLOATS]
        return _SAFETENSORS_FLOATS[max(floating)[1]] if floating else torch.float32

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        from safetensors import safe_open

        file, stored = self.where[name]
        with safe_open(file, "pt") as handle:
            return handle.get_tensor(stored) if start is None else handle.get_slice(stored)[start:stop]


def critic_skeleton(name_or_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, Checkpoint]:
    """The critic of `name_or_path` built from its config with its parameters on the meta device and its buffers
    computed (rotary frequencies), for `parallel.EmptyModel`, and its weights, named as the model names them."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    path = local_dir(name_or_path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32,
                                                        trust_remote_code=trust_remote_code)
    model.tie_weights()  # the context re-creates each parameter it registers, and so unties them
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    names = model.state_dict()  # meta tensors: which names the model has, for the base-model prefix

    def rename(stored: str) -> str:
        name, converter = rename_source_key(stored, renamings, converters, model.base_model_prefix, names)
        if converter is not None:
            raise ValueError(f"{path}: weight {stored} is converted by transformers on load ({converter}), "
                             "which a sharded load cannot do; convert the checkpoint with save_pretrained first")
        return name

    return model, Checkpoint(path, "model", rename)


def t2v_skeleton(family: str, name_or_path: str) -> tuple[torch.nn.Module, Checkpoint]:
    """The diffusion transformer of a text-to-video pipeline built from its config with its parameters on the meta
    device and its buffers computed (sincos tables, rotary frequencies), for `parallel.EmptyModel`, and its weights."""
    import diffusers
    from accelerate import init_empty_weights

    path = local_dir(name_or_path)
    library, cls = getattr(diffusers, families.get(family).pipeline).load_config(path)["transformer"]
    if library != "diffusers":
        raise ValueError(f"{path}: transformer class {library}.{cls} is not one of diffusers' own; "
                         "only those load sharded")
    model_cls = getattr(diffusers, cls)
    with init_empty_weights(include_buffers=False):
        model = model_cls.from_config(model_cls.load_config(path, subfolder="transformer"))
    return model, Checkpoint(os.path.join(path, "transformer"), "diffusion_pytorch_model")


def load_critic(name_or_path: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                trust_remote_code: bool = False) -> tuple[PreTrainedModel, ProcessorMixin]:
    """(model, processor) of a video VLM critic in transformers layout (Qwen2-VL / Qwen2.5-VL and kin).

    Code shipped inside a model folder (`auto_map` in its config) runs only with `trust_remote_code=True`, which
    only the config's `model.trust_remote_code` turns on; weights load from safetensors only.
    """
    from transformers import AutoModelForImageTextToText

    path = local_dir(name_or_path)
    processor = load_processor(path, trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                        use_safetensors=True).to(device)
    return model, processor


def load_processor(name_or_path: str, trust_remote_code: bool = False) -> ProcessorMixin:
    """The processor (tokenizer, video processor, chat template) of a critic's folder."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(local_dir(name_or_path), trust_remote_code=trust_remote_code)


def load_t2v(family: str, name_or_path: str, dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu", trust_remote_code: bool = False,
             transformer: torch.nn.Module | None = None) -> DiffusionPipeline:
    """A diffusers text-to-video pipeline of a family of lift/models/families, computing in `dtype` except where
    the family fixes a component's dtype (`Family.dtypes`: Wan's VAE stays in float32).

    Each component is read straight into its dtype on `device` (on a GPU diffusers' `device_map`, for the current
    CUDA device: no float32 copy of a frozen text encoder ever exists, nor one on the host). `transformer`, one the
    caller built (e.g. empty, to shard and load it itself), replaces the pipeline's own, which is then not read.
    Custom component code in the folder runs only with `trust_remote_code=True` (the config's
    `model.trust_remote_code`); weights load from safetensors only.
    """
    import diffusers

    spec = families.get(family)
    device = torch.device(device)
    if device.type == "cuda" and device.index not in (None, torch.cuda.current_device()):
        raise ValueError(f"load_t2v: {device} is not the current CUDA device (torch.cuda.set_device first)")
    given = {} if transformer is None else {"transformer": transformer}
    return getattr(diffusers, spec.pipeline).from_pretrained(
        local_dir(name_or_path), dtype=spec.dtypes(dtype), trust_remote_code=trust_remote_code, use_safetensors=True,
        device_map=None if device.type == "cpu" else device.type, **given)
