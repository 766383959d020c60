"""`lift report`: the HTML report of a run, from stored outputs only: every section filled for a complete run (and
rendered by headless Chromium with every image loaded), and missing inputs said on the page, also over s3://."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import subprocess

import pytest
from test_evaluate import evaluated_run

from lift import cli
from lift.io import storage
from lift.report import report
from lift.stages import critic_eval

PNG = b"\x89PNG\r\n\x1a\n"
TITLES = {"summary": "Summary", "critic-accuracy": "Critic accuracy", "rewards": "Critic reward before and after "
          "alignment", "labels": "Labels per dimension", "oracle": "Oracle checks (toy world)",
          "training": "Training curves", "samples": "Samples: base vs aligned", "config": "Configuration"}


def _accuracy() -> dict:
    truth = [{"semantic": s, "motion": m, "fidelity": f}
             for s, m, f in [("Good", "Bad", "Bad"), ("Bad", "Good", "Normal"), ("Normal", "Bad", "Good")] * 4]
    predicted = [dict(t) for t in truth]
    predicted[0]["semantic"] = "Bad"
    result = critic_eval.metrics(truth, predicted)
    result.update(critic="critic/model", split="test", mode="logits", answer_format="reason_first")
    return result


def _tensorboard(url: str, steps: int, extra: str | None = None) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(storage.filesystem(url)[1])
    for s in range(1, steps + 1):
        writer.add_scalar("loss", 2.0 * math.exp(-s / 10) + 0.1, s)
        writer.add_scalar("lr", 1e-3 * 0.5 * (1 + math.cos(math.pi * s / steps)), s)
        if extra:
            writer.add_scalar(extra, 0.4 + 0.01 * s, s)
    writer.close()


@pytest.fixture(scope="module")
def full_run(zoo_dir, tmp_path_factory) -> str:
    """An evaluated run plus the critic's accuracy table and TensorBoard events of critic and align training."""
    run = evaluated_run(zoo_dir, tmp_path_factory)
    storage.write_json(f"{run}/critic/eval/accuracy.json", _accuracy())
    _tensorboard(f"{run}/critic/tensorboard", 30)
    _tensorboard(f"{run}/align/tensorboard", 20, extra="mean_reward")
    return run


@pytest.fixture(scope="module")
def built(full_run) -> tuple[int, str]:
    """`lift report RUN_URL` on the full run, once: (exit status, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["report", full_run])
    return status, printed.getvalue()


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)" data-filled="(true|false)">', page))


def _images(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', page)


@pytest.mark.slow
def test_full_run_report_has_every_section_and_image(full_run, built):
    status, printed = built
    assert status == 0
    index = printed.strip().splitlines()[-1]
    assert index == f"{full_run}/report/index.html"
    page = storage.read_text(index)
    assert _sections(page) == {s: "true" for s in report.SECTION_IDS}
    for sid, title in TITLES.items():
        assert f'<section id="{sid}" data-filled="true"><h2>{title}</h2>' in page
    assert "Not available" not in page
    images = _images(page)
    expected = {"reward_hist.png", "labels.png", "oracle.png", "curves_critic.png", "curves_align.png",
                "sample_00_base.png", "sample_00_aligned.png", "sample_01_base.png", "sample_01_aligned.png"}
    assert set(images) == expected
    for name in images:  # relative, beside the page, real PNGs
        assert "/" not in name and storage.read_bytes(f"{full_run}/report/{name}").startswith(PNG)
    for text in ("LiFT-Critic-40B", "93.55", "majority class", "a red circle moves left on a black background",
                 "win rate of aligned", "oracle score", "run: ", "tie_margin"):
        assert text in page, text


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; checked before the run is built, so a skip costs nothing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed but CI is set: .ci/run installs Debian's chromium, this must not skip")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this test")


def _render(chromium: str, index: str, tmp_path, *mode: str) -> str:
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1200,6000", "--virtual-time-budget=10000", *mode, f"file://{index}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_report_renders_in_headless_chromium(chromium, full_run, built, tmp_path):
    index = storage.filesystem(f"{full_run}/report/index.html")[1]
    dom = _render(chromium, index, tmp_path, "--dump-dom")
    for sid, title in TITLES.items():  # the DOM after load: every section with its heading
        assert re.search(rf'<section id="{sid}" data-filled="true"><h2>{re.escape(title)}</h2>', dom), sid
    images = _images(dom)
    assert len(images) == 9
    # the page's own script marks each image once loaded (naturalWidth > 0) and counts them on <body>
    assert f'data-images="{len(images)}/{len(images)}"' in dom
    assert dom.count('data-loaded="yes"') == len(images) and 'data-loaded="no"' not in dom

    # and the check does catch a broken image
    broken = tmp_path / "broken"
    shutil.copytree(os.path.dirname(index), broken)
    os.remove(broken / "oracle.png")
    dom = _render(chromium, str(broken / "index.html"), tmp_path, "--dump-dom")
    assert f'data-images="{len(images) - 1}/{len(images)}"' in dom and "image failed to load: oracle.png" in dom


def test_missing_inputs_are_said_on_the_page_over_s3(s3_url):
    run = f"{s3_url}/run"
    storage.write_json(f"{run}/critic/eval/accuracy.json", _accuracy())
    storage.write_text(f"{run}/critic/config.yaml", "run: x\nout: x/critic\n")
    index = report.write_report(run)
    assert index == f"{run}/report/index.html"
    page = storage.read_text(index)
    sections = _sections(page)
    assert sections == {"summary": "false", "critic-accuracy": "true", "rewards": "false", "labels": "false",
                        "oracle": "false", "training": "false", "samples": "false", "config": "true"}
    assert page.count("Not available") >= 7 and f"{run}/eval/results.json" in page
    assert f"{run}/align/tensorboard" in page and "out: x/critic" in page and "LiFT-Critic-13B" in page
    assert _images(page) == []
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        report.write_report(f"{s3_url}/nothing-here")
