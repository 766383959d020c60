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


def label_text(label: str, answer_format: str) -> str:
    """How an answer states `label` where its label is read: at the answer's start, or after the verdict marker."""
    return label if answer_format == "label_first" else " " + label


def verdict_step(tokenizer, tokens: list[int]) -> int | None:
    """How many of an answer's `tokens` run to the end of its first verdict marker, or None when there is none:
    the decoding step that states a reason-first answer's label. Matched on the decoded text, so it holds however
    the marker was split ("Verdict:" after a space, a newline or a quote)."""
    for j, piece in enumerate(tokenizer.convert_ids_to_tokens(tokens)):
        if ":" in piece and tokenizer.decode(tokens[:j + 1], skip_special_tokens=True).endswith(VERDICT):
            return j + 1
    return None


@dataclass
class LabelTokens:
    """The labels as token continuations of one text: each continues the text's first `keep` tokens with its own
    tokens. `keep` is shorter than the text when a label merges with the text's end (" Good" after a trailing
    space), so every label's probability is read from the same prefix."""

    keep: int
    text_length: int
    continuations: list[list[int]]

    @property
    def first_token_rule(self) -> bool:
        """P(label) is one next-token probability: each label is one token and none merges with the text's end."""
        firsts = [c[0] for c in self.continuations]
        return (self.keep == self.text_length and all(len(c) == 1 for c in self.continuations)
                and len(set(firsts)) == len(firsts))


def label_tokens(tokenizer, text: str, answer_format: str, labels: tuple[str, ...] = hra.LABELS) -> LabelTokens:
    """Each label's tokens after `text` (a prompt ending where the answer's label is read), as the tokenizer splits
    the text with the label appended."""
    base = tokenizer.encode(text, add_special_tokens=False)
    full = [tokenizer.encode(text + label_text(label, answer_format), add_special_tokens=False) for label in labels]
    keep = min(next((i for i, (a, b) in enumerate(zip(base, f)) if a != b), min(len(base), len(f))) for f in full)
    if any(len(f) == keep for f in full):
        raise ValueError(f"a label adds no token after {text[-40:]!r}: {labels}")
    return LabelTokens(keep, len(base), [f[keep:] for f in full])


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
    same temporal position). Frames are sized as Qwen's reference preprocessing (qwen-vl-utils) sizes them, the
    default transformers announces: each at most an even share of a 128k-token video as well as the per-frame cap
    (which alone binds at LiFT's 8 frames), so a long video cannot grow without bound.
    """
    metadata = [{"fps": fps, "total_num_frames": len(v)} for v in videos]
    return processor(text=texts, videos=videos, video_metadata=metadata, padding=True, return_tensors="pt",
                     cap_pixels_per_frame=True)


def answer_labels(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Loss targets of right-padded chat batches: the last assistant turn and its end token; -100 elsewhere.

    The turn starts at the first token reaching past its "assistant\n" header; a token the tokenizer merges across
    the header's end (an answer starting with a newline: "\n\n") is a target, as the model must produce it."""
    start_id, end_id = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = len("assistant\n")
    labels = torch.full_like(input_ids, -100)
    for row, ids in enumerate(input_ids.tolist()):
        turn = max(i for i, t in enumerate(ids) if t == start_id) + 1
        start = next(j for j in range(turn, len(ids)) if len(tokenizer.decode(ids[turn:j + 1])) > header)
        end = ids.index(end_id, start)
        labels[row, start:end + 1] = input_ids[row, start:end + 1]
    return labels


def answer_loss(model, inputs: dict) -> torch.Tensor:
    """The mean next-token cross-entropy over the answer targets (`answer_labels`), as `model(**inputs).loss` with
    the labels in `inputs`, but with the output head applied only at the positions that predict a target
    (`logits_to_keep` as a mask): never a [batch, sequence, vocabulary] tensor, which for Qwen2.5-VL at 8 frames of
    480x720 (about 2,000 positions x 152k tokens) is gigabytes of logits and gradients per example, and most of a
    CPU step's time. Position p predicts token p + 1, so the kept positions are the targets' shifted by one."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.nn.functional.pad(targets != -100, (0, 1), value=False)  # [batch, sequence]
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**model_inputs, logits_to_keep=keep).logits  # [targets, vocabulary], in the mask's order
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]])


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


