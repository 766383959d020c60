"""The HTTP API of `lift serve` (FastAPI on uvicorn; docs/SERVING.md):

    POST /v1/score   {"items": [{"video": URL | "video_b64": BASE64, "prompt": TEXT, "id": TEXT?}, ...]}
                     -> {"records": [...], "cached": [...], "critic_digest": ...}; each record is the line
                     `lift score` writes for that video (`video` is the URL given, or null for an inline one)
    GET /healthz     200 while the process serves requests
    GET /readyz      200 once the critic is loaded and a warm-up batch went through it, else 503
    GET /metrics     Prometheus metrics: requests by status, videos by source, batch sizes, queue depth, latency

Errors answer {"error": "<one line>"} with a 4xx (or 502 when storage fails) and touch nothing else: a request is
checked whole (token, shape, URLs, sizes, every video decoded) before any of its videos enters a batch, so a bad
request cannot take a batch of other clients' videos down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from omegaconf import DictConfig, OmegaConf
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lift import models
from lift.core import logs
from lift.io import storage, video
from lift.models.scoring import Item, Scorer
from lift.serve import cache, guard
from lift.serve.batcher import Batcher, Busy
from lift.stages.base import folder_digest
from lift.stages.score import check_reward_keys, make_record

log = logging.getLogger(__name__)
RATED = ("prompt", "labels", "probs", "reasons", "unparsable", "reward", "critic", "mode")
"""The fields of a record that depend on the video, prompt and critic only (cached); id and video are the request's."""


