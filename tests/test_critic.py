"""The critic: answer formats and parsing, reward, accuracy table, and scoring in both modes over s3://; its
distributed training, resume after SIGKILL and export are tests/test_reliability_crash.py's."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from lift import stages
from lift.data import hra
from lift.io import storage
from lift.models import critic, scoring
from lift.stages import critic_eval, runner, score

TRAIN = ["trainer.max_steps=4", "trainer.batch_size=2", "trainer.lr=1e-3", "trainer.checkpoint_every=2",
         "trainer.num_workers=0", "trainer.log_every=1", "lora.r=4", "lora.alpha=8"]


@pytest.mark.parametrize(
    "answer, fmt, label",
    [
        ("Good. The video matches the prompt.", "label_first", "Good"),
        ("good.", "label_first", "Good"),
        ("**BAD**: the circle is green.", "label_first", "Bad"),
        ("  Normal - slight jitter", "label_first", "Normal"),
        ("The motion looks bad overall.", "label_first", "Bad"),
        ("Bad. Not good at all.", "label_first", "Bad"),
        ("The circle is red. Verdict: good.", "reason_first", "Good"),
        ("The video is fine but good or bad?", "label_first", None),
        ("I cannot tell.", "label_first", None),
        ("", "reason_first", None),
    ],
)
def test_parse_label(answer, fmt, label):
    assert critic.parse_label(answer, fmt) == label


def test_answer_formats_round_trip():
    for fmt in ("label_first", "reason_first"):
        text = critic.answer_text("Normal", "The square jitters.", fmt)
        assert critic.parse_label(text, fmt) == "Normal"
        assert critic.reason_of(text, fmt) == "The square jitters."
    assert critic.answer_text("Bad", "why", "label_first", with_reasons=False) == "Bad."


def test_reward_formula():
    s = {"Good": 0.9, "Normal": 0.2, "Bad": 0.05}
    w = {d: 1.0 for d in hra.DIMENSIONS}
    assert scoring.reward_from_labels({"semantic": "Good", "motion": "Normal", "fidelity": "Bad"}, s, w) == \
        pytest.approx((0.9 + 0.2 + 0.05) / 3)
    assert scoring.reward_from_labels({"semantic": "Good", "motion": None, "fidelity": "Good"}, s, w) is None
    certain = {d: {"Good": 1.0, "Normal": 0.0, "Bad": 0.0} for d in hra.DIMENSIONS}
    assert scoring.reward_from_probs(certain, s, w) == pytest.approx(0.9)
    mixed = dict(certain, motion={"Good": 0.5, "Normal": 0.0, "Bad": 0.5})
    weights = {"semantic": 1.0, "motion": 2.0, "fidelity": 1.0}
    assert scoring.reward_from_probs(mixed, s, weights) == pytest.approx((0.9 + 2 * 0.475 + 0.9) / 4)


def test_accuracy_on_a_known_confusion():
    truth = [{d: t for d in hra.DIMENSIONS} for t in ["Good", "Good", "Bad", "Bad", "Normal"]]
    pred = [{"semantic": p, "motion": "Bad", "fidelity": None} for p in ["Good", "Bad", "Bad", "Bad", "Good"]]
    m = critic_eval.metrics(truth, pred)
    assert m["accuracy"] == {"semantic": 60.0, "motion": 40.0, "fidelity": 0.0, "avg": 33.33}
    assert m["confusion"]["semantic"]["Good"] == {"Good": 1, "Normal": 0, "Bad": 1}
    assert m["confusion"]["semantic"]["Normal"] == {"Good": 1, "Normal": 0, "Bad": 0}
    assert m["truth_distribution"]["motion"] == {"Good": 2, "Normal": 1, "Bad": 2}
    assert m["majority_baseline"]["semantic"] == 40.0 and m["unparsable"]["fidelity"] == 5
    # semantic, per video: critic right [1, 0, 1, 1, 0] minus majority class (Good) right [1, 1, 0, 0, 0]
    assert m["over_majority"]["semantic"] == {"points": 20.0, "se": round(math.sqrt(7000 / 5), 2)}
    assert m["over_majority"]["motion"]["points"] == 0.0  # Bad is right twice, as often as the majority class
    md = critic_eval.markdown(m, "mine")
    assert "| **mine** | 60.00 | 40.00 | 0.00 | 33.33 |" in md and "LiFT-Critic-40B (paper) | 90.23" in md


def test_collate_masks_all_but_the_answer(zoo_dir, toy_data):
    examples = critic.examples_from_manifest(toy_data, "train", "label_first", True)[:2]
    dataset = critic.Examples(examples, frames=8)
    batch = critic.Collate(f"{zoo_dir}/critic", fps=4.0)([dataset[0], dataset[1]])
    tok = critic.Collate(f"{zoo_dir}/critic", fps=4.0).processor.tokenizer
    for row, ex in enumerate(examples):
        labels = batch["inputs"]["labels"][row]
        answer = tok.decode(labels[labels != -100])
        assert answer == ex.answer + "<|im_end|>"
    assert batch["ids"] == [f"{e.id}/{e.dimension}" for e in examples]


def test_answer_loss_equals_the_full_sequence_loss_with_its_gradients(zoo_dir, toy_data):
    """Training's loss reads the head only at the answer's positions; it must be the model's own loss over the whole
    sequence, gradients included, on a right-padded batch whose answers differ in length and position."""
    from transformers import AutoModelForImageTextToText

    examples = critic.examples_from_manifest(toy_data, "train", "reason_first", True)[:3]
    dataset = critic.Examples(examples, frames=4)
    inputs = critic.Collate(f"{zoo_dir}/critic", fps=2.0)([dataset[i] for i in range(3)])["inputs"]
    assert len({int((row != -100).sum()) for row in inputs["labels"]}) > 1, "answers of different lengths"
    model = AutoModelForImageTextToText.from_pretrained(f"{zoo_dir}/critic")
    full = model(**inputs).loss
    full.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    kept = critic.answer_loss(model, inputs)
    kept.backward()
    assert kept.item() == pytest.approx(full.item(), rel=1e-6) and kept.item() > 0
    for name, grad in expected.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-6), name


def test_frames_keep_their_order_in_time(zoo_dir):
    """The processor learns the frames' rate from `video_metadata` only; without it, 8 frames of a 2 s clip
    would share temporal positions. Each temporal patch must get its own."""
    from transformers import AutoModelForImageTextToText

    collate = critic.Collate(f"{zoo_dir}/critic", fps=4.0)
    example = critic.CriticExample("v", "a red circle moves left on a black background", "motion", "Good.", "0")
    frames = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = collate([{"frames": frames, "example": example}])["inputs"]
    assert inputs["second_per_grid_ts"].tolist() == [0.5]
    model = AutoModelForImageTextToText.from_pretrained(f"{zoo_dir}/critic")
    positions, _ = model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                              video_grid_thw=inputs["video_grid_thw"],
                                              second_per_grid_ts=inputs["second_per_grid_ts"],
                                              attention_mask=inputs["attention_mask"])
    video = inputs["input_ids"][0] == model.config.video_token_id
    temporal = positions[0, 0, video].view(4, 16)  # 4 temporal patches x 16 merged tokens
    assert all(len(set(row.tolist())) == 1 for row in temporal) and len(set(temporal[:, 0].tolist())) == 4


def test_a_long_video_is_bounded_as_qwens_reference_preprocessing_bounds_it(zoo_dir):
    """Beside the per-frame cap, each frame gets at most an even share of a 128k-token video (qwen-vl-utils): the toy
    processor's 64x64 frames (patch 4, merge 2) fit it up to 3,600 frames; 3,602 are resized to 56x56."""
    processor = critic.Collate(f"{zoo_dir}/critic", fps=4.0).processor
    text = processor.apply_chat_template(critic.messages("a prompt", "motion"), tokenize=False,
                                         add_generation_prompt=True)
    frames = torch.zeros(3602, 3, 64, 64, dtype=torch.uint8)
    assert critic.encode(processor, [text], [frames[:8]], fps=4.0)["video_grid_thw"].tolist() == [[4, 16, 16]]
    assert critic.encode(processor, [text], [frames], fps=4.0)["video_grid_thw"].tolist() == [[1801, 14, 14]]


