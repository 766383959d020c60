"""Import and export of the public LiFT-HRA release: LLaVA conversation JSON, one entry per (video, question),

    {"video": "videos/<id>.mp4",
     "conversations": [{"from": "human", "value": "<video>\
 <caption> <question>"},
                       {"from": "gpt", "value": "<Label>. <reason>"}]}

with the videos in a folder or in zip parts. Import groups a video's three entries into one HRA record
(lift/data/hra.py), splits train/test by a seeded hash of the video id and copies the videos beside the manifest:

    lift data import LiFT-HRA-data.json s3://bucket/LiFT-HRA/videos s3://bucket/runs/r1/data [on_error=skip]
    lift data import data.json videos/HRA_part0.zip,videos/HRA_part1.zip,videos/HRA_part2.zip runs/r1/data
    lift data export runs/r1/data/manifest.jsonl runs/r1/data/release.json

The round trip is lossless for a release in canonical form; docs/DATA.md says exactly what that form is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

import fsspec
from fsspec.implementations.zip import ZipFileSystem
from omegaconf import DictConfig

from lift import config
from lift.core import logs
from lift.data import hra
from lift.data.hra import Problem
from lift.io import jsonl, storage

log = logging.getLogger(__name__)

VIDEOS = "videos"
# Entry order of one video in an exported release (LiFT's own question order).
RELEASE_ORDER = tuple(hra.QUESTIONS)
# Fallback when a question is not LiFT's text verbatim: the one keyword that tells the three questions apart,
# looked for in the question part only (from "Please identify" on), since captions can say "slow motion".
KEYWORDS = {"semantic": "semantic", "fidelity": "fidelity", "motion": "motion"}
_QUESTION_START = "please identify"
_VIDEO_TAG = "<video>"
# A question matches whatever whitespace separates its words, at the end of the human turn.
_QUESTIONS = {d: re.compile(r"\s+".join(map(re.escape, q.split())) + r"\s*$", re.I) for d, q in hra.QUESTIONS.items()}
_ANSWER = re.compile(r"^\s*(good|normal|bad)\b[\s.:;,!-]*(.*)$", re.I | re.S)


class ReleaseError(hra.ManifestError):
    """Every bad entry of a release, each named by file and entry index (JSON list) or line (JSON Lines)."""


def human_text(caption: str, dimension: str) -> str:
    """The human turn of one entry, in the release's canonical form."""
    return f"{_VIDEO_TAG}\n {caption} {hra.QUESTIONS[dimension]}"


def gpt_text(label: str, reason: str) -> str:
    """The gpt turn of one entry: '<Label>. <reason>', or '<Label>.' when there is no reason."""
    return f"{label}. {reason}" if reason else f"{label}."


def parse_question(text: str) -> tuple[str, str]:
    """(dimension, caption) of a human turn '<video>\\n <caption> <question>'; ValueError if no question fits."""
    body = text.strip().removeprefix(_VIDEO_TAG)
    for dimension, pattern in _QUESTIONS.items():
        if m := pattern.search(body):
            return dimension, body[: m.start()].strip()
    start = body.lower().rfind(_QUESTION_START)
    if start >= 0:
        question = body[start:].lower()
        found = [d for d, word in KEYWORDS.items() if word in question]
        if len(found) == 1:
            return found[0], body[:start].strip()
    raise ValueError(f"unknown question (expected one of LiFT's three, or one naming exactly one of "
                     f"{', '.join(KEYWORDS.values())}): {text[-120:]!r}")


def parse_answer(text: str) -> tuple[str, str]:
    """(label, reason) of a gpt turn such as 'Good. <reason>', 'bad: <reason>' or 'Normal'."""
    m = _ANSWER.match(text)
    if not m:
        raise ValueError(f"unparsable answer (expected '<Good|Normal|Bad>. <reason>'): {text[:120]!r}")
    return m.group(1).capitalize(), m.group(2).strip()


