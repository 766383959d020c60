"""Prompt files: .txt (one prompt per line) or .jsonl with 'id' and 'prompt'.
"""

from __future__ import annotations

import logging

from lift.io import jsonl, storage

log = logging.getLogger(__name__)


def read_prompts(url: str) -> list[dict]:
    """Prompts from a .txt (one per line; ids are line numbers) or .jsonl file ({"id", "prompt"} per line)."""
    if url.endswith(".txt"):
        lines = storage.read_text(url).splitlines()
        prompts = [{"id": f"{n:06d}", "prompt": line.strip()} for n, line in enumerate(lines, 1) if line.strip()]
    else:
        prompts = [_prompt(url, line) for line in jsonl.lines(url, keys=("id", "prompt"))]
    if not prompts:
        raise ValueError(f"{url}: the prompt file is empty")
    ids = [p["id"] for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{url}: prompt id '{dup}' appears more than once")
    return prompts


def _prompt(url: str, line: jsonl.Line | jsonl.JsonlError) -> dict:
    """One checked prompt of a .jsonl file; a JsonlError names the line."""
    if isinstance(line, jsonl.JsonlError):
        raise jsonl.JsonlError(url, line.line, f"not a {{\"id\", \"prompt\"}} JSON line ({line.reason})", line.text)
    n, obj, text = line
    prompt = {"id": obj["id"], "prompt": obj["prompt"]}  # non-empty strings, as `jsonl.lines` checked
    if "/" in prompt["id"] or storage.unsafe_path(prompt["id"]):
        # an id names the prompt's video files, which may not land outside the output folder
        raise jsonl.JsonlError(url, n, f"prompt id {prompt['id']!r} cannot name a file ('/', '\\' or '..')", text)
    return prompt


