"""The one JSON Lines reader and writer: values and line numbers of good lines, `URL:LINE: reason` for bad ones,
and the readers built on it (prompts, rollout manifests, scores) naming the same line."""

from __future__ import annotations

import json

import pytest

from lift.data import hra, prompts
from lift.io import jsonl, storage
from lift.models import scoring
from lift.stages import align


def _file(tmp_path, content: str | bytes, name: str = "f.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_lines_are_numbered_from_one_skipping_blanks_and_crlf(tmp_path):
    url = _file(tmp_path, '{"a": 1}\r\n\n   \n[2, 3]\n"x\u2028y"\n{"b": null}')  # no newline at the end
    got = list(jsonl.read(url, keys=None))
    assert got == [(1, {"a": 1}, '{"a": 1}'), (4, [2, 3], "[2, 3]"), (5, "x\u2028y", '"x\u2028y"'),
                   (6, {"b": None}, '{"b": null}')]
    assert got[1].number == 4 and got[1].value == [2, 3]


BAD = {
    "invalid JSON": ('{"id": "a",', None,
                     "invalid JSON: Expecting property name enclosed in double quotes at column 12"),
    "not UTF-8": (b'{"id": "\xff"}', None, "not valid UTF-8"),
    "not an object": ("[1, 2]", (), "a line must be a JSON object, got array"),
    "a string": ('"text"', ("id",), "a line must be a JSON object, got string"),
    "missing keys": ('{"id": "1"}', ("id", "video", "prompt"), "missing field(s) video, prompt"),
    "empty text": ('{"id": "a", "prompt": ""}', ("id", "prompt"),
                   "'prompt' must be a non-empty string, got string \"\""),
    "blank text": ('{"id": "a", "prompt": " "}', ("id", "prompt"),
                   "'prompt' must be a non-empty string, got string \" \""),
    "null text": ('{"id": "a", "prompt": null}', ("id", "prompt"), "'prompt' must be a non-empty string, got null"),
    "number id": ('{"id": 7, "prompt": ["x"]}', ("id", "prompt"),
                  "'id' must be a non-empty string, got number 7; "
                  "'prompt' must be a non-empty string, got array [\"x\"]"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_line_is_named_by_url_and_line(tmp_path, case):
    bad, keys, reason = BAD[case]
    raw = bad if isinstance(bad, bytes) else bad.encode()
    url = _file(tmp_path, b'{"id": "0", "video": "v", "prompt": "p"}\n\n' + raw + b"\n{}\n")
    with pytest.raises(jsonl.JsonlError) as e:
        list(jsonl.read(url, keys))
    assert str(e.value) == f"{url}:3: {reason}"
    assert (e.value.url, e.value.line, e.value.reason) == (url, 3, reason)
    assert e.value.text == raw.decode("utf-8", errors="replace")
    assert isinstance(e.value, ValueError)


def test_lines_reports_every_bad_line_and_keeps_the_good_ones(tmp_path):
    url = _file(tmp_path, '{"id": "1"}\n{"id": \n7\n{"id": "4"}\n')
    got = list(jsonl.lines(url, keys=("id",)))
    assert [type(x).__name__ for x in got] == ["Line", "JsonlError", "JsonlError", "Line"]
    assert [x.line for x in got if isinstance(x, jsonl.JsonlError)] == [2, 3]
    assert [x.value["id"] for x in got if isinstance(x, jsonl.Line)] == ["1", "4"]


@pytest.mark.parametrize("document, found", [
    ('[\n  {"id": "a"},\n  {"id": "b"}\n]\n', "a JSON array of 2 entries"),
    ('{\n  "data": [],\n  "version": 2\n}\n', "a JSON object with keys data, version"),
])
def test_one_json_document_over_several_lines_is_reported_once_with_its_shape(tmp_path, document, found):
    url = _file(tmp_path, document)
    got = list(jsonl.lines(url, keys=("id",)))
    assert len(got) == 1 and isinstance(got[0], jsonl.JsonlError), got
    assert str(got[0]) == (f"{url}:1: expected JSON Lines (a JSON object per line), found one JSON document over "
                           f"several lines: {found}")
    # a JSON Lines file with one bad line is still reported line by line
    url = _file(tmp_path, '{"id": "a"}\n{"id": \n{"id": "c"}\n', "lines.jsonl")
    assert [type(x).__name__ for x in jsonl.lines(url, keys=("id",))] == ["Line", "JsonlError", "Line"]


def test_lines_reads_the_given_content_instead_of_the_url():
    got = list(jsonl.lines("memory://not/there.jsonl", data=b'{"k": 1}\n'))
    assert got == [(1, {"k": 1}, '{"k": 1}')]


def test_absent_file_names_the_url():
    with pytest.raises(FileNotFoundError, match="memory://nowhere/x.jsonl"):
        list(jsonl.read("memory://nowhere/x.jsonl"))


def test_write_then_read_round_trips_atomically(tmp_path):
    url = str(tmp_path / "out" / "rows.jsonl")
    rows = [{"b": 2, "a": "é"}, {"a": [1, 2]}]
    assert jsonl.write(url, iter(rows), sort_keys=True, ensure_ascii=False) == 2
    assert storage.read_text(url) == '{"a": "é", "b": 2}\n{"a": [1, 2]}\n'
    assert [line.value for line in jsonl.read(url)] == rows
    assert jsonl.dumps([]) == "" and jsonl.dumps([1, "x"]) == '1\n"x"\n'


def test_every_reader_names_the_same_line(tmp_path):
    """Prompts, rollout manifests, scores and the HRA manifest report a bad third line as URL:3."""
    text = '{"id": "a", "prompt": "p", "video": "a.mp4", "reward": 1}\n\n{"id": "b", \n'
    url = _file(tmp_path, text)
    with pytest.raises(jsonl.JsonlError, match=rf"^{url}:3: not a \{{\"id\", \"prompt\"\}} JSON line \(invalid JSON"):
        prompts.read_prompts(url)
    with pytest.raises(ValueError, match=rf"^{url}: 1 bad line\(s\):\n{url}:3: invalid JSON"):
        scoring.read_items(url)
    with pytest.raises(jsonl.JsonlError, match=rf"^{url}:3: invalid JSON"):
        align._read_scores(url)
    with pytest.raises(hra.ManifestError, match=rf"\n  {url}:3: invalid JSON"):
        hra.load_manifest(url, check_videos=False)


def test_readers_keep_their_own_checks(tmp_path):
    url = _file(tmp_path, '{"id": "a", "reward": 0.5}\n{"id": "b", "reward": NaN}\n')
    with pytest.raises(jsonl.JsonlError, match=rf"^{url}:2: a score needs an 'id' and a 'reward'.*got .*NaN"):
        align._read_scores(url)
    url = _file(tmp_path, '{"id": "a", "prompt": "x"}\n{"prompt": "y"}\n', "p.jsonl")
    with pytest.raises(jsonl.JsonlError, match=rf"^{url}:2: not a .* JSON line \(missing field\(s\) id\)"):
        prompts.read_prompts(url)
    items = _file(tmp_path, json.dumps({"id": 3, "video": "v/a.mp4", "prompt": 7}) + "\n[1]\n", "m.jsonl")
    with pytest.raises(ValueError, match=rf"{items}:2: a line must be a JSON object, got array"):
        scoring.read_items(items)


def test_manifest_file_name_is_one_constant():
    assert hra.MANIFEST == "manifest.jsonl"
