"""Structured logs (one line per event: time, level, rank, logger, message, key=value fields) and rank-0
progress bars. Values of credential environment variables are masked in every line we emit."""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS_JSON",
              "HF_TOKEN", "AZURE_STORAGE_KEY")


def _secrets() -> list[str]:
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


class _Formatter(logging.Formatter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = getattr(record, "fields", None) or {}
        kv = "".join(f" {k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} rank={self.rank} {record.name}: {record.getMessage()}{kv}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup(level: str | None = None) -> None:
    """Configure the root logger once per process; LIFT_LOG_LEVEL overrides the level."""
    rank = int(os.environ.get("RANK", "0"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(rank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LIFT_LOG_LEVEL", "INFO"))
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, msg: str, **fields) -> None:
    """An INFO line carrying machine-readable key=value fields."""
    logger.info(msg, extra={"fields": fields})


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar shown on rank 0 only, so N ranks do not print N bars."""
    kwargs.setdefault("disable", int(os.environ.get("RANK", "0")) != 0 or None)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
