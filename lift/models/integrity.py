"""A model folder checked without loading it, as a stage's input check does before it discards anything: the
folder exists and is a model (config.json or model_index.json), every safetensors file is whole and every shard
that an index names is there.

A safetensors file is an 8-byte little-endian header length, a JSON header giving each tensor's byte range, then
the tensors; a download or copy cut short leaves a file whose header or tensors run past its end, which
`from_pretrained` reports only as a traceback ("incomplete metadata"). Only the headers are read (two ranged reads
of a few KB per file on object storage), never the weights.
"""

from __future__ import annotations

import json
import os
import struct

from lift import models
from lift.io import storage

ROOT_FILES = ("config.json", "model_index.json")  # a transformers model, a diffusers pipeline
FIX = "remove the folder and download or copy the model again (the tiny and toy models: `lift models tiny|toy OUT`)"


class IncompleteModel(ValueError):
    """A model file that cannot be loaded; the message names the file, what is wrong, the fix and the config key."""


def check_folder(name_or_path: str, key: str) -> None:
    """Refuse a model folder (local, any URL or a hub id's snapshot) that is absent, not a model, or has a cut-off
    or corrupt safetensors file or a missing shard, naming the file and config key `key`."""
    where = name_or_path
    if storage.protocol_of(name_or_path) == "file":
        where = models.local_dir(name_or_path)  # a missing local folder is an error naming it; a hub id downloads
    fs, root = storage.filesystem(where)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    found = fs.find(root, detail=True) if fs.isdir(root) else {}
    sizes = {path[len(root) + 1:]: info["size"] for path, info in found.items() if info.get("type") != "directory"}
    if not sizes:
        raise IncompleteModel(f"{name_or_path}: no model files under this URL (config key '{key}')")
    if not any(name in sizes for name in ROOT_FILES):
        raise IncompleteModel(f"{name_or_path}: not a model folder, it has neither {' nor '.join(ROOT_FILES)} "
                              f"(config key '{key}')")
    for rel, size in sorted(sizes.items()):
        if rel.endswith(".safetensors"):
            problem = safetensors_problem(fs, f"{root}/{rel}", size)
        elif rel.endswith(".safetensors.index.json"):
            problem = _index_problem(fs, f"{root}/{rel}", rel, sizes)
        else:
            continue
        if problem:
            raise IncompleteModel(f"{storage.join(name_or_path, rel)}: {problem}; {FIX} (config key '{key}')")


def safetensors_problem(fs, path: str, size: int) -> str | None:
    """What is wrong with the safetensors file at `path` (`size` bytes) of filesystem `fs`, or None if it is whole."""
    if size < 8:
        return f"not a safetensors file: {size} bytes, fewer than its 8-byte header length (cut short)"
    length = struct.unpack("<Q", fs.cat_file(path, start=0, end=8))[0]
    if 8 + length > size:
        return (f"cut short (incomplete metadata): its header is {length} bytes, the file holds {size - 8} after "
                f"the header length")
    try:
        header = json.loads(fs.cat_file(path, start=8, end=8 + length))
        end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
        return "corrupt: its header is not the JSON table of tensors a safetensors file starts with"
    data = size - 8 - length
    if data < end:
        return f"cut short: its tensors need {end} bytes after the header, the file holds {data}"
    if data > end:
        return f"corrupt: {data - end} bytes follow its last tensor"
    return None


def _index_problem(fs, path: str, rel: str, sizes: dict[str, int]) -> str | None:
    """A sharded checkpoint's index that names a shard the folder lacks (or cannot be read)."""
    try:
        shards = set(json.loads(fs.cat_file(path))["weight_map"].values())
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return "corrupt: not a safetensors index (JSON with a 'weight_map')"
    folder = os.path.dirname(rel)
    missing = sorted(s for s in shards if (f"{folder}/{s}" if folder else s) not in sizes)
    return f"names shard(s) the folder lacks: {', '.join(missing[:5])}" if missing else None
