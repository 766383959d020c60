"""lift/io/video.py: mp4 round trips on every storage protocol, frame sampling, resizing, layouts and the errors
a bad video raises."""

from __future__ import annotations

import io
import re

import av
import numpy as np
import pytest
import torch

from lift.io import storage, video


def _clip(frames: int = 16, height: int = 32, width: int = 32) -> np.ndarray:
    """Frame t is a flat gray of level 10 + 15 t (so a decoded frame tells its index) with a red square."""
    x = np.empty((frames, height, width, 3), dtype=np.uint8)
    x[:] = (10 + 15 * np.arange(frames, dtype=np.uint8))[:, None, None, None]
    x[:, 8:16, 8:16] = (230, 40, 40)
    return x


def _index(frame: torch.Tensor) -> int:
    """The frame index `_clip` drew into a (decoded) frame, from its background level."""
    return int(round((frame[-4:, -4:].float().mean().item() - 10) / 15))


def test_round_trip_on_every_protocol(root_url):
    frames = _clip()
    url = storage.join(root_url, "clips", "a.mp4")
    video.write_video(url, torch.from_numpy(frames), fps=8)
    decoded = video.read_video(url)
    assert decoded.dtype == torch.uint8 and decoded.shape == (16, 32, 32, 3)
    assert (decoded.float() - torch.from_numpy(frames).float()).abs().mean() < 2.0  # near-lossless
    assert [_index(f) for f in decoded] == list(range(16))
    info = video.probe(url)
    assert (info.frames, info.fps, info.height, info.width) == (16, 8.0, 32, 32)
    assert info.codec == {"libx264": "h264", "mpeg4": "mpeg4"}[video.encoder()]
    assert storage.listdir(storage.join(root_url, "clips")) == ["a.mp4"]  # no temporary left beside it


def test_encoding_is_deterministic_and_h264(tmp_path):
    """Same frames, same bytes: x264 with AVX-512 and its macroblock tree once varied in ~30% of toy clips."""
    rng = np.random.default_rng(0)
    for i in range(6):
        frames = np.clip(_clip().astype(np.float64) + rng.normal(0, 12 * (i % 2), (16, 32, 32, 3)), 0, 255)
        outputs = set()
        for _ in range(4):
            video.write_video(str(tmp_path / "a.mp4"), frames.astype(np.uint8), fps=8)
            outputs.add((tmp_path / "a.mp4").read_bytes())
        assert len(outputs) == 1
    assert video.encoder() == "libx264"  # PyAV wheels carry libx264 (docs/DESIGN.md)
    assert b"mbtree=0" in outputs.pop()


def test_fps_metadata(tmp_path):
    url = str(tmp_path / "a.mp4")
    video.write_video(url, _clip(frames=6), fps=12)
    assert video.probe(url).fps == 12.0
    assert video.probe(url).frames == 6


def test_noise_survives_encoding(tmp_path):
    rng = np.random.default_rng(0)
    noisy = np.clip(110 + rng.normal(0, 20, (8, 32, 32, 3)), 0, 255).astype(np.uint8)
    url = str(tmp_path / "noisy.mp4")
    video.write_video(url, noisy, fps=8)
    assert video.read_video(url).float().std() > 12  # the encoder keeps most of the grain


def test_uniform_sampling(tmp_path):
    url = str(tmp_path / "a.mp4")
    video.write_video(url, _clip(), fps=8)
    assert [_index(f) for f in video.read_video(url, num_frames=4)] == [0, 5, 10, 15]
    assert [_index(f) for f in video.read_video(url, num_frames=8)] == [0, 2, 4, 6, 9, 11, 13, 15]
    assert [_index(f) for f in video.read_video(url, num_frames=1)] == [0]
    assert len(video.read_video(url, num_frames=20)) == 20  # shorter videos repeat frames
    assert video.uniform_indices(16, 4).tolist() == [0, 5, 10, 15]
    with pytest.raises(ValueError):
        video.read_video(url, num_frames=0)


def test_resize_covers_and_crops_the_centre(tmp_path):
    frames = np.zeros((4, 32, 64, 3), dtype=np.uint8)
    frames[:, :, :16] = (230, 40, 40)  # red left quarter
    frames[:, :, 16:48] = (40, 200, 60)  # green middle half
    frames[:, :, 48:] = (50, 90, 250)  # blue right quarter
    url = str(tmp_path / "wide.mp4")
    video.write_video(url, frames, fps=8)
    square = video.read_video(url, size=16)  # 32x64 -> 16x32, centre 16x16: only the green half is left
    assert square.shape == (4, 16, 16, 3)
    assert (square.float().mean(dim=(0, 1, 2)) - torch.tensor([40.0, 200.0, 60.0])).abs().max() < 12
    whole = video.read_video(url, num_frames=2, size=(16, 32))  # same aspect: nothing cropped
    assert whole.shape == (2, 16, 32, 3)
    assert whole[0, 8, 1, 0] > 180 and whole[0, 8, -2, 2] > 180  # red left, blue right
    tall = video.read_video(url, size=(32, 16))  # 32x64 -> 32x64 covers 32x16: crop the middle
    assert tall.shape == (4, 32, 16, 3) and tall[..., 1].float().mean() > 180


