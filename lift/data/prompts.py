"""Prompt files: .txt (one prompt per line) or .jsonl with 'id' and 'prompt'.
"""

from __future__ import annotations

import json
import logging

from lift.io import storage

log = logging.getLogger(__name__)


def read_prompts(url: str) -> list[dict]:
    """Prompts from a .txt (one per line; ids are line numbers) or .jsonl file ({"id", "prompt"} per line)."""
    text = storage.read_text(url)
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if url.endswith(".txt"):
            prompts.append({"id": f"{n:06d}", "prompt": line.strip()})
            continue
        try:
            obj = json.loads(line)
            prompt = {"id": str(obj["id"]), "prompt": str(obj["prompt"])}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{url}:{n}: not a {{\"id\", \"prompt\"}} JSON line ({type(e).__name__}: {e})") from None
        if not prompt["id"].strip() or "/" in prompt["id"] or storage.unsafe_path(prompt["id"]):
            # an id names the prompt's video files, which may not land outside the output folder
            raise ValueError(f"{url}:{n}: prompt id {prompt['id']!r} cannot name a file (empty, '/', '\\' or '..')")
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{url}: the prompt file is empty")
    ids = [p["id"] for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{url}: prompt id '{dup}' appears more than once")
    return prompts


