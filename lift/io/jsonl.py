"""JSON Lines, the format of every manifest, prompt file, rollout and score file: one JSON value per line.

One reader for all of them, so that a bad line is always reported the same way, as `URL:LINE: what is wrong`
(1-based line numbers, as an editor shows them). Lines end at "\\n" only (a trailing "\\r" is dropped): a JSON
string may hold U+2028 and other characters that `str.splitlines` would split on. Blank lines are skipped.

The fields a reader requires are ids, paths and texts (prompts, captions, reasons): each must be a non-empty
string (`text_problem`), so that `""` is never rendered, nor `null` or a number taken for the text "None" or "7".
A file that is one JSON document over several lines (a list, a pretty-printed object) is not JSON Lines: it is
reported once, with the shape found, rather than as one syntax error per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from lift.io import storage


class JsonlError(ValueError):
    """One bad line of a JSON Lines file; the message is `URL:LINE: reason`, and `text` is the line as written."""

    def __init__(self, url: str, line: int, reason: str, text: str = ""):
        self.url, self.line, self.reason, self.text = url, line, reason, text
        super().__init__(f"{url}:{line}: {reason}")


class Line(NamedTuple):
    """One decoded line: its 1-based number, its value and its text as written (without the line end)."""

    number: int
    value: object
    text: str


def json_type(value) -> str:
    """JSON's name for a decoded value's type, as the person who wrote the file knows it."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def text_problem(key: str, value) -> str | None:
    """Why a field that holds an id, a path or a text is not a non-empty string, or None when it is one."""
    if isinstance(value, str) and value.strip():
        return None
    shown = json.dumps(value, ensure_ascii=False)
    return f"'{key}' must be a non-empty string, got {json_type(value)}{'' if value is None else ' ' + shown[:80]}"


def shape_problem(data: bytes, expected: str) -> str | None:
    """For a file that is one JSON document over several lines, not JSON Lines: `expected` and what was found;
    None otherwise."""
    if data.strip().count(b"\n") == 0:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    found = f"a JSON {json_type(value)}"
    if isinstance(value, (list, dict)):
        found += f" of {len(value)} entries" if isinstance(value, list) else f" with keys {', '.join(list(value)[:8])}"
    return f"expected {expected}, found one JSON document over several lines: {found}"


def lines(url: str, keys: tuple[str, ...] | None = (), data: bytes | None = None) -> Iterator[Line | JsonlError]:
    """Every non-blank line of `url` in order, as a `Line` or as the `JsonlError` saying why it is not one; for
    readers that report every bad line of a file at once.

    With `keys` (a tuple, even empty) each line must be a JSON object holding those keys, each a non-empty string
    (`text_problem`); `keys=None` accepts any JSON value and leaves its checks to the caller. `data` is the file's
    content when the caller has read it. A file that is one multi-line JSON document yields a single error, on
    line 1, saying so (`shape_problem`).
    """
    if data is None:
        data = storage.read_bytes(url)
    shape_checked = False
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="replace")
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield JsonlError(url, number, "not valid UTF-8", text)
            continue
        except json.JSONDecodeError as e:
            one = "a JSON value" if keys is None else "a JSON object"
            shape = None if shape_checked else shape_problem(data, f"JSON Lines ({one} per line)")
            if shape:
                yield JsonlError(url, 1, shape, data.split(b"\n", 1)[0].decode("utf-8", errors="replace"))
                return
            shape_checked = True
            yield JsonlError(url, number, f"invalid JSON: {e.msg} at column {e.colno}", text)
            continue
        if keys is not None:
            if not isinstance(value, dict):
                yield JsonlError(url, number, f"a line must be a JSON object, got {json_type(value)}", text)
                continue
            missing = [k for k in keys if k not in value]
            if missing:
                yield JsonlError(url, number, f"missing field(s) {', '.join(missing)}", text)
                continue
            problems = [p for k in keys if (p := text_problem(k, value[k]))]
            if problems:
                yield JsonlError(url, number, "; ".join(problems), text)
                continue
        yield Line(number, value, text)


def read(url: str, keys: tuple[str, ...] | None = ()) -> Iterator[Line]:
    """The lines of `url` as `lines` checks them, stopping at the first bad one with its `JsonlError`."""
    for line in lines(url, keys):
        if isinstance(line, JsonlError):
            raise line
        yield line


def dumps(rows: Iterable, **options) -> str:
    """Rows as JSON Lines text, each line ended by "\\n"; `options` go to `json.dumps` (sort_keys, ...)."""
    return "".join(json.dumps(row, **options) + "\n" for row in rows)


def write(url: str, rows: Iterable, **options) -> int:
    """Write rows as one JSON Lines object, atomically (storage.write_text); returns how many were written."""
    rows = list(rows)
    storage.write_text(url, dumps(rows, **options))
    return len(rows)
