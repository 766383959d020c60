"""The human-rating (HRA) manifest: one JSONL record per rated video, as LiFT-HRA annotates them.

    {"id", "video", "prompt", "labels": {"semantic","motion","fidelity"} -> Good|Normal|Bad,
     "reasons": {dimension -> text}, "split": "train"|"test"}

`video` is relative to the manifest's folder. Every stage reads ratings through `load_manifest`, which validates
the whole file before any work starts: a bad line is either the reason a run stops (with every problem listed) or
is skipped into `rejected.jsonl`, never dropped silently. The format and its checks are described in docs/DATA.md.
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Iterable, Literal

from lift.io import jsonl, storage
from lift.io.jsonl import json_type

log = logging.getLogger(__name__)

DIMENSIONS = ("semantic", "motion", "fidelity")
LABELS = ("Good", "Normal", "Bad")
SPLITS = ("train", "test")
MANIFEST = "manifest.jsonl"  # the file name of every manifest: HRA ratings, rollouts, generated videos
REJECTED = "rejected.jsonl"

# LiFT's question per dimension, asked after "<video>\n<caption> ".
QUESTIONS = {
    "semantic": (
        "Please identify the semantic consistency issues in this video, focusing on the alignment between the "
        "text and the visual content. Specifically, point out any discrepancies regarding the subject (e.g., person "
        "or animal), quantity, color, scene description, style, and other relevant aspects."
    ),
    "fidelity": (
        "Please identify the fidelity issues in this video, assessing the realism of the content, including "
        "people, animals, and other objects. Highlight any problems such as missing limbs, deformed hands or faces, "
        "or other unrealistic elements."
    ),
    "motion": (
        "Please identify the motion issues in this video, focusing on the continuity and smoothness of actions, as "
        "well as their coherence and adherence to the laws of physics."
    ),
}


@dataclass
class Record:
    id: str
    video: str
    prompt: str
    labels: dict[str, str]
    reasons: dict[str, str] = field(default_factory=dict)
    split: str = "train"


# A record's fields without a default must be present; `reasons` and `split` may be left out.
REQUIRED = tuple(f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING)
OPTIONAL = tuple(f.name for f in fields(Record) if f.name not in REQUIRED)


@dataclass(frozen=True)
class Problem:
    """One bad line of a JSONL file (`line`, 1-based) or one bad entry of a JSON list (`entry`, 0-based)."""

    file: str
    reason: str
    text: str
    line: int | None = None
    entry: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}[{self.entry}]"
        return f"{where}: {self.reason}"

    @classmethod
    def of(cls, error: jsonl.JsonlError) -> Problem:
        """The problem of a line that is not JSON (or not the shape asked for), as the JSON Lines reader found it."""
        return cls(error.url, error.reason, error.text, line=error.line)

    def row(self) -> dict:
        """The problem as a line of rejected.jsonl: where, why, and the original text."""
        row = {"file": self.file, "line": self.line, "entry": self.entry, "reason": self.reason, "text": self.text}
        return {k: v for k, v in row.items() if v is not None}


class ManifestError(ValueError):
    """Every problem found in one input, listed in the message (`file:line: what`) and kept in `problems`."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        head = f"{source}: {len(problems)} bad {'entry' if len(problems) == 1 else 'entries'}"
        hint = " (on_error=skip moves them to rejected.jsonl and goes on)"
        super().__init__("\n".join([head + hint, *(f"  {p}" for p in problems)]))


def write_rejected(url: str, problems: list[Problem]) -> None:
    """Keep what was skipped, one JSON line per problem with its original text; written atomically, and also
    when empty, so the file always describes the last run rather than an older one."""
    jsonl.write(url, (p.row() for p in problems), ensure_ascii=False)
    if problems:
        log.warning("skipped %d bad entries; they are kept in %s", len(problems), url)


def write_manifest(url: str, records: Iterable[Record]) -> int:
    """Write records as one JSONL object, atomically; returns how many were written."""
    return jsonl.write(url, (asdict(r) for r in records), ensure_ascii=False, sort_keys=True)


def video_url(manifest_url: str, record: Record) -> str:
    """Where a record's video lives: its relative path resolved against the manifest's folder."""
    return storage.join(storage.parent(manifest_url), record.video)


unsafe_path = storage.unsafe_path  # one check for every path read from a manifest (lift/io/storage.py)


