"""Storage faults (docs/RELIABILITY.md): a fault-injecting proxy (tests/faultproxy.py) in front of the loopback S3
endpoint fails 20% of requests with 500 InternalError, 503 SlowDown, connection resets and bodies cut off
mid-stream, and delays others; data import, scoring, checkpoint save/load and alignment still finish with outputs
identical to a fault-free run. Retries and timeouts come from the environment and are logged."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os

import pytest
import torch
from faultproxy import KINDS, FaultProxy, Faults
from test_align import TRAIN as ALIGN_TRAIN
from test_align import _transformer, _write_rollouts, _write_scores
from test_release import canonical_release, write_videos
from test_reliability_crash import _state

from lift import cli
from lift.core import logs
from lift.io import storage
from lift.train.checkpoint import Checkpointer

RATE = 0.2  # the fraction of requests that fail in the end-to-end tests
FAULTS = Faults(rate=RATE, kinds=KINDS, delay_rate=0.05, delay_s=0.2, seed=2026)


@contextlib.contextmanager
def through_proxy(faults: Faults, **env: str):
    """Every S3 client made inside the block talks to the store through a FaultProxy with `faults`."""
    import s3fs

    upstream = os.environ["AWS_ENDPOINT_URL"]
    proxy = FaultProxy(upstream, faults).start()
    saved = {k: os.environ.get(k) for k in ["AWS_ENDPOINT_URL", *env]}
    os.environ.update({"AWS_ENDPOINT_URL": proxy.url, **env})
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield proxy
    finally:
        proxy.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


def _objects(url: str) -> dict[str, bytes]:
    """Every object under a prefix, by relative path; markers and saved configs (which name the run's own URL, the
    time and the host) are left out."""
    fs, root = storage.filesystem(url)
    fs.invalidate_cache(root)
    return {p[len(root) + 1:]: fs.cat_file(p) for p in sorted(fs.find(root))
            if not p.endswith(("/_SUCCESS", "/_STARTED", "/config.yaml"))}


def _failed(proxy: FaultProxy) -> int:
    stats = proxy.stats
    return sum(stats[k] for k in KINDS)


def _assert_survived(proxy: FaultProxy, err: str) -> None:
    """RATE of the requests failed (one in every 5, give or take one), and the retries they caused were logged."""
    stats = proxy.stats
    assert stats["requests"] >= 20 and abs(_failed(proxy) - RATE * stats["requests"]) < 1, stats
    assert "storage retry" in err, "retries are logged"
    print(f"fault proxy: {dict(stats)}; retry lines logged: {err.count('storage retry')}")  # docs/RELIABILITY.md


# ------------------------------------------------------------------------------------------- the proxy itself
def test_proxy_fails_delays_and_forwards_as_configured(s3_url):
    import botocore.session

    storage.write_bytes(f"{s3_url}/obj", b"x" * 1000)
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    client = botocore.session.get_session().create_client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    signed = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": f"{prefix}/obj"})
    path = signed.split(os.environ["AWS_ENDPOINT_URL"], 1)[1]  # an authenticated GET the store answers with a body

    def get(proxy: FaultProxy):
        conn = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()

    for kind, check in [("500", lambda r: r[0] == 500 and b"<Code>InternalError</Code>" in r[1]),
                        ("503", lambda r: r[0] == 503 and b"<Code>SlowDown</Code>" in r[1])]:
        with FaultProxy(os.environ["AWS_ENDPOINT_URL"], Faults(rate=1.0, kinds=(kind,))) as proxy:
            assert check(get(proxy)) and proxy.stats[kind] == 1
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], Faults(rate=1.0, kinds=("reset",))) as proxy:
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            get(proxy)
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], Faults(rate=1.0, kinds=("cut",))) as proxy:
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
            get(proxy)
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], Faults(rate=0.2, kinds=("500",), seed=7)) as proxy:
        statuses = [get(proxy)[0] for _ in range(23)]
        assert set(statuses) == {200, 500} and statuses[:20].count(500) == 4, "one in every block of 5 fails"
    with FaultProxy(os.environ["AWS_ENDPOINT_URL"], Faults(rate=0.0, delay_rate=1.0, delay_s=0.1)) as proxy:
        assert get(proxy) == (200, b"x" * 1000) and proxy.stats["delayed"] == 1 and proxy.stats["forwarded"] == 1
    with pytest.raises(ValueError, match="fault kinds"):
        Faults(kinds=("teapot",))


# --------------------------------------------------------------------------------------- settings and layering
def test_retry_and_timeout_settings_come_from_the_environment_and_are_logged_once(monkeypatch, caplog):
    import s3fs

    for var in ("LIFT_S3_MAX_ATTEMPTS", "LIFT_S3_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(storage, "_logged_settings", None)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", s3fs.S3FileSystem.retries)  # restored afterwards
    assert storage.s3_settings() == {"max_attempts": 10, "retry_mode": "standard", "connect_timeout": 10.0,
                                     "read_timeout": 60.0, "retries": 5}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert storage.s3_settings()["max_attempts"] == 4 and storage.s3_settings()["retry_mode"] == "adaptive"
    for var, value in {"LIFT_S3_MAX_ATTEMPTS": "7", "LIFT_S3_RETRY_MODE": "standard", "LIFT_S3_CONNECT_TIMEOUT": "3",
                       "LIFT_S3_READ_TIMEOUT": "20", "LIFT_S3_RETRIES": "2"}.items():
        monkeypatch.setenv(var, value)
    with caplog.at_level(logging.INFO, logger="lift.io.storage"):
        opts = storage.storage_options("s3")
        storage.storage_options("s3")
    assert opts["config_kwargs"] == {"retries": {"max_attempts": 7, "mode": "standard"}, "connect_timeout": 3.0,
                                     "read_timeout": 20.0}
    assert s3fs.S3FileSystem.retries == 2
    lines = [r for r in caplog.records if r.getMessage() == "object storage settings"]
    assert len(lines) == 1 and lines[0].fields["max_attempts"] == 7, "logged once per process and setting"
    monkeypatch.setenv("LIFT_S3_RETRY_MODE", "sometimes")
    with pytest.raises(ValueError, match="LIFT_S3_RETRY_MODE='sometimes': expected standard, adaptive or legacy"):
        storage.s3_settings()
    monkeypatch.setenv("LIFT_S3_RETRY_MODE", "standard")
    monkeypatch.setenv("LIFT_S3_READ_TIMEOUT", "0")
    with pytest.raises(ValueError, match="LIFT_S3_READ_TIMEOUT=0.0: expected a positive number"):
        storage.s3_settings()


def _write_objects(url: str, n: int) -> dict[str, bytes]:
    blobs = {f"o{i}": os.urandom(2000 + 97 * i) for i in range(n)}
    for name, data in blobs.items():
        storage.write_bytes(f"{url}/{name}", data)
    return blobs


# Which layer recovers which fault: (fault, botocore attempts, s3fs retries) -> recovered? Faults hit 30% of requests
# (seeded) where the reads are expected to recover, every request where they are expected to fail.
LAYERS = [
    ("cut", 1, 10, True),     # a body cut mid-download is read after botocore's call returned: only s3fs retries it
    ("cut", 10, 1, False),
    ("reset", 10, 1, True),   # a reset while awaiting the response: aiobotocore reports EndpointConnectionError,
    ("reset", 1, 10, False),  # which botocore retries and s3fs does not
    ("500", 10, 1, True),     # InternalError: botocore retries it, s3fs gives up on it
    ("500", 1, 10, False),
    ("503", 10, 1, True),     # SlowDown: s3fs retries it only where the body says so; a HEAD answer has no body
    ("503", 1, 10, False),
]


@pytest.mark.parametrize("kind,attempts,retries,recovers", LAYERS,
                         ids=[f"{k}-attempts{a}-retries{r}" for k, a, r, _ in LAYERS])
def test_which_layer_retries_which_fault(kind, attempts, retries, recovers, s3_url):
    blobs = _write_objects(s3_url, 4)
    faults = Faults(rate=0.3 if recovers else 1.0, kinds=(kind,), seed=5)
    with through_proxy(faults, LIFT_S3_MAX_ATTEMPTS=str(attempts), LIFT_S3_RETRIES=str(retries)) as proxy:
        if recovers:
            assert {k: storage.read_bytes(f"{s3_url}/{k}") for k in blobs} == blobs
        else:
            with pytest.raises(OSError):
                storage.read_bytes(f"{s3_url}/o0")
        assert proxy.stats[kind] > 0


def test_read_timeouts_are_enforced_retried_and_logged(s3_url, capsys):
    """A response held longer than LIFT_S3_READ_TIMEOUT is abandoned and retried; every retry is logged."""
    blobs = _write_objects(s3_url, 4)
    logs.setup()
    capsys.readouterr()
    before = logs.storage_retries()
    with through_proxy(Faults(rate=0.0, delay_rate=0.3, delay_s=1.5, seed=4), LIFT_S3_READ_TIMEOUT="0.3") as p:
        assert {k: storage.read_bytes(f"{s3_url}/{k}") for k in blobs} == blobs
        assert p.stats["delayed"] > 0
    err = capsys.readouterr().err
    assert "storage retry" in err and "Retry needed" in err, err[-2000:]
    assert logs.storage_retries() - before == err.count("storage retry") > 0, "each retry is counted"


# ----------------------------------------------------------------------------------- stages at 20% of requests
def _release_on_s3(url: str) -> None:
    storage.write_json(f"{url}/release.json", canonical_release(6))
    write_videos(f"{url}/videos", [f"clip{i:04d}" for i in range(6)])


def test_data_import_survives_20_percent_failed_requests(s3_url, capsys):
    _release_on_s3(s3_url)
    argv = ["data", "import", f"{s3_url}/release.json", f"{s3_url}/videos"]
    assert cli.main([*argv, f"{s3_url}/clean"]) == 0
    with through_proxy(FAULTS) as proxy:
        capsys.readouterr()
        assert cli.main([*argv, f"{s3_url}/faulty"]) == 0
        err = capsys.readouterr().err
    _assert_survived(proxy, err)
    clean, faulty = _objects(f"{s3_url}/clean"), _objects(f"{s3_url}/faulty")
    assert faulty == clean and "manifest.jsonl" in clean and len(clean) == 7
    assert storage.read_marker(f"{s3_url}/faulty")["counts"] == storage.read_marker(f"{s3_url}/clean")["counts"]


# Once in ~10 runs here this test hung in a part upload, the main thread waiting on s3fs with no socket open
# (docs/RELIABILITY.md, "Known gaps"); the timeout turns that into a failure, and the rerun shows whether it repeats.
@pytest.mark.timeout(600)
@pytest.mark.flaky(reruns=1)
def test_scoring_survives_20_percent_failed_requests(s3_url, zoo_dir, toy_data, tmp_path, capsys, monkeypatch):
    fs, _ = storage.filesystem(s3_url)
    fs.put(f"{zoo_dir}/critic/", storage.filesystem(f"{s3_url}/critic")[1], recursive=True)
    lines = storage.read_text(f"{toy_data}/manifest.jsonl").splitlines()[:8]
    storage.write_text(f"{s3_url}/clips/manifest.jsonl", "".join(x + "\n" for x in lines))
    for line in lines:
        rel = json.loads(line)["video"]
        storage.write_bytes(f"{s3_url}/clips/{rel}", storage.read_bytes(f"{toy_data}/{rel}"))

    def argv(out: str) -> list[str]:
        return ["score", f"rollouts={s3_url}/clips", f"critic={s3_url}/critic", f"out={s3_url}/{out}",
                "batch_size=2", "num_shards=2"]

    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache-clean"))
    assert cli.main(argv("clean")) == 0
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache-faulty"))  # the critic is downloaded through the faults
    with through_proxy(FAULTS) as proxy:
        capsys.readouterr()
        assert cli.main(argv("faulty")) == 0
        err = capsys.readouterr().err
    _assert_survived(proxy, err)
    clean, faulty = _objects(f"{s3_url}/clean"), _objects(f"{s3_url}/faulty")
    assert faulty == clean and len(clean["scores.jsonl"].splitlines()) == 8


def test_checkpoint_save_and_load_survive_20_percent_failed_requests(s3_url, capsys):
    logs.setup()
    saved = []
    with through_proxy(FAULTS) as proxy:
        ckpt = Checkpointer(f"{s3_url}/checkpoints", {"model": "tiny"}, keep=2)
        for step in (1, 2, 3):
            state = _state(step)
            state.step = step
            ckpt.save(state)
            saved.append({k: v.clone() for k, v in state.model.state_dict().items()})
        fresh = _state(99)
        assert ckpt.load(fresh) and fresh.step == 3
        err = capsys.readouterr().err
    _assert_survived(proxy, err)
    assert ckpt.complete_steps() == [2, 3]
    assert all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in saved[-1].items())
    clean = Checkpointer(f"{s3_url}/clean", {"model": "tiny"})
    reference = _state(3)
    reference.step = 3
    clean.save(reference)
    names = [n for n in storage.listdir(f"{s3_url}/clean/step-00000003") if n.endswith(".distcp")]
    for name in names:
        assert storage.read_bytes(f"{s3_url}/checkpoints/step-00000003/{name}") == \
            storage.read_bytes(f"{s3_url}/clean/step-00000003/{name}"), "the same bytes as a fault-free save"


@pytest.mark.slow
def test_alignment_survives_20_percent_failed_requests(s3_url, zoo_dir, tmp_path, capsys, monkeypatch):
    """Inputs, base model, latent cache, checkpoints and export all on S3 behind the faults, in one process."""
    local = str(tmp_path / "inputs")
    _write_rollouts(local, zoo_dir)
    _write_scores(f"{local}/rollouts", f"{local}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    fs, _ = storage.filesystem(s3_url)
    sources = {"rollouts": f"{local}/rollouts", "scores": f"{local}/scores", "base": f"{zoo_dir}/cogvideox"}
    for name, src in sources.items():
        fs.put(src + "/", storage.filesystem(f"{s3_url}/{name}")[1], recursive=True)

    def argv(out: str) -> list[str]:
        return ["align", f"rollouts={s3_url}/rollouts", f"scores={s3_url}/scores", f"out={s3_url}/{out}",
                f"model.name_or_path={s3_url}/base", "real=null", *ALIGN_TRAIN]

    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache-clean"))
    assert cli.main(argv("clean")) == 0
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache-faulty"))
    with through_proxy(FAULTS) as proxy:
        capsys.readouterr()
        code = cli.main(argv("faulty"))
        err = capsys.readouterr().err
    assert code == 0, err[-4000:]
    _assert_survived(proxy, err)
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache-compare"))
    a, b = _transformer(f"{s3_url}/clean/model"), _transformer(f"{s3_url}/faulty/model")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"align under faults: max abs diff {diff}")  # docs/RELIABILITY.md
    assert diff <= 1e-6
    assert storage.listdir(f"{s3_url}/faulty/checkpoints") == storage.listdir(f"{s3_url}/clean/checkpoints")
    assert storage.read_marker(f"{s3_url}/faulty")["counts"]["steps"] == 4
