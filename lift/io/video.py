"""Video files in and out, through PyAV and `lift.storage`, so every stage reads and writes mp4 the same way on
file://, s3://, gs:// and memory:// URLs.

Decoding reads an object of up to 64 MiB with one ranged GET into memory (no HEAD requests first: a third of the
requests and half their latency) and streams larger ones in ranges, never to local disk. Encoding writes H.264
(libx264, or MPEG-4 Part 2 where the PyAV build lacks it) in yuv420p through `storage.atomic_open`, so a reader
never sees half a file. A video that cannot be used (missing, corrupt, truncated, without frames) raises
`VideoError` naming its URL; storage failures (network, permissions) keep their own exception types.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Iterator, Literal

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from lift.io import storage

Layout = Literal["TCHW", "CTHW", "THWC"]
_PERMUTATION = {"TCHW": (0, 3, 1, 2), "CTHW": (3, 0, 1, 2), "THWC": (0, 1, 2, 3)}

# Near-lossless settings: the toy world's defects (grain noise, colour casts, blur) must survive encoding.
# Same frames, same bytes: one encoder thread (x264's output depends on its thread count), and no macroblock tree
# (with it, x264's AVX-512 code gave different bytes for the same frames in 29 of 100 toy clips encoded 5 times;
# without it 0 of 100, at the same speed; it matters little at crf 4 anyway).
_ENCODERS = {
    "libx264": {"crf": "4", "preset": "medium", "x264-params": "mbtree=0"},
    "mpeg4": {"flags": "+qscale", "global_quality": str(2 * 118)},  # ffmpeg's `-q:v 2` (FF_QP2LAMBDA = 118)
}


class VideoError(ValueError):
    """A video that cannot be used: missing, corrupt, truncated, or without frames. The message names the URL."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    frames: int
    fps: float
    height: int
    width: int
    codec: str


def encoder() -> str:
    """The codec `write_video` uses with this PyAV build: H.264 where libx264 is linked in, else MPEG-4."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


_ONE_GET = 64 << 20  # object-store videos up to this size are fetched whole with one request


@contextlib.contextmanager
def _source(url: str) -> Iterator[IO[bytes]]:
    """The video's bytes as a seekable file: a local file in place; an object of up to `_ONE_GET` bytes from one
    ranged GET (benchmarks/video_loading.py: 1 request instead of HEAD, HEAD, GET); a larger one streamed."""
    if storage.protocol_of(url) == "file":
        with storage.open_read(url) as f:
            yield f
        return
    fs, path = storage.filesystem(url)
    try:
        with storage._naming(url):  # the storage layer's URL-naming errors (credentials, bucket, endpoint)
            data = fs.cat_file(path, start=0, end=_ONE_GET)
    except OSError as e:  # S3 answers a range request on an empty object with 416 InvalidRange
        if "range is not satisfiable" not in str(e).lower():
            raise
        data = b""
    if len(data) < _ONE_GET:
        yield io.BytesIO(data)
        return
    with storage.open_read(url) as f:
        yield f


@contextlib.contextmanager
def _open(url: str) -> Iterator[av.container.InputContainer]:
    """An input container read from storage; every decoding failure becomes a `VideoError` naming `url`."""
    try:
        with _source(url) as f:
            if not f.read(1):  # FFmpeg would probe an empty file by seeking before its start
                raise VideoError(f"{url}: empty file")
            f.seek(0)
            with av.open(f, mode="r") as container:
                if not container.streams.video:
                    raise VideoError(f"{url}: no video stream")
                yield container
    except FileNotFoundError:
        raise VideoError(f"{url}: no such file or object") from None
    except (av.error.FFmpegError, EOFError) as e:
        raise VideoError(f"{url}: cannot decode video: {getattr(e, 'strerror', None) or e}") from e


def probe(url: str) -> VideoInfo:
    """Frame count, frame rate, size and codec, from the container (packets are counted if it has no count)."""
    with _open(url) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoInfo(frames, float(rate), stream.height, stream.width, stream.codec_context.name)


def uniform_indices(total: int, num: int) -> np.ndarray:
    """`num` frame indices spread evenly from the first to the last of `total` frames (LiFT samples 8 this way);
    a video shorter than `num` repeats frames rather than failing."""
    if total < 1 or num < 1:
        raise ValueError(f"need at least one frame to sample from and to, got total={total}, num={num}")
    return np.linspace(0, total - 1, num).round().astype(np.int64)


def _cover(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, target height, target width): the smallest aspect-keeping scale of a
    height x width frame that covers `size`, whose centre is then cropped out."""
    if size is None:
        return height, width, height, width
    th, tw = (size, size) if isinstance(size, int) else size
    if th < 1 or tw < 1:
        raise ValueError(f"size must be positive, got {size}")
    scale = max(th / height, tw / width)
    return max(th, round(height * scale)), max(tw, round(width * scale)), th, tw


