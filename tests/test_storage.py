"""The storage contract, run identically on file://, memory:// and a real S3 endpoint on loopback."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from lift.io import storage


def test_roundtrip_and_listing(root_url):
    storage.write_text(storage.join(root_url, "a/b.txt"), "hello")
    storage.write_json(storage.join(root_url, "a/c.json"), {"x": 1})
    assert storage.read_text(storage.join(root_url, "a/b.txt")) == "hello"
    assert storage.read_json(storage.join(root_url, "a/c.json")) == {"x": 1}
    assert storage.listdir(storage.join(root_url, "a")) == ["b.txt", "c.json"]
    assert storage.listdir(storage.join(root_url, "absent")) == []
    assert storage.exists(storage.join(root_url, "a/b.txt"))
    storage.remove(storage.join(root_url, "a"))
    assert not storage.exists(storage.join(root_url, "a/b.txt"))


def test_missing_object_names_url(root_url):
    url = storage.join(root_url, "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        storage.read_json(url)


def test_invalid_json_names_url_and_line(root_url):
    url = storage.join(root_url, "bad.json")
    storage.write_text(url, '{\n "a": 1,\n oops\n}')
    with pytest.raises(ValueError, match=r"bad\.json: line 3"):
        storage.read_json(url)


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_atomic_open_commits_only_on_success(root_url, mode):
    url = storage.join(root_url, "obj.bin")
    storage.write_bytes(url, b"old")
    payload = b"new-content" if mode == "wb" else "new-content"
    with pytest.raises(RuntimeError):
        with storage.atomic_open(url, mode) as f:
            f.write(payload)
            raise RuntimeError("writer died half way")
    assert storage.read_bytes(url) == b"old"
    assert storage.listdir(root_url) == ["obj.bin"], "no temporary files may be left behind"
    with storage.atomic_open(url, mode) as f:
        f.write(payload)
        assert storage.read_bytes(url) == b"old", "readers see the old object until the writer finishes"
    assert storage.read_bytes(url) == b"new-content"


def test_writing_folder_replaces_the_url_only_when_its_block_succeeds(root_url):
    url = storage.join(root_url, "runs/model")
    storage.write_text(storage.join(url, "stale.index.json"), "{}")  # an older save's file must not survive
    with storage.writing_folder(url) as local:
        with open(f"{local}/config.json", "w") as f:
            f.write('{"a": 1}')
    assert storage.listdir(url) == ["config.json"] and storage.read_json(f"{url}/config.json") == {"a": 1}
    with pytest.raises(RuntimeError, match="save failed"):
        with storage.writing_folder(url) as local:
            with open(f"{local}/config.json", "w") as f:
                f.write('{"a": 2}')
            raise RuntimeError("save failed")
    assert storage.read_json(f"{url}/config.json") == {"a": 1}, "a failed write keeps what the URL held"
    assert storage.listdir(storage.join(root_url, "runs")) == ["model"], "no partial folder is left beside it"


FOLDER = {"model_index.json": b'{"vae": ["diffusers", "AutoencoderKL"]}', "vae/config.json": b'{"a": 1}',
          "vae/diffusion_pytorch_model.safetensors": bytes(range(256)) * 1000, "vae/deeper/notes.txt": b"x"}


def _write_folder(url: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        storage.write_bytes(storage.join(url, rel), data)


def _read_folder(url: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(url)
    fs.invalidate_cache(root)
    return {path[len(root.rstrip("/")):].lstrip("/"): fs.cat_file(path) for path in fs.find(root)}


def test_copy_folder_within_a_store_and_between_any_two(root_url, tmp_path):
    """Within the store itself, and to local disk and to another store (downloaded or uploaded file by file)."""
    source = storage.join(root_url, "base")
    _write_folder(source, FOLDER)
    for url in (storage.join(root_url, "copy"), f"file://{tmp_path}/copy", f"memory://other/{uuid.uuid4().hex}"):
        storage.write_bytes(storage.join(url, "vae/config.json"), b"stale")
        storage.copy_folder(source, url)
        assert _read_folder(url) == FOLDER, url
    local = f"file://{tmp_path}/copy"
    storage.copy_folder(local, storage.join(root_url, "from-disk"))
    assert _read_folder(storage.join(root_url, "from-disk")) == FOLDER
    with pytest.raises(FileNotFoundError, match="absent: no files to copy"):
        storage.copy_folder(storage.join(root_url, "absent"), storage.join(root_url, "x"))


def test_copy_folder_within_one_object_store_is_server_side(s3_url, monkeypatch):
    """No byte of the folder passes through this process: every transfer from or to the client fails."""
    import s3fs

    _write_folder(f"{s3_url}/base", FOLDER)
    assert storage.same_store(f"{s3_url}/base", f"{s3_url}/copy")
    assert not storage.same_store(f"{s3_url}/base", "memory://lift-test/x")
    with monkeypatch.context() as m:
        for method in ("_put_file", "_get_file", "_cat_file", "_pipe_file", "_open"):
            m.setattr(s3fs.S3FileSystem, method, lambda *a, **k: pytest.fail("bytes passed through the client"))
        storage.copy_folder(f"{s3_url}/base", f"{s3_url}/copy")
    assert _read_folder(f"{s3_url}/copy") == FOLDER


def test_writing_folder_joins_copied_folders_and_refuses_a_clash(root_url, tmp_path):
    source = f"file://{tmp_path}/base"
    _write_folder(source, FOLDER)
    url = storage.join(root_url, "runs/model")
    with storage.writing_folder(url, {"vae": f"{source}/vae", "text_encoder": f"{source}/vae/deeper"}) as local:
        with open(f"{local}/config.json", "w") as f:
            f.write('{"a": 1}')
    assert storage.listdir(url) == ["config.json", "text_encoder", "vae"]
    assert _read_folder(f"{url}/vae") == {k.removeprefix("vae/"): v for k, v in FOLDER.items() if k.startswith("vae/")}
    assert _read_folder(f"{url}/text_encoder") == {"notes.txt": b"x"}
    with pytest.raises(ValueError, match="vae both written and copied"):
        with storage.writing_folder(url, {"vae": f"{source}/vae"}) as local:
            os.makedirs(f"{local}/vae")
    assert storage.listdir(url) == ["config.json", "text_encoder", "vae"], "a refused write keeps what the URL held"


def test_marker_contract(root_url):
    out = storage.join(root_url, "stage")
    assert storage.read_marker(out) is None
    assert not storage.is_complete(out)
    marker = storage.write_marker(out, "score", "abc123", {"videos": 3}, seconds=1.5)
    assert storage.is_complete(out)
    assert storage.is_complete(out, "abc123")
    assert not storage.is_complete(out, "other")
    stored = storage.read_marker(out)
    assert stored == marker
    assert stored["stage"] == "score" and stored["counts"] == {"videos": 3}
    assert "torch" in stored["versions"] and stored["time"].endswith("Z")


def test_shards_commit_skip_and_merge(root_url):
    shards = storage.Shards(storage.join(root_url, "parts"), num_shards=4)
    assert shards.todo(0, 2) == [0, 2] and shards.todo(1, 2) == [1, 3]
    shards.commit(2, b'{"i": 2}\n')
    assert shards.committed() == {2}
    assert shards.todo(0, 2) == [0], "a committed part is never redone"
    with pytest.raises(FileNotFoundError, match="3 of 4 parts missing"):
        shards.merge("all.jsonl")
    for s in (0, 1, 3):
        shards.commit(s, json.dumps({"i": s}).encode() + b"\n")
    assert shards.todo(0, 1) == []
    merged = shards.merge("all.jsonl")
    assert [json.loads(line)["i"] for line in storage.read_text(merged).splitlines()] == [0, 1, 2, 3]


def test_shards_resume_with_other_world_size(root_url):
    url = storage.join(root_url, "parts")
    first = storage.Shards(url, num_shards=6)
    for s in first.todo(0, 3):  # rank 0 of 3 finished before a crash
        first.commit(s, b"x")
    again = storage.Shards(url, num_shards=6)
    assert sorted(again.todo(0, 2) + again.todo(1, 2)) == [1, 2, 4, 5]


def test_shards_refuse_mixed_shard_counts(root_url):
    url = storage.join(root_url, "parts")
    storage.Shards(url, num_shards=2).commit(0, b"x")
    with pytest.raises(ValueError, match="written with 2 shards, this run uses 3"):
        storage.Shards(url, num_shards=3).committed()


def test_shard_slice_covers_every_item_once():
    items = list(range(11))
    slices = [storage.shard_slice(items, s, 4) for s in range(4)]
    assert sorted(sum(slices, [])) == items


def test_s3_endpoint_comes_from_environment(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    opts = storage.storage_options("s3")
    assert opts["client_kwargs"] == {"endpoint_url": s3_endpoint, "region_name": "eu-west-1"}
    assert storage.storage_options("file") == {}
    fs, path = storage.filesystem("s3://lift-test/x")
    assert path == "lift-test/x" and "s3" in fs.protocol
