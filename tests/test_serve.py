"""`lift serve` as a live uvicorn process on 127.0.0.1, spoken to over real HTTP (httpx and lift.client): the
records agree with `lift score`'s, bad requests get their 4xx without harm to others, a load of 16 concurrent
clients is answered exactly once each, a full queue answers 429, and a restart keeps the cache."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lift import client, stages
from lift.data import hra
from lift.io import storage
from lift.serve import guard
from lift.stages import runner

TOKEN = "serve-test-token-0123456789"
VIDEOS = 8  # videos of the toy world rated by `lift score` and by the server
MAX_BODY = 256 << 10  # the test server's max_body_bytes; toy videos are ~5 KB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lift serve ARGS` in its own process on a free loopback port, waited for until /readyz answers 200."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "lift", "serve", f"port={self.port}", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        deadline = time.time() + 900  # generous: a shared 2-core machine can take minutes to import torch
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()[-4000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError("lift serve did not become ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.stdout.read()


@pytest.fixture(scope="module")
def rated(zoo_dir, toy_data, tmp_path_factory):
    """A manifest folder of VIDEOS toy videos and the records `lift score` writes for them (the tiny critic)."""
    folder = tmp_path_factory.mktemp("serve") / "videos"
    manifest = [json.loads(line) for line in storage.read_text(f"{toy_data}/{hra.MANIFEST}").splitlines()][:VIDEOS]
    for rec in manifest:
        os.makedirs(folder / os.path.dirname(rec["video"]), exist_ok=True)
        shutil.copy(f"{toy_data}/{rec['video']}", folder / rec["video"])
    storage.write_text(str(folder / hra.MANIFEST), "".join(json.dumps(r) + "\n" for r in manifest))
    out = folder.parent / "scores"
    runner.run_stage("score", stages.load("score", None, [f"rollouts={folder}", f"critic={zoo_dir}/critic",
                                                          f"out={out}", "batch_size=3"]))
    records = [json.loads(x) for x in storage.read_text(f"{out}/scores.jsonl").splitlines()]
    return str(folder), {r["id"]: r for r in records}


@pytest.fixture(scope="module")
def server(zoo_dir, rated, tmp_path_factory):
    folder, _ = rated
    tmp = tmp_path_factory.mktemp("serve-state")
    (tmp / "token").write_text(TOKEN + "\n")
    args = [f"critic={zoo_dir}/critic", f"allow=[file://{folder}/]", f"token_file={tmp / 'token'}",
            f"cache_url=file://{tmp / 'cache'}", f"max_body_bytes={MAX_BODY}", "max_queue=16", "max_items=16",
            "max_wait_ms=20"]
    srv = Server(*args)
    srv.args = args
    yield srv
    srv.stop()


def _auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _same(answer: dict, expected: dict) -> None:
    """The record `lift score` wrote: equal labels, reasons and fields; numbers equal up to the float noise of
    another batch composition (left padding)."""
    assert set(answer) == set(expected)
    for key in answer:
        if key == "probs":
            for d in hra.DIMENSIONS:
                assert answer[key][d] == pytest.approx(expected[key][d], abs=2e-6), (key, d)
        elif key == "reward":
            assert answer[key] == pytest.approx(expected[key], abs=2e-6)
        else:
            assert answer[key] == expected[key], key


def test_records_equal_lift_score(server, rated, tmp_path, monkeypatch):
    folder, expected = rated
    items = [json.loads(x) for x in storage.read_text(f"{folder}/{hra.MANIFEST}").splitlines()]
    videos = [f"file://{folder}/{it['video']}" if n % 2 else storage.read_bytes(f"{folder}/{it['video']}")
              for n, it in enumerate(items)]  # by URL and inline alike
    records = client.score(videos, [it["prompt"] for it in items], url=server.url, token=TOKEN,
                           ids=[it["id"] for it in items])
    for n, (it, rec) in enumerate(zip(items, records)):
        _same({**rec, "video": it["video"]}, expected[it["id"]])
        assert rec["video"] == (videos[n] if n % 2 else None)
    # `lift score mode=remote` writes the very records of `lift score`
    monkeypatch.setenv(client.TOKEN_ENV, TOKEN)
    runner.run_stage("score", stages.load("score", None, [f"rollouts={folder}", "mode=remote", f"url={server.url}",
                                                          f"out={tmp_path}/remote"]))
    remote = [json.loads(x) for x in storage.read_text(f"{tmp_path}/remote/scores.jsonl").splitlines()]
    assert len(remote) == VIDEOS
    for rec in remote:
        _same(rec, expected[rec["id"]])


def test_security_and_bad_requests_get_their_4xx(server, rated, tmp_path):
    folder, _ = rated
    good = {"video": f"file://{folder}/videos/000000.mp4", "prompt": "a red circle"}
    os.symlink("/etc/passwd", f"{folder}/link.mp4") if not os.path.exists(f"{folder}/link.mp4") else None
    cases = [
        ({}, {"items": [good]}, 401, "bearer token"),
        (_auth("wrong-token-0123456789-xx"), {"items": [good]}, 401, "bearer token"),
        (_auth(), {"items": [dict(good, video="http://169.254.169.254/latest/meta-data/")]}, 400,
         "not under an allowed prefix"),
        (_auth(), {"items": [dict(good, video="file:///etc/passwd")]}, 400, "not under an allowed prefix"),
        (_auth(), {"items": [dict(good, video=f"file://{folder}/../../etc/passwd")]}, 400, "allowed prefix"),
        (_auth(), {"items": [dict(good, video=f"file://{folder}/link.mp4")]}, 400, "allowed prefix"),
        (_auth(), {"items": [dict(good, video=f"file://{folder}-sibling/x.mp4")]}, 400, "allowed prefix"),
        (_auth(), {"items": [dict(good, colour="red")]}, 400, "items.0.colour"),
        (_auth(), {"items": [{"prompt": "p"}]}, 400, "exactly one of 'video'"),
        (_auth(), {"items": [dict(good, prompt=3)]}, 400, "items.0.prompt"),
        (_auth(), {"items": []}, 400, "items"),
        (_auth(), {"items": [good] * 17}, 413, "max_items=16"),
        (_auth(), {"items": [good, {"video_b64": base64.b64encode(b"\0" * 999).decode(), "prompt": "p"}]}, 400,
         "items.1: video: cannot decode"),
        (_auth(), {"items": [{"video_b64": "not base64!", "prompt": "p"}]}, 400, "not valid base64"),
        (_auth(), {"items": [{"video_b64": "A" * (MAX_BODY + 100), "prompt": "p"}]}, 413, "max_body_bytes"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for headers, body, status, words in cases:
            answer = http.post("/v1/score", json=body, headers=headers)
            assert (answer.status_code, words) == (status, words) and words in answer.json()["error"], answer.text
        answer = http.post("/v1/score", content=b'{"items": [', headers=_auth())
        assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]
        assert "WWW-Authenticate" in http.post("/v1/score", json={"items": [good]}).headers
        # a corrupt video sent at the same moment as good ones fails alone
        bad = {"items": [{"video_b64": base64.b64encode(os.urandom(3000)).decode(), "prompt": "x"}]}
        with httpx.Client(base_url=server.url, timeout=60, headers=_auth()) as other:
            results = {}
            threads = [threading.Thread(target=lambda k, b: results.__setitem__(k, other.post("/v1/score", json=b)),
                                        args=(k, b)) for k, b in (("bad", bad), ("good", {"items": [good]}))]
            [t.start() for t in threads]
            [t.join() for t in threads]
        assert results["bad"].status_code == 400 and results["good"].status_code == 200
        assert http.get("/readyz").status_code == 200 and http.get("/healthz").json() == {"status": "alive"}
        metrics = http.get("/metrics").text
        assert 'lift_serve_requests_total{status="401"}' in metrics and "lift_serve_queue_depth 0.0" in metrics


def _bad_request(rng: random.Random, folder: str) -> tuple[dict, bytes, int]:
    """(headers, body, expected status) of one malformed, oversized or forbidden request."""
    kind = rng.randrange(5)
    if kind == 0:
        return _auth(), b'{"items": [{"prompt": ', 400
    if kind == 1:
        return _auth(), json.dumps({"items": [{"prompt": "p", "video": "x", "extra": 1}]}).encode(), 400
    if kind == 2:
        return _auth(), json.dumps({"items": [{"prompt": "p", "video_b64": "A" * MAX_BODY}]}).encode(), 413
    if kind == 3:
        return _auth(), json.dumps({"items": [{"prompt": "p", "video": "file:///etc/passwd"}]}).encode(), 400
    return {}, json.dumps({"items": [{"prompt": "p", "video": f"file://{folder}/videos/000000.mp4"}]}).encode(), 401


@pytest.mark.slow
def test_load_of_16_clients_with_bad_requests_mixed_in(server, rated):
    """16 clients x 50 requests, one in five malformed, oversized, forbidden or unauthenticated: each good one is
    answered once with its record, each bad one with its 4xx, batches span clients, the server stays ready."""
    folder, expected = rated
    items = [json.loads(x) for x in storage.read_text(f"{folder}/{hra.MANIFEST}").splitlines()]
    inline = {it["id"]: base64.b64encode(storage.read_bytes(f"{folder}/{it['video']}")).decode() for it in items}
    answers: dict[tuple[int, int], tuple[int, dict, dict | None]] = {}

    def client_thread(c: int):
        rng = random.Random(c)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for r in range(50):
                if r % 5 == 4:
                    headers, body, status = _bad_request(rng, folder)
                    answers[c, r] = (status, http.post("/v1/score", content=body, headers=headers).status_code,
                                     None)
                    continue
                it = rng.choice(items)
                video = {"video": f"file://{folder}/{it['video']}"} if rng.random() < 0.5 else \
                    {"video_b64": inline[it["id"]]}
                answer = http.post("/v1/score", json={"items": [{**video, "prompt": it["prompt"], "id": it["id"]}]},
                                   headers=_auth())
                answers[c, r] = (200, answer.status_code, answer.json() if answer.status_code == 200 else answer.text)

    def batch_sizes() -> tuple[float, float]:
        lines = httpx.get(f"{server.url}/metrics").text.splitlines()
        value = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("lift_serve_batch")}
        return value["lift_serve_batch_size_sum"], value["lift_serve_batch_size_count"]

    # batching across clients: 8 clients at once, one new video each, share batches
    before = batch_sizes()
    one = lambda k: httpx.post(f"{server.url}/v1/score", headers=_auth(), timeout=60, json={  # noqa: E731
        "items": [{"video_b64": inline[items[k]["id"]], "prompt": f"batched {k}"}]}).raise_for_status()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    videos, batches = (a - b for a, b in zip(batch_sizes(), before))
    assert videos == 8 and batches < 8, f"8 single-video requests ran in {batches:.0f} batches"

    start = time.time()
    threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(16)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert time.time() - start < 120 and len(answers) == 16 * 50
    for (c, r), (want, got, body) in answers.items():
        assert got == want, (c, r, body)
        if want == 200:
            (rec,) = body["records"]
            _same({**rec, "video": expected[rec["id"]]["video"]}, expected[rec["id"]])
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_full_queue_answers_429_with_retry_after(server, rated):
    """max_queue=16: while one request of 16 new videos waits for the critic, another of 16 is refused whole."""
    folder, _ = rated
    items = [json.loads(x) for x in storage.read_text(f"{folder}/{hra.MANIFEST}").splitlines()]
    body = lambda tag: {"items": [{"video": f"file://{folder}/{items[n % VIDEOS]['video']}",  # noqa: E731
                                   "prompt": f"{tag} {n}"} for n in range(16)]}
    first = {}
    with httpx.Client(base_url=server.url, timeout=120, headers=_auth()) as http:
        t = threading.Thread(target=lambda: first.setdefault("answer", http.post("/v1/score", json=body("first"))))
        t.start()
        deadline = time.time() + 30
        while time.time() < deadline and "lift_serve_queue_depth 0.0" in http.get("/metrics").text:
            time.sleep(0.005)
        refused = http.post("/v1/score", json=body("second"))
        t.join()
    assert first["answer"].status_code == 200 and len(first["answer"].json()["records"]) == 16
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1, refused.text
    assert "max_queue" in refused.json()["error"]


@pytest.mark.slow
def test_restart_keeps_the_cache(server, rated):
    """The cache lives in object storage (here file://): a restarted server answers from it, same record."""
    folder, expected = rated
    item = {"video": f"file://{folder}/videos/000001.mp4", "prompt": "a prompt asked twice", "id": "x"}
    with httpx.Client(timeout=60, headers=_auth()) as http:
        first = http.post(f"{server.url}/v1/score", json={"items": [item]}).json()
        assert first["cached"] == [False]
        server.stop()
        again = Server(*server.args)
        try:
            second = http.post(f"{again.url}/v1/score", json={"items": [item]}).json()
            metrics = http.get(f"{again.url}/metrics").text
        finally:
            again.stop()
    assert second["cached"] == [True] and second["records"] == first["records"]
    assert 'lift_serve_videos_total{source="cache"} 1.0' in metrics
    assert 'lift_serve_videos_total{source="critic"} 0.0' in metrics


def test_url_prefixes_and_token(tmp_path, monkeypatch):
    """The guard's rules on their own: folder prefixes, no escape by '..' or a link, constant-time token check."""
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.mp4").write_bytes(b"x")
    os.symlink("/etc/passwd", tmp_path / "ok" / "link.mp4")
    allow = [f"file://{tmp_path}/ok", "s3://bucket/runs/"]
    assert guard.allowed(f"file://{tmp_path}/ok/a.mp4", allow)
    assert guard.allowed("s3://bucket/runs/x/v.mp4", allow)
    assert guard.allowed(f"{tmp_path}/ok/a.mp4", allow), "a plain path is the file:// URL it names"
    for url in (f"file://{tmp_path}/ok/link.mp4", f"file://{tmp_path}/ok/../ok/a.mp4", f"file://{tmp_path}/okay",
                f"file://{tmp_path}/ok", "s3://bucket/runs-other/v.mp4", "s3://bucket/runs/a/../../x", "s3://bucket/",
                "http://169.254.169.254/", "file:///etc/passwd", "s3://bucket/runs/v.mp4?x=1", ""):
        assert not guard.allowed(url, allow), url
    guard.check_token(b"abc", "Bearer abc")
    for header in (None, "", "Bearer abd", "Basic abc", "Bearer"):
        with pytest.raises(guard.Refused):
            guard.check_token(b"abc", header)
    monkeypatch.delenv(guard.TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match="no token"):
        guard.load_token(None, anonymous=False)
    assert guard.load_token(None, anonymous=True) is None
    monkeypatch.setenv(guard.TOKEN_ENV, "from-env")
    assert guard.load_token(None, anonymous=False) == b"from-env"
