"""`lift serve`: the trained critic behind HTTP, for trainers that need LiFT's reward online.

- `guard`: what a request must satisfy before any work is done: the bearer token, the URL prefixes a video may
  be read from, the body size, the request's shape.
- `batcher`: videos of many requests are rated together, a batch forming within `max_wait_ms` or when full; a
  bounded queue refuses work it cannot take (429).
- `cache`: results by (video content hash, prompt, critic digest), in memory and optionally in object storage.
- `app`: the FastAPI routes (POST /v1/score, /healthz, /readyz, /metrics) and `main`, which runs uvicorn.

docs/SERVING.md describes the API, its errors and how to deploy it (the chart's `serve` block).
"""