@pytest.mark.parametrize("layout,shape", [("CTHW", (3, 5, 4, 6)), ("TCHW", (5, 3, 4, 6)), ("THWC", (5, 4, 6, 3))])
def test_to_float_layouts(layout, shape):
    frames = torch.randint(0, 256, (5, 4, 6, 3), dtype=torch.uint8)
    frames[0, 0, 0] = torch.tensor([0, 255, 51], dtype=torch.uint8)
    x = video.to_float(frames, layout)
    assert x.shape == shape and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    back = x.permute(*{"CTHW": (1, 2, 3, 0), "TCHW": (0, 2, 3, 1), "THWC": (0, 1, 2, 3)}[layout])
    assert torch.equal(((back + 1) * 127.5).round().to(torch.uint8), frames)
    unit = video.to_float(frames.numpy(), layout, value_range=(0, 1))
    assert torch.allclose(unit, (x + 1) / 2)


def test_to_float_keeps_batch_axes_for_the_vae():
    batch = torch.zeros((2, 5, 4, 6, 3), dtype=torch.uint8)
    batch[1] = 255
    x = video.to_float(batch, "CTHW", dtype=torch.bfloat16)
    assert x.shape == (2, 3, 5, 4, 6) and x.dtype == torch.bfloat16
    assert x[0].eq(-1).all() and x[1].eq(1).all()
    with pytest.raises(ValueError, match="uint8"):
        video.to_float(batch.float())


@pytest.mark.parametrize("frames,match", [
    (np.zeros((2, 31, 32, 3), np.uint8), "even"),
    (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
    (np.zeros((2, 32, 32), np.uint8), "uint8"),
    (np.zeros((0, 32, 32, 3), np.uint8), "without frames"),
])
def test_write_rejects_bad_frames(tmp_path, frames, match):
    url = str(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match=match):
        video.write_video(url, frames, fps=8)
    assert not (tmp_path / "bad.mp4").exists()


def _valid_bytes(tmp_path, faststart: bool = False) -> bytes:
    """A valid 16-frame mp4; faststart puts the index first, as many downloaded videos have it."""
    path = tmp_path / ("faststart.mp4" if faststart else "plain.mp4")
    if not faststart:
        video.write_video(str(path), _clip(), fps=8)
        return path.read_bytes()
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i, image in enumerate(_clip()):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


def _zero_frame_mp4() -> bytes:
    """What FFmpeg writes for a video stream that never got a frame."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return buf.getvalue()


@pytest.mark.parametrize("case", ["corrupt", "empty", "truncated", "truncated-faststart", "zero-frame", "missing"])
def test_unusable_videos_raise_video_error_naming_the_url(root_url, tmp_path, case):
    url = storage.join(root_url, f"{case}.mp4")
    data = {
        "corrupt": lambda: b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8,
        "empty": lambda: b"",
        "truncated": lambda: _valid_bytes(tmp_path)[: len(_valid_bytes(tmp_path)) // 2],
        "truncated-faststart": lambda: _valid_bytes(tmp_path, faststart=True)[:-700],
        "zero-frame": _zero_frame_mp4,
    }
    if case != "missing":
        storage.write_bytes(url, data[case]())
    for read in (video.read_video, video.probe):
        if read is video.probe and case == "truncated-faststart":
            continue  # the header is intact: only decoding finds the missing frames
        with pytest.raises(video.VideoError) as err:
            read(url)
        assert url in str(err.value)
        assert isinstance(err.value, ValueError)


def test_truncated_faststart_is_detected_at_every_cut(tmp_path):
    """With the index first, FFmpeg opens a cut file happily: decoding must notice the frames are gone."""
    data = _valid_bytes(tmp_path, faststart=True)
    url = str(tmp_path / "cut.mp4")
    (tmp_path / "cut.mp4").write_bytes(data)
    assert video.read_video(url).shape[0] == 16
    for keep in range(0, len(data), 11):
        (tmp_path / "cut.mp4").write_bytes(data[:keep])
        with pytest.raises(video.VideoError, match=re.escape(url)):
            video.read_video(url)
