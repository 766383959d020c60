"""The critic path with the real Qwen2 tokenizer and the published Qwen2-VL / Qwen2.5-VL processors, and the critic
stages on both real critics at real width with one language and one vision block (lift/models/real.py
`write_critic`): the vocabulary against an independent encoder, the chat template, the answer mask, the verdict
match, the video processor at LiFT's 8 frames of 480x720, label probabilities of labels of one or several tokens
checked against a direct computation (Qwen2-VL-2B), and `lift critic` (the cluster recipe, 2 ranks) then `lift
critic-eval` and `lift score` of its export over s3:// (Qwen2-VL-2B in CI; Qwen2.5-VL-7B under `pytest -m heavy`).
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import unicodedata
from collections.abc import Iterator

import pytest
import torch

from lift import stages
from lift.data import hra
from lift.io import storage
from lift.models import critic, real, scoring
from lift.stages import runner

quicktok = pytest.importorskip("quicktok", reason="the real Qwen2 vocabulary ships in the quicktok-v1 test extra")

# Byte-level BPE texts of the kinds a critic reads and writes, plus what tends to break a reimplementation:
# contractions, runs of spaces and newlines, digits, accents (NFC), CJK, emoji.
CORPUS = [
    "Hello world", "two yellow squares move right on a black background",
    "The frames are heavily blurred; the edges of the squares are smeared. Verdict: Bad.",
    "Good. The video matches the prompt.", "Normal - slight jitter", "**BAD**: the circle is green.",
    "don't I'll we've THEY'RE it's", "  multiple   spaces\n\n\tand tabs\r\n", "1234567 3.14159 2026-12-06",
    "café naïve Ünïcödé e\u0301", "日本語のテキスト 中文字符", "emoji 😀🎬 end", "def f(x):\n    return x**2  # ok",
]


def _frames(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """The hub folders without weights (configs, tokenizer, processor, chat template) of both real critics."""
    out = {}
    for name in real.CRITICS:
        out[name] = str(tmp_path_factory.mktemp(name))
        real.write_critic_processor(name, out[name])
    return out


@pytest.fixture(scope="module")
def processors(folders) -> dict:
    """Their processors as AutoProcessor loads them."""
    from transformers import AutoProcessor

    return {name: AutoProcessor.from_pretrained(folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def critic_7b(tmp_path_factory) -> Iterator[str]:
    """Qwen2.5-VL-7B-Instruct at real width, 1 language and 1 vision block (~1.37B parameters, 1.09B of them the
    untied 152k-token embeddings and head), random weights."""
    out = str(tmp_path_factory.mktemp("qwen2.5-vl-7b-1layer"))
    real.write_critic("qwen2.5-vl-7b", out, layers=1, vision_layers=1)
    gc.collect()
    yield out
    shutil.rmtree(out)


@pytest.fixture(scope="module")
def critic_2b(tmp_path_factory) -> Iterator[str]:
    """Qwen2-VL-2B-Instruct at real width, 1 language and 1 vision block (~335M parameters), random weights."""
    out = str(tmp_path_factory.mktemp("qwen2-vl-2b-1layer"))
    real.write_critic("qwen2-vl-2b", out, layers=1, vision_layers=1)
    yield out
    shutil.rmtree(out)


@pytest.mark.parametrize("name", real.CRITICS)
def test_real_tokenizer_is_qwen2s(name, processors):
    """The vocabulary encodes as an independent Qwen2 encoder does, and the published added tokens keep their ids."""
    from transformers import Qwen2TokenizerFast

    tok = processors[name].tokenizer
    assert isinstance(tok, Qwen2TokenizerFast)
    reference = quicktok.get_encoding("qwen3")
    for text in CORPUS:
        assert tok.encode(text, add_special_tokens=False) == reference.encode(text), text
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == unicodedata.normalize("NFC", text)
    assert tok.encode("Hello world", add_special_tokens=False) == [9707, 1879]  # Qwen2's documented ids
    published = real.config(name, "tokenizer_config.json")["added_tokens_decoder"]
    assert {tok.convert_tokens_to_ids(t["content"]): t["content"] for t in published.values()} == \
        {int(i): t["content"] for i, t in published.items()}
    assert len(tok) == real.QWEN2_BPE_TOKENS + len(published) <= real.config(name)["vocab_size"]
    cfg = real.config(name)
    assert tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]) == \
        [cfg["vision_start_token_id"], cfg["vision_end_token_id"], cfg["video_token_id"], cfg["image_token_id"]]
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert tok.eos_token_id in real.config(name, "generation_config.json")["eos_token_id"]


def test_chat_template_renders_lifts_prompt_as_published(processors):
    proc = processors["qwen2.5-vl-7b"]
    prompt, answer = "a red circle moves left", "Good. The circle is red."
    text = proc.apply_chat_template(critic.messages(prompt, "semantic", answer), tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"<|vision_start|><|video_pad|><|vision_end|>{prompt} {hra.QUESTIONS['semantic']}<|im_end|>\n"
                    f"<|im_start|>assistant\n{answer}<|im_end|>\n")
    asked = proc.apply_chat_template(critic.messages(prompt, "semantic"), tokenize=False, add_generation_prompt=True)
    assert text.startswith(asked) and asked.endswith("<|im_start|>assistant\n")


def _pixels_rule(height: int, width: int, cfg: dict) -> tuple[int, int]:
    """Qwen2-VL's published resize rule (qwen-vl-utils `smart_resize`): sides rounded to multiples of patch x merge,
    scaled into [min_pixels, max_pixels] keeping the aspect ratio."""
    factor = cfg["patch_size"] * cfg["merge_size"]
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > cfg["max_pixels"]:
        beta = math.sqrt(height * width / cfg["max_pixels"])
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < cfg["min_pixels"]:
        beta = math.sqrt(cfg["min_pixels"] / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@pytest.mark.parametrize("name", real.CRITICS)
def test_video_processor_at_8_frames_of_480x720(name, processors):
    """LiFT's critic input, through critic.encode: the grid and the video token count are the published rule's."""
    proc = processors[name]
    cfg = real.config(name, "preprocessor_config.json")
    text = proc.apply_chat_template(critic.messages("a prompt", "motion"), tokenize=False, add_generation_prompt=True)
    enc = critic.encode(proc, [text], [_frames(8, 480, 720)], fps=1.33)
    h, w = _pixels_rule(480, 720, cfg)
    assert (h, w) == (476, 728)
    grid = [8 // cfg["temporal_patch_size"], h // cfg["patch_size"], w // cfg["patch_size"]]
    assert enc["video_grid_thw"].tolist() == [grid] == [[4, 34, 52]]
    tokens = math.prod(grid) // cfg["merge_size"] ** 2
    assert int((enc["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<|video_pad|>")).sum()) == tokens == 1768
    patch = 3 * cfg["temporal_patch_size"] * cfg["patch_size"] ** 2
    assert tuple(enc["pixel_values_videos"].shape) == (math.prod(grid), patch)
    if name == "qwen2.5-vl-7b":  # Qwen2.5-VL places frames in time: 2 frames per temporal patch at 1.33 fps
        assert enc["second_per_grid_ts"].tolist() == pytest.approx([2 / 1.33])


@pytest.fixture(scope="module")
def collate(folders) -> critic.Collate:
    """Training's collate over the Qwen2.5-VL-7B processor folder (LiFT's sampling rate of 8 frames per 6 s)."""
    return critic.Collate(folders["qwen2.5-vl-7b"], fps=1.33)


@pytest.mark.parametrize("answer_format", ["label_first", "reason_first"])
def test_answer_mask_with_the_real_tokenizer(answer_format, collate):
    answers = [critic.answer_text("Normal", "The square jitters.", answer_format),
               critic.answer_text("Bad", "\nThe frames are blurred; edges smear.", answer_format)]
    items = [{"frames": _frames(8, 56, 84, seed=i),
              "example": critic.CriticExample("v", "two yellow squares move right", "motion", a, str(i))}
             for i, a in enumerate(answers)]
    batch = collate(items)
    tok = collate.processor.tokenizer
    for row, answer in enumerate(answers):
        labels = batch["inputs"]["labels"][row]
        # an answer starting with a newline shares the token "\n\n" with its turn's header: that token is a target
        merged = "\n" if answer.startswith("\n") else ""
        assert tok.decode(labels[labels != -100]) == merged + answer + "<|im_end|>"
        assert critic.parse_label(tok.decode(labels[labels != -100], skip_special_tokens=True),
                                  answer_format) == ["Normal", "Bad"][row]


def test_verdict_marker_found_however_it_is_split(processors):
    tok = processors["qwen2-vl-2b"].tokenizer
    for reason in ("The circle is red.", "The circle is red.\n", 'It says "red"', "Verdict"):
        tokens = tok.encode(f"{reason} {critic.VERDICT} Good.".replace("\n ", "\n"), add_special_tokens=False)
        at = critic.verdict_step(tok, tokens)
        assert tok.decode(tokens[:at]).endswith(critic.VERDICT) and tok.decode(tokens[at:]) == " Good."
    assert critic.verdict_step(tok, tok.encode("No marker: Good.", add_special_tokens=False)) is None


def test_label_tokens_with_the_real_tokenizer(processors):
    tok = processors["qwen2.5-vl-7b"].tokenizer
    reference = quicktok.get_encoding("qwen3")
    first = critic.label_tokens(tok, "<|im_start|>assistant\n", "label_first")
    assert first.first_token_rule
    assert first.continuations == [reference.encode(label) for label in hra.LABELS] == [[15216], [12206], [17082]]
    after = critic.label_tokens(tok, "<|im_start|>assistant\nThe circle is red. Verdict:", "reason_first")
    assert after.first_token_rule and after.keep == after.text_length
    assert after.continuations == [reference.encode(" " + label) for label in hra.LABELS]
    # A text ending in a space: the tokenizer merges it into each label (" Good"), so the space's token is dropped
    # from the shared prefix and every label is read from there.
    merged = critic.label_tokens(tok, "<|im_start|>assistant\nRating: ", "label_first")
    assert (merged.keep, merged.text_length) == (first.keep + 2, first.keep + 3)
    assert merged.continuations == after.continuations and not merged.first_token_rule
    several = critic.label_tokens(tok, "<|im_start|>assistant\n", "label_first", ("Superb", "Passable", "Abysmal"))
    assert [len(c) for c in several.continuations] == [2, 2, 3] and not several.first_token_rule


def _direct_label_probs(model, processor, text: str, frames: torch.Tensor, fps: float, labels, answer_format):
    """P(label | one of labels) by the definition: each text + label alone through the model (no batch, no padding,
    no shared video features), the log-probabilities of the tokens past the labels' common prefix summed."""
    tok = processor.tokenizer
    base = tok.encode(text, add_special_tokens=False)
    full = [tok.encode(text + critic.label_text(label, answer_format), add_special_tokens=False) for label in labels]
    keep = min(next((i for i, (a, b) in enumerate(zip(base, f)) if a != b), len(base)) for f in full)
    scores = []
    for label, ids in zip(labels, full):
        enc = critic.encode(processor, [text + critic.label_text(label, answer_format)], [frames], fps)
        n = len(ids) - keep  # the label's tokens (and any of the text's end it re-tokenizes)
        with torch.no_grad():  # the logits of the positions predicting them: the last n + 1 but the very last
            logp = torch.log_softmax(model(**enc, logits_to_keep=n + 1).logits[0, :-1].float(), dim=-1)
        assert enc["input_ids"][0, -n:].tolist() == ids[keep:]
        scores.append(sum(float(logp[j, ids[keep + j]]) for j in range(n)))
    return torch.softmax(torch.tensor(scores), dim=0)


