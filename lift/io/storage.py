"""Every read and write of the project goes through here, so that a URL (file://, s3://, gs://, memory:// or a
plain path) behaves the same in every stage: atomic objects, the `_SUCCESS` marker contract, sharded parts.

S3-compatible stores (MinIO, Ceph, ...) are configured only through the standard AWS environment:
AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_REGION (or AWS_DEFAULT_REGION), AWS_MAX_ATTEMPTS / AWS_RETRY_MODE for botocore's retries.

Retries and timeouts of S3 requests (`s3_settings`; each process logs the values it uses once):
  LIFT_S3_MAX_ATTEMPTS    botocore attempts per request, first one included (else AWS_MAX_ATTEMPTS, else 10)
  LIFT_S3_RETRY_MODE      standard | adaptive | legacy (else AWS_RETRY_MODE, else standard)
  LIFT_S3_CONNECT_TIMEOUT seconds to open a connection (default 10)
  LIFT_S3_READ_TIMEOUT    seconds without a byte from an open connection (default 60)
  LIFT_S3_RETRIES         s3fs's own retries of what botocore gives up on or never sees: a connection reset while
                          a body is read, SlowDown after botocore's attempts, timeouts (default 5)
botocore retries 500/502/503/504, throttling, connection errors and timeouts with exponential backoff and jitter
(up to 20 s per wait); every retry is logged at INFO with a running count (lift/core/logs.py). At 20% of requests
failing, 10 attempts leave 1e-7 of requests failing. docs/RELIABILITY.md has the measured figures.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import IO, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lift.core import faults

MARKER = "_SUCCESS"
STARTED = "_STARTED"  # which config is writing this output: parts of another config are never reused
_PART = re.compile(r"^part-(\d{5})-of-(\d{5})(\..+)$")
log = logging.getLogger(__name__)

# setting -> (lift variable, AWS variable or None, default, type); see the module docstring
_S3_SETTINGS = {
    "max_attempts": ("LIFT_S3_MAX_ATTEMPTS", "AWS_MAX_ATTEMPTS", 10, int),
    "retry_mode": ("LIFT_S3_RETRY_MODE", "AWS_RETRY_MODE", "standard", str),
    "connect_timeout": ("LIFT_S3_CONNECT_TIMEOUT", None, 10.0, float),
    "read_timeout": ("LIFT_S3_READ_TIMEOUT", None, 60.0, float),
    "retries": ("LIFT_S3_RETRIES", None, 5, int),
}
_logged_settings: dict | None = None


def s3_settings() -> dict:
    """Effective retry and timeout settings of S3 requests, from the environment; a bad value names its variable."""
    out = {}
    for key, (var, aws_var, default, kind) in _S3_SETTINGS.items():
        name = var if os.environ.get(var) else aws_var if aws_var and os.environ.get(aws_var) else None
        try:
            value = kind(os.environ[name]) if name else default
        except ValueError:
            raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a valid "
                             f"{'integer' if kind is int else 'number'}") from None
        bad_mode = key == "retry_mode" and value not in ("standard", "adaptive", "legacy")
        if bad_mode or (kind is not str and value <= 0):
            raise ValueError(f"environment variable {name}={value!r}: expected "
                             + ("standard, adaptive or legacy" if kind is str else "a positive number"))
        out[key] = value
    return out


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def storage_options(protocol: str) -> dict:
    """Per-protocol options that fsspec does not derive from the environment itself: for S3 the endpoint, region,
    and the retries and timeouts of `s3_settings` (logged once per process, and again if they change)."""
    global _logged_settings
    if protocol not in ("s3", "s3a"):
        return {}
    client_kwargs = {}
    endpoint = _endpoint()
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    settings = s3_settings()
    import s3fs

    s3fs.S3FileSystem.retries = settings["retries"]  # a class attribute: s3fs takes no option for it
    if settings | {"endpoint": endpoint} != _logged_settings:
        _logged_settings = settings | {"endpoint": endpoint}
        log.info("object storage settings", extra={"fields": {"endpoint": endpoint or "aws", **settings}})
    config_kwargs = {"retries": {"max_attempts": settings["max_attempts"], "mode": settings["retry_mode"]},
                     "connect_timeout": settings["connect_timeout"], "read_timeout": settings["read_timeout"]}
    return {"client_kwargs": client_kwargs, "config_kwargs": config_kwargs} if client_kwargs else \
        {"config_kwargs": config_kwargs}


def _clear_error(url: str, e: Exception) -> Exception | None:
    """For object-store failures a user can fix (credentials, bucket, endpoint), an error that names `url`."""
    from botocore import exceptions as boto

    where = _endpoint() or "the AWS default endpoint"
    if isinstance(e, (boto.NoCredentialsError, boto.PartialCredentialsError, boto.CredentialRetrievalError)):
        return PermissionError(f"{url}: no usable object-storage credentials ({e}); set AWS_ACCESS_KEY_ID and "
                               f"AWS_SECRET_ACCESS_KEY (or a workload identity) for {where}")
    if isinstance(e, (boto.EndpointConnectionError, boto.ConnectTimeoutError)):
        return ConnectionError(f"{url}: cannot reach the object store at {where}: {e}")
    if isinstance(e, FileNotFoundError) and ("bucket does not exist" in str(e) or "NoSuchBucket" in str(e)):
        return FileNotFoundError(f"{url}: bucket '{_bucket(url)}' does not exist at {where}")
    if isinstance(e, PermissionError) and url not in str(e):
        return PermissionError(f"{url}: access denied ({e})")
    if isinstance(e, boto.HTTPClientError) or type(e).__module__.startswith("aiohttp"):
        return ConnectionError(f"{url}: the object store at {where} kept failing after every retry "
                               f"(LIFT_S3_MAX_ATTEMPTS, LIFT_S3_RETRIES): {e}")
    if type(e) is OSError and url not in str(e):  # s3fs's translation of an S3 error answer
        return OSError(f"{url}: {e.strerror or e} (at {where}, after every retry)")
    return None


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


@contextlib.contextmanager
def _naming(url: str) -> Iterator[None]:
    """Re-raise object-store failures a user can fix as errors that name the URL (see `_clear_error`)."""
    try:
        yield
    except Exception as e:
        if protocol_of(url) in ("s3", "s3a") and (clear := _clear_error(url, e)) is not None:
            raise clear from e
        raise


def _names_url(fn):
    @functools.wraps(fn)
    def wrapper(url: str, *args, **kwargs):
        with _naming(url):
            return fn(url, *args, **kwargs)

    return wrapper


def _not_found(url: str, fs: fsspec.AbstractFileSystem) -> FileNotFoundError:
    """A missing object, or the missing bucket it would live in."""
    if protocol_of(url) in ("s3", "s3a") and not fs.exists(_bucket(url)):
        return FileNotFoundError(f"{url}: bucket '{_bucket(url)}' does not exist at {_endpoint() or 'AWS'}")
    return FileNotFoundError(f"{url}: no such file or object")


def unsafe_path(path: str) -> bool:
    """True for a path that could point outside the folder it is meant to be relative to: absolute, a URL,
    with backslashes or with a '..' component. Every path read from a manifest is checked with this."""
    return path.startswith("/") or "://" in path or "\\" in path or ".." in path.split("/")


def child(root: str, path: str, where: str) -> str:
    """`root`/`path` for a relative path read from an input (`where` names it, e.g. 'URL:LINE'); a path that could
    escape `root` (see `unsafe_path`) is refused."""
    if not isinstance(path, str) or not path.strip() or unsafe_path(path):
        raise ValueError(f"{where}: path {path!r} must be relative and stay inside {root} "
                         f"(no '..', not absolute, not a URL)")
    return join(root, path)


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


# gcsfs is not a dependency (the gs:// tests would need a GCS emulator); `pip install gcsfs` enables gs://.
SCHEMES = ("s3:// (AWS or any S3-compatible store), gs:// (Google Cloud Storage, after `pip install gcsfs`), "
           "memory://, file:// or a plain path")


def scheme_problem(url: str, installed: bool = True) -> str | None:
    """Why `url`'s scheme cannot be read or written here (unknown to fsspec, or, with `installed`, its package is
    not installed), or None; the reason lists the schemes lift is tested with."""
    protocol = protocol_of(url)
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return f"unsupported URL scheme '{protocol}://'; the schemes that work: {SCHEMES}"
    except ImportError as e:
        if installed:
            return f"URL scheme '{protocol}://' needs a package that is not installed ({e}); the schemes that " \
                   f"work: {SCHEMES}"
    return None


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a URL or plain path; an unsupported scheme is a ValueError naming the URL."""
    if problem := scheme_problem(url):
        raise ValueError(f"{url}: {problem}")
    return fsspec.core.url_to_fs(url, **storage_options(protocol_of(url)))


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


def parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


@_names_url
def exists(url: str) -> bool:
    """Asks the store itself: other processes (ranks, stages) may have written since we last listed."""
    fs, path = filesystem(url)
    fs.invalidate_cache(path)
    return fs.exists(path)


@_names_url
def listdir(url: str) -> list[str]:
    """Base names under a folder URL; an absent folder is empty."""
    fs, path = filesystem(url)
    try:
        entries = fs.ls(path, detail=False, refresh=True) if fs.isdir(path) else []
    except FileNotFoundError:
        return []
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def makedirs(url: str) -> None:
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)


@_names_url
def remove(url: str) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def upload_dir(local_dir: str, url: str) -> None:
    """Copy a local folder's files under a URL; each object lands whole, the caller seals the folder after."""
    fs, path = filesystem(url)
    with _naming(url):
        fs.put(local_dir.rstrip("/") + "/", path, recursive=True)


@_names_url
def open_read(url: str, mode: str = "rb") -> IO:
    """A streaming reader: object stores are read in ranges, never copied whole to local disk."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise _not_found(url, fs)
    return fs.open(path, mode)


@_names_url
def read_bytes(url: str) -> bytes:
    with open_read(url) as f:
        return f.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def read_json(url: str):
    try:
        return json.loads(read_text(url))
    except json.JSONDecodeError as e:
        raise ValueError(f"{url}: line {e.lineno}: invalid JSON: {e.msg}") from None


@contextlib.contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO]:
    """Write a whole object that readers see either complete or not at all.

    Local files are written beside the target and renamed over it; object stores make a PUT visible only once
    it completes, so the data is staged in a local temporary file and uploaded after the writer succeeded.
    If the body raises, nothing is written and any earlier object at `url` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', not {mode!r}")
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    with tempfile.NamedTemporaryFile(mode="w+b", suffix=".lift-upload") as staged:
        if mode == "w":
            with open(staged.name, "w", encoding="utf-8") as text:
                yield text
        else:
            yield staged
            staged.flush()
        with _naming(url):
            fs.put_file(staged.name, path)


