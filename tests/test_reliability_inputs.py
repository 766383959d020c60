"""The bad-input catalogue of docs/RELIABILITY.md: each bad input run through the `lift` command line ends with a
clear reason that names the file and line, the key or the URL, and leaves everything already written untouched
(every file that existed before is byte-identical afterwards, and no `_SUCCESS` marker appears)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
from test_align import SAMPLING, _write_rollouts, _write_scores
from test_align import TRAIN as ALIGN_TRAIN
from test_critic import TRAIN as CRITIC_TRAIN
from test_release import canonical_release, entry, write_videos

from lift import cli, stages
from lift.data import hra
from lift.io import storage, video
from lift.models import critic, scoring
from lift.stages import critic as critic_stage
from lift.stages import runner, score

# --------------------------------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def rollouts(zoo_dir, tmp_path_factory) -> str:
    """Generated rollouts of the tiny CogVideoX (real mp4s) with fixed rewards, built once for the module."""
    root = str(tmp_path_factory.mktemp("bad-inputs-rollouts"))
    _write_rollouts(root, zoo_dir)
    _write_scores(f"{root}/rollouts", f"{root}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    return root


@dataclass
class World:
    """One case's folder: copies of the inputs it needs, and the paths of the models it reads."""

    root: Path
    zoo: str
    toy: str
    generated: str

    def data(self) -> Path:
        """A copy of the toy world's data folder (manifest, videos, prompts, real/)."""
        shutil.copytree(self.toy, self.root / "data")
        return self.root / "data"

    def clips(self, n: int = 3) -> Path:
        """A rollouts-style folder of `n` toy clips (an HRA manifest is a valid input to `lift score`)."""
        lines = storage.read_text(f"{self.toy}/manifest.jsonl").splitlines()[:n]
        out = self.root / "clips"
        (out / "videos").mkdir(parents=True)
        for line in lines:
            rel = json.loads(line)["video"]
            shutil.copy(f"{self.toy}/{rel}", out / rel)
        (out / "manifest.jsonl").write_text("".join(x + "\n" for x in lines))
        return out

    def align_inputs(self) -> Path:
        for name in ("rollouts", "scores"):
            shutil.copytree(f"{self.generated}/{name}", self.root / name)
        return self.root

    def video(self, n: int) -> Path:
        """The n-th video of `clips()`."""
        rel = json.loads((self.root / "clips/manifest.jsonl").read_text().splitlines()[n])["video"]
        return self.root / "clips" / rel

    # the command lines of the stages a case runs
    def score(self, *extra: str) -> list[str]:
        return ["score", f"rollouts={self.root}/clips", f"critic={self.zoo}/critic", f"out={self.root}/scores-out",
                "batch_size=2", *extra]

    def critic(self, *extra: str) -> list[str]:
        return ["critic", f"data={self.root}/data", f"model.name_or_path={self.zoo}/critic",
                f"out={self.root}/critic", *CRITIC_TRAIN, *extra]

    def align(self, *extra: str) -> list[str]:
        return ["align", f"rollouts={self.root}/rollouts", f"scores={self.root}/scores", f"out={self.root}/align",
                f"model.name_or_path={self.zoo}/cogvideox", "real=null", *ALIGN_TRAIN, *extra]

    def generate(self, *extra: str) -> list[str]:
        return ["generate", f"prompts={self.root}/prompts.jsonl", f"out={self.root}/gen",
                f"model.name_or_path={self.zoo}/cogvideox", *SAMPLING, *extra]

    def data_import(self, *extra: str) -> list[str]:
        return ["data", "import", f"{self.root}/release.json", f"{self.root}/videos", f"{self.root}/imported", *extra]

    def critic_eval(self, *extra: str) -> list[str]:
        return ["critic-eval", f"data={self.root}/data", f"critic={self.zoo}/critic", f"out={self.root}/critic-eval",
                "batch_size=2", *extra]

    def evaluate(self, *extra: str) -> list[str]:
        return ["evaluate", f"prompts={self.root}/prompts.jsonl", f"base.name_or_path={self.zoo}/cogvideox",
                f"aligned.name_or_path={self.zoo}/cogvideox", f"critic={self.zoo}/critic", f"out={self.root}/eval",
                "videos_per_prompt=1", *SAMPLING, *extra]

    def base(self, *extra: str) -> list[str]:
        return ["base", f"start={self.zoo}/cogvideox", f"data={self.root}/data", f"out={self.root}/base", *extra]

    def model(self, name: str) -> Path:
        """A copy of the zoo's model `name` (critic, cogvideox) that a case may break."""
        shutil.copytree(f"{self.zoo}/{name}", self.root / "models" / name)
        return self.root / "models" / name


