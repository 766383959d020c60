"""LiFT-Critic: a video VLM taught to answer, per dimension, "<Label>. <reason>" (or reason first, then label).

Training (`lift critic`) is supervised fine-tuning with the loss on answer tokens only, LoRA through peft or full,
under FSDP2 (`fully_shard` per decoder and vision block). The prompt and answer formats, the label parser and
the batched label probabilities live here too, so training, `lift critic-eval` and `lift score` cannot drift.

    lift critic                                                   # one process, toy world, tiny critic
    torchrun --nproc-per-node 8 -m lift critic --config configs/cluster/critic-qwen2.5-vl-7b.yaml
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $MASTER:29500 -m lift critic ...
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from lift import dist, hra, logs, models, storage, train, video

log = logging.getLogger(__name__)

VERDICT = "Verdict:"  # separates the reason from the label in the reason-first format
_LABEL_WORD = re.compile(r"\b(good|normal|bad)\b", re.IGNORECASE)


def answer_text(label: str, reason: str, answer_format: str, with_reasons: bool = True) -> str:
    if not with_reasons or not reason:
        return f"{label}."
    if answer_format == "label_first":
        return f"{label}. {reason}"
    return f"{reason} {VERDICT} {label}."


def parse_label(answer: str, answer_format: str) -> str | None:
    """The label an answer states, or None when it states none or is ambiguous.

    Label-first answers are read at their start ("good.", "**Bad**: ...", "Normal - ..."); reason-first answers
    after the verdict marker. Elsewhere a single distinct label word is accepted; two different ones are not.
    """
    text = answer.strip()
    if answer_format == "reason_first" and VERDICT.lower() in text.lower():
        text = text[text.lower().rindex(VERDICT.lower()) + len(VERDICT):]
    head = re.match(r"^[\W_]*(good|normal|bad)\b", text, re.IGNORECASE)
    if head:
        return head.group(1).capitalize()
    found = {m.group(1).capitalize() for m in _LABEL_WORD.finditer(text)}
    return found.pop() if len(found) == 1 else None


def reason_of(answer: str, answer_format: str) -> str:
    """The reason part of an answer: after a leading label, or before the verdict marker."""
    text = answer.strip()
    if answer_format == "reason_first":
        return text.split(VERDICT)[0].strip()
    return re.sub(r"^[\W_]*(good|normal|bad)\b[\W_]*", "", text, flags=re.IGNORECASE).strip()


def messages(prompt: str, dimension: str, answer: str | None = None) -> list[dict]:
    """LiFT's prompt shape: `<video>\\n<caption> <question>`, as a chat turn (plus the answer when training)."""
    turn = [{"role": "user", "content": [{"type": "video"},
                                         {"type": "text", "text": f"{prompt} {hra.QUESTIONS[dimension]}"}]}]
    if answer is not None:
        turn.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turn


def label_token_ids(tokenizer, answer_format: str) -> list[int]:
    """First token of each label where the answer's label is read (answer start, or after the verdict marker)."""
    prefix = "" if answer_format == "label_first" else " "
    ids = [tokenizer.encode(prefix + label, add_special_tokens=False)[0] for label in hra.LABELS]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the critic's tokenizer does not tell the labels apart by their first token: {ids}")
    return ids


@dataclass
class Example:
    video: str
    prompt: str
    dimension: str
    answer: str
    id: str


class Examples(torch.utils.data.Dataset):
    """(video, dimension) pairs; frames are decoded in the DataLoader workers."""

    def __init__(self, examples: list[Example], frames: int):
        self.examples, self.frames = examples, frames

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        ex = self.examples[i]
        return {"frames": video.read_video(ex.video, self.frames).permute(0, 3, 1, 2), "example": ex}


def encode(processor, texts: list[str], videos: list[torch.Tensor], fps: float) -> dict:
    """The processor's inputs for chat texts and their (T, C, H, W) uint8 frames, shown at `fps`.

    Qwen2.5-VL places video tokens in time by the sampled frames' rate, which it reads from `video_metadata`
    only (a plain `fps=` argument is ignored and 24 fps assumed, which puts most frames of a short clip at the
    same temporal position).
    """
    metadata = [{"fps": fps, "total_num_frames": len(v)} for v in videos]
    return processor(text=texts, videos=videos, video_metadata=metadata, padding=True, return_tensors="pt")