@pytest.mark.parametrize("labels, ending", [
    (hra.LABELS, ""),  # one token each: the first-token rule, one forward over the texts
    (("Superb", "Passable", "Abysmal"), ""),  # 2-3 tokens each
    (hra.LABELS, "Rating: "),  # merged with the space before it
], ids=["one-token", "multi-token", "merged-space"])
def test_label_probabilities_equal_the_direct_computation(labels, ending, critic_2b):
    scorer = scoring.Scorer(critic_2b, torch.device("cpu"), labels=labels)
    text_cfg = scorer.model.config.text_config  # load_critic reads the folder as the hub's: cut config, published rest
    assert (text_cfg.num_hidden_layers, text_cfg.hidden_size, text_cfg.vocab_size) == (1, 1536, 151936)
    assert scorer.model.generation_config.top_p == real.config("qwen2-vl-2b", "generation_config.json")["top_p"]
    prompts = ["two yellow squares move right on a black background", "a red circle"]
    texts = [scorer.processor.apply_chat_template(critic.messages(p, d), tokenize=False, add_generation_prompt=True)
             + ending for p in prompts for d in hra.DIMENSIONS]
    videos = [_frames(8, 56, 84, seed=1), _frames(8, 84, 56, seed=2)]
    frames = [v for v in videos for _ in hra.DIMENSIONS]
    with torch.inference_mode():
        probs = scorer._label_probs(texts, frames, repeats=len(hra.DIMENSIONS))
    for row, (text, f) in enumerate(zip(texts, frames)):
        direct = _direct_label_probs(scorer.model, scorer.processor, text, f, scorer.fps, labels, "label_first")
        assert torch.allclose(probs[row], direct, atol=2e-5), (row, probs[row], direct)
    assert not torch.allclose(probs[0], probs[3]), "a different video changes the label probabilities"