def _copy_data(toy_data: str, run_url: str) -> None:
    fs, _ = storage.filesystem(run_url)
    fs.put(toy_data.rstrip("/") + "/", storage.filesystem(f"{run_url}/data")[1], recursive=True)


@pytest.fixture(scope="module")
def trained_critic(hub_cache, toy_data, tmp_path_factory) -> str:
    """A critic trained for a few steps in-process (one rank), exported as the stages leave it. Its base is named by
    its hub id, read from an offline Hugging Face cache (tests/conftest.py's `hub_cache`)."""
    import huggingface_hub

    run = str(tmp_path_factory.mktemp("critic-run"))
    cfg = stages.load("critic", None, [f"run={run}", f"data={toy_data}", "model.name_or_path=lift-test/critic-toy",
                                       *TRAIN])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub_cache["HF_HUB_CACHE"])
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        runner.run_stage("critic", cfg)
    assert storage.read_marker(f"{run}/critic/model")["base"] == "lift-test/critic-toy"
    return f"{run}/critic/model"


def test_a_fully_trained_critic_exports_in_the_stored_dtype_with_its_head_tied(zoo_dir, tmp_path):
    """Without LoRA the gathered weights become the exported model's parameters (no second copy of the base): each
    cast to the dtype the base is stored in, a tied head tied again and stored once."""
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from lift import models
    from lift.core import dist
    from lift.stages import critic as critic_stage

    base = str(tmp_path / "base")
    model, processor = models.load_critic(f"{zoo_dir}/critic")
    model.config.tie_word_embeddings = model.config.text_config.tie_word_embeddings = True
    model.tie_weights()
    model.to(torch.bfloat16).save_pretrained(base)
    processor.save_pretrained(base)
    trained, _ = models.load_critic(base)  # float32, as training holds it
    assert trained.lm_head.weight is trained.get_input_embeddings().weight
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    cfg = stages.load("critic", None, [f"run={tmp_path}/run", f"data={tmp_path}/data", f"model.name_or_path={base}"])
    out = critic_stage.export(trained, cfg, dist.Runtime(0, 1, 0, torch.device("cpu")))
    assert storage.read_marker(out)["stage"] == "critic-model"
    expected = {k: v.to(torch.bfloat16) for k, v in trained.state_dict().items()}
    with safe_open(f"{out}/model.safetensors", "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert "lm_head.weight" not in stored and {v.dtype for v in stored.values()} == {torch.bfloat16}
    assert len(stored) == len(expected) - 1, "every weight once, the tied head not again"
    exported = AutoModelForImageTextToText.from_pretrained(out)
    assert exported.dtype == torch.bfloat16 and exported.lm_head.weight is exported.get_input_embeddings().weight
    assert all(torch.equal(v, expected[k]) for k, v in exported.state_dict().items())


def test_lora_export_merges_in_the_stored_dtype_as_a_float32_merge_would(zoo_dir, tmp_path, monkeypatch):
    """With LoRA, rank 0 reads the base in its stored bfloat16 (half the bytes of float32) and merges the float32
    adapters into it: every exported weight equals, bit for bit, the merge computed in float32 and rounded once to
    bfloat16, and only the adapted projections differ from the base."""
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForImageTextToText

    from lift import models
    from lift.core import dist
    from lift.stages import critic as critic_stage

    base = str(tmp_path / "base")
    model, processor = models.load_critic(f"{zoo_dir}/critic")
    model.to(torch.bfloat16).save_pretrained(base)
    processor.save_pretrained(base)
    cfg = stages.load("critic", None, [f"run={tmp_path}/run", f"data={tmp_path}/data", f"model.name_or_path={base}",
                                       "lora.enabled=true", "lora.r=4", "lora.alpha=8"])
    trained = critic_stage.adapt(models.load_critic(base)[0], cfg)  # float32, as training holds it
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in trained.parameters():
            if p.requires_grad:  # B starts at zero: give both factors values
                p.copy_(torch.randn_like(p) * 0.1)
    reference = models.load_critic(base)[0].state_dict()  # float32: the merge as a float32 one computes it
    prefix = "base_model.model."
    adapted = {name.removeprefix(prefix) + ".weight": m for name, m in trained.named_modules()
               if isinstance(m, LoraLayer)}
    assert adapted and all(k in reference for k in adapted)
    for key, layer in adapted.items():
        delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
        reference[key] = reference[key] + delta.detach()
    read = []  # the dtypes the export reads the base in
    load = models.load_critic
    monkeypatch.setattr(models, "load_critic", lambda *a, **kw: read.append(kw.get("dtype")) or load(*a, **kw))
    out = critic_stage.export(trained, cfg, dist.Runtime(0, 1, 0, torch.device("cpu")))
    assert read == [torch.bfloat16]
    exported = AutoModelForImageTextToText.from_pretrained(out)
    assert exported.dtype == torch.bfloat16
    state = exported.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(v, reference[k].to(torch.bfloat16)) for k, v in state.items())
    stored = models.load_critic(base, dtype=torch.bfloat16)[0].state_dict()
    assert {k for k, v in state.items() if not torch.equal(v, stored[k])} == adapted.keys(), \
        "the adapted projections changed, nothing else"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["logits", "generate"])
