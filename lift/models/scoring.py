"""Rating videos with a trained critic: LiFT's reward from labels or label probabilities, the batched `Scorer`
(logits and generate modes) and the sharded scoring loop that `lift score`, `lift critic-eval` and `lift evaluate`
share.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass

import torch

from lift import models
from lift.core import dist
from lift.data import hra
from lift.io import jsonl, sharded, storage, video
from lift.models import critic
from lift.train import loop

SCORES = "scores.jsonl"  # the merged output of a scoring loop, beside its parts part-NNNNN-of-NNNNN.jsonl


def reward_from_labels(labels: dict[str, str | None], label_scores: dict, weights: dict) -> float | None:
    """LiFT's r = weighted mean over dimensions of s(label); None when any dimension has no label."""
    if any(labels.get(d) is None for d in hra.DIMENSIONS):
        return None
    total = sum(weights[d] for d in hra.DIMENSIONS)
    return sum(weights[d] * label_scores[labels[d]] for d in hra.DIMENSIONS) / total


def reward_from_probs(probs: dict[str, dict[str, float]], label_scores: dict, weights: dict) -> float:
    """The expectation of s(label) under the critic's label probabilities, weighted over dimensions."""
    total = sum(weights[d] for d in hra.DIMENSIONS)
    return sum(weights[d] * sum(p * label_scores[l] for l, p in probs[d].items()) for d in hra.DIMENSIONS) / total


@dataclass
class Item:
    id: str
    video: str  # as written in the input manifest (relative to it)
    url: str  # resolved
    prompt: str


def read_items(manifest_url: str) -> list[Item]:
    """Videos to score from a rollout or HRA manifest: `id`, `video` (relative) and `prompt` on each line."""
    items, problems = [], []
    for line in jsonl.lines(manifest_url, keys=("id", "video", "prompt")):
        if isinstance(line, jsonl.JsonlError):
            problems.append(str(line))
            continue
        n, obj, _ = line
        try:  # `video` may not leave the manifest's folder
            url = storage.child(storage.parent(manifest_url), obj["video"], f"{manifest_url}:{n}")
        except ValueError as e:
            problems.append(str(e))
            continue
        items.append(Item(str(obj["id"]), obj["video"], url, str(obj["prompt"])))
    if problems:
        raise ValueError(f"{manifest_url}: {len(problems)} bad line(s):\n" + "\n".join(problems[:20]))
    if not items:
        raise ValueError(f"{manifest_url}: no videos to score")
    return items


class _Frames(torch.utils.data.Dataset):
    def __init__(self, items: list[Item], frames: int):
        self.items, self.frames = items, frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i], video.read_video(self.items[i].url, self.frames).permute(0, 3, 1, 2)


