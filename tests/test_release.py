"""Import and export of the public LiFT-HRA release form through the real `lift data` CLI: grouping, question
mapping, answer parsing, the seeded split, zip parts, bad entries (stop and skip) and both round trips."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest

from lift import cli, stages
from lift.data import hra, release
from lift.io import storage

Q = hra.QUESTIONS
LABEL_CYCLE = ["Good", "Normal", "Bad", "Bad", "Good"]


def entry(vid: str, caption: str, dimension: str, answer: str, video: str | None = None) -> dict:
    """One release entry, spelled out as LIFT.md describes the release (independent of lift.release)."""
    return {
        "video": video or f"videos/{vid}.mp4",
        "conversations": [
            {"from": "human", "value": f"<video>\n {caption} {Q[dimension]}"},
            {"from": "gpt", "value": answer},
        ],
    }


def canonical_release(n: int) -> list[dict]:
    """n videos, three entries each in the release order (semantic, fidelity, motion); some without a reason."""
    out = []
    for i in range(n):
        for j, d in enumerate(("semantic", "fidelity", "motion")):
            label = LABEL_CYCLE[(i + j) % len(LABEL_CYCLE)]
            reason = f" The {d} of clip {i} is {label.lower()}: ünïcode ok." if (i + j) % 4 else ""
            out.append(entry(f"clip{i:04d}", f"A cat number {i} jumps over a fence", d, f"{label}.{reason}"))
    return out


def write_videos(folder: str, ids: list[str]) -> None:
    for vid in ids:
        storage.write_bytes(storage.join(folder, f"{vid}.mp4"), f"fake mp4 of {vid}".encode())


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def data_config(release_json: str, videos: str, out: str, *overrides: str):
    return stages.load("data", None, [f"out={out}", "source=import", f"release.json={release_json}",
                                      f"release.videos={videos}", *overrides])


def read_manifest(url: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(url).splitlines()]


@pytest.mark.parametrize("text, expected", [
    ("Good. Fluid and natural.", ("Good", "Fluid and natural.")),
    ("good.", ("Good", "")),
    ("Bad: choppy, frames drop", ("Bad", "choppy, frames drop")),
    ("NORMAL - mild jitter", ("Normal", "mild jitter")),
    ("  Normal\n\nslight blur", ("Normal", "slight blur")),
    ("Bad", ("Bad", "")),
])
def test_parse_answer_variants(text, expected):
    assert release.parse_answer(text) == expected


@pytest.mark.parametrize("text", ["Excellent. Great video", "Goodish. hmm", "", "The video is Good."])
def test_parse_answer_rejects_unknown_labels(text):
    with pytest.raises(ValueError, match="unparsable answer"):
        release.parse_answer(text)


def test_parse_question_canonical_whitespace_and_keywords():
    assert release.parse_question(f"<video>\n A dog surfing. {Q['fidelity']}") == ("fidelity", "A dog surfing.")
    squashed = "<video>\nA dog  surfing " + "\n".join(Q["motion"].split(" "))
    assert release.parse_question(squashed) == ("motion", "A dog  surfing")
    variant = "<video>\n a car in slow motion Please identify any semantic consistency problems here."
    assert release.parse_question(variant) == ("semantic", "a car in slow motion"), "keywords: question part only"
    with pytest.raises(ValueError, match="unknown question"):
        release.parse_question("<video>\n a car. What is the aesthetic quality?")
    with pytest.raises(ValueError, match="unknown question"):
        release.parse_question("<video>\n a car. Please identify the motion and fidelity issues.")


def test_split_is_deterministic_seeded_and_about_one_in_ten():
    ids = [f"video-{i}" for i in range(200)]
    splits = [release.assign_split(v, 0.1, seed=0) for v in ids]
    assert splits == [release.assign_split(v, 0.1, seed=0) for v in ids]
    assert 10 <= splits.count("test") <= 32, splits.count("test")
    assert splits != [release.assign_split(v, 0.1, seed=1) for v in ids], "the seed salts the hash"
    assert {release.assign_split(v, 0.0, 0) for v in ids} == {"train"}
    assert {release.assign_split(v, 1.0, 0) for v in ids} == {"test"}


def test_import_groups_maps_copies_and_splits(root_url):
    entries = canonical_release(3)
    random.Random(0).shuffle(entries)  # any entry order: grouping is by video, not by position
    variant = next(e for e in entries if e["video"] == "videos/clip0002.mp4" and Q["motion"] in str(e))
    variant["conversations"][1]["value"] = "bad:  The motion of clip 2 is jerky."
    json_url = storage.join(root_url, "release/LiFT-HRA-data.json")
    storage.write_json(json_url, entries)
    write_videos(storage.join(root_url, "release/videos"), ["clip0000", "clip0001", "clip0002"])
    out = storage.join(root_url, "data")
    counts = release.import_release(data_config(json_url, storage.join(root_url, "release"), out))
    records = hra.load_manifest(storage.join(out, "manifest.jsonl"))
    assert sorted(r.id for r in records) == ["clip0000", "clip0001", "clip0002"]
    by_id = {r.id: r for r in records}
    r1 = by_id["clip0001"]
    assert r1.video == "videos/clip0001.mp4" and r1.prompt == "A cat number 1 jumps over a fence"
    assert r1.labels == {"semantic": "Normal", "fidelity": "Bad", "motion": "Bad"}
    assert r1.reasons["motion"] == "The motion of clip 1 is bad: ünïcode ok."
    assert "semantic" not in by_id["clip0000"].reasons, "'Good.' has no reason, and none is invented"
    assert (by_id["clip0002"].labels["motion"], by_id["clip0002"].reasons["motion"]) == (
        "Bad", "The motion of clip 2 is jerky."), "a 'bad:' variant is read as the label Bad"
    for r in records:
        assert r.split == release.assign_split(r.id, 0.1, 0)
        video = hra.video_url(storage.join(out, "manifest.jsonl"), r)
        assert storage.read_bytes(video) == f"fake mp4 of {r.id}".encode()
    assert counts["records"] == 3 and counts["train"] + counts["test"] == 3 and counts["rejected"] == 0
    assert counts["copied"] == 3
    assert sum(counts["labels"]["motion"].values()) == 3
    assert counts["labels"]["semantic"] == {"Good": 1, "Normal": 1, "Bad": 1}


def bad_release() -> tuple[list[dict], dict[int, str]]:
    """Three good videos and one of each kind of bad entry; returns the entries and index -> expected reason."""
    entries = canonical_release(3)
    bad: dict[int, str] = {}

    def add(e, reason: str | None) -> None:
        if reason:
            bad[len(entries)] = reason
        entries.append(e)

    add(["not", "an", "object"], "an entry must be a JSON object")
    add({"video": "videos/x.mp4"}, "'conversations' must be one human turn then one gpt turn")
    add(entry("q", "A dog", "semantic", "Good. ok") | {"conversations": [
        {"from": "human", "value": "<video>\n A dog. Rate the aesthetics."}, {"from": "gpt", "value": "Good."}]},
        "unknown question")
    # a video whose motion answer cannot be parsed: that entry, and so the whole video, is rejected
    for d in ("semantic", "fidelity"):
        add(entry("half", "A bird", d, "Good. fine"), "has no valid answer for motion")
    add(entry("half", "A bird", "motion", "Perfect! smooth"), "unparsable answer")
    # a video with conflicting answers for one dimension
    for d in ("semantic", "fidelity", "motion"):
        add(entry("conflict", "A fish", d, "Bad. blurry"), "conflicting answers for 'fidelity'")
    add(entry("conflict", "A fish", "fidelity", "Good. sharp"), "conflicting answers for 'fidelity'")
    # an identical repeat is harmless: counted as a duplicate, not rejected
    add(entries[0], None)
    # a well-formed video whose file is not in the zips
    for d in ("semantic", "fidelity", "motion"):
        add(entry("ghost", "A ghost", d, "Normal. faint"), "video 'videos/ghost.mp4' not found")
    return entries, bad


def zipped_videos(root: str, ids: list[str]) -> str:
    """The videos as two zip parts, one with a folder inside and one flat; returns the comma-separated URLs."""
    part0 = storage.join(root, "release/videos/HRA_part0.zip")
    part1 = storage.join(root, "release/videos/HRA_part1.zip")
    storage.write_bytes(part0, zip_bytes({f"HRA_part0/{v}.mp4": f"fake mp4 of {v}".encode() for v in ids[:2]}))
    storage.write_bytes(part1, zip_bytes({f"{v}.mp4": f"fake mp4 of {v}".encode() for v in ids[2:]}))
    return f"{part0},{part1}"


def test_cli_import_skip_rejects_bad_entries_from_zips_and_loses_nothing(root_url, capsys):
    entries, bad = bad_release()
    json_url = storage.join(root_url, "release/LiFT-HRA-data.json")
    storage.write_json(json_url, entries)
    videos = zipped_videos(root_url, ["clip0000", "clip0001", "clip0002", "half", "conflict"])
    out = storage.join(root_url, "data")
    assert cli.main(["data", "import", json_url, videos, out, "on_error=skip"]) == 0, capsys.readouterr().err
    manifest = read_manifest(storage.join(out, "manifest.jsonl"))
    assert [r["id"] for r in manifest] == ["clip0000", "clip0001", "clip0002"]
    for r in manifest:
        assert storage.read_bytes(storage.join(out, r["video"])) == f"fake mp4 of {r['id']}".encode()
    rejected = read_manifest(storage.join(out, "rejected.jsonl"))
    assert [r["entry"] for r in rejected] == sorted(bad)
    for r in rejected:
        assert r["file"] == json_url
        assert bad[r["entry"]] in r["reason"], (r, bad[r["entry"]])
        assert json.loads(r["text"]) == entries[r["entry"]], "the original entry is kept verbatim"
    marker = storage.read_marker(out)
    assert marker["stage"] == "data"
    assert marker["counts"]["rejected"] == len(bad) and marker["counts"]["duplicates"] == 1
    assert 3 * len(manifest) + len(bad) + 1 == len(entries), "every entry is imported, rejected or a duplicate"


def test_import_the_folder_of_zip_parts_like_the_release_ships_it(tmp_path):
    entries = canonical_release(3)
    json_url = str(tmp_path / "release/LiFT-HRA-data.json")
    storage.write_json(json_url, entries)
    zipped_videos(str(tmp_path), ["clip0000", "clip0001", "clip0002"])
    counts = release.import_release(data_config(json_url, str(tmp_path / "release/videos"), str(tmp_path / "data")))
    assert counts["records"] == 3 and counts["copied"] == 3


def test_cli_import_stop_lists_every_bad_entry_and_writes_nothing(tmp_path, capsys):
    entries, bad = bad_release()
    json_url = str(tmp_path / "LiFT-HRA-data.json")
    storage.write_json(json_url, entries)
    videos = zipped_videos(str(tmp_path), ["clip0000", "clip0001", "clip0002", "half", "conflict"])
    out = str(tmp_path / "data")
    assert cli.main(["data", "import", json_url, videos, out]) == 1
    err = capsys.readouterr().err
    assert f"lift: error: {json_url}: {len(bad)} bad entries" in err
    for index, reason in bad.items():
        assert f"{json_url}[{index}]: " in err and reason in err
    assert storage.listdir(out) == [], "bad entries are found before anything is copied or written"
    with pytest.raises(release.ReleaseError) as exc:
        release.import_release(data_config(json_url, videos, out))
    assert isinstance(exc.value, hra.ManifestError) and len(exc.value.problems) == len(bad)


def test_jsonl_release_names_bad_lines(tmp_path):
    lines = [json.dumps(e) for e in canonical_release(1)]
    lines.insert(1, '{"video": "videos/clip0000.mp4", "conversations": [')
    json_url = str(tmp_path / "release.jsonl")
    storage.write_text(json_url, "\n".join(lines) + "\n")
    write_videos(str(tmp_path / "videos"), ["clip0000"])
    with pytest.raises(release.ReleaseError, match=rf"{json_url}:2: invalid JSON"):
        release.import_release(data_config(json_url, str(tmp_path / "videos"), str(tmp_path / "data")))
    counts = release.import_release(data_config(json_url, str(tmp_path / "videos"), str(tmp_path / "data"),
                                                "on_error=skip"))
    assert counts["records"] == 1 and counts["rejected"] == 1


def test_missing_video_stops_naming_it(tmp_path):
    json_url = str(tmp_path / "release.json")
    storage.write_json(json_url, canonical_release(2))
    write_videos(str(tmp_path / "videos"), ["clip0000"])
    with pytest.raises(release.ReleaseError, match=r"video 'videos/clip0001\.mp4' not found"):
        release.import_release(data_config(json_url, str(tmp_path / "videos"), str(tmp_path / "data")))


@pytest.mark.parametrize("text, match", [("", "empty release"), ("[]", "empty release"),
                                         ("[{]", r"line 1: invalid JSON")])
def test_empty_or_broken_release_names_the_file(tmp_path, text, match):
    json_url = str(tmp_path / "release.json")
    storage.write_text(json_url, text)
    (tmp_path / "videos").mkdir()
    with pytest.raises(ValueError, match=f"{json_url}: {match}"):
        release.import_release(data_config(json_url, str(tmp_path / "videos"), str(tmp_path / "data")))


def test_import_split_on_200_videos_is_stable_and_order_free(tmp_path):
    entries = canonical_release(200)
    ids = [f"clip{i:04d}" for i in range(200)]
    write_videos(str(tmp_path / "videos"), ids)
    splits = []
    for run, order_seed in enumerate((None, 1)):
        if order_seed is not None:
            random.Random(order_seed).shuffle(entries)
        json_url = str(tmp_path / f"release{run}.json")
        storage.write_json(json_url, entries)
        out = str(tmp_path / f"data{run}")
        counts = release.import_release(data_config(json_url, str(tmp_path / "videos"), out))
        splits.append({r.id: r.split for r in hra.load_manifest(storage.join(out, "manifest.jsonl"))})
        assert 10 <= counts["test"] <= 32 and counts["train"] + counts["test"] == 200
    assert splits[0] == splits[1]
    out = str(tmp_path / "data-q")
    counts = release.import_release(data_config(json_url, str(tmp_path / "videos"), out, "split.test_fraction=0.5"))
    assert 70 <= counts["test"] <= 130


def test_rerun_copies_only_missing_videos(tmp_path):
    json_url = str(tmp_path / "release.json")
    storage.write_json(json_url, canonical_release(3))
    write_videos(str(tmp_path / "videos"), ["clip0000", "clip0001", "clip0002"])
    cfg = data_config(json_url, str(tmp_path / "videos"), str(tmp_path / "data"))
    assert release.import_release(cfg)["copied"] == 3
    storage.remove(str(tmp_path / "data/videos/clip0001.mp4"))
    assert release.import_release(cfg)["copied"] == 1


def test_round_trips_through_the_cli_are_lossless(root_url, capsys):
    entries = canonical_release(12)
    json_url = storage.join(root_url, "release/LiFT-HRA-data.json")
    storage.write_json(json_url, entries)
    write_videos(storage.join(root_url, "release/videos"), [f"clip{i:04d}" for i in range(12)])
    data = storage.join(root_url, "data")
    assert cli.main(["data", "import", json_url, storage.join(root_url, "release/videos"), data]) == 0
    manifest_url = storage.join(data, "manifest.jsonl")

    # release -> manifest -> release: the very same entries, in the same order, with the same text
    exported = storage.join(root_url, "export/release.json")
    assert cli.main(["data", "export", manifest_url, exported]) == 0, capsys.readouterr().err
    assert storage.read_json(exported) == entries

    # manifest -> release -> manifest: the same records (the split is recomputed from the same seed)
    again = storage.join(root_url, "again")
    assert cli.main(["data", "import", exported, data, again]) == 0, capsys.readouterr().err
    assert storage.read_text(storage.join(again, "manifest.jsonl")) == storage.read_text(manifest_url)


def test_export_writes_three_entries_per_video_in_release_order(tmp_path):
    records = [hra.Record("a", "videos/a.mp4", "A cat", {"semantic": "Good", "motion": "Bad", "fidelity": "Normal"},
                          {"motion": "jumps"}, "test")]
    manifest_url = str(tmp_path / "manifest.jsonl")
    hra.write_manifest(manifest_url, records)
    assert release.export_release(manifest_url, str(tmp_path / "out.json")) == 3
    out = storage.read_json(str(tmp_path / "out.json"))
    assert [e["conversations"][1]["value"] for e in out] == ["Good.", "Normal.", "Bad. jumps"]
    assert [release.parse_question(e["conversations"][0]["value"])[0] for e in out] == list(release.RELEASE_ORDER)
    assert all(e == {"video": "videos/a.mp4", "conversations": e["conversations"]} for e in out), "no split key"
    with pytest.raises(ValueError, match="unknown release format 'sharegpt'"):
        release.export_release(manifest_url, str(tmp_path / "x.json"), "sharegpt")