@_names_url
def write_bytes(url: str, data: bytes) -> None:
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        with atomic_open(url) as f:
            f.write(data)
    else:
        fs.pipe_file(path, data)  # a single PUT: atomic on object stores and memory://


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def write_json(url: str, obj) -> None:
    write_text(url, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def versions() -> dict[str, str]:
    out = {}
    for dist in ("lift-k8s", "torch", "transformers", "diffusers", "peft", "torchx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_marker(out_url: str, stage: str, config_hash: str, counts: dict | None = None, **extra) -> dict:
    """Seal a stage's output folder. Written last: a folder without it is incomplete, whatever else it holds."""
    marker = {
        "stage": stage,
        "config_hash": config_hash,
        "counts": counts or {},
        "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        **extra,
    }
    write_json(join(out_url, MARKER), marker)
    return marker


def read_marker(out_url: str) -> dict | None:
    url = join(out_url, MARKER)
    return read_json(url) if exists(url) else None


def seal(url: str) -> str | None:
    """Identity of a sealed folder's contents, "config hash@time": a rebuilt folder gets a new one; None if unsealed."""
    marker = read_marker(url)
    return f"{marker.get('config_hash')}@{marker.get('time')}" if marker else None


def is_complete(out_url: str, config_hash: str | None = None) -> bool:
    """True when the folder is sealed, and (if given) sealed by a run of this same config."""
    marker = read_marker(out_url)
    return marker is not None and (config_hash is None or marker.get("config_hash") == config_hash)


def unseal(out_url: str, drop: tuple[str, ...] = ()) -> None:
    """Make an output folder incomplete again: its marker and every part file under it go (plus `drop` subfolders),
    so a rerun of a different config cannot mistake old parts for its own."""
    remove(join(out_url, MARKER))
    fs, root = filesystem(out_url)
    fs.invalidate_cache(root)
    if fs.exists(root):
        for path in fs.find(root):
            if _PART.match(path.rstrip("/").rsplit("/", 1)[-1]):
                fs.rm(path)
    for name in drop:
        remove(join(out_url, name))


@dataclass(frozen=True)
class Shards:
    """One output folder written as `num_shards` part files, each committed atomically by whichever rank owns it.

    The shard count is fixed by the output, not by the world size, so a restart with fewer or more ranks
    still skips the parts already committed and finishes the rest.
    """

    url: str
    num_shards: int
    suffix: str = ".jsonl"

    def __post_init__(self):
        if self.num_shards < 1:
            raise ValueError(f"{self.url}: num_shards must be >= 1, got {self.num_shards}")

    @classmethod
    def layout(cls, url: str, num_shards: int, world_size: int, suffix: str = ".jsonl") -> "Shards":
        """The shards of an output: `num_shards` when set; else the count its committed parts were written with, so a
        restart at another world size (an elastic job that lost or gained a node) keeps the part layout; else one
        per rank."""
        if not num_shards:
            counts = {int(m.group(2)) for m in map(_PART.match, listdir(url)) if m and m.group(3) == suffix}
            num_shards = max(counts) if counts else world_size
        return cls(url, num_shards, suffix)

    def part(self, shard: int) -> str:
        return join(self.url, f"part-{shard:05d}-of-{self.num_shards:05d}{self.suffix}")

    def committed(self) -> set[int]:
        done = set()
        for name in listdir(self.url):
            m = _PART.match(name)
            if not m or m.group(3) != self.suffix:
                continue
            if int(m.group(2)) != self.num_shards:
                raise ValueError(
                    f"{join(self.url, name)}: written with {int(m.group(2))} shards, this run uses "
                    f"{self.num_shards}; rerun with the same shard count or use a new output folder"
                )
            done.add(int(m.group(1)))
        return done

    def todo(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's shards (round-robin) that are not committed yet."""
        done = self.committed()
        return [s for s in range(rank, self.num_shards, world_size) if s not in done]

    def commit(self, shard: int, data: bytes) -> None:
        write_bytes(self.part(shard), data)
        faults.part_committed()  # crash tests: LIFT_FAULT_KILL_AFTER_PARTS (lift/core/faults.py)

    def merge(self, name: str) -> str:
        """Concatenate every part, in shard order, into one object; refuses while any part is missing."""
        missing = sorted(set(range(self.num_shards)) - self.committed())
        if missing:
            raise FileNotFoundError(f"{self.url}: {len(missing)} of {self.num_shards} parts missing: {missing[:10]}")
        target = join(self.url, name)
        with atomic_open(target) as out:
            for shard in range(self.num_shards):
                with open_read(self.part(shard)) as f:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
        return target


def shard_slice(items: list, shard: int, num_shards: int) -> list:
    """The items of one shard: a strided slice, so shards stay balanced and stable for a fixed item order."""
    return items[shard::num_shards]


@contextlib.contextmanager
def writing_folder(url: str, copies: dict[str, str] | None = None) -> Iterator[str]:
    """A local folder to `save_pretrained` into that becomes `url` when the block ends without an error, replacing
    whatever the URL held (as `save_folder`). For a local URL it is a hidden folder beside the target, renamed into
    place, so multi-GB weights are written once rather than written and then copied; for object storage it is a
    temporary folder uploaded with `save_folder`. `copies` (subfolder -> folder URL) are folders that join it
    unchanged, by `copy_folder`: server-side where they are on the URL's store, so a pipeline's frozen components
    never pass through this machine or its disk. Not sealed: the caller writes `_SUCCESS` after the block."""
    copies = copies or {}
    fs, root = filesystem(url)
    root = root.rstrip("/")
    if not isinstance(fs, LocalFileSystem):
        with tempfile.TemporaryDirectory(prefix="lift-folder-") as tmp:
            yield tmp
            _no_overlap(tmp, copies)
            save_folder(tmp, url)
            for name, source in copies.items():
                copy_folder(source, join(url, name))
        return
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.partial-", dir=os.path.dirname(root))
    try:
        yield tmp
        _no_overlap(tmp, copies)
        for name, source in copies.items():
            copy_folder(source, os.path.join(tmp, name))
        if os.path.lexists(root):
            shutil.rmtree(root)
        os.rename(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _no_overlap(written: str, copies: dict[str, str]) -> None:
    if clash := sorted(name for name in copies if os.path.lexists(os.path.join(written, name))):
        raise ValueError(f"writing_folder: {', '.join(clash)} both written and copied from elsewhere")


def _make_parents(root: str, files: list[str]) -> None:
    """The local folders that the relative paths `files` under `root` need."""
    for rel in {os.path.dirname(f) for f in files}:
        os.makedirs(os.path.join(root, rel), exist_ok=True)


def same_store(a: str, b: str) -> bool:
    """Whether two URLs are on one store that copies between them itself: fsspec gives URLs of one protocol with
    the same options (endpoint, credentials) one filesystem instance."""
    return filesystem(a)[0] is filesystem(b)[0]


def copy_folder(source: str, url: str) -> None:
    """Copy every file under the folder `source` to the same relative path under `url` (any two URLs). Within one
    object store (`same_store`) each object is copied server-side (S3 CopyObject, multipart above 5 GB), so no
    byte passes through this process; between stores or to and from local disk each file is uploaded or downloaded
    whole. Files `url` already holds at those paths are replaced."""
    (source_fs, source_root), (fs, root) = filesystem(source), filesystem(url)
    source_root, root = source_root.rstrip("/"), root.rstrip("/")
    with _naming(source):
        source_fs.invalidate_cache(source_root)
        found = source_fs.find(source_root) if source_fs.isdir(source_root) else []
    files = sorted(path[len(source_root):].lstrip("/") for path in found)
    if not files:
        raise FileNotFoundError(f"{source}: no files to copy")
    sources, targets = [f"{source_root}/{f}" for f in files], [f"{root}/{f}" for f in files]
    if isinstance(fs, LocalFileSystem):
        _make_parents(root, files)
    with _naming(url):
        if source_fs is fs:
            fs.copy(sources, targets)
        elif isinstance(source_fs, LocalFileSystem):
            fs.put(sources, targets)
        elif isinstance(fs, LocalFileSystem):
            source_fs.get(sources, targets)
        else:
            with tempfile.TemporaryDirectory(prefix="lift-copy-") as tmp:
                local = [os.path.join(tmp, f) for f in files]
                _make_parents(tmp, files)
                source_fs.get(sources, local)
                fs.put(local, targets)
        fs.invalidate_cache(root)


def save_folder(local: str, url: str) -> None:
    """Copy a folder written by `save_pretrained` to any URL, replacing whatever the URL held.

    Every file is one complete PUT (or local copy); the folder as a whole is not complete until the caller
    writes `_SUCCESS` after this returns. Replacing matters: a stale `*.index.json` from an older sharded save
    would make `from_pretrained` read the wrong weights.
    """
    fs, root = filesystem(url)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem) and os.path.realpath(local) == os.path.realpath(root):
        return
    fs.invalidate_cache(root)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    files = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, names in os.walk(local) for f in names)
    if isinstance(fs, LocalFileSystem):
        _make_parents(root, files)
    fs.put([os.path.join(local, f) for f in files], [f"{root}/{f}" for f in files])