class Scorer:
    """A loaded critic with its prompt format; `rate` answers the three questions for a batch of videos.

    `labels`: the words whose probabilities logits mode reads (LiFT's Good / Normal / Bad; generate mode parses
    those with `critic.parse_label`)."""

    def __init__(self, critic_url: str, device: torch.device, max_new_tokens: int = 64,
                 trust_remote_code: bool = False, labels: tuple[str, ...] = hra.LABELS):
        self.url, self.device, self.max_new_tokens, self.labels = critic_url, device, max_new_tokens, labels
        recorded = storage.read_marker(critic_url) or {}  # our exports record how the critic was trained
        self.answer_format = recorded.get("answer_format", "label_first")
        self.frames = int(recorded.get("frames", 8))
        self.fps = float(recorded.get("sample_fps", 4.0))
        dtype = dist.compute_dtype(device)
        self.model, self.processor = models.load_critic(critic_url, dtype=dtype, device=device,
                                                        trust_remote_code=trust_remote_code)
        self.model.eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation and last-position logits need left padding
        inner = getattr(self.model, "model", None)
        self._precomputed_video = (hasattr(self.model, "get_video_features") and inner is not None and
                                   "mm_encoder_outputs" in inspect.signature(inner.forward).parameters)

    def _encode(self, texts: list[str], frames: list[torch.Tensor]) -> dict:
        enc = critic.encode(self.processor, texts, frames, self.fps)  # the frames' rate, as in training
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in enc.items()}

    def _prompts(self, items: list[Item]) -> list[str]:
        return [self.processor.apply_chat_template(critic.messages(it.prompt, d), tokenize=False,
                                                   add_generation_prompt=True)
                for it in items for d in hra.DIMENSIONS]

    def _generate(self, texts: list[str], frames: list[torch.Tensor], max_new_tokens: int) -> list[str]:
        enc = self._encode(texts, frames)
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def _logits(self, texts: list[str], frames: list[torch.Tensor], repeats: int, keep: int):
        """(input_ids, logits of the last `keep` positions) of the texts. `frames` holds each video `repeats` times in
        a row: the vision tower then encodes each video once and its features are reused for every repeat, which
        transformers' `mm_encoder_outputs` allows (3x less vision compute for LiFT's three questions)."""
        enc = self._encode(texts, frames)
        if repeats > 1 and self._precomputed_video:
            grid = enc["video_grid_thw"]
            blocks = torch.split(enc.pop("pixel_values_videos"), grid.prod(-1).tolist())
            video = self.model.get_video_features(torch.cat(blocks[::repeats]), grid[::repeats], return_dict=True)
            video.pooler_output = tuple(f for f in video.pooler_output for _ in range(repeats))
            enc["mm_encoder_outputs"] = {"video": video}
        # Only the last positions' logits: the full (batch x length x vocabulary) tensor is ~15 GB in fp32 for 24
        # sequences of ~1k tokens with Qwen2.5's 152k-token vocabulary.
        return enc["input_ids"], self.model(**enc, logits_to_keep=keep).logits

    def _label_probs(self, texts: list[str], frames: list[torch.Tensor], repeats: int = 1) -> torch.Tensor:
        """P(label | label among `labels`) where each text ends, as (texts x labels); `frames` as for `_logits`.

        A label's probability is the product of its tokens' probabilities given the text (`critic.label_tokens`).
        Where every label is one token that does not merge with the text's end, that is one forward over the
        texts, reading the next token's logits; otherwise one forward over each text continued by each label."""
        plans = [critic.label_tokens(self.tokenizer, t, self.answer_format, self.labels) for t in texts]
        if all(p.first_token_rule for p in plans):
            _, logits = self._logits(texts, frames, repeats, keep=1)
            ids = torch.tensor([[c[0] for c in p.continuations] for p in plans], device=logits.device)
            return torch.softmax(logits[:, -1].float().gather(1, ids), dim=-1).cpu()
        n = len(self.labels)
        continued = [t + critic.label_text(label, self.answer_format) for t in texts for label in self.labels]
        targets = [c for p in plans for c in p.continuations]
        keep = max(len(c) for c in targets) + 1
        input_ids, logits = self._logits(continued, [f for f in frames for _ in range(n)], repeats * n, keep)
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores = torch.empty(len(continued))
        for row, tokens in enumerate(targets):
            if input_ids[row, len(input_ids[row]) - len(tokens):].tolist() != tokens:
                raise ValueError(f"the critic's processor splits {continued[row][-60:]!r} unlike its tokenizer")
            at = torch.arange(keep - 1 - len(tokens), keep - 1)  # the positions that predict the label's tokens
            scores[row] = logp[row, at, torch.tensor(tokens)].sum()
        return torch.softmax(scores.view(len(texts), n), dim=-1)

    def _reason_then_label(self, texts: list[str], frames: list[torch.Tensor]) -> tuple[list[str], torch.Tensor]:
        """Reason-first logits mode: the reason decoded greedily, and P(label) read from the same decoding at the
        step right after its verdict marker, so no second pass runs. Where that reading is not one next-token
        probability (a label of several tokens) the label is scored by `_label_probs` on the text the decoding
        reached, and an answer that never reaches the marker (cut at max_new_tokens) on prompt + reason +
        " Verdict:"."""
        enc = self._encode(texts, frames)
        out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True)
        new = out.sequences[:, enc["input_ids"].shape[1]:]
        reasons = [critic.reason_of(a, "reason_first")
                   for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        probs, again = torch.empty(len(texts), len(self.labels)), {}
        for i, tokens in enumerate(new.tolist()):
            at = critic.verdict_step(self.tokenizer, tokens)
            if at is None:
                again[i] = texts[i] + reasons[i] + " " + critic.VERDICT
                continue
            reached = texts[i] + self.tokenizer.decode(tokens[:at], skip_special_tokens=True)
            plan = critic.label_tokens(self.tokenizer, reached, self.answer_format, self.labels)
            if not plan.first_token_rule:
                again[i] = reached
                continue
            ids = [c[0] for c in plan.continuations]
            probs[i] = torch.softmax(out.logits[at][i, ids].float(), dim=-1).cpu()
        if again:
            probs[list(again)] = self._label_probs(list(again.values()), [frames[i] for i in again])
        return reasons, probs

    @torch.inference_mode()
    def rate(self, items: list[Item], frames: list[torch.Tensor], mode: str) -> list[dict]:
        """Per video: labels, probs (logits mode), reasons, and the dimensions whose answer named no label."""
        texts = self._prompts(items)
        per_q = [f for f in frames for _ in hra.DIMENSIONS]
        results = [{"labels": {}, "probs": {}, "reasons": {}, "unparsable": []} for _ in items]
        if mode == "generate":
            answers = self._generate(texts, per_q, self.max_new_tokens)
        elif self.answer_format == "reason_first":
            reasons, probs = self._reason_then_label(texts, per_q)
        else:
            probs = self._label_probs(texts, per_q, len(hra.DIMENSIONS))
        for q in range(len(texts)):
            res, dim = results[q // len(hra.DIMENSIONS)], hra.DIMENSIONS[q % len(hra.DIMENSIONS)]
            if mode == "generate":
                label = critic.parse_label(answers[q], self.answer_format)
                res["labels"][dim] = label
                res["reasons"][dim] = critic.reason_of(answers[q], self.answer_format)
                if label is None:
                    res["unparsable"].append(dim)
                continue
            res["probs"][dim] = {l: round(float(p), 6) for l, p in zip(self.labels, probs[q])}
            res["labels"][dim] = self.labels[int(probs[q].argmax())]
            if self.answer_format == "reason_first":
                res["reasons"][dim] = reasons[q]
        return results


def _as_list(batch: list) -> list:
    return batch


def frame_loader(items: list[Item], frames: int, batch_size: int, workers: int = 2) -> torch.utils.data.DataLoader:
    """Batches of (item, frames [T, C, H, W] uint8) decoded by `workers` processes, 4 batches prefetched each."""
    workers = min(workers, len(items))
    return torch.utils.data.DataLoader(_Frames(items, frames), batch_size=batch_size, collate_fn=_as_list,
                                       num_workers=workers, prefetch_factor=4 if workers > 1 else None,
                                       worker_init_fn=loop.worker_init if workers > 1 else None,
                                       multiprocessing_context="fork" if workers > 1 else None)


def score_sharded(items: list[Item], scorer: Scorer | None, out_url: str, mode: str, batch_size: int,
                  num_shards: int, runtime: dist.Runtime, make_record) -> list[dict]:
    """Rate every item once across ranks; committed parts are skipped, so a rerun finishes only the rest.

    `make_record(item, rating) -> dict` shapes each output line; `scorer` may be None on a rank whose parts are all
    committed. Returns all records (rank 0; merged in order).
    """

    def work(scorer: Scorer, mine: list[Item]):
        batches = iter(frame_loader(mine, scorer.frames, batch_size))
        try:
            for batch in batches:
                batch_items, frames = [b[0] for b in batch], [b[1] for b in batch]
                yield [make_record(it, rating) for it, rating in zip(batch_items, scorer.rate(batch_items, frames,
                                                                                              mode))]
        except BaseException:
            # A worker's error (a bad video) leaves the iterator in a reference cycle; freed later by the garbage
            # collector, its queues can go first and each worker then waits out a 5 s join. Stop them now.
            getattr(batches, "_shutdown_workers", lambda: None)()
            raise

    merged = sharded.run_parts(storage.Shards.layout(out_url, num_shards, runtime.world_size), items, work, runtime,
                               SCORES, "score", lambda: scorer, what="scoring", mode=mode)
    return [json.loads(line) for line in storage.read_text(merged).splitlines() if line.strip()] if merged else []
