"""Structured logs (one line per event: time, level, rank, logger, message, key=value fields) and rank-0
progress bars. Values of credential environment variables are masked in every line we emit.

Object-storage retries: botocore and s3fs say at DEBUG that they retry a request; those lines (and only those of
their DEBUG output) are shown at INFO, numbered, e.g. `storage retry 3: Retry needed, retrying request after delay
of: 0.41 (botocore.retries.standard)`; `storage_retries()` is the count so far in this process.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS_JSON",
              "HF_TOKEN", "AZURE_STORAGE_KEY", "LIFT_SERVE_TOKEN")


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


# Loggers that announce retries at DEBUG, and the messages that do (s3fs logs every ClientError as "maybe
# retryable" but retries only throttling ones).
RETRY_LOGGERS = ("botocore.retries.standard", "botocore.retries.adaptive", "botocore.retryhandler", "s3fs")
_RETRYING = ("Retry needed, retrying", "Retry needed, action of", "Retryable error")
_THROTTLED = ("SlowDown", "reduce your request rate")
_retries = 0


def storage_retries() -> int:
    """Object-storage request retries logged by this process so far."""
    return _retries


class _RetryLines(logging.Filter):
    """Keeps the retry announcements of RETRY_LOGGERS, raised to INFO and numbered; drops their other lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        global _retries
        msg = record.getMessage()
        throttled = msg.startswith("Client error (maybe retryable)") and any(t in msg for t in _THROTTLED)
        if not (throttled or msg.startswith(_RETRYING)):
            return False
        _retries += 1
        record.msg, record.args = f"storage retry {_retries}: {msg} ({record.name})", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)


def setup(level: str | None = None) -> None:
    """Configure the root logger once per process; LIFT_LOG_LEVEL overrides the level."""
    rank = int(os.environ.get("RANK", "0"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(rank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LIFT_LOG_LEVEL", "INFO"))
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "httpx", "PIL", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in RETRY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.filters[:] = [_RetryLines()]


def event(logger: logging.Logger, msg: str, **fields) -> None:
    """An INFO line carrying machine-readable key=value fields."""
    logger.info(msg, extra={"fields": fields})


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar shown on rank 0 only, so N ranks do not print N bars."""
    kwargs.setdefault("disable", int(os.environ.get("RANK", "0")) != 0 or None)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
