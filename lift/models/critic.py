"""The critic's prompts and answers, shared by training (`lift critic`), `lift critic-eval`, `lift score` and the toy
zoo's pretraining: the question per dimension, the label-first and reason-first answer formats, the label parser,
the label-token ids, the answer mask and the training examples and batches.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from lift.data import hra
from lift.io import storage, video

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
class CriticExample:
    video: str
    prompt: str
    dimension: str
    answer: str
    id: str


class Examples(torch.utils.data.Dataset):
    """(video, dimension) pairs; frames are decoded in the DataLoader workers."""

    def __init__(self, examples: list[CriticExample], frames: int):
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
        ids = [f"{i['example'].id}/{i['example'].dimension}" for i in items]
        return {"inputs": {**enc, "labels": labels}, "ids": ids}


def examples_from_manifest(data_url: str, split: str, answer_format: str, with_reasons: bool,
                           on_error: str = "stop") -> list[CriticExample]:
    manifest = storage.join(data_url, hra.MANIFEST)
    records = hra.load_manifest(manifest, on_error=on_error, rejected_url=None if on_error == "stop" else
                                storage.join(data_url, hra.REJECTED))
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise ValueError(f"{manifest}: no records in the '{split}' split")
    return [
        CriticExample(hra.video_url(manifest, r), r.prompt, dim,
                      answer_text(r.labels[dim], r.reasons.get(dim, ""), answer_format, with_reasons), r.id)
        for r in chosen for dim in hra.DIMENSIONS
    ]