def _check_decoded(url: str, decoded: int, stated: int) -> None:
    """A video that decodes no frame, or fewer than its container states, cannot be used."""
    if not decoded:
        raise VideoError(f"{url}: no frames decoded (zero-frame or truncated video)")
    if stated and decoded < stated:
        raise VideoError(f"{url}: truncated video: decoded {decoded} of {stated} frames")


def _decode_all(url: str, container, stream, num_frames: int | None) -> list:
    """Every frame decoded and kept; the `num_frames` uniform picks (None: all) over the decoded count."""
    decoded = list(container.decode(stream))  # YUV frames; RGB conversion (the costly part) happens later
    _check_decoded(url, len(decoded), stream.frames)
    return decoded if num_frames is None else [decoded[i] for i in uniform_indices(len(decoded), num_frames)]


def _decode_sampled(url: str, container, stream, num_frames: int) -> list | None:
    """The uniform picks over the count the container states, keeping only those frames while decoding (holding
    every decoded frame cost ~5% more CPU per clip: benchmarks/video_loading.py). None when more frames decode
    than the container states: the caller then samples over all of them, as `_decode_all` does."""
    picked = uniform_indices(stream.frames, num_frames).tolist()
    wanted, kept, total = set(picked), {}, 0
    for frame in container.decode(stream):
        if total in wanted:
            kept[total] = frame
        total += 1
    _check_decoded(url, total, stream.frames)
    return [kept[i] for i in picked] if total == stream.frames else None


def read_video(url: str, num_frames: int | None = None, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Decode a video into a uint8 tensor (T, H, W, C) of RGB frames.

    `num_frames` picks that many frames with `uniform_indices` over the decoded frame count (None: all frames);
    `size` (an int for square, or (height, width)) resizes to cover it and crops the centre, keeping the aspect.
    Frames are decoded once and only the picked ones are kept and converted to RGB.
    """
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with _open(url) as container:
        stream = container.streams.video[0]
        if num_frames is not None and stream.frames:
            chosen = _decode_sampled(url, container, stream, num_frames)
        else:
            chosen = _decode_all(url, container, stream, num_frames)
    if chosen is None:  # the container undercounts its frames (rare): decode again, keeping them all
        with _open(url) as container:
            chosen = _decode_all(url, container, container.streams.video[0], num_frames)
    sh, sw, th, tw = _cover(chosen[0].height, chosen[0].width, size)
    top, left = (sh - th) // 2, (sw - tw) // 2
    out = np.empty((len(chosen), th, tw, 3), dtype=np.uint8)
    reformatter = VideoReformatter()  # one scaler context for every frame: 20x faster than one per frame
    for i, frame in enumerate(chosen):
        rgb = reformatter.reformat(frame, sw, sh, "rgb24", interpolation="AREA").to_ndarray()
        out[i] = rgb[top:top + th, left:left + tw]
    return torch.from_numpy(out)


def to_float(
    frames: torch.Tensor | np.ndarray,
    layout: Layout = "CTHW",
    value_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 frames (..., T, H, W, C) as floats in `value_range`, the last four axes permuted to `layout`.

    Leading axes (a batch) are kept. The CogVideoX and Wan VAEs take (B, C, T, H, W) in [-1, 1]: the defaults.
    Qwen2-VL's video processor rescales and normalises itself: give it the uint8 frames as they are, or
    `to_float(frames, "TCHW", (0, 1))` with `do_rescale=False`.
    """
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (..., T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    lead = tuple(range(x.ndim - 4))
    x = x.permute(*lead, *(len(lead) + p for p in _PERMUTATION[layout]))
    lo, hi = value_range
    return x.to(dtype) * ((hi - lo) / 255.0) + lo


def write_video(url: str, frames: torch.Tensor | np.ndarray, fps: float) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) as an mp4 at `url`, atomically.

    yuv420p halves the chroma resolution, so height and width must be even; chroma is subsampled by area
    averaging (no colour bleeding at edges). The bytes depend only on the frames, fps and PyAV build.
    """
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{url}: expected uint8 frames (T, H, W, 3), got {array.dtype} {array.shape}")
    count, height, width, _ = array.shape
    if count < 1:
        raise ValueError(f"{url}: cannot write a video without frames")
    if height % 2 or width % 2:
        raise ValueError(f"{url}: yuv420p needs an even height and width, got {height}x{width}")
    if fps <= 0:
        raise ValueError(f"{url}: fps must be positive, got {fps}")
    codec = encoder()
    with storage.atomic_open(url) as f, av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=_ENCODERS[codec])
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        reformatter = VideoReformatter()
        for index, image in enumerate(array):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = reformatter.reformat(frame, format="yuv420p", interpolation="AREA")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
