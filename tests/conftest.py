"""Shared fixtures: a real S3 endpoint on loopback (moto's server, spoken to through s3fs) and one storage
root per protocol, so storage behaviour is tested identically on file://, memory:// and s3://."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

BUCKET = "lift-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    # s3fs fetches an object larger than 50 MiB as concurrent ranged GETs; moto reads the whole object to serve each
    # range, so a model folder of 0.7 GB came down at ~55 MB/s, against ~450 MB/s in one GET (fsspec's per-protocol
    # config, read from the environment by every process, as a user would tune s3fs for their store)
    "FSSPEC_S3": '{"max_concurrency": 1}',
}


# The files that take longest on 2 cores (one to ten minutes each), longest first: they start first, so that the
# two workers end together instead of one running a long file alone at the end.
LONGEST_FIRST = ("tests/test_t2v_real.py", "tests/test_reliability_crash.py", "tests/test_critic_real.py",
                 "tests/test_align.py", "tests/test_train.py", "tests/test_reliability_storage.py",
                 "tests/test_gpu_check.py", "tests/test_zoo.py", "tests/test_sharded_load.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's files first, the others after them in collection order."""
    root = Path(__file__).resolve().parents[1]
    if missing := [path for path in LONGEST_FIRST if not (root / path).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that do not exist: {missing}")
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the whole session; the AWS environment (and fsspec's S3 settings) point
    every client, in this process and in the ones it starts, at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    import fsspec.config
    import s3fs

    saved_conf = dict(fsspec.config.conf.get("s3", {}))
    fsspec.config.set_conf_env(fsspec.config.conf)  # this process imported fsspec before the variable was set
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(BUCKET)
    yield endpoint
    server.stop()
    fsspec.config.conf["s3"] = saved_conf
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_url(s3_endpoint) -> str:
    """A fresh, empty prefix in the loopback bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["file", "memory", "s3"])
def root_url(request, tmp_path) -> str:
    """An empty folder URL on each storage protocol in turn."""
    if request.param == "file":
        return f"file://{tmp_path}/root"
    if request.param == "memory":
        return f"memory://lift-test/{uuid.uuid4().hex[:12]}"
    return request.getfixturevalue("s3_url")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> str:
    """The tiny model zoo, built once per session into a plain local folder."""
    from lift.toy import zoo

    out = str(tmp_path_factory.mktemp("zoo"))
    zoo.write_tiny(out, seed=0)
    return out


# the tiny zoo's models under hub ids, as `hub_cache` holds them
HUB_MODELS = {"lift-test/critic-toy": "critic", "lift-test/cogvideox-toy": "cogvideox"}


@pytest.fixture(scope="session")
def hub_cache(zoo_dir, tmp_path_factory) -> dict[str, str]:
    """A Hugging Face hub cache holding the tiny zoo's models under the ids of HUB_MODELS, in the layout
    huggingface_hub writes (content-addressed blobs, a snapshot of relative symlinks, refs/main): what a cluster
    with a pre-filled cache volume and HF_HUB_OFFLINE=1 has. Returns the environment that points a process at it
    (in this process: `huggingface_hub.constants`, which reads it at import)."""
    import hashlib
    from pathlib import Path

    root = tmp_path_factory.mktemp("hf-hub")
    for repo, folder in HUB_MODELS.items():
        repo_dir = root / f"models--{repo.replace('/', '--')}"
        revision = hashlib.sha1(repo.encode()).hexdigest()
        source = Path(zoo_dir, folder)
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            data = path.read_bytes()
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo_dir / "snapshots" / revision / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(revision)
    return {"HF_HUB_CACHE": str(root), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> str:
    """A small toy world (manifest, videos, prompts, real set), built once per session."""
    from lift import stages
    from lift.stages import runner

    out = str(tmp_path_factory.mktemp("toy") / "data")
    cfg = stages.load("data", None, [f"out={out}", "toy.num_clips=24", "toy.num_prompts=6", "toy.num_real=8"])
    runner.run_stage("data", cfg)
    return out


@pytest.fixture(scope="session")
def torchrun_lift():
    """`lift ARGS` under torchrun on this machine's CPU (standalone rendezvous), as the PyTorchJob and TorchX runs
    start it; `max_restarts` is torchrun's --max-restarts. Returns the finished process (stdout, stderr, returncode)."""
    import subprocess
    import sys

    def run(*args: str, nproc: int = 2, max_restarts: int = 0, env: dict | None = None, timeout: float = 600):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "--max-restarts", str(max_restarts), "--monitor-interval", "0.2", "-m", "lift", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    return run