def check_record(obj) -> list[str]:
    """Every reason why a decoded JSON value is not a valid record (empty when it is)."""
    if not isinstance(obj, dict):
        return [f"a record must be a JSON object, got {json_type(obj)}"]
    problems = [f"missing field '{k}'" for k in REQUIRED if k not in obj]
    problems += [f"unknown field '{k}' (fields: {', '.join(REQUIRED + OPTIONAL)})" for k in obj
                 if k not in REQUIRED + OPTIONAL]
    problems += [p for key in ("id", "video", "prompt") if key in obj and (p := jsonl.text_problem(key, obj[key]))]
    if isinstance(obj.get("video"), str) and unsafe_path(obj["video"]):
        problems.append(f"'video' must be a relative path inside the manifest's folder, got {obj['video']!r}")
    problems += _check_by_dimension(obj, "labels", required=True)
    problems += _check_by_dimension(obj, "reasons", required=False)
    if "split" in obj and obj["split"] not in SPLITS:
        problems.append(f"bad split {obj['split']!r} (splits: {', '.join(SPLITS)})")
    return problems


def _check_by_dimension(obj: dict, key: str, required: bool) -> list[str]:
    if key not in obj:
        return []
    value = obj[key]
    if not isinstance(value, dict):
        return [f"'{key}' must be an object of dimension -> {'label' if key == 'labels' else 'text'}, "
                f"got {json_type(value)}"]
    problems = [f"unknown dimension '{d}' in '{key}' (dimensions: {', '.join(DIMENSIONS)})" for d in value
                if d not in DIMENSIONS]
    missing = [d for d in DIMENSIONS if d not in value]
    if required and missing:
        problems.append(f"'{key}' lacks dimension(s) {', '.join(missing)}")
    for dim, v in value.items():
        if dim not in DIMENSIONS:
            continue
        if key == "labels" and v not in LABELS:
            problems.append(f"unknown label {v!r} for '{dim}' (labels: {', '.join(LABELS)})")
        if key == "reasons" and (problem := jsonl.text_problem(f"reasons.{dim}", v)):
            problems.append(problem)
    return problems


def load_manifest(
    url: str,
    on_error: Literal["stop", "skip"] = "stop",
    rejected_url: str | None = None,
    check_videos: bool = True,
) -> list[Record]:
    """Read and validate a whole manifest, in file order.

    Each line is checked for JSON syntax, fields, types, labels, dimensions and split; ids must be unique and
    (with `check_videos`) every video must exist, found with one listing per videos folder rather than one
    request per video. `on_error="stop"` raises one `ManifestError` naming every bad line; `"skip"` drops bad
    lines, writing them to `rejected_url` (required then: the manifest's own folder may be another stage's sealed
    output). A manifest without any valid record is an error in both modes. Blank lines are ignored.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    if on_error == "skip" and rejected_url is None:
        raise ValueError(f"{url}: on_error='skip' needs a rejected_url to keep the skipped lines")
    problems: list[Problem] = []
    good: list[tuple[int, str, Record]] = []
    first_line: dict[str, int] = {}
    for line in jsonl.lines(url, keys=None):  # check_record says what is wrong with a decoded value
        if isinstance(line, jsonl.JsonlError):
            problems.append(Problem.of(line))
            continue
        number, obj, text = line
        reasons = check_record(obj)
        if not reasons and obj["id"] in first_line:
            reasons = [f"duplicate id {obj['id']!r} (first on line {first_line[obj['id']]})"]
        if reasons:
            problems.append(Problem(url, "; ".join(reasons), text, line=number))
            continue
        first_line[obj["id"]] = number
        good.append((number, text, Record(**obj)))
    if check_videos:
        missing = _missing_videos(url, [r for _, _, r in good])
        problems += [Problem(url, f"video not found: {video_url(url, r)}", text, line=number)
                     for number, text, r in good if r.id in missing]
        good = [g for g in good if g[2].id not in missing]
    problems.sort(key=lambda p: p.line or 0)
    if problems and on_error == "stop":
        raise ManifestError(url, problems)
    if on_error == "skip":
        write_rejected(rejected_url, problems)
    if not good and not problems:
        raise ValueError(f"{url}: empty manifest, no records")
    if not good:
        raise ValueError(f"{url}: no valid records; all {len(problems)} were rejected into {rejected_url}")
    return [r for _, _, r in good]


def _missing_videos(manifest_url: str, records: list[Record]) -> set[str]:
    """Ids of records whose video is absent: one listing per distinct folder, so 10k videos in videos/ cost
    a few paged LIST calls on object storage instead of 10k HEAD requests."""
    by_folder: dict[str, list[Record]] = {}
    for r in records:
        by_folder.setdefault(storage.parent(video_url(manifest_url, r)), []).append(r)
    missing = set()
    for folder, members in by_folder.items():
        present = set(storage.listdir(folder))
        missing |= {r.id for r in members if r.video.rsplit("/", 1)[-1] not in present}
    return missing