def test_score_both_modes_over_s3(mode, trained_critic, toy_data, s3_url, tmp_path_factory):
    critic_url, data_url = f"{s3_url}/critic", f"{s3_url}/data"
    fs, _ = storage.filesystem(s3_url)
    fs.put(trained_critic + "/", storage.filesystem(critic_url)[1], recursive=True)
    fs.put(toy_data + "/", storage.filesystem(data_url)[1], recursive=True)
    os.environ["LIFT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    cfg = stages.load("score", None, [f"rollouts={data_url}", f"critic={critic_url}", f"out={s3_url}/scores",
                                      f"mode={mode}", "batch_size=4", "num_shards=3", "max_new_tokens=12"])
    counts = runner.run_stage("score", cfg)
    lines = [json.loads(x) for x in storage.read_text(f"{s3_url}/scores/{score.SCORES}").splitlines()]
    manifest = [json.loads(x) for x in storage.read_text(f"{data_url}/manifest.jsonl").splitlines()]
    assert [r["id"] for r in lines] == [r["id"] for r in manifest[0::3] + manifest[1::3] + manifest[2::3]]
    assert counts["videos"] == len(manifest) == len(lines)
    for rec in lines:
        assert set(rec) >= {"id", "video", "prompt", "labels", "probs", "reasons", "reward", "critic", "mode"}
        assert rec["mode"] == mode and set(rec["labels"]) == set(hra.DIMENSIONS)
        if mode == "logits":
            for d in hra.DIMENSIONS:
                assert sum(rec["probs"][d].values()) == pytest.approx(1.0, abs=1e-4)
                assert rec["labels"][d] == max(rec["probs"][d], key=rec["probs"][d].get)
            assert rec["reward"] == pytest.approx(scoring.reward_from_probs(rec["probs"], cfg.label_scores,
                                                                          cfg.dimension_weights), abs=1e-5)
        elif rec["unparsable"]:
            assert rec["reward"] is None and all(rec["labels"][d] is None for d in rec["unparsable"])
    assert counts["unparsable"] == sum(bool(r["unparsable"]) for r in lines)
    again = runner.run_stage("score", cfg)
    assert again == counts