def _hra_subset(toy_data: str, url: str, train: int, test: int) -> list[dict]:
    """A data folder at `url` with the first `train` and `test` records of the toy world (and their videos)."""
    records = [json.loads(line) for line in storage.read_text(f"{toy_data}/{hra.MANIFEST}").splitlines() if line]
    chosen = [r for r in records if r["split"] == "train"][:train] + [r for r in records if r["split"] == "test"][:test]
    fs, _ = storage.filesystem(url)
    for r in chosen:
        fs.put(f"{toy_data}/{r['video']}", storage.filesystem(f"{url}/{r['video']}")[1])
    storage.write_text(f"{url}/{hra.MANIFEST}", "".join(json.dumps(r) + "\n" for r in chosen))
    return chosen


def _eval_and_score(critic_url: str, data: str, out: str, chosen: list[dict]) -> None:
    """`lift critic-eval` and `lift score` in both modes, in this process, of the critic folder `critic_url` over the
    data folder `data` (its test split, and all its videos as rollouts); each stage's model is freed before the next."""
    counts = runner.run_stage("critic-eval", stages.load("critic-eval", None, [
        f"data={data}", f"critic={critic_url}", f"out={out}/eval", "batch_size=2"]))
    result = storage.read_json(f"{out}/eval/accuracy.json")
    tested = sum(r["split"] == "test" for r in chosen)
    assert counts["videos"] == result["videos"] == tested
    assert all(sum(sum(row.values()) for row in result["confusion"][d].values()) == tested for d in hra.DIMENSIONS)
    gc.collect()
    for mode in ("logits", "generate"):
        cfg = stages.load("score", None, [f"rollouts={data}", f"critic={critic_url}", f"out={out}/scores-{mode}",
                                          f"mode={mode}", "batch_size=3", "max_new_tokens=4"])
        counts = runner.run_stage("score", cfg)
        lines = [json.loads(x) for x in storage.read_text(f"{out}/scores-{mode}/scores.jsonl").splitlines()]
        assert counts["videos"] == len(lines) == len(chosen)
        for rec in lines:
            assert rec["mode"] == mode and set(rec["labels"]) == set(hra.DIMENSIONS)
            if mode == "logits":
                assert all(sum(rec["probs"][d].values()) == pytest.approx(1.0, abs=1e-4) for d in hra.DIMENSIONS)
                assert rec["reward"] == pytest.approx(scoring.reward_from_probs(
                    rec["probs"], cfg.label_scores, cfg.dimension_weights), abs=1e-5)
        gc.collect()


