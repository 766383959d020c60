"""The HRA manifest loader: every kind of bad line is named by file and line, stop lists them all, skip keeps
them in rejected.jsonl; on file://, memory:// and a real S3 endpoint on loopback."""

from __future__ import annotations

import json
import re

import pytest

from lift.data import hra
from lift.io import storage

LABELS = {"semantic": "Good", "motion": "Bad", "fidelity": "Normal"}


def record(i: int, **changes) -> dict:
    obj = {"id": f"v{i}", "video": f"videos/v{i}.mp4", "prompt": f"a red square moving left {i}",
           "labels": dict(LABELS), "reasons": {"motion": "the square jumps"}, "split": "train"}
    obj.update(changes)
    return obj


def write(root: str, lines: list[str], videos: int = 3) -> str:
    """A manifest of these lines in root, with fake videos v0..v{videos-1} (the loader only checks existence)."""
    for i in range(videos):
        storage.write_bytes(storage.join(root, f"videos/v{i}.mp4"), b"not really an mp4")
    url = storage.join(root, "manifest.jsonl")
    storage.write_text(url, "".join(line + "\n" for line in lines))
    return url


def test_valid_manifest_loads_on_every_protocol(root_url):
    records = [hra.Record(**record(i, split="test" if i == 2 else "train")) for i in range(3)]
    url = storage.join(root_url, "data/manifest.jsonl")
    assert hra.write_manifest(url, records) == 3
    for r in records:
        storage.write_bytes(hra.video_url(url, r), r.id.encode())
    assert hra.load_manifest(url) == records
    assert hra.video_url(url, records[1]) == storage.join(root_url, "data/videos/v1.mp4")
    assert storage.read_bytes(hra.video_url(url, records[1])) == b"v1"


def test_optional_fields_take_defaults_and_blank_lines_are_ignored(tmp_path):
    obj = record(0)
    del obj["reasons"], obj["split"]
    url = write(str(tmp_path), ["", json.dumps(obj), "   ", json.dumps(record(1))])
    loaded = hra.load_manifest(url)
    assert [r.id for r in loaded] == ["v0", "v1"]
    assert loaded[0].reasons == {} and loaded[0].split == "train"