@pytest.mark.slow
def test_critic_eval_writes_table(trained_critic, toy_data, tmp_path):
    cfg = stages.load("critic-eval", None, [f"data={toy_data}", f"critic={trained_critic}", f"out={tmp_path}/eval"])
    counts = runner.run_stage("critic-eval", cfg)
    result = storage.read_json(f"{tmp_path}/eval/accuracy.json")
    tests = [r for r in hra.load_manifest(f"{toy_data}/manifest.jsonl") if r.split == "test"]
    assert result["videos"] == counts["videos"] == len(tests)
    for d in hra.DIMENSIONS:
        assert sum(sum(row.values()) for row in result["confusion"][d].values()) == len(tests)
    assert "| **this critic** |" in storage.read_text(f"{tmp_path}/eval/accuracy.md")


@pytest.mark.slow
def test_reason_first_labels_read_from_the_decoding_match_a_second_pass(toy_data, tmp_path):
    """Logits mode of a reason-first critic reads P(label) at the decoding step after "Verdict:"; it must equal
    one forward over prompt + reason + " Verdict:", the reading it replaces (and keeps for answers cut short)."""
    from lift.io import video
    from lift.toy import zoo

    zoo.write_toy(str(tmp_path))  # the shipped critic start: rating-trained, answers reason first
    scorer = scoring.Scorer(f"{tmp_path}/critic-toy", torch.device("cpu"), max_new_tokens=96)
    assert scorer.answer_format == "reason_first"
    items = scoring.read_items(f"{toy_data}/manifest.jsonl")[:4]
    texts = scorer._prompts(items)
    frames = [video.read_video(it.url, scorer.frames).permute(0, 3, 1, 2) for it in items for _ in hra.DIMENSIONS]
    with torch.inference_mode():
        reasons, fast = scorer._reason_then_label(texts, frames)
        second_pass = scorer._label_probs([t + r + " " + critic.VERDICT for t, r in zip(texts, reasons)], frames)
        assert torch.allclose(fast, second_pass, atol=1e-4), (fast, second_pass)
        assert all(reasons), "every answer states a reason before its verdict"
        scorer.max_new_tokens = 3  # every answer is cut before its verdict: the second pass is taken
        cut, fallback = scorer._reason_then_label(texts, frames)
        expected = scorer._label_probs([t + r + " " + critic.VERDICT for t, r in zip(texts, cut)], frames)
        assert torch.equal(fallback, expected)
