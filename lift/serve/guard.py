"""What a request to `lift serve` must satisfy before any work is done for it. Each refusal is a `Refused` with the
HTTP status and a one-line reason naming the field, URL or limit at fault.

- the bearer token, read once from a file (a mounted Kubernetes Secret) or LIFT_SERVE_TOKEN and compared in
  constant time (`hmac.compare_digest`), so its bytes cannot be guessed from response times;
- videos are read only from URLs under the configured `allow` prefixes: no fetching of cloud metadata endpoints,
  internal services or local files a client names (server-side request forgery). A local path is compared after
  resolving symbolic links, so a link inside an allowed folder cannot lead out of it;
- the body's size, counted while it streams in (a body longer than its Content-Length says is cut off too), and
  the request's shape: unknown fields, missing ones, wrong types and too many items are named.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from typing import AsyncIterator, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lift.io import storage

TOKEN_ENV = "LIFT_SERVE_TOKEN"
DRAIN = 4  # an oversized body is read (and dropped) up to this many times the limit, so the client sees the 413


class Refused(Exception):
    """A request refused with `status` for `reason` (one line; the response body's `error`)."""

    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def load_token(token_file: str | None, anonymous: bool) -> bytes | None:
    """The token every request must present: from `token_file`, else LIFT_SERVE_TOKEN; None only when `anonymous`."""
    if token_file:
        token = storage.read_text(token_file).strip()
        if not token:
            raise ValueError(f"{token_file}: the token file is empty")
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token.encode()
    if anonymous:
        return None
    raise ValueError(f"config key 'token_file': no token (set token_file, or {TOKEN_ENV}); anonymous=true serves "
                     "without one")


def check_token(expected: bytes | None, authorization: str | None) -> None:
    """401 unless the Authorization header is `Bearer <token>` with the expected token."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Refused(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                      {"WWW-Authenticate": "Bearer"})


def _local(url: str) -> str | None:
    """The resolved local path of a file:// URL or plain path; None for other protocols."""
    if storage.protocol_of(url) != "file":
        return None
    return os.path.realpath(url.removeprefix("file://"))


def allowed(url: str, prefixes: list[str]) -> bool:
    """True when `url` lies under one of `prefixes` (each taken as a folder) and cannot step out of it."""
    if not url or "\\" in url or ".." in url.split("/") or any(c in url for c in "?#\0\r\n"):
        return False
    for prefix in prefixes:
        folder = prefix.rstrip("/") + "/"
        if storage.protocol_of(url) != storage.protocol_of(prefix):
            continue
        local, root = _local(url), _local(folder)
        if local is not None:
            if os.path.commonpath([local, root]) == root and local != root:
                return True
        elif url.startswith(folder):
            return True
    return False


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or 413 when it is longer than `limit` (an oversized one is drained up to DRAIN x limit first,
    so the client reads the answer instead of a reset connection)."""
    body, size = bytearray(), 0
    async for chunk in chunks:
        size += len(chunk)
        if size <= limit:
            body += chunk
        elif size > DRAIN * limit:
            break
    if size > limit:
        raise Refused(413, f"body of {size}{'+' if size > DRAIN * limit else ''} bytes exceeds max_body_bytes="
                           f"{limit}")
    return bytes(body)


class Item(BaseModel):
    """One video to rate: `video` (a URL under the server's `allow` prefixes) or `video_b64` (the mp4's bytes)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str = Field(min_length=1, max_length=4096)
    video: Optional[str] = Field(default=None, max_length=4096)
    video_b64: Optional[str] = None
    id: Optional[str] = Field(default=None, max_length=512)


class Request(BaseModel):
    """The body of POST /v1/score."""

    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[Item] = Field(min_length=1)


def parse(body: bytes, max_items: int) -> Request:
    """The request a body holds; 400 naming the field for bad JSON or a bad shape, 413 for too many items."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(400, f"body is not valid JSON: {e}") from None
    try:
        request = Request.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise Refused(400, f"{where}: {first['msg']}{more}") from None
    if len(request.items) > max_items:
        raise Refused(413, f"items: {len(request.items)} videos in one request, at most max_items={max_items}")
    for i, item in enumerate(request.items):
        if (item.video is None) == (item.video_b64 is None):
            raise Refused(400, f"items.{i}: give exactly one of 'video' (a URL) and 'video_b64' (inline bytes)")
    return request


def video_bytes(item: Item, i: int, prefixes: list[str], limit: int) -> bytes:
    """The bytes of item `i`'s video: decoded from base64, or read from its URL if that URL is allowed. Blocking."""
    if item.video_b64 is not None:
        if len(item.video_b64) > (limit + 2) // 3 * 4:
            raise Refused(413, f"items.{i}.video_b64: video larger than max_video_bytes={limit}")
        try:
            return base64.b64decode(item.video_b64, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, f"items.{i}.video_b64: not valid base64") from None
    url = item.video
    if not allowed(url, prefixes):
        raise Refused(400, f"items.{i}.video: {url!r} is not under an allowed prefix (the server reads only "
                           f"{', '.join(prefixes) or 'inline videos'})")
    try:
        with storage.open_read(url) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise Refused(400, f"items.{i}.video: {url}: no such file or object") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise Refused(502, f"items.{i}.video: {url}: cannot read: {e}") from None
    if len(data) > limit:
        raise Refused(413, f"items.{i}.video: {url}: larger than max_video_bytes={limit}")
    return data