# critic -> (its fixture, train videos (3 examples each), steps): at batch 1 x 2 ranks x grad_accum 2 an epoch of 9
# examples is 2 steps with one sitting out, so step 3 starts the second epoch; of 6 examples, 1 step with two out.
RECIPE_RUNS = {"qwen2-vl-2b": ("critic_2b", 3, 3), "qwen2.5-vl-7b": ("critic_7b", 2, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "qwen2-vl-2b",
    pytest.param("qwen2.5-vl-7b", marks=pytest.mark.heavy),  # ~6.5 minutes and ~18.5 GB on 2 cores: not in CI
])
def test_critic_stages_at_real_width(name, toy_data, s3_url, torchrun_lift, tmp_path, monkeypatch, request):
    """The cluster recipe (configs/cluster/critic-qwen2.5-vl-7b.yaml: LoRA r128, frozen vision, grad_accum 2, FSDP,
    activation checkpointing) on 2 ranks across an epoch boundary, then critic-eval and score in both modes of its
    export, on a real-width critic with one block per tower: Qwen2-VL-2B (tied embeddings and head, in the root's
    FSDP unit) in CI, and the recipe's own Qwen2.5-VL-7B (untied 152k-token embeddings and head, 1.09B of its
    1.37B parameters here, each an FSDP unit of its own) under `pytest -m heavy`. The export keeps the published
    bfloat16. Everything goes through s3://, as on a cluster: the base model (0.7 GB for the 2B, 2.7 GB for the 7B)
    too, fetched from the bucket into the node's cache, and the export, written to it and fetched by the later
    stages."""
    from safetensors import safe_open

    from lift import models

    fixture, train, steps = RECIPE_RUNS[name]
    folder = request.getfixturevalue(fixture)
    data, run, base = f"{s3_url}/data", f"{s3_url}/run", f"{s3_url}/base"
    chosen = _hra_subset(toy_data, data, train=train, test=2)
    storage.save_folder(folder, base)
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    # Each micro-batch's FSDP all-gathers allocate GBs afresh (the 7B: its 2.2 GB embeddings and head); on huge pages
    # that costs a fraction of 4 KB pages' faults on this VM (benchmarks/cpu_allgather.py: the 7B's steps take 60 s,
    # not 140). PyTorch's switch, for the ranks only: the rest of the suite gains nothing from it.
    done = torchrun_lift("critic", "--config", "configs/cluster/critic-qwen2.5-vl-7b.yaml", f"run={run}",
                         f"data={data}", f"model.name_or_path={base}", "trainer.batch_size=1",
                         f"trainer.max_steps={steps}", "trainer.warmup_ratio=0", "trainer.checkpoint_every=2",
                         "trainer.num_workers=0", "trainer.log_every=1", env={"THP_MEM_ALLOC_ENABLE": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"steps_per_epoch={steps - 1}" in done.stderr and f"examples={3 * train}" in done.stderr, \
        done.stderr[-3000:]
    assert storage.read_marker(f"{run}/critic")["counts"]["steps"] == steps
    export = models.local_dir(f"{run}/critic/model")  # fetched into this process's cache, as the stages below do
    with safe_open(f"{export}/model.safetensors", "pt") as new, \
            safe_open(f"{folder}/model.safetensors", "pt") as old:
        assert not any("lora" in k for k in new.keys()), "LoRA is merged into the exported weights"
        keys = set(new.keys())
        attn = next(k for k in keys if k.endswith("layers.0.self_attn.q_proj.weight"))
        vision = next(k for k in keys if "visual" in k and k.endswith("qkv.weight"))
        assert new.get_tensor(attn).dtype == old.get_tensor(attn).dtype == torch.bfloat16, "the published dtype"
        assert not torch.equal(new.get_tensor(attn), old.get_tensor(attn)), "LoRA trained the language model"
        assert torch.equal(new.get_tensor(vision), old.get_tensor(vision)), "the vision tower is frozen"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    added = real.config(name, "tokenizer_config.json")["added_tokens_decoder"]
    assert len(tok) == real.QWEN2_BPE_TOKENS + len(added) and tok.encode("Hello world") == [9707, 1879]
    gc.collect()
    _eval_and_score(f"{run}/critic/model", data, s3_url, chosen)