BAD_LINES = {
    "malformed JSON": ('{"id": "v1", "video": ', r"invalid JSON: Expecting value at column 23"),
    "not an object": ("[1, 2]", r"a record must be a JSON object, got array"),
    "unknown label": (json.dumps(record(1, labels={**LABELS, "motion": "Meh"})), r"unknown label 'Meh' for 'motion'"),
    "unknown dimension": (json.dumps(record(1, labels={**LABELS, "color": "Good"})),
                          r"unknown dimension 'color' in 'labels'"),
    "missing dimension": (json.dumps(record(1, labels={"semantic": "Good"})),
                          r"'labels' lacks dimension\(s\) motion, fidelity"),
    "unknown reason dimension": (json.dumps(record(1, reasons={"smell": "bad"})),
                                 r"unknown dimension 'smell' in 'reasons'"),
    "missing field": (json.dumps({k: v for k, v in record(1).items() if k != "prompt"}), r"missing field 'prompt'"),
    "extra field": (json.dumps(record(1, score=0.5)), r"unknown field 'score'"),
    "wrong type": (json.dumps(record(1, prompt=5)), r"'prompt' must be a non-empty string, got number 5"),
    "wrong type labels": (json.dumps(record(1, labels=["Good"])), r"'labels' must be an object of dimension -> label"),
    "wrong type reason": (json.dumps(record(1, reasons={"motion": None})),
                          r"'reasons.motion' must be a non-empty string, got null"),
    "bad split": (json.dumps(record(1, split="dev")), r"bad split 'dev' \(splits: train, test\)"),
    "unsafe video path": (json.dumps(record(1, video="../elsewhere/v1.mp4")), r"'video' must be a relative path"),
    "duplicate id": (json.dumps(record(0, video="videos/v1.mp4")), r"duplicate id 'v0' \(first on line 1\)"),
    "missing video": (json.dumps(record(1, video="videos/nope.mp4")), r"video not found: .*videos/nope\.mp4"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_each_bad_line_is_named_by_file_and_line(tmp_path, case):
    line, reason = BAD_LINES[case]
    url = write(str(tmp_path), [json.dumps(record(0)), line, json.dumps(record(2))])
    with pytest.raises(hra.ManifestError) as err:
        hra.load_manifest(url)
    assert [(p.file, p.line) for p in err.value.problems] == [(url, 2)]
    assert err.value.problems[0].text == line
    message = str(err.value)
    assert message.startswith(f"{url}: 1 bad entry")
    assert len(message.splitlines()) == 2
    assert re.search(re.escape(f"{url}:2: ") + reason, message), message


def test_stop_lists_every_problem_in_one_error(root_url):
    lines = [
        json.dumps(record(0)),
        "{oops",
        json.dumps(record(1, labels={**LABELS, "semantic": "Great"}, split="val")),
        json.dumps(record(2, video="videos/absent.mp4")),
        json.dumps(record(0)),
    ]
    url = write(root_url, lines)
    with pytest.raises(hra.ManifestError) as err:
        hra.load_manifest(url)
    assert [p.line for p in err.value.problems] == [2, 3, 4, 5]
    message = str(err.value)
    assert f"{url}: 4 bad entries" in message
    assert f"{url}:2: invalid JSON" in message
    assert f"{url}:3: unknown label 'Great' for 'semantic'" in message and "bad split 'val'" in message
    assert f"{url}:4: video not found" in message
    assert f"{url}:5: duplicate id 'v0'" in message
    assert isinstance(err.value, ValueError), "the CLI turns ValueErrors into a one-line reason and exit status 1"


def test_skip_keeps_good_lines_and_rejects_the_rest_losing_nothing(root_url):
    lines = [
        json.dumps(record(0)),
        "not json at all",
        json.dumps(record(1, labels={**LABELS, "motion": "Meh"})),
        "",
        json.dumps(record(1)),
        json.dumps(record(7, video="videos/v7.mp4")),
        json.dumps(record(2, split=3)),
    ]
    url = write(root_url, lines)
    rejected_url = storage.join(root_url, "out/rejected.jsonl")
    loaded = hra.load_manifest(url, on_error="skip", rejected_url=rejected_url)
    assert [r.id for r in loaded] == ["v0", "v1"]
    rejected = [json.loads(line) for line in storage.read_text(rejected_url).splitlines()]
    assert [(r["file"], r["line"]) for r in rejected] == [(url, 2), (url, 3), (url, 6), (url, 7)]
    assert [r["text"] for r in rejected] == [lines[1], lines[2], lines[5], lines[6]]
    assert "unknown label 'Meh'" in rejected[1]["reason"] and "video not found" in rejected[2]["reason"]
    assert len(loaded) + len(rejected) == sum(1 for line in lines if line), "every non-blank line is kept or rejected"


def test_skip_rewrites_rejected_even_when_nothing_is_rejected(tmp_path):
    url = write(str(tmp_path), [json.dumps(record(0))])
    rejected_url = str(tmp_path / "rejected.jsonl")
    storage.write_text(rejected_url, "stale\n")
    assert len(hra.load_manifest(url, on_error="skip", rejected_url=rejected_url)) == 1
    assert storage.read_text(rejected_url) == ""


def test_skip_needs_a_place_for_rejected_lines(tmp_path):
    url = write(str(tmp_path), [json.dumps(record(0))])
    with pytest.raises(ValueError, match="needs a rejected_url"):
        hra.load_manifest(url, on_error="skip")
    with pytest.raises(ValueError, match="on_error must be"):
        hra.load_manifest(url, on_error="ignore")


def test_skip_with_nothing_valid_is_an_error_after_keeping_the_lines(tmp_path):
    url = write(str(tmp_path), ["{", "[]"])
    rejected_url = str(tmp_path / "rejected.jsonl")
    with pytest.raises(ValueError, match="no valid records; all 2 were rejected"):
        hra.load_manifest(url, on_error="skip", rejected_url=rejected_url)
    assert len(storage.read_text(rejected_url).splitlines()) == 2


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_manifest_is_an_error_naming_the_file(root_url, text):
    url = storage.join(root_url, "manifest.jsonl")
    storage.write_text(url, text)
    with pytest.raises(ValueError, match=f"^{url}: empty manifest"):
        hra.load_manifest(url)


def test_absent_manifest_names_the_url(root_url):
    with pytest.raises(FileNotFoundError, match="nope/manifest.jsonl"):
        hra.load_manifest(storage.join(root_url, "nope/manifest.jsonl"))


def test_check_videos_false_skips_the_existence_check(tmp_path):
    url = write(str(tmp_path), [json.dumps(record(5))], videos=0)
    assert [r.id for r in hra.load_manifest(url, check_videos=False)] == ["v5"]
    with pytest.raises(hra.ManifestError, match="video not found"):
        hra.load_manifest(url)


def test_videos_are_checked_with_one_listing_per_folder(tmp_path, monkeypatch):
    lines = [json.dumps(record(i)) for i in range(40)] + [json.dumps(record(40, video="other/v40.mp4"))]
    url = write(str(tmp_path), lines, videos=40)
    storage.write_bytes(str(tmp_path / "other/v40.mp4"), b"x")
    listed = []
    real_listdir = storage.listdir
    monkeypatch.setattr(storage, "listdir", lambda u: listed.append(u) or real_listdir(u))
    monkeypatch.setattr(storage, "exists", lambda u: pytest.fail(f"one request per video: exists({u})"))
    assert len(hra.load_manifest(url)) == 41
    assert sorted(listed) == [str(tmp_path / "other"), str(tmp_path / "videos")]


def test_crlf_and_non_utf8_lines(tmp_path):
    url = str(tmp_path / "manifest.jsonl")
    for i in range(2):
        storage.write_bytes(str(tmp_path / f"videos/v{i}.mp4"), b"x")
    storage.write_bytes(url, json.dumps(record(0)).encode() + b"\r\n" + b'{"id": "\xff"}\r\n'
                        + json.dumps(record(1)).encode() + b"\r\n")
    with pytest.raises(hra.ManifestError, match=rf"{url}:2: not valid UTF-8"):
        hra.load_manifest(url)
    assert [r.id for r in hra.load_manifest(url, "skip", str(tmp_path / "rejected.jsonl"))] == ["v0", "v1"]