@pytest.fixture
def world(tmp_path, zoo_dir, toy_data, rollouts) -> World:
    return World(tmp_path, zoo_dir, toy_data, rollouts)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_bad(world: World, argv: list[str], capsys) -> tuple[int, str]:
    """Run `lift ARGV`; returns (exit status, stderr) after checking nothing written before changed."""
    before = _snapshot(world.root)
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    after = _snapshot(world.root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"already written files lost or changed: {changed}"
    sealed = [p for p in after if p.endswith(storage.MARKER) and p not in before and "checkpoints/" not in p]
    assert not sealed, f"a failed run sealed an output: {sealed}"
    return code, err


def _reason(err: str) -> str:
    """The reason `lift` printed: from its 'lift: ' line to the end."""
    assert "Traceback" not in err, err[-3000:]
    start = err.rfind("\nlift: ") + 1 if "\nlift: " in err else err.find("lift: ")
    assert start >= 0, err[-3000:]
    return err[start:]


# ----------------------------------------------------------------------------------------------- bad inputs
def _encode(path: Path, frames: int, fmt: str = "mp4") -> None:
    """`frames` frames of noise, as FFmpeg writes them; an mp4 gets its index first, as downloaded videos have it."""
    options = {"movflags": "faststart"} if fmt == "mp4" else {}
    with av.open(str(path), mode="w", format=fmt, options=options) as container:
        stream = container.add_stream(video.encoder(), rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        for i in range(frames):
            noise = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(noise, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _truncated(path: Path) -> None:
    """A 16-frame mp4 with its index first, cut 3,000 bytes short: it opens, and decoding finds frames missing."""
    _encode(path, 16)
    path.write_bytes(path.read_bytes()[:-3000])


def _line(path: Path, n: int, text: str) -> None:
    """Replace line n (1-based) of a text file."""
    lines = path.read_text().splitlines()
    lines[n - 1] = text
    path.write_text("".join(x + "\n" for x in lines))


def _edit_record(path: Path, n: int, **changes) -> None:
    rec = json.loads(path.read_text().splitlines()[n - 1])
    for k, v in changes.items():
        if v is None:
            rec.pop(k, None)
        else:
            rec[k] = v
    _line(path, n, json.dumps(rec))


def _forged_checkpoint(w: World, *argv: str, **changes) -> list[str]:
    """The data, and a committed checkpoint whose marker records the fingerprint of `lift critic ARGV` with `changes`
    (its shards are never read); returns that command line."""
    w.data()
    argv = w.critic(*argv)
    own = critic_stage.fingerprint(stages.load("critic", None, argv[1:]))
    storage.write_marker(str(w.root / "critic/checkpoints/step-00000002"), "checkpoint", "", {"step": 2},
                         fingerprint={**own, **changes})
    return argv


@dataclass
class Bad:
    """One catalogue entry: `build` writes the bad input into the world and returns the command line; the reason
    must contain every string of `expect` (formatted with root=the world's folder, zoo=the model zoo)."""

    id: str
    build: Callable[[World], list[str]]
    expect: list[str]
    code: int = 1
    env: dict = field(default_factory=dict)
    one_line: bool = False
    """The reason is one line (readers that list every bad line of a file print one line per problem)."""


def _video_case(name: str, write: Callable[[Path], None], expect: list[str]) -> Bad:
    def build(w: World) -> list[str]:
        w.clips()
        write(w.video(1))
        return w.score()
    return Bad(name, build, ["{root}/clips/videos/000001.mp4", *expect])


def _prompts(text: str) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        (w.root / "prompts.jsonl").write_text(text)
        return w.generate()
    return build


def _manifest_case(name: str, edit: Callable[[Path], None], expect: list[str]) -> Bad:
    def build(w: World) -> list[str]:
        edit(w.data() / "manifest.jsonl")
        return w.critic()
    return Bad(name, build, ["{root}/data/manifest.jsonl", *expect])


def _config_file(text: str, stage: str = "score") -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        (w.root / "c.yaml").write_text(text)
        return [stage, "--config", str(w.root / "c.yaml")]
    return build


def _release(entries: list[dict] | str) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        text = entries if isinstance(entries, str) else json.dumps(entries)
        (w.root / "release.json").write_text(text)
        write_videos(str(w.root / "videos"), [f"clip{i:04d}" for i in range(3)])
        return w.data_import()
    return build


def _scores_line(n: int, text: str) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        w.align_inputs()
        _line(w.root / "scores/scores.jsonl", n, text)
        return w.align()
    return build


def _rollout_video(path: str) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        w.align_inputs()
        _edit_record(w.root / "rollouts/manifest.jsonl", 2, video=path)
        return w.align()
    return build


def _score_manifest_line(text: str) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        w.clips()
        _line(w.root / "clips/manifest.jsonl", 2, text)
        return w.score()
    return build


def _stale_shards(w: World) -> list[str]:
    """Parts of a 2-shard attempt and a rerun that sets another shard count (with num_shards=0 a rerun keeps the
    count the parts were written with: an elastic job's restart)."""
    w.clips()
    storage.write_text(str(w.root / "scores-out/part-00000-of-00002.jsonl"), '{"id": "from a 2-rank attempt"}\n')
    return w.score("num_shards=1")


def _unknown_label_release() -> list[dict]:
    entries = canonical_release(3)
    entries[4]["conversations"][1]["value"] = "Excellent. Looks great."
    return entries


CASES = [
    # videos (decoded by `lift score`; the same reader serves critic, critic-eval, align and evaluate)
    _video_case("video-corrupt", lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8),
                ["cannot decode video"]),
    _video_case("video-truncated", _truncated, ["cannot decode video"]),
    _video_case("video-zero-frames", lambda p: _encode(p, 0), ["no video stream"]),  # FFmpeg drops the empty track
    _video_case("video-zero-frames-in-stream", lambda p: _encode(p, 0, "avi"),
                ["no frames decoded (zero-frame or truncated video)"]),
    _video_case("video-empty-file", lambda p: p.write_bytes(b""), ["empty file"]),
    _video_case("video-missing", lambda p: p.unlink(), ["no such file or object"]),
    _manifest_case("manifest-video-missing", lambda m: (m.parent / "videos/000002.mp4").unlink(),
                   [":3: video not found: {root}/data/videos/000002.mp4"]),
    # JSON Lines: the HRA manifest (critic, critic-eval), rollout manifests (score, align), scores (align)
    _manifest_case("manifest-invalid-json", lambda m: _line(m, 2, '{"id": "x", "video": '),
                   [":2: invalid JSON"]),
    _manifest_case("manifest-unknown-label", lambda m: _edit_record(
        m, 3, labels={"semantic": "Excellent", "motion": "Good", "fidelity": "Bad"}),
        [":3: unknown label 'Excellent' for 'semantic' (labels: Good, Normal, Bad)"]),
    _manifest_case("manifest-missing-field", lambda m: _edit_record(m, 4, labels=None), [":4: missing field 'labels'"]),
    _manifest_case("manifest-unknown-dimension", lambda m: _edit_record(
        m, 2, labels={"semantic": "Good", "motion": "Good", "fidelity": "Bad", "aesthetics": "Good"}),
        [":2: unknown dimension 'aesthetics' in 'labels'"]),
    _manifest_case("manifest-duplicate-id", lambda m: _edit_record(m, 5, id="000000"),
                   [":5: duplicate id '000000' (first on line 1)"]),
    _manifest_case("manifest-video-escapes-folder", lambda m: _edit_record(m, 2, video="../../etc/passwd"),
                   [":2: 'video' must be a relative path inside the manifest's folder"]),
    _manifest_case("manifest-empty", lambda m: m.write_text("\n\n"), ["empty manifest, no records"]),
    _manifest_case("manifest-no-train-split", lambda m: m.write_text("".join(
        json.dumps({**json.loads(x), "split": "test"}) + "\n" for x in m.read_text().splitlines())),
        ["no records in the 'train' split"]),
    Bad("rollouts-invalid-json", _score_manifest_line('{"id": "x",'), ["{root}/clips/manifest.jsonl:2: invalid JSON"]),
    Bad("rollouts-missing-field", _score_manifest_line('{"id": "x", "prompt": "p"}'),
        ["{root}/clips/manifest.jsonl:2: missing field(s) video"]),
    Bad("rollouts-video-escapes-folder", _score_manifest_line('{"id": "x", "prompt": "p", "video": "../secret.mp4"}'),
        ["{root}/clips/manifest.jsonl:2: path '../secret.mp4' must be relative and stay inside {root}/clips"]),
    Bad("align-rollout-absolute-path", _rollout_video("/etc/passwd"),
        ["{root}/rollouts/manifest.jsonl:2: path '/etc/passwd' must be relative"]),
    Bad("scores-invalid-json", _scores_line(3, '{"id": "p1-000", "reward": '),
        ["{root}/scores/scores.jsonl:3: invalid JSON"]),
    Bad("scores-nan-reward", _scores_line(2, '{"id": "p0-001", "reward": NaN}'),
        ["{root}/scores/scores.jsonl:2: a score needs an 'id' and a 'reward' that is a finite number or null"]),
    Bad("scores-missing-rollout", _scores_line(4, ""), ["{root}/scores: no score for 1 rollouts, e.g. ['p1-001']"]),
    # prompt files (generate, evaluate)
    Bad("prompts-empty", _prompts("\n"), ["{root}/prompts.jsonl: the prompt file is empty"]),
    Bad("prompts-malformed-line", _prompts('{"id": "a", "prompt": "x"}\n{"id": "b"}\n'),
        ["{root}/prompts.jsonl:2: not a {{\"id\", \"prompt\"}} JSON line"]),
    Bad("prompts-duplicate-id", _prompts('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n'),
        ["{root}/prompts.jsonl: prompt id 'a' appears more than once"]),
    Bad("prompts-id-escapes-folder", _prompts('{"id": "../../x", "prompt": "x"}\n'),
        ["{root}/prompts.jsonl:1: prompt id '../../x' cannot name a file"]),
    # the LiFT-HRA release (data import)
    Bad("release-empty", _release("[]"), ["{root}/release.json: empty release, no entries"]),
    Bad("release-invalid-json", _release('[{"video": "videos/a.mp4",\n'),
        ["{root}/release.json: line 2: invalid JSON"]),
    Bad("release-unknown-label", _release(_unknown_label_release()),
        ["{root}/release.json[4]: unparsable answer (expected '<Good|Normal|Bad>. <reason>'): 'Excellent. Looks"]),
    Bad("release-video-missing",
        _release(canonical_release(3) + [entry("clip9", "a cat", d, "Good.") for d in hra.DIMENSIONS]),
        ["{root}/release.json[9]: video 'videos/clip9.mp4' not found in {root}/videos"]),
    # configuration
    Bad("config-unknown-key", lambda w: ["align", "trainer.lrr=1e-5"],
        ["command line: unknown config key 'trainer.lrr'; did you mean 'lr'?"], code=2),
    Bad("config-unknown-key-in-file", _config_file("run: ./x\nbatch_size: 2\nmod: generate\n"),
        ["{root}/c.yaml, line 3: unknown config key 'mod'; did you mean 'mode'?"], code=2),
    Bad("config-wrong-type", lambda w: ["critic", "trainer.lr=fast"], ["bad value for 'trainer.lr'"], code=2),
    Bad("config-wrong-type-in-file", _config_file("batch_size: many\n"),
        ["{root}/c.yaml, line 1: bad value for 'batch_size'"], code=2),
    Bad("config-invalid-choice", lambda w: ["score", "mode=guess"],
        ["bad value for 'mode'", "'logits', 'generate'"], code=2),
    Bad("config-invalid-yaml", _config_file("run: ./x\nlabel_scores: {Good: 1\n"),
        ["{root}/c.yaml, line 3: invalid YAML"], code=2),
    Bad("config-file-missing", lambda w: ["score", "--config", f"{w.root}/absent.yaml"],
        ["{root}/absent.yaml: no such file or object"]),
    Bad("config-caption-dropout-range", lambda w: w.align("caption_dropout=1.0"),
        ["command line: bad value for 'caption_dropout': 1.0 is out of range: expected within [0, 1)"], code=2),
    Bad("config-label-scores-keys", lambda w: (w.clips(), w.score("label_scores.Great=1.0"))[1],
        ["config key 'label_scores' must have exactly the keys ['Good', 'Normal', 'Bad']"]),
    Bad("env-bad-retry-setting", lambda w: ["score", "rollouts=s3://b/r", "critic=s3://b/c", f"out={w.root}/o"],
        ["environment variable LIFT_S3_MAX_ATTEMPTS='many' is not a valid integer"],
        env={"LIFT_S3_MAX_ATTEMPTS": "many"}),
    # resuming
    Bad("checkpoint-of-another-model", lambda w: _forged_checkpoint(w, base="Qwen/Qwen2.5-VL-7B-Instruct"),
        ["{root}/critic/checkpoints/step-00000002: checkpoint is incompatible with this run: 'base' was "
         "'Qwen/Qwen2.5-VL-7B-Instruct', now '{zoo}/critic'"], code=2),
    Bad("resume-with-incompatible-config",
        lambda w: _forged_checkpoint(w, "model.answer_format=label_first", answer_format="reason_first"),
        ["checkpoint is incompatible with this run: 'answer_format' was 'reason_first', now 'label_first'"], code=2),
    Bad("parts-of-another-world-size", _stale_shards,
        ["{root}/scores-out/part-00000-of-00002.jsonl: written with 2 shards, this run uses 1"]),
    Bad("critic-not-a-model", lambda w: (w.clips(), w.score(f"critic={w.root}/nowhere"))[1],
        ["{root}/nowhere: no such model folder"]),
]


# ------------------------------------------------------- step 12: shapes, empty values, ranges, models, URL schemes
def _pretty(value) -> str:
    """One JSON document over several lines, as `json.dump(indent=2)` writes it."""
    return json.dumps(value, indent=2) + "\n"


def _rewrite(edit: Callable[[World], Path], text: Callable[[Path], str], argv: Callable[[World], list[str]]):
    """A case that replaces a file of the world (`edit` makes the world and returns the file) by `text(file)`."""
    def build(w: World) -> list[str]:
        path = edit(w)
        path.write_text(text(path))
        return argv(w)
    return build


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _prompt_file(prompt, stage: str = "generate", id_="a") -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        (w.root / "prompts.jsonl").write_text(json.dumps({"id": "ok", "prompt": "a red circle"}) + "\n"
                                               + json.dumps({"id": id_, "prompt": prompt}) + "\n")
        return w.generate() if stage == "generate" else w.evaluate()
    return build


def _manifest_value(n: int, argv: Callable[[World], list[str]] = World.critic, **changes):
    def build(w: World) -> list[str]:
        _edit_record(w.data() / "manifest.jsonl", n, **changes)
        return argv(w)
    return build


def _cut_weights(model: str, rel: str, keep: Callable[[bytes], bytes], argv: Callable[[World, Path], list[str]]):
    """A copy of a zoo model whose file `rel` is replaced by `keep(its bytes)`; the stage reads the copy."""
    def build(w: World) -> list[str]:
        folder = w.model(model)
        path = folder / rel
        path.write_bytes(keep(path.read_bytes()))
        return argv(w, folder)
    return build


def _header_garbage(data: bytes) -> bytes:
    """The same length, the JSON header overwritten (a corrupt copy, not a short one)."""
    return data[:8] + b"\xff" * 64 + data[72:]


def _missing_shard(w: World, folder: Path) -> list[str]:
    index = {"metadata": {}, "weight_map": {"proj.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                            "proj.bias": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (folder / "transformer/diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    w.align_inputs()
    return w.align(f"model.name_or_path={folder}")


def _no_model_files(w: World) -> list[str]:
    (w.root / "prompts.jsonl").write_text(json.dumps({"id": "a", "prompt": "a red circle"}) + "\n")
    (w.root / "notamodel").mkdir()
    (w.root / "notamodel/weights.bin").write_bytes(b"0" * 16)
    return w.evaluate(f"aligned.name_or_path={w.root}/notamodel")


def _conflicting_release() -> list[dict]:
    entries = canonical_release(3)
    entries.append(entry("clip0001", "A cat number 1 jumps over a fence", "motion", "Bad. It stutters."))
    return entries


def _real_caption(w: World) -> list[str]:
    w.align_inputs()
    data = w.data()
    _edit_record(data / "real/manifest.jsonl", 2, prompt="")
    return w.align(f"real={data}/real")


SCHEMES = ("the schemes that work: s3:// (AWS or any S3-compatible store), gs:// (Google Cloud Storage, after "
           "`pip install gcsfs`), memory://")

STEP12_CASES = [
    # valid JSON of the wrong shape: reported once, with the shape expected and the shape found
    Bad("release-json-object", _release(_pretty({"data": canonical_release(3), "version": 2})),
        ["{root}/release.json: expected a JSON list of entries or JSON Lines (one entry object per line), found one "
         "JSON document over several lines: a JSON object with keys data, version"], one_line=True),
    Bad("manifest-json-array", _rewrite(lambda w: w.data() / "manifest.jsonl", lambda p: _pretty(_records(p)),
                                        World.critic),
        ["{root}/data/manifest.jsonl:1: expected JSON Lines (a JSON value per line), found one JSON document over "
         "several lines: a JSON array of 24 entries"]),
    Bad("prompts-json-array", _prompts(_pretty([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])),
        ["{root}/prompts.jsonl:1: not a {{\"id\", \"prompt\"}} JSON line (expected JSON Lines (a JSON object per "
         "line), found one JSON document over several lines: a JSON array of 2 entries)"], one_line=True),
    Bad("rollouts-json-array", _rewrite(lambda w: w.clips() / "manifest.jsonl", lambda p: _pretty(_records(p)),
                                        World.score),
        ["{root}/clips/manifest.jsonl:1: expected JSON Lines (a JSON object per line), found one JSON document over "
         "several lines: a JSON array of 3 entries"]),
    Bad("scores-json-object", _rewrite(lambda w: w.align_inputs() / "scores/scores.jsonl",
                                       lambda p: _pretty({"scores": _records(p)}), World.align),
        ["{root}/scores/scores.jsonl:1: expected JSON Lines (a JSON object per line), found one JSON document over "
         "several lines: a JSON object with keys scores"], one_line=True),
    # empty, null and non-string values where ids, prompts, captions and reasons go
    Bad("prompt-empty-string", _prompt_file(""),
        ["{root}/prompts.jsonl:2: not a {{\"id\", \"prompt\"}} JSON line ('prompt' must be a non-empty string, got "
         "string \"\")"], one_line=True),
    Bad("prompt-null", _prompt_file(None),
        ["{root}/prompts.jsonl:2:", "'prompt' must be a non-empty string, got null"], one_line=True),
    Bad("prompt-number", _prompt_file(7),
        ["{root}/prompts.jsonl:2:", "'prompt' must be a non-empty string, got number 7"], one_line=True),
    Bad("prompt-id-number", _prompt_file("x", id_=3),
        ["{root}/prompts.jsonl:2:", "'id' must be a non-empty string, got number 3"], one_line=True),
    Bad("eval-prompt-blank", _prompt_file("   ", stage="evaluate"),
        ["{root}/prompts.jsonl:2:", "'prompt' must be a non-empty string, got string \"   \""], one_line=True),
    Bad("manifest-prompt-empty", _manifest_value(3, prompt=""),
        ["{root}/data/manifest.jsonl:3: 'prompt' must be a non-empty string, got string \"\""]),
    Bad("manifest-reason-null", _manifest_value(2, reasons={"motion": None}),
        ["{root}/data/manifest.jsonl:2: 'reasons.motion' must be a non-empty string, got null"]),
    Bad("manifest-reason-empty", _manifest_value(4, reasons={"semantic": ""}),
        ["{root}/data/manifest.jsonl:4: 'reasons.semantic' must be a non-empty string"]),
    Bad("critic-eval-id-number", _manifest_value(5, World.critic_eval, id=5),
        ["{root}/data/manifest.jsonl:5: 'id' must be a non-empty string, got number 5"]),
    Bad("rollouts-prompt-null", _score_manifest_line('{"id": "x", "prompt": null, "video": "videos/000001.mp4"}'),
        ["{root}/clips/manifest.jsonl:2: 'prompt' must be a non-empty string, got null"]),
    Bad("align-rollout-id-empty",
        lambda w: (w.align_inputs(), _edit_record(w.root / "rollouts/manifest.jsonl", 3, id=""), w.align())[2],
        ["{root}/rollouts/manifest.jsonl:3: 'id' must be a non-empty string"]),
    Bad("real-caption-empty", _real_caption,
        ["{root}/data/real/manifest.jsonl:2: 'prompt' must be a non-empty string"]),
    Bad("scores-id-null", _scores_line(2, '{"id": null, "reward": 0.5}'),
        ["{root}/scores/scores.jsonl:2: 'id' must be a non-empty string, got null"], one_line=True),
    # numbers out of range: refused at load, naming the key and where it was set
    Bad("range-max-steps-negative", lambda w: w.align("trainer.max_steps=-3"),
        ["command line: bad value for 'trainer.max_steps': -3 is out of range: expected >= 0"], code=2, one_line=True),
    Bad("range-batch-size-zero", lambda w: w.score("batch_size=0"),
        ["command line: bad value for 'batch_size': 0 is out of range: expected >= 1"], code=2, one_line=True),
    Bad("range-test-fraction", lambda w: ["data", "toy", f"{w.root}/toy", "split.test_fraction=1.5"],
        ["bad value for 'split.test_fraction': 1.5 is out of range: expected within [0, 1]"], code=2, one_line=True),
    Bad("range-lora-dropout-in-file", _config_file("lora:\n  enabled: true\n  dropout: 1.0\n", "critic"),
        ["{root}/c.yaml, line 3: bad value for 'lora.dropout': 1.0 is out of range: expected within [0, 1)"],
        code=2, one_line=True),
    Bad("range-adam-beta", lambda w: w.critic("trainer.betas=[0.9,1.5]"),
        ["bad value for 'trainer.betas[1]': 1.5 is out of range: expected within [0, 1)"], code=2, one_line=True),
    Bad("range-label-score-negative", lambda w: w.score("label_scores.Bad=-0.5"),
        ["bad value for 'label_scores.Bad': -0.5 is out of range: expected >= 0"], code=2, one_line=True),
    Bad("range-videos-per-prompt", lambda w: w.generate("videos_per_prompt=0"),
        ["bad value for 'videos_per_prompt': 0 is out of range: expected >= 1"], code=2, one_line=True),
    Bad("range-in-pipeline-section", lambda w: ["pipeline", f"{w.root}/run", "critic.trainer.lr=0"],
        ["command line: bad value for 'critic.trainer.lr': 0.0 is out of range: expected > 0"], code=2, one_line=True),
    # model files cut short or corrupt: the file, what is wrong, the fix and the key; never a traceback
    Bad("critic-weights-cut-short", _cut_weights("critic", "model.safetensors", lambda b: b[:-1000],
                                                 lambda w, m: (w.clips(), w.score(f"critic={m}"))[1]),
        ["{root}/models/critic/model.safetensors: cut short: its tensors need", "the file holds",
         "download or copy the model again", "(config key 'critic')"], one_line=True),
    Bad("t2v-weights-header-cut", _cut_weights(
        "cogvideox", "transformer/diffusion_pytorch_model.safetensors", lambda b: b[:100],
        lambda w, m: (_prompts('{"id": "a", "prompt": "x"}\n')(w), w.generate(f"model.name_or_path={m}"))[1]),
        ["{root}/models/cogvideox/transformer/diffusion_pytorch_model.safetensors: cut short (incomplete metadata)",
         "(config key 'model.name_or_path')"], one_line=True),
    Bad("critic-start-corrupt-header", _cut_weights("critic", "model.safetensors", _header_garbage,
                                                    lambda w, m: (w.data(), w.critic(f"model.name_or_path={m}"))[1]),
        ["{root}/models/critic/model.safetensors: corrupt: its header is not the JSON table"], one_line=True),
    Bad("critic-eval-weights-empty", _cut_weights("critic", "model.safetensors", lambda b: b"",
                                                  lambda w, m: (w.data(), w.critic_eval(f"critic={m}"))[1]),
        ["{root}/models/critic/model.safetensors: not a safetensors file: 0 bytes"], one_line=True),
    Bad("align-base-missing-shard", _cut_weights("cogvideox", "model_index.json", lambda b: b, _missing_shard),
        ["{root}/models/cogvideox/transformer/diffusion_pytorch_model.safetensors.index.json: names shard(s) the "
         "folder lacks: diffusion_pytorch_model-00001-of-00002.safetensors"], one_line=True),
    Bad("base-start-vae-cut", _cut_weights("cogvideox", "vae/diffusion_pytorch_model.safetensors",
                                           lambda b: b[:len(b) // 2], lambda w, m: w.base(f"start={m}")),
        ["{root}/models/cogvideox/vae/diffusion_pytorch_model.safetensors: cut short", "(config key 'start')"],
        one_line=True),
    Bad("evaluate-model-folder-not-a-model", _no_model_files,
        ["{root}/notamodel: not a model folder, it has neither config.json nor model_index.json (config key "
         "'aligned.name_or_path')"], one_line=True),
    # URL schemes: the key, the URL and the schemes that work
    Bad("url-unknown-scheme", lambda w: ["score", "run=ftp2://bucket/run"],
        ["command line: bad value for 'run': ftp2://bucket/run: unsupported URL scheme 'ftp2://'", SCHEMES],
        code=2, one_line=True),
    Bad("url-unknown-scheme-in-file", _config_file("critic: htps://host/critic\n"),
        ["{root}/c.yaml, line 1: bad value for 'critic': htps://host/critic: unsupported URL scheme 'htps://'"],
        code=2, one_line=True),
    Bad("url-scheme-of-a-release-part", lambda w: ["data", "import", f"{w.root}/r.json",
                                                   f"{w.root}/v.zip,ftp2://b/v2.zip", f"{w.root}/out"],
        ["bad value for 'release.videos': ftp2://b/v2.zip: unsupported URL scheme 'ftp2://'"], code=2, one_line=True),
    Bad("url-scheme-package-missing", lambda w: ["report", "az://container/run"],
        ["az://container/run", "URL scheme 'az://' needs a package that is not installed (Install adlfs", SCHEMES],
        one_line=True),
    Bad("url-unknown-scheme-outside-a-config", lambda w: ["report", "ftp2://bucket/run"],
        ["ftp2://bucket/run", "unsupported URL scheme 'ftp2://'", SCHEMES], one_line=True),
    # a second import into a sealed folder stops on the release's conflicting answers before touching it
    Bad("release-conflicting-answers", _release(_conflicting_release()),
        ["{root}/release.json[3]: conflicting answers for 'motion'", "{root}/release.json[9]"]),
]
CASES += STEP12_CASES


def test_catalogue_has_at_least_25_distinct_inputs():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) >= 25
    assert len(STEP12_CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Bad, world: World, capsys, monkeypatch):
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    argv = case.build(world)
    code, err = run_bad(world, argv, capsys)
    reason = _reason(err)
    assert code == case.code, reason
    for text in case.expect:
        assert text.format(root=world.root, zoo=world.zoo) in reason, reason
    assert not case.one_line or len(reason.strip().splitlines()) == 1, reason


# --------------------------------------------------------------------- a refused rerun keeps the sealed output
def fake_work(cfg) -> dict:
    """A stand-in for a stage's work, run through the stage runner (training or sampling would cost seconds): a
    part file and a model file in the output folder, sealed by the runner like any stage's."""
    storage.write_text(storage.join(cfg.out, "part-00000-of-00001.jsonl"), '{"id": "x"}\n')
    storage.write_bytes(storage.join(cfg.out, "model/model.safetensors"), b"weights")
    return {"fake": 1}


@dataclass
class Rerun:
    """A stage's sealed output, then a rerun with a changed key and a bad input that its input check refuses."""

    stage: str
    out: str
    """The output folder, under the world's folder."""
    seal: Callable[[World], list[str]]
    """Writes the inputs; returns the command line that seals the output."""
    rerun: Callable[[World], list[str]]
    """Breaks an input; returns the rerun's command line, which also changes a key."""
    expect: str
    real: bool = True
    """Sealed by the stage itself; else by `fake_work` through the runner (critic, align, evaluate)."""


def _toy(*extra: str) -> Callable[[World], list[str]]:
    return lambda w: ["data", "toy", f"{w.root}/toy-out", "toy.num_clips=4", "toy.num_prompts=1",
                      "toy.num_eval_prompts=1", "toy.num_real=1", *extra]


def _then(*steps):
    """Run each step on the world; the last one's command line."""
    return lambda w: [step(w) for step in steps][-1]


RERUNS = [
    Rerun("data", "toy-out", _toy(), _toy("seed=1", "toy.size=18", "toy.frames=3"),
          "bad value for 'toy.frames': 3 is out of range"),
    Rerun("data", "toy-out", _toy(), _toy("seed=1", "toy.size=17"), "toy.size must be even"),
    Rerun("data", "imported", _release(canonical_release(3)),
          _then(_release(_conflicting_release()), lambda w: w.data_import("split.seed=1")),
          "{root}/release.json[3]: conflicting answers for 'motion'"),
    Rerun("base", "base", lambda w: w.base(),
          _cut_weights("cogvideox", "vae/diffusion_pytorch_model.safetensors", lambda b: b[:-8],
                       lambda w, m: w.base(f"start={m}", "caption_dropout=0.2")),
          "{root}/models/cogvideox/vae/diffusion_pytorch_model.safetensors: cut short"),
    Rerun("critic", "critic", lambda w: (w.data(), w.critic())[1],
          lambda w: (_line(w.root / "data/manifest.jsonl", 2, '{"id": '), w.critic("trainer.lr=1e-4"))[1],
          "{root}/data/manifest.jsonl:2: invalid JSON", real=False),
    Rerun("critic-eval", "critic-eval", lambda w: (w.data(), w.critic_eval())[1],
          lambda w: ((w.root / "data/videos/000002.mp4").unlink(), w.critic_eval("batch_size=3"))[1],
          "{root}/data/manifest.jsonl:3: video not found"),
    Rerun("generate", "gen", _then(_prompts('{"id": "a", "prompt": "a red circle"}\n'),
                                   lambda w: w.generate("videos_per_prompt=1")),
          _then(_prompts('{"id": "a", "prompt": null}\n'), lambda w: w.generate("videos_per_prompt=1", "seed=1")),
          "{root}/prompts.jsonl:1: not a {{\"id\", \"prompt\"}} JSON line ('prompt' must be a non-empty string"),
    Rerun("score", "scores-out", lambda w: (w.clips(), w.score())[1],
          lambda w: (_line(w.root / "clips/manifest.jsonl", 2, '{"id": "x",'), w.score("batch_size=3"))[1],
          "{root}/clips/manifest.jsonl:2: invalid JSON"),
    Rerun("align", "align", lambda w: (w.align_inputs(), w.align())[1],
          lambda w: (_line(w.root / "scores/scores.jsonl", 2, '{"id": "p0-001", "reward": NaN}'),
                     w.align("trainer.lr=1e-4"))[1],
          "{root}/scores/scores.jsonl:2: a score needs an 'id' and a 'reward'", real=False),
    Rerun("evaluate", "eval", _then(_prompts('{"id": "a", "prompt": "a red circle"}\n'), World.evaluate),
          _cut_weights("critic", "model.safetensors", lambda b: b[:-8],
                       lambda w, m: w.evaluate(f"critic={m}", "seed=5")),
          "{root}/models/critic/model.safetensors: cut short", real=False),
]


@pytest.mark.parametrize("case", RERUNS, ids=[f"{r.stage}-{r.out}-{i}" for i, r in enumerate(RERUNS)])
def test_a_refused_rerun_keeps_the_sealed_output(case: Rerun, world: World, capsys):
    """Sealed output, then a rerun with a changed key (which would discard it) and a bad input: the stage's input
    check refuses the rerun before the runner touches the output, which stays byte-identical and sealed."""
    argv = case.seal(world)
    if case.real:
        assert cli.main(argv) == 0, capsys.readouterr().err[-3000:]
    else:
        runner.run_stage(argv[0], stages.load(argv[0], None, argv[1:]), target=f"{__name__}:fake_work")
    out = str(world.root / case.out)
    sealed = storage.read_marker(out)
    assert sealed is not None and storage.listdir(out) != [storage.MARKER], "a sealed output with content"
    code, err = run_bad(world, case.rerun(world), capsys)  # every file byte-identical, no new _SUCCESS
    reason = _reason(err)
    assert code != 0 and case.expect.format(root=world.root) in reason, reason
    assert storage.read_marker(out) == sealed, "still sealed by the run that wrote it"


# ------------------------------------------------------------------------------------ object storage mistakes
STORE_CASES = {
    # name: (lift arguments given the prefix of a fresh run, environment changes, expected reason parts)
    "nonexistent-bucket-read": (lambda run, w: w.score(f"rollouts=s3://lift-no-such-bucket/{run}/clips"), {},
                                ["s3://lift-no-such-bucket/{run}/clips/manifest.jsonl: bucket 'lift-no-such-bucket' "
                                 "does not exist at {endpoint}"]),
    "nonexistent-bucket-write": (lambda run, w: ["data", "toy", f"s3://lift-no-such-bucket/{run}/data"], {},
                                 ["s3://lift-no-such-bucket/{run}/data/_STARTED: bucket 'lift-no-such-bucket' does not "
                                  "exist at {endpoint}"]),
    "missing-credentials": (lambda run, w: ["data", "toy", f"s3://lift-test/{run}/data"],
                            {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None},
                            ["s3://lift-test/{run}/data/_SUCCESS: no usable object-storage credentials",
                             "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "{endpoint}"]),
    "unreachable-endpoint": (lambda run, w: ["data", "toy", f"s3://lift-test/{run}/data"],
                             {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
                             ["s3://lift-test/{run}/data/_SUCCESS: cannot reach the object store at "
                              "http://127.0.0.1:9"]),
}


@pytest.mark.parametrize("name", STORE_CASES)
def test_object_store_mistakes_name_the_url_and_fail_fast(name, world, s3_endpoint, monkeypatch, capsys):
    """Against the loopback S3 endpoint, with botocore's attempts and timeouts kept small: a clear reason naming
    the URL and the endpoint within seconds, never a hang."""
    import s3fs

    build, env, expect = STORE_CASES[name]
    run = os.urandom(4).hex()
    small = {"LIFT_S3_MAX_ATTEMPTS": "2", "LIFT_S3_CONNECT_TIMEOUT": "1", "LIFT_S3_READ_TIMEOUT": "2",
             "AWS_METADATA_SERVICE_TIMEOUT": "1", "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1",
             "AWS_SHARED_CREDENTIALS_FILE": str(world.root / "absent"), "AWS_CONFIG_FILE": str(world.root / "absent")}
    for key, value in {**small, **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # clients read credentials and endpoint when they are made
    try:
        start = time.time()
        code, err = run_bad(world, build(run, world), capsys)
        took = time.time() - start
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    reason = _reason(err)
    assert code == 1 and took < 30, (took, reason)
    for text in expect:
        assert text.format(run=run, endpoint=os.environ["AWS_ENDPOINT_URL"]) in reason, reason


# ------------------------------------------------------------------------------- answers, losses, charts, resume
def test_unparsable_critic_answer_is_recorded_never_taken_as_good(world, monkeypatch, capsys):
    """`lift score mode=generate` with a critic that answers one question without any label: that dimension's
    label is null, the video's reward null (never Good), the marker counts it and a warning names the video."""
    world.clips()
    target = json.loads((world.root / "clips/manifest.jsonl").read_text().splitlines()[1])["prompt"]

    def generate(self, texts, frames, max_new_tokens):  # the critic's greedy answers, one per question
        return ["I cannot tell what this is." if target in t and hra.QUESTIONS["semantic"] in t else "Good. Fine."
                for t in texts]

    monkeypatch.setattr(scoring.Scorer, "_generate", generate)
    code = cli.main(world.score("mode=generate", "batch_size=3"))
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    records = [json.loads(x) for x in (world.root / "scores-out/scores.jsonl").read_text().splitlines()]
    bad = [r for r in records if r["unparsable"]]
    assert len(bad) == 1 and bad[0]["unparsable"] == ["semantic"] and bad[0]["labels"]["semantic"] is None
    assert bad[0]["reward"] is None and all(r["reward"] is not None for r in records if r is not bad[0])
    assert storage.read_marker(str(world.root / "scores-out"))["counts"]["unparsable"] == 1
    assert "1 of 3 videos got a critic answer without a label" in err and f"{bad[0]['id']} (semantic)" in err
    assert critic.parse_label("I cannot tell what this is.", "label_first") is None


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_step_and_batch_or_is_skipped_and_counted(world, capsys):
    """A diverging run (learning rate 1e30) through `lift align`: `stop` ends with the step and the batch's ids and
    keeps the checkpoint written before; `skip` skips and counts the steps in the marker."""
    world.align_inputs()
    stop = world.align("trainer.lr=1e30")
    code, err = run_bad(world, stop, capsys)
    reason = _reason(err)
    assert code == 1 and "non-finite loss at step 2 (rank 0, batch ids ['p0-001', 'p1-001'])" in reason, reason
    assert storage.listdir(str(world.root / "align/checkpoints")) == ["step-00000002"], "earlier work is kept"
    code = cli.main(world.align("trainer.lr=1e30", "trainer.on_nonfinite=skip", f"out={world.root}/align-skip"))
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "skipped step 2: non-finite loss (batch ids ['p0-001', 'p1-001'])" in err
    counts = storage.read_marker(str(world.root / "align-skip"))["counts"]
    assert counts["skipped_steps"] == 2 and counts["steps"] == 4


def test_chart_value_out_of_range_is_refused_naming_the_value():
    import helm_python as helm

    chart = helm.Chart.load(Path(__file__).resolve().parent.parent / "charts")
    with pytest.raises(helm.HelmValuesError) as e:
        chart.render(values={"stages": {"score": {"resources": {"gpus": -1}}}}, name="lift", namespace="lift")
    assert "at '/stages/score/resources/gpus'" in str(e.value) and "minimum" in str(e.value), str(e.value)


def test_bad_video_keeps_committed_parts_and_the_rerun_finishes_the_rest(world, capsys):
    """A corrupt video stops `lift score` in its shard; the parts committed before stay as they were, and once the
    video is replaced the rerun scores only the missing shard."""
    world.clips(6)
    good = world.video(5).read_bytes()
    world.video(5).write_bytes(b"\x00" * 300)
    argv = world.score("num_shards=3")
    code, err = run_bad(world, argv, capsys)
    assert code == 1 and f"{world.video(5)}: cannot decode video" in _reason(err)
    out = world.root / "scores-out"
    parts = {p.name: p.read_bytes() for p in out.glob("part-*")}
    assert sorted(parts) == ["part-00000-of-00003.jsonl", "part-00001-of-00003.jsonl"]
    world.video(5).write_bytes(good)
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "my_shards=1" in err, "only the missing shard is scored again"
    assert {n: (out / n).read_bytes() for n in parts} == parts, "committed parts are not rewritten"
    assert len((out / score.SCORES).read_text().splitlines()) == 6