def critic_digest(cfg: DictConfig) -> str:
    """The critic's identity in the cache key: its weights and files, and every setting that shapes a record."""
    settings = OmegaConf.to_container(OmegaConf.masked_copy(
        cfg, ["critic", "mode", "max_new_tokens", "label_scores", "dimension_weights"]), resolve=True)
    text = json.dumps([folder_digest(models.local_dir(cfg.critic)), settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Metrics:
    def __init__(self, batch_size: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("lift_serve_requests", "Score requests answered, by HTTP status", ["status"],
                                registry=self.registry)
        self.videos = Counter("lift_serve_videos", "Videos answered, by where the result came from", ["source"],
                              registry=self.registry)
        buckets = sorted({2 ** i for i in range(batch_size.bit_length())} | {batch_size})
        self.batch = Histogram("lift_serve_batch_size", "Videos per critic batch", buckets=buckets,
                               registry=self.registry)
        self.batch_seconds = Histogram("lift_serve_batch_seconds", "Time the critic took per batch",
                                       registry=self.registry)
        self.queue = Gauge("lift_serve_queue_depth", "Videos waiting for the critic", registry=self.registry)
        self.latency = Histogram("lift_serve_request_seconds", "Time from request to answer of POST /v1/score",
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)

    def batch_done(self, size: int, seconds: float) -> None:
        self.batch.observe(size)
        self.batch_seconds.observe(seconds)


class Service:
    """The critic, its batcher and cache, and the checks of `guard`, behind the routes of `build`."""

    def __init__(self, cfg: DictConfig):
        check_reward_keys(cfg)
        if cfg.max_items > cfg.max_queue:
            raise ValueError(f"config key 'max_items': {cfg.max_items} is more than max_queue={cfg.max_queue}; a "
                             "request that large could never be queued")
        self.cfg = cfg
        self.token = guard.load_token(cfg.token_file, cfg.anonymous)
        self.allow = list(cfg.allow)
        self.metrics = Metrics(cfg.batch_size)
        self.cache = cache.Cache(cfg.cache_entries, cfg.cache_url)
        self.io = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="lift-decode")
        self.scorer: Scorer | None = None
        self.digest: str | None = None
        self.batcher: Batcher | None = None
        self.inflight: dict[str, asyncio.Future] = {}
        self.ready = False
        self.failed: BaseException | None = None

    # ------------------------------------------------------------------------------------------- start-up
    async def start(self, stop) -> None:
        """Load the critic, start the batcher, run a warm-up batch through it, then report ready. A failure is
        kept in `failed` and `stop()` ends the server (lift serve then exits non-zero with it)."""
        try:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.scorer = await asyncio.to_thread(Scorer, self.cfg.critic, device, self.cfg.max_new_tokens,
                                                  self.cfg.trust_remote_code)
            self.digest = await asyncio.to_thread(critic_digest, self.cfg)
            self.batcher = Batcher(self._rate, self.cfg.batch_size, self.cfg.max_wait_ms / 1000, self.cfg.max_queue,
                                   self.metrics.batch_done, self.metrics.queue.set)
            self.batcher.start()
            warm = torch.full((self.scorer.frames, 3, 64, 64), 128, dtype=torch.uint8)
            await asyncio.gather(*self.batcher.submit([(Item("warm-up", "", "", "a grey video"), warm)]))
            self.ready = True
            logs.event(log, "serve: ready", critic=self.cfg.critic, digest=self.digest, device=str(device),
                       frames=self.scorer.frames, answer_format=self.scorer.answer_format)
        except BaseException as e:  # noqa: BLE001 - kept and re-raised by `main` after uvicorn stopped
            self.failed = e
            log.error("serve: start-up failed: %s", e)
            stop()

    async def close(self) -> None:
        if self.batcher:
            await self.batcher.stop()
        self.io.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------ scoring
    def _rate(self, jobs: list[tuple[Item, torch.Tensor]]) -> list[dict]:
        ratings = self.scorer.rate([j[0] for j in jobs], [j[1] for j in jobs], self.cfg.mode)
        return [make_record(item, rating, self.cfg) for (item, _), rating in zip(jobs, ratings)]

    def _prepare(self, entry: guard.Item, i: int) -> tuple[str, dict | None, torch.Tensor | None]:
        """(cache key, cached result or None, frames if not cached) of item `i`; blocking, in a decode thread."""
        data = guard.video_bytes(entry, i, self.allow, self.cfg.max_video_bytes)
        key = cache.key(hashlib.sha256(data).hexdigest(), entry.prompt, self.digest)
        found = self.cache.get(key)
        if found is not None:
            return key, found, None
        scratch = f"memory://lift-serve/{uuid.uuid4().hex}.mp4"  # decoded as `lift score` decodes a stored video
        storage.write_bytes(scratch, data)
        try:
            frames = video.read_video(scratch, self.scorer.frames).permute(0, 3, 1, 2)
        except video.VideoError as e:
            raise guard.Refused(400, f"items.{i}: {str(e).replace(scratch, 'video')}") from None
        finally:
            storage.remove(scratch)
        return key, None, frames

    def _rated(self, keys: list[str], jobs: list) -> list[asyncio.Future]:
        """A future per job: the one already in flight for the same key (another request asked first), else a new
        one from the batcher, so concurrent requests for one video and prompt are rated once."""
        new = {}
        for key, job in zip(keys, jobs):
            if key not in self.inflight:
                new.setdefault(key, job)
        for key, future in zip(new, self.batcher.submit(list(new.values()))):
            self.inflight[key] = future
            future.add_done_callback(lambda _, key=key: self.inflight.pop(key, None))
        return [self.inflight[key] for key in keys]

    async def score(self, body: bytes) -> dict:
        request = guard.parse(body, self.cfg.max_items)
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(loop.run_in_executor(self.io, self._prepare, entry, i)
                                          for i, entry in enumerate(request.items)), return_exceptions=True)
        for outcome in prepared:
            if isinstance(outcome, BaseException):
                raise outcome
        items = [Item(e.id if e.id is not None else str(i), e.video, e.video or "", e.prompt)
                 for i, e in enumerate(request.items)]
        todo = [i for i, (_, found, _) in enumerate(prepared) if found is None]
        rated = dict(zip(todo, await asyncio.gather(*self._rated([prepared[i][0] for i in todo],
                                                                  [(items[i], prepared[i][2]) for i in todo]))))
        records, cached = [], []
        for i, (key, found, _) in enumerate(prepared):
            if found is None:
                found = {k: rated[i][k] for k in RATED}
                await loop.run_in_executor(self.io, self.cache.put, key, found)
            records.append({"id": items[i].id, "video": items[i].video, **found})
            cached.append(i not in rated)
        self.metrics.videos.labels("cache").inc(len(records) - len(todo))
        self.metrics.videos.labels("critic").inc(len(todo))
        return {"records": records, "cached": cached, "critic_digest": self.digest}


def _error(status: int, reason: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": logs.redact(reason)}, status_code=status, headers=headers)


def build(cfg: DictConfig, stop=lambda: None) -> FastAPI:
    """The FastAPI app of one `Service`; `stop()` ends the server (called when start-up fails)."""
    service = Service(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        starting = asyncio.get_running_loop().create_task(service.start(stop))
        yield
        starting.cancel()
        await service.close()

    app = FastAPI(title="lift serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.post("/v1/score")
    async def score(request: Request):
        start, status = time.monotonic(), 200
        try:
            guard.check_token(service.token, request.headers.get("authorization"))
            body = await guard.read_body(request.stream(), cfg.max_body_bytes)
            if not service.ready:
                raise guard.Refused(503, "the critic is still loading (see /readyz)", {"Retry-After": "5"})
            answer = JSONResponse(await service.score(body))
        except guard.Refused as e:
            status, answer = e.status, _error(e.status, e.reason, e.headers)
        except Busy as e:
            status = 429
            answer = _error(429, f"{e}: {cfg.max_queue} videos are waiting (max_queue)",
                            {"Retry-After": str(e.retry_after)})
        except Exception as e:  # a failure of the critic on this request's videos alone (the batcher isolates it)
            log.exception("serve: request failed")
            status, answer = 500, _error(500, f"{type(e).__name__}: {e}")
        service.metrics.requests.labels(str(status)).inc()
        service.metrics.latency.observe(time.monotonic() - start)
        return answer

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        if not service.ready:
            return _error(503, "loading the critic" if service.failed is None else f"failed: {service.failed}")
        return {"status": "ready", "critic": cfg.critic, "critic_digest": service.digest}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def main(cfg: DictConfig) -> None:
    """Serve until stopped (SIGTERM/SIGINT); a start-up failure (critic, token) is raised after uvicorn stopped."""
    import uvicorn

    server: uvicorn.Server | None = None

    def stop():
        server.should_exit = True

    app = build(cfg, stop)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=30))
    logs.event(log, "serve: listening", host=cfg.host, port=cfg.port, batch_size=cfg.batch_size,
               max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue, allow=",".join(cfg.allow) or "inline only",
               cache=cfg.cache_url or "memory")
    server.run()
    if app.state.service.failed is not None:
        raise app.state.service.failed
