"""A small client of `lift serve`, for `lift score mode=remote` and for trainers that want LiFT's reward online.

    from lift import client
    records = client.score(["s3://bucket/run/rollouts/videos/0.mp4", open("a.mp4", "rb").read()],
                           ["a red circle moves left", "a blue square"], url="http://lift-serve:8000")

Each record is the line `lift score` writes for that video (labels, probs, reasons, reward, critic, mode). A video
given as a string is a URL the server reads (it must lie under the server's `allow` prefixes); bytes are sent
inline. The bearer token is `token`, else LIFT_SERVE_TOKEN, else the contents of the file LIFT_SERVE_TOKEN_FILE
names. A 429 (the server's queue is full) is retried after its Retry-After; any other error answer raises
`ServeError` with the server's one-line reason.
"""

from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

TOKEN_ENV, TOKEN_FILE_ENV = "LIFT_SERVE_TOKEN", "LIFT_SERVE_TOKEN_FILE"


class ServeError(RuntimeError):
    """An error answer of the server: `status` is its HTTP status, the message its reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"lift serve answered {status}: {reason}")
        self.status = status


def token_from_env() -> str | None:
    """The bearer token from LIFT_SERVE_TOKEN, or from the file LIFT_SERVE_TOKEN_FILE names; None if neither."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if os.environ.get(TOKEN_FILE_ENV):
        with open(os.environ[TOKEN_FILE_ENV], encoding="utf-8") as f:
            return f.read().strip()
    return None


def item(video: str | bytes, prompt: str, id: str | None = None) -> dict:
    """One entry of a request body: a URL for the server to read, or the video's bytes inline (base64)."""
    entry = {"video": video} if isinstance(video, str) else {"video_b64": base64.b64encode(video).decode("ascii")}
    return {**entry, "prompt": prompt, **({"id": id} if id is not None else {})}


class Client:
    """Requests of at most `batch` videos each, `concurrency` at a time (so the server can batch them together)."""

    def __init__(self, url: str, token: str | None = None, batch: int = 8, concurrency: int = 4,
                 timeout: float = 300.0, busy_retries: int = 50):
        self.url, self.batch, self.concurrency, self.busy_retries = url.rstrip("/"), batch, concurrency, busy_retries
        token = token or token_from_env()
        self.http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"} if token else {})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def post(self, items: list[dict]) -> list[dict]:
        """One POST /v1/score; waits out 429 answers (Retry-After) up to `busy_retries` times."""
        for _ in range(self.busy_retries + 1):
            answer = self.http.post(f"{self.url}/v1/score", json={"items": items})
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("Retry-After", "1")))
        if answer.status_code != 200:
            try:
                reason = answer.json().get("error", answer.text)
            except ValueError:
                reason = answer.text
            raise ServeError(answer.status_code, reason)
        return answer.json()["records"]

    def score(self, videos: list[str | bytes], prompts: list[str], ids: list[str] | None = None) -> list[dict]:
        """The score record of each video with its prompt, in order."""
        if len(videos) != len(prompts) or (ids is not None and len(ids) != len(videos)):
            raise ValueError(f"score: {len(videos)} videos, {len(prompts)} prompts"
                             + ("" if ids is None else f", {len(ids)} ids") + "; give one of each per video")
        items = [item(v, p, None if ids is None else ids[i]) for i, (v, p) in enumerate(zip(videos, prompts))]
        chunks = [items[i:i + self.batch] for i in range(0, len(items), self.batch)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return [record for answer in pool.map(self.post, chunks) for record in answer]


def score(videos: list[str | bytes], prompts: list[str], url: str | None = None, token: str | None = None,
          ids: list[str] | None = None) -> list[dict]:
    """The score record of each video with its prompt from the `lift serve` at `url` (else LIFT_SERVE_URL)."""
    url = url or os.environ.get("LIFT_SERVE_URL")
    if not url:
        raise ValueError("score: no server URL; pass url= or set LIFT_SERVE_URL")
    with Client(url, token) as service:
        return service.score(videos, prompts, ids)