def assign_split(video_id: str, test_fraction: float, seed: int) -> str:
    """Train or test by a seeded hash of the video id: stable across runs, machines and entry order."""
    digest = hashlib.sha256(f"{seed}\0{video_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def _in_videos(path: str) -> str:
    """A release video path relative to the videos folder: './videos/abc.mp4' -> 'abc.mp4'."""
    return path.removeprefix("./").removeprefix(f"{VIDEOS}/")


def video_id(path: str) -> str:
    """A record's id from the release's video path: 'videos/abc.mp4' -> 'abc'."""
    return posixpath.splitext(_in_videos(path))[0]


@dataclass
class _Answer:
    """One parsed entry; `where` is its position (line= or entry=) for a Problem."""

    where: dict
    text: str
    video: str
    dimension: str
    caption: str
    label: str
    reason: str


@dataclass
class _Video:
    """The entries of one video id, and why they cannot become a record (if they cannot)."""

    video: str
    answers: dict[str, _Answer] = field(default_factory=dict)
    entries: list[_Answer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _position(where: dict) -> str:
    return f"line {where['line']}" if "line" in where else f"entry {where['entry']}"


def _read_entries(url: str) -> tuple[list[tuple[dict, str, object]], list[Problem]]:
    """(position, original text, decoded value) of each entry of a JSON list or of a JSON Lines file."""
    content = storage.read_bytes(url)
    if content.lstrip().startswith(b"["):
        try:
            data = json.loads(content.decode("utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{url}: line {e.lineno}: invalid JSON: {e.msg}") from None
        return [({"entry": i}, json.dumps(obj, ensure_ascii=False), obj) for i, obj in enumerate(data)], []
    shape = jsonl.shape_problem(content, "a JSON list of entries or JSON Lines (one entry object per line)")
    if shape:
        raise ValueError(f"{url}: {shape}")
    entries, problems = [], []
    for line in jsonl.lines(url, keys=None, data=content):  # _parse_entry checks each decoded value
        if isinstance(line, jsonl.JsonlError):
            problems.append(Problem.of(line))
        else:
            entries.append(({"line": line.number}, line.text, line.value))
    return entries, problems


def _parse_entry(where: dict, text: str, obj) -> _Answer:
    """One release entry, checked; ValueError naming the first thing wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"an entry must be a JSON object, got {jsonl.json_type(obj)}")
    video = obj.get("video")
    if not isinstance(video, str) or not video.strip():
        raise ValueError("missing or empty 'video'")
    if hra.unsafe_path(video):
        raise ValueError(f"'video' must be a relative path, got {video!r}")
    turns = obj.get("conversations")
    shape = isinstance(turns, list) and len(turns) == 2 and all(
        isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns)
    if not shape or [t.get("from") for t in turns] != ["human", "gpt"]:
        raise ValueError("'conversations' must be one human turn then one gpt turn, each with a string 'value'")
    dimension, caption = parse_question(turns[0]["value"])
    if not caption:
        raise ValueError("no caption before the question")
    label, reason = parse_answer(turns[1]["value"])
    return _Answer(where, text, video, dimension, caption, label, reason)


def _group(answers: list[_Answer]) -> tuple[dict[str, _Video], int]:
    """Entries by video id, in order of first appearance; conflicts are recorded on the video, identical
    repeats of an entry are dropped and counted."""
    videos: dict[str, _Video] = {}
    duplicates = 0
    for a in answers:
        v = videos.setdefault(video_id(a.video), _Video(a.video))
        first = v.answers.get(a.dimension)
        if first is not None and (first.caption, first.label, first.reason) == (a.caption, a.label, a.reason):
            duplicates += 1
            continue
        v.entries.append(a)
        if a.video != v.video:
            v.problems.append(f"{a.video!r} and {v.video!r} map to the same id {video_id(a.video)!r}")
        elif first is not None:
            v.problems.append(f"conflicting answers for '{a.dimension}' in {_position(first.where)} and "
                              f"{_position(a.where)}")
        elif v.entries[0].caption != a.caption:
            v.problems.append(f"captions differ between {_position(v.entries[0].where)} and {_position(a.where)}")
        v.answers.setdefault(a.dimension, a)
    for v in videos.values():
        missing = [d for d in RELEASE_ORDER if d not in v.answers]
        if missing:
            v.problems.append(f"video {v.video!r} has no valid answer for {', '.join(missing)}")
    return videos, duplicates


@dataclass(frozen=True)
class _Source:
    fs: fsspec.AbstractFileSystem
    path: str
    size: int


class _VideoSources:
    """Every file under the release's video URLs, by path relative to its folder or zip root.

    `urls` is a comma-separated list of folders and zip files; zips found inside a folder are opened too, as
    the release ships its videos as zip parts. Zips are read in place through fsspec (ranged reads on object
    stores), never downloaded whole.
    """

    def __init__(self, urls: str):
        self.files: dict[str, _Source] = {}
        self._open: list[IO] = []
        for url in (u.strip() for u in urls.split(",") if u.strip()):
            fs, root = storage.filesystem(url)
            if root.endswith(".zip") and fs.isfile(root):
                self._add_zip(url)
                continue
            if not fs.isdir(root):
                raise FileNotFoundError(f"{url}: no such folder or zip file of videos")
            for path, info in sorted(fs.find(root, detail=True).items()):
                rel = path[len(root.rstrip("/")) + 1:]
                if rel.endswith(".zip"):
                    self._add_zip(storage.join(url, rel))
                else:
                    self.files.setdefault(rel, _Source(fs, path, info["size"]))
        names = Counter(posixpath.basename(rel) for rel in self.files)
        self._by_name = {name: s for rel, s in self.files.items() if names[name := posixpath.basename(rel)] == 1}

    def _add_zip(self, url: str) -> None:
        handle = storage.open_read(url)
        self._open.append(handle)
        zfs = ZipFileSystem(fo=handle)
        for path, info in sorted(zfs.find("", detail=True).items()):
            self.files.setdefault(path, _Source(zfs, path, info["size"]))

    def find(self, video: str) -> _Source | None:
        """The file for a release path: as written, without its leading 'videos/', or by a unique base name
        (zip parts may hold the videos at their root or under a folder of their own)."""
        path = video.removeprefix("./")
        return self.files.get(path) or self.files.get(_in_videos(path)) or self._by_name.get(posixpath.basename(path))

    def close(self) -> None:
        for handle in self._open:
            handle.close()

    def __enter__(self) -> _VideoSources:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_import(cfg: DictConfig) -> None:
    """`lift data import`'s input check: everything the import would stop on (settings, the release's entries,
    videos that cannot be found), found by reading the release and listing its videos, copying nothing."""
    with _VideoSources(_videos_url(cfg)) as sources:
        _plan(cfg, sources)


def import_release(cfg: DictConfig) -> dict:
    """`lift data import`: the release at cfg.release.json (+ videos at cfg.release.videos) -> cfg.out.

    Writes cfg.out/manifest.jsonl and cfg.out/videos/, plus cfg.out/rejected.jsonl with on_error=skip. Every
    problem is found before any video is copied (`check_import` finds them before the stage runner touches the
    output), so on_error=stop fails fast and leaves the output untouched. Returns the counts sealed into the
    stage's _SUCCESS marker.
    """
    with _VideoSources(_videos_url(cfg)) as sources:
        records, copies, problems, duplicates = _plan(cfg, sources)
        if duplicates:
            log.warning("%s: %d entries repeat an earlier entry word for word; each is imported once",
                        cfg.release.json, duplicates)
        rejected_url = storage.join(cfg.out, hra.REJECTED)
        if cfg.on_error == "skip":
            hra.write_rejected(rejected_url, problems)
        else:
            storage.remove(rejected_url)  # a stale one from an earlier skip run would describe other data
        copied = _copy_videos(copies, storage.join(cfg.out, VIDEOS))
    hra.write_manifest(storage.join(cfg.out, hra.MANIFEST), records)
    return _counts(records, rejected=len(problems), duplicates=duplicates, copied=copied)


def _videos_url(cfg: DictConfig) -> str:
    if not cfg.release.json or not cfg.release.videos:
        raise config.ConfigError("data import needs release.json and release.videos (the release JSON and the "
                                 "folder or zip parts of its videos)")
    return cfg.release.videos


def _plan(cfg: DictConfig, sources: _VideoSources) -> tuple[list[hra.Record], list, list[Problem], int]:
    """(records, (source, destination) copies, problems, identical repeats) of the import; raises `ReleaseError`
    listing every problem with on_error=stop, and when no video is left to import."""
    url = cfg.release.json
    raw, problems = _read_entries(url)
    if not raw and not problems:
        raise ValueError(f"{url}: empty release, no entries")
    answers = []
    for where, text, obj in raw:
        try:
            answers.append(_parse_entry(where, text, obj))
        except ValueError as e:
            problems.append(Problem(url, str(e), text, **where))
    videos, duplicates = _group(answers)
    records, copies = [], []
    for vid, v in videos.items():
        source = sources.find(v.video)
        if source is None and not v.problems:
            v.problems.append(f"video {v.video!r} not found in {cfg.release.videos}")
        if v.problems:
            problems += [Problem(url, "; ".join(v.problems), a.text, **a.where) for a in v.entries]
            continue
        record = _record(vid, v, cfg.split.test_fraction, cfg.split.seed)
        records.append(record)
        copies.append((source, storage.join(cfg.out, record.video)))
    problems.sort(key=lambda p: (p.line or 0, p.entry or 0))
    if problems and cfg.on_error == "stop":
        raise ReleaseError(url, problems)
    if not records:
        raise ValueError(f"{url}: no valid videos; all {len(problems)} entries have problems, e.g. {problems[0]}"
                         if problems else f"{url}: no videos to import")
    return records, copies, problems, duplicates


def _record(vid: str, v: _Video, test_fraction: float, seed: int) -> hra.Record:
    first = v.answers[RELEASE_ORDER[0]]
    return hra.Record(
        id=vid,
        video=f"{VIDEOS}/{_in_videos(v.video)}",
        prompt=first.caption,
        labels={d: v.answers[d].label for d in hra.DIMENSIONS},
        reasons={d: v.answers[d].reason for d in hra.DIMENSIONS if v.answers[d].reason},
        split=assign_split(vid, test_fraction, seed),
    )


def _copy_videos(copies: list[tuple[_Source, str]], videos_url: str) -> int:
    """Stream each video to its place under the output, skipping files already there with the same size, so
    a rerun after a crash copies only what is left. Returns how many were copied."""
    fs, root = storage.filesystem(videos_url)
    present = {storage.join(videos_url, p[len(root.rstrip("/")) + 1:]): info["size"]
               for p, info in (fs.find(root, detail=True).items() if fs.isdir(root) else [])}
    copied = 0
    for source, dest in logs.progress(copies, desc="copy videos", unit="video"):
        if present.get(dest) == source.size:
            continue
        with source.fs.open(source.path, "rb") as src, storage.atomic_open(dest) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        copied += 1
    return copied


def _counts(records: list[hra.Record], **extra: int) -> dict:
    labels = {d: {label: sum(r.labels[d] == label for r in records) for label in hra.LABELS} for d in hra.DIMENSIONS}
    splits = {s: sum(r.split == s for r in records) for s in hra.SPLITS}
    return {"records": len(records), **splits, "labels": labels, **extra}


def to_entries(record: hra.Record) -> list[dict]:
    """A record's three release entries, in RELEASE_ORDER."""
    return [
        {
            "video": record.video,
            "conversations": [
                {"from": "human", "value": human_text(record.prompt, d)},
                {"from": "gpt", "value": gpt_text(record.labels[d], record.reasons.get(d, ""))},
            ],
        }
        for d in RELEASE_ORDER
    ]


def export_release(manifest_url: str, out_json_url: str, fmt: str = "llava") -> int:
    """`lift data export`: a manifest back into the release's JSON list, written atomically; returns the entry
    count. Only the ratings are converted: the videos stay where they are (paths are relative to the manifest's
    folder) and the split is dropped, as the release has none."""
    if fmt != "llava":
        raise ValueError(f"unknown release format {fmt!r}; supported: llava")
    records = hra.load_manifest(manifest_url, check_videos=False)
    entries = [entry for r in records for entry in to_entries(r)]
    storage.write_text(out_json_url, json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    logs.event(log, "release exported", manifest=manifest_url, out=out_json_url, videos=len(records),
               entries=len(entries))
    return len(entries)