def answer_labels(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Loss targets of right-padded chat batches: the last assistant turn and its end token; -100 elsewhere."""
    start_id, end_id = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = len(tokenizer.encode("assistant\n", add_special_tokens=False))
    labels = torch.full_like(input_ids, -100)
    for row, ids in enumerate(input_ids.tolist()):
        start = max(i for i, t in enumerate(ids) if t == start_id) + 1 + header
        end = ids.index(end_id, start)
        labels[row, start:end + 1] = input_ids[row, start:end + 1]
    return labels


class Collate:
    """Tokenise a batch with the critic's processor and mask everything but the answer (and its end token).

    Holds the processor's folder, not the processor, so it pickles cheaply into spawned workers.
    """

    def __init__(self, processor_dir: str, fps: float):
        self.processor_dir, self.fps, self._processor = processor_dir, fps, None

    @property
    def processor(self):
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.processor_dir)
            self._processor.tokenizer.padding_side = "right"
        return self._processor

    def __call__(self, items: list[dict]) -> dict:
        proc = self.processor
        texts = [proc.apply_chat_template(messages(i["example"].prompt, i["example"].dimension, i["example"].answer),
                                          tokenize=False) for i in items]
        enc = encode(proc, texts, [i["frames"] for i in items], self.fps)
        labels = answer_labels(enc["input_ids"], proc.tokenizer)
        return {"inputs": {**enc, "labels": labels}, "ids": [f"{i['example'].id}/{i['example'].dimension}" for i in items]}


def examples_from_manifest(data_url: str, split: str, answer_format: str, with_reasons: bool,
                           on_error: str = "stop") -> list[Example]:
    manifest = storage.join(data_url, "manifest.jsonl")
    records = hra.load_manifest(manifest, on_error=on_error, rejected_url=None if on_error == "stop" else
                                storage.join(data_url, hra.REJECTED))
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise ValueError(f"{manifest}: no records in the '{split}' split")
    return [
        Example(hra.video_url(manifest, r), r.prompt, dim, answer_text(r.labels[dim], r.reasons.get(dim, ""),
                                                                       answer_format, with_reasons), r.id)
        for r in chosen for dim in hra.DIMENSIONS
    ]


def _adapt(model, cfg: DictConfig):
    """Freeze the vision tower and projector (LiFT's recipe), then add LoRA to the language model, or not."""
    if cfg.model.freeze_vision:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}":
                p.requires_grad_(False)
    if cfg.trainer.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not cfg.lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    # Only the language model's projections: the vision tower has modules of the same names.
    targets = rf"^(?!.*visual).*\.({'|'.join(map(re.escape, cfg.lora.target_modules))})$"
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=targets)
    return get_peft_model(model, lora)


def _blocks(model) -> list[torch.nn.Module]:
    """The transformer blocks to shard one by one: the classes the model itself declares unsplittable."""
    names = set(getattr(model, "_no_split_modules", None) or
                getattr(getattr(model, "base_model", None), "model", model)._no_split_modules or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def export(model, cfg: DictConfig, runtime: dist.Runtime) -> str:
    """Merged weights in transformers layout (safetensors + processor) at OUT/model, sealed with `_SUCCESS`."""
    weights = train.full_state_dict(model)
    url = storage.join(cfg.out, "model")
    if runtime.is_main:
        base, processor = models.load_critic(cfg.model.name_or_path,
                                             trust_remote_code=cfg.model.trust_remote_code)
        if cfg.lora.enabled:
            base = _adapt(base, cfg)
            base.load_state_dict(weights)
            base = base.merge_and_unload()
        else:
            base.load_state_dict(weights)
        base.activation_checkpointing_disable()
        with tempfile.TemporaryDirectory(prefix="lift-critic-") as tmp:
            base.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            models.save_folder(tmp, url)
        storage.write_marker(url, "critic-model", "", {"parameters": sum(p.numel() for p in base.parameters())},
                             base=cfg.model.name_or_path, answer_format=cfg.model.answer_format,
                             frames=cfg.model.frames, sample_fps=cfg.model.sample_fps)
    dist.barrier()
    return url


def fingerprint(cfg: DictConfig) -> dict:
    """What a checkpoint must share with the run resuming from it; lift/checkpoint.py refuses one that differs."""
    return {"base": cfg.model.name_or_path, "lora": OmegaConf.to_container(cfg.lora) if cfg.lora.enabled else None,
            "answer_format": cfg.model.answer_format, "freeze_vision": cfg.model.freeze_vision}


def run(cfg: DictConfig) -> dict:
    """`lift critic`: SFT of the critic on the train split, then export."""
    runtime = dist.init()
    examples = examples_from_manifest(cfg.data, "train", cfg.model.answer_format, cfg.model.with_reasons)
    model, processor = models.load_critic(cfg.model.name_or_path, device=runtime.device,
                                          trust_remote_code=cfg.model.trust_remote_code)
    torch.manual_seed(cfg.trainer.seed)  # adapters are initialised randomly: same seed, same run
    model = _adapt(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logs.event(log, "critic model", base=cfg.model.name_or_path, trainable=trainable, examples=len(examples),
               answer_format=cfg.model.answer_format, lora=cfg.lora.enabled)
    model = train.shard_model(model, _blocks(model), runtime, cfg.trainer)

    def loss_fn(m, batch, step):
        inputs = {k: v.to(runtime.device) if torch.is_tensor(v) else v for k, v in batch["inputs"].items()}
        return m(**inputs).loss, {}

    counts = train.fit(model=model, dataset=Examples(examples, cfg.model.frames),
                       collate=Collate(models.local_dir(cfg.model.name_or_path), cfg.model.sample_fps), loss_fn=loss_fn,
                       cfg=cfg.trainer, out_url=cfg.out, fingerprint=fingerprint(cfg), runtime=runtime)
    export(model, cfg, runtime)
    return counts
